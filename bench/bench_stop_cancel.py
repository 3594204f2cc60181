"""Stop and cancel latency of the oryx node over real Fast DDS (node, bag replay and client in separate
processes; tiny random checkpoint on CPU unless ``--model``).

- **stop**: signal sent → node process exited, with the node ``idle``, ``generating`` (a service call
  running), ``streaming`` (an action goal streaming feedback) and ``describing`` (a long periodic
  description running). A fresh node per sample (SIGINT and SIGTERM alternate); exit code and stray
  tracebacks are reported too.
- **cancel**: cancel request sent → result received by the action client, for a goal ``queued`` behind a
  running one, one cancelled in the ``vision`` stage (``--vision-delay-s`` after acceptance, inside
  preprocessing + the packed ViT pass of all the bag's frames) and one cancelled while ``decoding``
  (after 5 tokens). Reference: the same request's uncancelled time to its first token (``vision``) or the
  time per token (``decoding``), so the ratio says how much of the work a cancel still waits for.

Goals (field-hardening requirement 8): stop <= 2 s, cancel <= 0.5 s. Absolute numbers depend on the
machine and its load (this is meant for an idle machine; on a shared one the spread grows).

    python bench/bench_stop_cancel.py                  # about 3 min on 2 cores
    python bench/bench_stop_cancel.py --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from machine import cpu_model

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
CAMERAS: Final = ("cam0", "cam1", "cam2")
TOPICS: Final = [f"/{c}/{kind}" for c in CAMERAS for kind in ("image_raw", "camera_info")]
LONG: Final = 4000  # tokens: more than any sample lets the model generate
STOP_GOAL_S: Final = 2.0
CANCEL_GOAL_S: Final = 0.5


def write_inputs(directory: Path, frames: int, width: int, height: int, model: str) -> tuple[Path, Path]:
    from oryx_ros.bags.camera_bag import write_camera_bag
    from oryx_ros.bags.synthetic import make_test_frames
    from oryx_ros.params_file import camera_groups, write_params_file

    bag = directory / "bag"
    write_camera_bag(bag, make_test_frames(list(CAMERAS), frames, fps=10.0, width=width, height=height))
    params = write_params_file(directory / "oryx.yaml", {
        # Nothing encoded ahead, so "cancel in vision" meets a real vision pass.
        "model": {"path": str(model), "encode_on_arrival": False},
        "cameras": camera_groups(CAMERAS), "buffer": {"max_rate_hz": 0.0},
        "qos": {"sensor_reliable": True, "sensor_depth": 100},
        "ask": {"queue_size": 1, "max_new_tokens": 8, "default_window_s": 60.0},
        "description": {"enabled": False, "period_s": 0.2, "window_s": 60.0, "max_new_tokens": LONG}})
    return bag, params


class Node:
    """One node process and a client (own rclpy context) on this run's domain."""

    def __init__(self, params: Path, bag: Path, log: Path, describe: bool = False) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node as RosNode

        from oryx_ros.srv import Ask

        extra = ["-p", "description.enabled:=true"] if describe else []
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args",
                                         "--params-file", str(params), *extra],
                                        stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.client = RosNode("bench_stop_cancel", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.client)
        if not self.client.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=180):
            raise RuntimeError("the node did not come up: " + log.read_text()[-2000:])
        replay = subprocess.run([sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--wait-subscribers", "1",
                                 "--topics", *TOPICS], capture_output=True, text=True, timeout=300)
        if replay.returncode:
            raise RuntimeError(replay.stdout + replay.stderr)
        from rclpy.action import ActionClient

        from oryx_ros.action import Ask as AskAction

        self.goal_type = AskAction.Goal
        self.action = ActionClient(self.client, AskAction, "/oryx/ask")
        self.action.wait_for_server(timeout_sec=30)

    def spin_until(self, condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached: " + self.log.read_text()[-2000:])
            self.executor.spin_once(timeout_sec=0.005)

    def send(self, question: str, feedback: list[tuple[float, Any]], max_new_tokens: int = LONG) -> tuple[Any, Any]:
        sent = self.action.send_goal_async(
            self.goal_type(question=question, window_s=60.0, max_new_tokens=max_new_tokens),
            feedback_callback=lambda message: feedback.append((time.monotonic(), message.feedback)))
        self.spin_until(sent.done)
        handle = sent.result()
        return handle, handle.get_result_async()

    def cancel(self, handle: Any, result: Any) -> float:
        """Seconds from the cancel request to the result."""
        started = time.monotonic()
        handle.cancel_goal_async()
        self.spin_until(result.done)
        return time.monotonic() - started

    def stop(self, number: int) -> tuple[float, int, bool]:
        """(seconds to exit, exit code, clean output) after signal ``number``."""
        started = time.monotonic()
        self.process.send_signal(number)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        elapsed = time.monotonic() - started
        self.close()
        text = self.log.read_text()
        return elapsed, code, not any(word in text for word in ("Traceback", "terminate called"))

    def close(self) -> None:
        self.action.destroy()
        self.client.destroy_node()
        self.context.try_shutdown()
        if self.process.poll() is None:
            self.process.kill()


def stop_sample(state: str, number: int, params: Path, bag: Path, log: Path) -> tuple[float, int, bool]:
    node = Node(params, bag, log, describe=state == "describing")
    if state == "generating":  # a service call, left waiting: the stop must not wait for it
        from oryx_ros.srv import Ask

        client = node.client.create_client(Ask, "/oryx/ask")
        client.call_async(Ask.Request(question="Generate.", window_s=60.0, max_new_tokens=LONG))
        node.spin_until(lambda: "busy" in _model_status(node))
    elif state == "streaming":
        feedback: list[tuple[float, Any]] = []
        node.send("Stream.", feedback)
        node.spin_until(lambda: len(feedback) >= 3)
    elif state == "describing":
        node.spin_until(lambda: "busy" in _model_status(node))
    return node.stop(number)


def _model_status(node: Node) -> str:
    from diagnostic_msgs.msg import DiagnosticArray

    arrays: list[Any] = []
    subscription = node.client.create_subscription(DiagnosticArray, "/diagnostics", arrays.append, 10)
    node.spin_until(lambda: bool(arrays), timeout_s=10)
    node.client.destroy_subscription(subscription)
    return " ".join(s.message for s in arrays[-1].status if s.name.endswith(": model"))


def cancel_samples(node: Node, repeats: int, vision_delay_s: float) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {k: {"latency_s": [], "reference_s": []}
                                              for k in ("queued", "vision", "decoding")}
    for _ in range(repeats):
        # queued: behind a streaming goal
        running_feedback: list[tuple[float, Any]] = []
        running, running_result = node.send("Keep talking.", running_feedback)
        node.spin_until(lambda: bool(running_feedback))  # noqa: B023
        queued, queued_result = node.send("Queued.", [], max_new_tokens=8)
        out["queued"]["latency_s"].append(node.cancel(queued, queued_result))
        # decoding: the running goal, after 5 more tokens; reference = time per token
        count = len(running_feedback)
        node.spin_until(lambda: len(running_feedback) >= count + 5)  # noqa: B023
        out["decoding"]["latency_s"].append(node.cancel(running, running_result))
        times = [t for t, _ in running_feedback]
        out["decoding"]["reference_s"].append(statistics.median(b - a for a, b in itertools.pairwise(times)))
        # vision: the same all-frames request uncancelled (time to its first token), then cancelled in vision
        feedback: list[tuple[float, Any]] = []
        accepted = time.monotonic()
        handle, result = node.send(f"Look {random.random()}.", feedback, max_new_tokens=1)
        node.spin_until(result.done)
        out["vision"]["reference_s"].append(feedback[0][0] - accepted if feedback else float("nan"))
        handle, result = node.send("Look again.", [], max_new_tokens=LONG)
        time.sleep(vision_delay_s)
        out["vision"]["latency_s"].append(node.cancel(handle, result))
    return out


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):6.3f} s, max {max(values):6.3f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=24, help="frames per camera in the bag")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    parser.add_argument("--vision-delay-s", type=float, default=0.2,
                        help="cancel this long after acceptance (inside the vision stage)")
    parser.add_argument("--model", default="", help="checkpoint directory (default: the tiny random one)")
    parser.add_argument("--skip-stop", action="store_true", help="measure the cancel latencies only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(110, 200)))
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

    ensure_tiny_checkpoint()
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, {platform.python_version()}; "
          f"bag {len(CAMERAS)} x {args.frames} frames {args.size[0]}x{args.size[1]}; repeats {args.repeats}")
    results: dict[str, Any] = {"stop": {}, "cancel": {}}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        bag, params = write_inputs(directory, args.frames, *args.size, args.model)
        for state in () if args.skip_stop else ("idle", "generating", "streaming", "describing"):
            samples = [stop_sample(state, (signal.SIGINT, signal.SIGTERM)[i % 2], params, bag,
                                   directory / f"stop-{state}-{i}.log") for i in range(args.repeats)]
            seconds = [s for s, _, _ in samples]
            results["stop"][state] = {"seconds": seconds, "exit_codes": [c for _, c, _ in samples],
                                      "clean": all(clean for _, _, clean in samples)}
            print(f"stop   {state:<11} {summary(seconds)}  (max / goal {max(seconds) / STOP_GOAL_S:.2f}; exit codes "
                  f"{sorted(set(c for _, c, _ in samples))}, clean output {results['stop'][state]['clean']})")
        node = Node(params, bag, directory / "cancel.log")
        try:
            cancels = cancel_samples(node, args.repeats, args.vision_delay_s)
        finally:
            node.close()
        results["cancel"] = cancels
        for phase, values in cancels.items():
            latency, ref = statistics.median(values["latency_s"]), statistics.median(values["reference_s"] or [0])
            reference = (f"; reference {ref:.3f} s ({'time to first token' if phase == 'vision' else 'per token'}), "
                         f"ratio {latency / ref:.2f}" if ref else "")
            print(f"cancel {phase:<11} {summary(values['latency_s'])}  "
                  f"(max / goal {max(values['latency_s']) / CANCEL_GOAL_S:.2f}{reference})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
