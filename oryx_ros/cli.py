"""`oryx-ros <command>`: one entry point for every tool, each also runnable as `python -m <module>`.

Commands are imported lazily so that, for example, `oryx-ros make-test-bag` never imports torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("oryx_ros.demo", "main", "replay a bundled multi-camera bag into the node and ask it questions"),
    "node": ("oryx_ros.ros.node", "main", "run the oryx node (ROS args after --ros-args)"),
    "lifecycle-node": ("oryx_ros.ros.node", "main_lifecycle", "run the managed (lifecycle) oryx node"),
    "call": ("oryx_ros.ros.client", "main", "ask a running node over /oryx/ask (service or action)"),
    "replay": ("oryx_ros.ros.replay", "main", "publish a rosbag2 into live topics, paced by its timestamps"),
    "make-test-bag": ("oryx_ros.bags.synthetic", "main", "write a small multi-camera test bag"),
    "make-hour-bag": ("oryx_ros.bags.hour_bag", "main", "write an hour of robot time with known events (sim time)"),
    "make-scene": ("oryx_ros.spatial.synthetic_scene", "main", "render a synthetic RGB-D scene bag + truth"),
    "make-tiny-checkpoint": ("oryx_ros.model.tiny_checkpoint", "main", "write a tiny random Oryx checkpoint"),
    "ask": ("oryx_ros.model.ask", "main", "ask Oryx offline about images or a video file"),
    "serve": ("oryx_ros.serving.server", "main", "serve Oryx to a fleet on Ray Serve (OpenAI-compatible HTTP)"),
}


def _usage() -> str:
    lines = ["usage: oryx-ros <command> [args...]", "", "commands:"]
    lines += [f"  {name:<22}{help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"oryx-ros: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[args[0]]
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
