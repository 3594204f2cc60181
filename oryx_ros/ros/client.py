"""`oryx-ros call`: ask a running oryx node over the ``/oryx/ask`` service or action and print the answer.

This is what ``ros2 service call /oryx/ask oryx_ros/srv/Ask "{question: ...}"`` and
``ros2 action send_goal --feedback /oryx/ask oryx_ros/action/Ask ...`` do on a full ROS install.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.task import Future

from oryx_ros.action import Ask as AskAction
from oryx_ros.srv import Ask


def build_request(message_type: Any, args: argparse.Namespace) -> Any:
    return message_type(question=args.question, cameras=args.cameras, window_s=args.window, max_frames=args.max_frames,
                        mode=args.mode, spatial=args.spatial, max_new_tokens=args.max_new_tokens)


def spin_until_done(node: Node, future: Future, timeout_s: float) -> None:
    # An executor of its own (not rclpy's global one), so several threads may each wait on a call.
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin_until_future_complete(future, timeout_sec=timeout_s)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0)


def collect_messages(node: Node, message_type: type, topic: str, qos: QoSProfile | int = 10,
                     until: Callable[[list[Any]], bool] = bool, timeout_s: float = 30.0) -> list[Any]:
    """Subscribe to ``topic`` and spin until ``until(received)`` holds or the timeout passes."""
    received: list[Any] = []
    subscription = node.create_subscription(message_type, topic, received.append, qos)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while not until(received) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0)
        node.destroy_subscription(subscription)
    return received


def call_service(node: Node, request: Any, name: str = "/oryx/ask", timeout_s: float = 600.0,
                 service_type: type = Ask) -> Any:
    """Call ``name`` (an Ask service unless ``service_type`` says otherwise) and wait for the response."""
    client = node.create_client(service_type, name)
    try:
        if not client.wait_for_service(timeout_sec=min(timeout_s, 60.0)):
            raise TimeoutError(f"service {name} is not available")
        future = client.call_async(request)
        spin_until_done(node, future, timeout_s)
        if not future.done():
            raise TimeoutError(f"no answer from {name} within {timeout_s} s")
        return future.result()
    finally:
        node.destroy_client(client)


def call_action(node: Node, goal: AskAction.Goal, name: str = "/oryx/ask",
                on_feedback: Callable[[AskAction.Feedback], None] | None = None,
                cancel_after_tokens: int = 0, timeout_s: float = 600.0) -> tuple[int, AskAction.Result]:
    """Send a goal, stream its feedback, optionally cancel it after N tokens; return (status, result)."""
    client = ActionClient(node, AskAction, name)
    if not client.wait_for_server(timeout_sec=min(timeout_s, 60.0)):
        raise TimeoutError(f"action server {name} is not available")
    cancel_sent: list[Any] = []
    handles: list[Any] = []

    def feedback(message: Any) -> None:
        if on_feedback is not None:
            on_feedback(message.feedback)
        if cancel_after_tokens and message.feedback.tokens >= cancel_after_tokens and not cancel_sent and handles:
            cancel_sent.append(handles[0].cancel_goal_async())

    try:
        send = client.send_goal_async(goal, feedback_callback=feedback)
        spin_until_done(node, send, 60.0)
        handle = send.result()
        if handle is None or not handle.accepted:
            raise RuntimeError("the goal was rejected")
        handles.append(handle)
        result = handle.get_result_async()
        spin_until_done(node, result, timeout_s)
        if not result.done():
            raise TimeoutError(f"no result from {name} within {timeout_s} s")
        return result.result().status, result.result().result
    finally:
        client.destroy()


def describe_result(result: Any, max_relations: int | None = None) -> str:
    """Counts, timing and scene graph of an Ask response or action result, as indented lines."""
    lines = [f"   {result.frames_used} frames, {result.visual_tokens} visual tokens, {result.compression}, "
             f"latency {result.latency_s:.2f} s"]
    scene = result.scene
    if scene.objects or scene.reason:
        lines.append(f"   scene graph in {scene.header.frame_id!r}: {len(scene.objects)} objects, "
                     f"{len(scene.relations)} relations{'' if scene.available else ' — unavailable: ' + scene.reason}")
        lines += [f"     [{obj.id}] {obj.label:<14} at ({obj.position.x:+.2f}, {obj.position.y:+.2f}, "
                  f"{obj.position.z:+.2f}) m, seen by {list(obj.cameras)}" for obj in scene.objects]
        lines += [f"     {rel.subject_id} {rel.predicate} {rel.object_id}  ({rel.source}, {rel.distance:.2f} m)"
                  for rel in scene.relations[:max_relations]]
    return "\n".join(lines)


def _clock(stamp: Any, origin_ns: int | None) -> str:
    """A stamp as minutes:seconds after ``origin_ns``, or as seconds since the epoch without one."""
    stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
    if origin_ns is None:
        return f"{stamp_ns / 1e9:.1f}"
    minutes, seconds = divmod((stamp_ns - origin_ns) / 1e9, 60)
    return f"{int(minutes):02d}:{seconds:04.1f}"


def describe_moment(moment: Any, origin_ns: int | None = None) -> str:
    """One recalled moment (MemoryMoment) as one line: time, score, cameras, objects with places, text."""
    objects = ", ".join(f"{label} at ({p.x:+.2f}, {p.y:+.2f}, {p.z:+.2f})"
                        for label, p in zip(moment.object_labels, moment.object_positions, strict=False))
    return (f"t={_clock(moment.stamp, origin_ns)} score {moment.score:.2f} cameras {list(moment.cameras)}"
            + (f" objects [{objects}] in {moment.objects_frame!r}" if objects else "")
            + f": {moment.description[:60]!r}")


def describe_evidence(evidence: Any, origin_ns: int | None = None, max_frames: int = 8) -> str:
    """An Evidence message as indented lines: the memory search, its moments, and the frames used."""
    lines = []
    if evidence.memory_query:
        lines.append(f"   evidence: memory searched for {evidence.memory_query!r}, {len(evidence.moments)} moment(s)")
        lines += ["     " + describe_moment(m, origin_ns) for m in evidence.moments]
    frames = list(evidence.frames)
    lines.append(f"   frames used: {len(frames)} ({evidence.frames_from_memory} from memory, "
                 f"{evidence.frames_dropped} in the window left out)")
    shown = [f for f in frames if f.reason == "retrieved"][:max_frames] or frames[:max_frames]
    lines += [f"     t={_clock(f.stamp, origin_ns)} {f.camera} from {f.source} ({f.reason})" for f in shown]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oryx-ros call", description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--cameras", nargs="*", default=[])
    parser.add_argument("--window", type=float, default=0.0, help="seconds back from the newest frame (0 = default)")
    parser.add_argument("--max-frames", type=int, default=0)
    parser.add_argument("--mode", default="", choices=["", "auto", "image", "video", "video_long", "multiview"])
    parser.add_argument("--spatial", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=0)
    parser.add_argument("--action", action="store_true", help="use the streaming action instead of the service")
    parser.add_argument("--name", default="/oryx/ask")
    parser.add_argument("--timeout", type=float, default=600.0)
    args, ros_args = parser.parse_known_args(argv)
    with rclpy.init(args=[sys.argv[0], *ros_args]):
        node = Node("oryx_ask_client")
        if args.action:
            _status, result = call_action(node, build_request(AskAction.Goal, args), args.name,
                                         on_feedback=lambda f: print(f"\r[{f.tokens} tokens] {f.text}", end=""),
                                         timeout_s=args.timeout)
            print()
        else:
            result = call_service(node, build_request(Ask.Request, args), args.name, args.timeout)
        if not result.success:
            print(f"error: {result.error}", file=sys.stderr)
            return 1
        print(result.answer)
        print(describe_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
