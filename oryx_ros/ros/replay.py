"""``oryx-ros replay BAG``: publish a rosbag2 (sqlite3 or mcap) onto live topics, without the ros2 CLI.

The pip-installed ROS 2 has no ``ros2 bag``; this player reads the bag with ``rosbags`` and publishes
each message's raw CDR bytes with rclpy (no deserialisation), paced by the bag's log timestamps.

Semantics, compared with ``ros2 bag play``:
- Pacing: message i is published at ``start + (t_i - t_0) / rate`` of wall time (log/receive time, as
  ros2 bag play). Header stamps are untouched. ``--loop`` starts over at the end, so header stamps
  and /clock jump back (consumers must handle it; oryx_ros's buffer clears itself on such jumps).
- QoS: every publisher is RELIABLE, KEEP_LAST ``--qos-depth`` (default 100); durability is
  TRANSIENT_LOCAL only when all recorded publishers of the topic offered it (rosbag2's rule), else
  VOLATILE. ros2 bag play instead re-offers the recorded reliability (often BEST_EFFORT for cameras);
  RELIABLE serves both reliable and best-effort subscribers and loses nothing on a loaded machine.
- ``--clock [HZ]`` publishes rosgraph_msgs/Clock with the playback time at HZ (default 40, as
  ``ros2 bag play --clock``), for nodes with ``use_sim_time``; RELIABLE depth 1 (ros2 bag play:
  BEST_EFFORT), so reliable and best-effort /clock subscribers both match.
- ``--wait-subscribers N`` (not in ros2 bag play) waits up to ``--wait-timeout`` s until every replayed
  topic has N matched subscriptions before starting; it fails (exit 1) on timeout.
- At the end it always waits until every subscriber acknowledged every message (``wait_for_all_acked``,
  at most ``--ack-timeout`` s), so the tail of the bag is not lost when the player exits (ros2 bag
  play: ``--wait-for-all-acked``).
- ``--topics`` keeps only those topics; remap with ``--ros-args -r /old:=/new``.
- Message classes are imported from the type name (``pkg/msg/Name`` → ``pkg.msg.Name``); topics whose
  type is not importable are skipped with an error. No pause/seek services, no --start-offset.

Use the shared-memory Fast DDS profile (config/fastdds_shm.xml, FASTDDS_DEFAULT_PROFILES_FILE) for
images: with Fast DDS's default 512 KB segment, camera-sized messages fall back to a slow path.

Exit status: 0 done (or interrupted), 1 subscribers missing / not all messages acknowledged,
2 bad arguments or unreadable bag.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from rosbags.interfaces import Connection, ConnectionExtRosbag2, QosDurability
from rosbags.rosbag2 import Reader

__all__ = ["ReplayResult", "main", "message_class", "replay"]

_log = logging.getLogger("oryx_ros.replay")

_NS_PER_S: Final = 1_000_000_000
_POLL_S: Final = 0.02  # discovery polling and the longest single sleep (keeps Ctrl-C responsive)
DEFAULT_CLOCK_HZ: Final = 40.0  # ros2 bag play --clock default
CLOCK_TOPIC: Final = "/clock"


class ReplayError(RuntimeError):
    """Replay cannot start (no bag, no topics, subscribers missing)."""


def message_class(msgtype: str) -> type:
    """``'sensor_msgs/msg/Image'`` → ``sensor_msgs.msg.Image`` (ImportError/AttributeError if absent)."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _durability(connections: Sequence[Connection]) -> DurabilityPolicy:
    profiles = [
        qos
        for connection in connections
        if isinstance(connection.ext, ConnectionExtRosbag2)
        for qos in connection.ext.offered_qos_profiles
    ]
    if profiles and all(qos.durability == QosDurability.TRANSIENT_LOCAL for qos in profiles):
        return DurabilityPolicy.TRANSIENT_LOCAL
    return DurabilityPolicy.VOLATILE


@dataclass
class ReplayResult:
    published: Counter[str] = field(default_factory=Counter)
    loops: int = 0
    wall_s: float = 0.0
    max_lateness_s: float = 0.0
    all_acked: bool = True
    interrupted: bool = False
    skipped_topics: list[str] = field(default_factory=list)


def _wait_for_subscribers(
    publishers: dict[str, Publisher], count: int, timeout_s: float, context: Any
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = {topic: publisher.get_subscription_count() for topic, publisher in publishers.items()}
        missing = {topic: n for topic, n in counts.items() if n < count}
        if not missing:
            return
        if time.monotonic() >= deadline or not context.ok():
            detail = ", ".join(f"{t} ({n}/{count})" for t, n in sorted(missing.items()))
            raise ReplayError(f"timed out after {timeout_s:.1f} s waiting for subscribers on: {detail}")
        time.sleep(_POLL_S)


def replay(
    node: Node,
    bag: str | Path,
    *,
    rate: float = 1.0,
    loop: bool = False,
    topics: Sequence[str] | None = None,
    clock_hz: float | None = None,
    start_delay_s: float = 0.0,
    wait_subscribers: int = 0,
    wait_timeout_s: float = 30.0,
    qos_depth: int = 100,
    ack_timeout_s: float = 10.0,
) -> ReplayResult:
    """Publish ``bag`` on ``node`` (see the module docstring); returns what was published."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if clock_hz is not None and clock_hz <= 0:
        raise ValueError(f"clock rate must be positive, got {clock_hz}")
    result = ReplayResult()
    context = node.context
    with Reader(bag) as reader:
        by_topic: dict[str, list[Connection]] = {}
        for connection in reader.connections:
            by_topic.setdefault(connection.topic, []).append(connection)
        if topics:
            absent = sorted(set(topics) - set(by_topic))
            if absent:
                _log.warning("topics not in the bag: %s", ", ".join(absent))
            by_topic = {t: c for t, c in by_topic.items() if t in set(topics)}
        publishers: dict[str, Publisher] = {}
        for topic, connections in sorted(by_topic.items()):
            msgtype = connections[0].msgtype
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError) as err:
                _log.error("skipping %s: message type %s is not importable (%s)", topic, msgtype, err)
                result.skipped_topics.append(topic)
                continue
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE,
                durability=_durability(connections),
            )
            publishers[topic] = node.create_publisher(cls, topic, qos)
        if not publishers:
            raise ValueError(f"nothing to replay from {bag} (topics: {sorted(by_topic) or 'none selected'})")
        clock_pub = clock_type = None
        if clock_hz is not None:
            from rosgraph_msgs.msg import Clock  # only needed with --clock

            # Depth 1: only the newest time matters. RELIABLE (ros2 bag play offers rclcpp::ClockQoS,
            # BEST_EFFORT) also matches subscribers that ask for RELIABLE, and rclpy's own TimeSource
            # subscribes BEST_EFFORT, which any publisher serves.
            clock_pub = node.create_publisher(
                Clock, CLOCK_TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
            )
            clock_type = Clock

        if wait_subscribers > 0:
            _wait_for_subscribers(publishers, wait_subscribers, wait_timeout_s, context)
        if start_delay_s > 0:
            _sleep_until(time.monotonic() + start_delay_s, context)

        selected = [c for connections in by_topic.values() for c in connections
                    if c.topic in publishers]
        start_wall = time.monotonic()
        try:
            while context.ok():
                result.loops += 1
                _play_once(reader, selected, publishers, rate, clock_pub, clock_type, clock_hz, context, result)
                if not loop:
                    break
        except KeyboardInterrupt:
            result.interrupted = True
        result.wall_s = time.monotonic() - start_wall
    if not result.interrupted and context.ok():
        deadline = time.monotonic() + ack_timeout_s
        for topic, publisher in publishers.items():
            remaining = max(0.0, deadline - time.monotonic())
            if not publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * _NS_PER_S))):
                _log.error("not every subscriber acknowledged all of %s within %.1f s", topic, ack_timeout_s)
                result.all_acked = False
    return result


def _sleep_until(deadline: float, context: Any) -> None:
    while context.ok():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, _POLL_S))


def _play_once(
    reader: Reader,
    connections: list[Connection],
    publishers: dict[str, Publisher],
    rate: float,
    clock_pub: Publisher | None,
    clock_type: type | None,
    clock_hz: float | None,
    context: Any,
    result: ReplayResult,
) -> None:
    from builtin_interfaces.msg import Time

    start_wall: float | None = None
    first_ns = 0
    clock_period = 1.0 / clock_hz if clock_hz else None
    next_clock = 0.0

    def publish_clock(now: float) -> None:
        assert clock_pub is not None and clock_type is not None and start_wall is not None
        bag_ns = first_ns + int((now - start_wall) * rate * _NS_PER_S)
        sec, nanosec = divmod(bag_ns, _NS_PER_S)
        clock_pub.publish(clock_type(clock=Time(sec=sec, nanosec=nanosec)))

    for connection, log_time_ns, raw in reader.messages(connections=connections):
        if start_wall is None:
            start_wall, first_ns, next_clock = time.monotonic(), log_time_ns, time.monotonic()
        target = start_wall + (log_time_ns - first_ns) / rate / _NS_PER_S
        while True:
            if not context.ok():
                return
            now = time.monotonic()
            if clock_period is not None and now >= next_clock:
                publish_clock(now)
                next_clock += clock_period * max(1, int((now - next_clock) / clock_period) + 1)
            if now >= target:
                break
            wake = min(target, next_clock) if clock_period is not None else target
            time.sleep(min(max(wake - now, 0.0), _POLL_S))
        publishers[connection.topic].publish(bytes(raw))
        result.published[connection.topic] += 1
        result.max_lateness_s = max(result.max_lateness_s, time.monotonic() - target)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oryx-ros replay",
        description="Publish a rosbag2 (sqlite3 or mcap) onto live topics, paced by its timestamps.",
        epilog="ROS arguments go after --ros-args (e.g. --ros-args -r /cam0/image_raw:=/front/image_raw).",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 directory (or a .db3/.mcap file)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", action="store_true", help="start over at the end, until interrupted")
    parser.add_argument("--topics", nargs="+", default=None, help="replay only these topics")
    parser.add_argument("--clock", type=float, nargs="?", const=DEFAULT_CLOCK_HZ, default=None, metavar="HZ",
                        help=f"publish /clock at HZ (default {DEFAULT_CLOCK_HZ:g}) for use_sim_time")
    parser.add_argument("--start-delay", type=float, default=0.0, metavar="S",
                        help="seconds to sleep after discovery, before the first message")
    parser.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                        help="wait until every replayed topic has N subscribers")
    parser.add_argument("--wait-timeout", type=float, default=30.0, metavar="S",
                        help="give up waiting for subscribers after S seconds (exit 1)")
    parser.add_argument("--qos-depth", type=int, default=100, help="publisher history depth")
    parser.add_argument("--ack-timeout", type=float, default=10.0, metavar="S",
                        help="at the end, wait at most S seconds for all messages to be acknowledged")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(remove_ros_args(argv))
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [oryx-ros replay] %(message)s")
    if args.rate <= 0 or (args.clock is not None and args.clock <= 0) or args.qos_depth < 1:
        print("replay: --rate, --clock and --qos-depth must be positive", file=sys.stderr)
        return 2
    if not args.bag.exists():
        print(f"replay: no bag at {args.bag}", file=sys.stderr)
        return 2
    # Python's own SIGINT handling (KeyboardInterrupt) stops playback cleanly; SIGTERM does the same. Set
    # for SIGINT too: a player started in the background by a non-interactive shell inherits SIGINT ignored.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.default_int_handler)
    try:
        with rclpy.init(args=["oryx-ros-replay", *argv], signal_handler_options=SignalHandlerOptions.NO):
            node = Node("oryx_replay")
            try:
                result = replay(
                    node, args.bag, rate=args.rate, loop=args.loop, topics=args.topics, clock_hz=args.clock,
                    start_delay_s=args.start_delay, wait_subscribers=args.wait_subscribers,
                    wait_timeout_s=args.wait_timeout, qos_depth=args.qos_depth, ack_timeout_s=args.ack_timeout,
                )
            finally:
                node.destroy_node()
    except ReplayError as err:
        _log.error("%s", err)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as err:  # unreadable bag and the like: report, do not dump a traceback
        _log.error("cannot replay %s: %s: %s", args.bag, type(err).__name__, err)
        return 2
    total = sum(result.published.values())
    _log.info(
        "published %d messages on %d topics in %.2f s (%d loop%s%s), max lateness %.1f ms",
        total, len(result.published), result.wall_s, result.loops, "" if result.loops == 1 else "s",
        ", interrupted" if result.interrupted else "", result.max_lateness_s * 1e3,
    )
    return 0 if result.all_acked else 1


if __name__ == "__main__":
    sys.exit(main())
