"""Throughput and CPU cost of the camera sensor path over real Fast DDS, in separate processes.

A synthetic bag (3 cameras, 640x480 rgb8 + CameraInfo, 30 fps, ``--frames`` per camera) is played by
``python -m oryx_ros.ros.replay`` in one process into a receiver in another process:

- ``bare``: an rclpy node whose subscriptions do nothing (the reference, as rclpy's own pub/sub
  benchmark);
- ``ingest``: a node with oryx_ros.ros.camera_ingest.CameraIngest + FrameBuffer (numpy conversion,
  CameraInfo caching, approximate-time sync of the 3 cameras, storing every set).

Both receivers count messages in the same wrapper around each subscription callback, so they differ only
in what the callback does. Each receiver follows rclpy's test_benchmark_pub_sub.py: its own Context, a
wait for discovery, then a ``spin_once`` loop; the loop blocks in ``spin_once(timeout_sec=0.1)`` instead
of busy-polling with ``timeout_sec=0``, because a busy loop would make the receiver's CPU time equal to
its wall time and hide the cost of the callbacks. Timing starts at the first callback (start-up,
imports and discovery excluded) and ends after the last one; CPU is the receiver process's CPU time
(all threads: Fast DDS transport threads and the executor) over the same window.

Publish rates (``--rates``): the bag's real time (``1x``, 83 MB/s of images), a paced 4x, and
"flat out" (the player never sleeps). At paced rates both receivers normally keep up, so the figure
of merit is CPU per message; flat out, a receiver that falls behind lets the player overrun Fast DDS's
shared-memory segment, and the samples lost there are repaired by the reliable protocol at its next
heartbeat (Fast DDS's default period is 3 s), which shows up as a longer window, not as loss. Transports: the rates in
``--builtin-rates`` are measured twice, with config/fastdds_shm.xml (8 MB shared-memory segments,
FASTDDS_DEFAULT_PROFILES_FILE) and with Fast DDS's built-in transports (512 KB segments, so
camera-sized messages take a slower path). Absolute numbers depend on the machine and its load; the
headline figures are ratios within one run: ingest / bare, and built-in / shm profile.

Subscriptions are RELIABLE, KEEP_LAST ``--qos-depth`` (the player is RELIABLE too), so received/sent
below 1 means history overflowed somewhere (a receiver that cannot keep up), not UDP loss.

    python bench/bench_ingest.py                 # about 50 s on 2 cores
    python bench/bench_ingest.py --repeats 3 --rates 1 2 4 8 0 --builtin-rates 1 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from batches import wait_for_line
from machine import cpu_model

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
SHM_PROFILE: Final = REPO_ROOT / "config" / "fastdds_shm.xml"
RECEIVERS: Final = ("bare", "ingest")
TRANSPORTS: Final = ("shm profile", "built-in")
# "As fast as possible": the player's pacing factor, high enough that it never sleeps.
FLAT_OUT_RATE: Final = 1000.0
READY_TIMEOUT_S: Final = 60.0
STOP_GRACE_S: Final = 0.5
_PUBLISHED_RE: Final = re.compile(r"published (\d+) messages on \d+ topics in ([\d.]+) s")


# --------------------------------------------------------------------------------------------------
# Receiver (runs in its own process: ``bench_ingest.py --receiver bare|ingest``)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Meter:
    """Counts callbacks and takes wall and CPU time at the first and after the last one."""

    received: Counter[str] = field(default_factory=Counter)
    first_s: float | None = None
    last_s: float = 0.0
    cpu_first_s: float = 0.0
    cpu_last_s: float = 0.0

    def wrap(self, kind: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        def metered(msg: Any) -> None:
            if self.first_s is None:
                self.first_s, self.cpu_first_s = time.perf_counter(), time.process_time()
            callback(msg)
            self.received[kind] += 1
            self.last_s, self.cpu_last_s = time.perf_counter(), time.process_time()

        return metered

    @property
    def total(self) -> int:
        return sum(self.received.values())


def run_receiver(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from oryx_ros.bags.camera_bag import camera_topics

    names = [f"cam{i}" for i in range(args.cameras)]
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.qos_depth, reliability=ReliabilityPolicy.RELIABLE)
    context = rclpy.Context()
    rclpy.init(context=context)
    meter = _Meter()
    ingest = None
    try:
        node = Node(f"bench_{args.receiver}_receiver", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        if args.receiver == "bare":
            for name in names:
                topics = camera_topics(name)
                node.create_subscription(Image, topics.image, lambda _msg: None, qos)
                node.create_subscription(CameraInfo, topics.camera_info, lambda _msg: None, qos)
        else:
            from oryx_ros.perception.frame_buffer import FrameBuffer
            from oryx_ros.ros.camera_ingest import CameraConfig, CameraIngest

            buffer = FrameBuffer(memory_budget_bytes=args.buffer_mb * 1024**2, window_ns=120 * 10**9)
            ingest = CameraIngest(node, [CameraConfig.standard(name) for name in names], buffer, qos=qos)
        for subscription in node.subscriptions:
            kind = "image" if subscription.msg_type is Image else "camera_info"
            subscription.callback = meter.wrap(kind, subscription.callback)
        topics_wanted = [t for name in names for t in (camera_topics(name).image, camera_topics(name).camera_info)]
        # The player starts only now, so its start-up does not compete with this receiver for the CPU
        # while the first messages arrive (that would shorten the measured window).
        print("READY", flush=True)

        deadline = time.monotonic() + args.timeout
        while any(node.count_publishers(topic) == 0 for topic in topics_wanted):  # discovery
            if time.monotonic() > deadline:
                raise TimeoutError("no publisher discovered")
            executor.spin_once(timeout_sec=0.05)
        # Until every message came, or the player has exited (it waits until every message is
        # acknowledged, so whatever is still to come is already in the subscriptions' history) and
        # nothing more arrived for STOP_GRACE_S. Retransmissions over a slow transport can pause
        # delivery for seconds, so silence alone does not end the run.
        stop_since: float | None = None
        next_stdin_check = 0.0
        while meter.total < args.expect and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            now = time.perf_counter()
            if stop_since is None and now >= next_stdin_check:  # checked at 20 Hz, not per message
                next_stdin_check = now + 0.05
                if select.select([sys.stdin], [], [], 0)[0]:
                    stop_since = now
            if stop_since is not None and now - max(meter.last_s, stop_since) > STOP_GRACE_S:
                break
        result: dict[str, Any] = {
            "receiver": args.receiver,
            "received": dict(meter.received),
            "span_s": (meter.last_s - meter.first_s) if meter.first_s is not None else 0.0,
            "cpu_s": meter.cpu_last_s - meter.cpu_first_s,
        }
        if ingest is not None:
            ingest.flush()
            stats = ingest.stats()
            result["ingest"] = {
                "frames": sum(c.frames for c in stats.cameras.values()),
                "conversion_errors": sum(c.conversion_errors for c in stats.cameras.values()),
                "sync_dropped": sum(stats.sync.dropped_overflow.values()),
                "sets_stored": stats.sets_stored,
                "full_sets": stats.sync.full_sets,
                "partial_sets": stats.sync.partial_sets,
                "buffer_frames": stats.buffer_frames,
            }
        print(json.dumps(result), flush=True)
        node.destroy_node()
    finally:
        context.try_shutdown()
    return 0


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    transport: str
    rate_label: str
    receiver: str
    sent: int
    received: int
    images: int
    span_s: float
    cpu_s: float
    publish_s: float | None
    image_bytes: int
    ingest: dict[str, int] = field(default_factory=dict)

    @property
    def msgs_per_s(self) -> float:
        return (self.received - 1) / self.span_s if self.span_s > 0 else 0.0

    @property
    def image_mb_per_s(self) -> float:
        return self.images * self.image_bytes / 1e6 / self.span_s if self.span_s > 0 else 0.0

    @property
    def cpu_ms_per_msg(self) -> float:
        return self.cpu_s * 1e3 / self.received if self.received else 0.0


def _env(transport: str, domain_id: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["ROS_DOMAIN_ID"] = domain_id
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))  # this checkout first
    if transport == "shm profile":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
    else:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return env


def run_one(bag: Path, expected: int, transport: str, rate: float, rate_label: str, receiver: str,
            args: argparse.Namespace, domain_id: str) -> RunResult:
    env = _env(transport, domain_id)
    with tempfile.TemporaryFile("w+") as receiver_log, tempfile.TemporaryFile("w+") as player_log:
        receiver_cmd = [sys.executable, str(Path(__file__).resolve()), "--receiver", receiver, "--cameras",
                        str(args.cameras), "--expect", str(expected), "--qos-depth", str(args.qos_depth),
                        "--buffer-mb", str(args.buffer_mb), "--timeout", str(args.timeout)]
        receiving = subprocess.Popen(receiver_cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=receiver_log, text=True)
        playing = None
        try:
            wait_for_line(receiving, "READY", READY_TIMEOUT_S)
            playing = subprocess.Popen(
                [sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--rate", str(rate), "--wait-subscribers",
                 "1", "--wait-timeout", str(args.timeout), "--qos-depth", str(args.qos_depth),
                 "--ack-timeout", "10"],
                env=env, stdout=player_log, stderr=subprocess.STDOUT, text=True,
            )
            playing.wait(timeout=args.timeout)
            try:  # the player is done: the receiver takes what is left, then stops
                assert receiving.stdin is not None
                receiving.stdin.write("STOP\n")
                receiving.stdin.flush()
            except BrokenPipeError:
                pass  # it already had every message and exited
            out, _ = receiving.communicate(timeout=30)
        finally:
            for process in (receiving, playing):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
        player_log.seek(0)
        player_output = player_log.read()
        receiver_log.seek(0)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if receiving.returncode != 0 or not lines:
            log = receiver_log.read()[-3000:]
            raise RuntimeError(f"{receiver} receiver failed (rc {receiving.returncode}):\n{log}")
    published = _PUBLISHED_RE.search(player_output)
    if playing.returncode != 0 or published is None:
        print(f"warning: player exited with {playing.returncode}: {player_output.strip()[-500:]}", file=sys.stderr)
    report = json.loads(lines[-1])
    received = report["received"]
    return RunResult(
        transport=transport, rate_label=rate_label, receiver=receiver, sent=expected,
        received=sum(received.values()), images=received.get("image", 0), span_s=report["span_s"],
        cpu_s=report["cpu_s"], publish_s=float(published.group(2)) if published else None,
        image_bytes=args.width * args.height * 3, ingest=report.get("ingest", {}),
    )


def hardware() -> str:
    model = cpu_model()
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")
    return (f"CPU: {model}, {os.cpu_count()} logical cores; python {platform.python_version()}, "
            f"{platform.platform()}; RMW {rmw}")


@dataclass
class Row:
    """The runs of one (transport, rate, receiver): medians over them, and the worst received/sent."""

    runs: list[RunResult]

    def median(self, metric: Callable[[RunResult], float]) -> float:
        return statistics.median(metric(run) for run in self.runs)

    @property
    def msgs_per_s(self) -> float:
        return self.median(lambda r: r.msgs_per_s)

    @property
    def cpu_ms_per_msg(self) -> float:
        return self.median(lambda r: r.cpu_ms_per_msg)

    @property
    def received_ratio(self) -> float:
        return min(run.received / run.sent for run in self.runs)


def report(results: dict[tuple[str, str, str], list[RunResult]], args: argparse.Namespace,
           expected: int, bag_s: float) -> None:
    rows = {key: Row(runs) for key, runs in results.items()}
    print(hardware())
    print(f"bag: {args.cameras} cameras x {args.frames} frames, {args.width}x{args.height} rgb8 + CameraInfo, "
          f"{args.fps:g} fps ({bag_s:.2f} s, {expected} messages, "
          f"{args.width * args.height * 3 / 1e6:.2f} MB per image); subscriptions RELIABLE depth "
          f"{args.qos_depth}; ingest buffer {args.buffer_mb} MB, no rate cap (every set stored); "
          f"median of {args.repeats} run(s) per row (received/sent: the worst run); "
          f"start-up and discovery excluded\n")
    header = (f"{'transport':<12} {'rate':<8} {'receiver':<8} {'recv/sent':>9} {'msg/s':>7} {'img MB/s':>8} "
              f"{'CPU s':>6} {'CPU ms/msg':>10} {'window s':>8} {'player s':>8}")
    print(header)
    print("-" * len(header))
    for (transport, rate_label, receiver), row in rows.items():
        published = [r.publish_s for r in row.runs if r.publish_s is not None]
        publish = f"{statistics.median(published):8.2f}" if published else f"{'?':>8}"
        print(f"{transport:<12} {rate_label:<8} {receiver:<8} {row.received_ratio:>9.3f} {row.msgs_per_s:>7.1f} "
              f"{row.median(lambda r: r.image_mb_per_s):>8.1f} {row.median(lambda r: r.cpu_s):>6.2f} "
              f"{row.cpu_ms_per_msg:>10.3f} {row.median(lambda r: r.span_s):>8.2f} {publish}")
    if args.repeats > 1:
        print("\nevery run (msg/s | CPU ms/msg):")
        for (transport, rate_label, receiver), row in rows.items():
            runs = ", ".join(f"{r.msgs_per_s:.0f} | {r.cpu_ms_per_msg:.3f}" for r in row.runs)
            print(f"  {transport:<12} {rate_label:<8} {receiver:<8} {runs}")

    def ratio(num: float, den: float) -> str:
        return f"{num / den:.2f}" if den else "n/a"

    print("\nratios in this run: ingest / bare (same transport and rate)")
    for transport in TRANSPORTS:
        for rate_label in dict.fromkeys(k[1] for k in rows):
            if (transport, rate_label, "bare") not in rows or (transport, rate_label, "ingest") not in rows:
                continue
            bare, ingest = rows[(transport, rate_label, "bare")], rows[(transport, rate_label, "ingest")]
            print(f"  {transport:<12} {rate_label:<8} throughput {ratio(ingest.msgs_per_s, bare.msgs_per_s)}   "
                  f"CPU per message {ratio(ingest.cpu_ms_per_msg, bare.cpu_ms_per_msg)}   "
                  f"received/sent {ingest.received_ratio:.3f} vs {bare.received_ratio:.3f}")
    print("ratios in this run: built-in transports / shm profile (same receiver and rate)")
    for rate_label in dict.fromkeys(k[1] for k in rows):
        for receiver in RECEIVERS:
            keys = (("built-in", rate_label, receiver), ("shm profile", rate_label, receiver))
            if not all(k in rows for k in keys):
                continue
            builtin, shm = (rows[k] for k in keys)
            print(f"  {rate_label:<8} {receiver:<8} throughput {ratio(builtin.msgs_per_s, shm.msgs_per_s)}   "
                  f"CPU per message {ratio(builtin.cpu_ms_per_msg, shm.cpu_ms_per_msg)}")
    print("ingest receiver, per run: frames / sets stored (full + partial) / frames dropped by the "
          "synchronizer's queues / conversion errors")
    for (transport, rate_label, receiver), row in rows.items():
        if receiver == "ingest":
            per_run = "; ".join(
                f"{s.get('frames')} / {s.get('sets_stored')} ({s.get('full_sets')} + {s.get('partial_sets')}) / "
                f"{s.get('sync_dropped')} / {s.get('conversion_errors')}"
                for s in (run.ingest for run in row.runs)
            )
            print(f"  {transport:<12} {rate_label:<8} {per_run}")


def run_benchmark(args: argparse.Namespace) -> int:
    from oryx_ros.bags.camera_bag import write_camera_bag
    from oryx_ros.bags.synthetic import make_test_frames

    domain_id = os.environ.get("ROS_DOMAIN_ID") or str(random.SystemRandom().randint(1, 101))
    rates = [(f"{rate:g}x" if rate > 0 else "flat out", rate if rate > 0 else FLAT_OUT_RATE) for rate in args.rates]
    builtin_rates = {rate if rate > 0 else FLAT_OUT_RATE for rate in args.builtin_rates}
    with tempfile.TemporaryDirectory(prefix="oryx_bench_ingest_") as tmp:
        frames = make_test_frames(args.cameras, args.frames, width=args.width, height=args.height, fps=args.fps)
        summary = write_camera_bag(Path(tmp) / "bag", frames)
        del frames
        expected = sum(summary.message_counts.values())
        results: dict[tuple[str, str, str], list[RunResult]] = {}
        started = time.monotonic()
        for transport in TRANSPORTS:
            for rate_label, rate in rates:
                if transport == "built-in" and rate not in builtin_rates:
                    continue
                for _ in range(args.repeats):
                    for receiver in RECEIVERS:  # interleaved, so slow drift in the machine's load hits both
                        run = run_one(summary.path, expected, transport, rate, rate_label, receiver, args,
                                      domain_id)
                        results.setdefault((transport, rate_label, receiver), []).append(run)
                        print(f"  {transport}, {rate_label}, {receiver}: {run.received}/{run.sent} in "
                              f"{run.span_s:.2f} s, CPU {run.cpu_s:.2f} s", file=sys.stderr)
        print(f"(measured in {time.monotonic() - started:.0f} s)", file=sys.stderr)
    report(results, args, expected, summary.duration_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--frames", type=int, default=75, help="frames per camera (75 = 2.5 s at 30 fps)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per row (medians are reported)")
    parser.add_argument("--qos-depth", type=int, default=100)
    parser.add_argument("--buffer-mb", type=int, default=1024, help="FrameBuffer budget of the ingest receiver")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 4.0, 0.0],
                        help="playback speed factors (0 = as fast as the player can go)")
    parser.add_argument("--builtin-rates", type=float, nargs="*", default=[1.0],
                        help="the rates also measured with Fast DDS's built-in transports")
    parser.add_argument("--timeout", type=float, default=60.0, help="per receiver run, seconds")
    # Internal: run as one receiver process.
    parser.add_argument("--receiver", choices=RECEIVERS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver is not None:
        return run_receiver(args)
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
