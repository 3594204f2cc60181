"""Lossless ingest of several RGB-D cameras over Fast DDS: the node's CameraIngest against bare rclpy
subscribers, received/sent per camera, in separate processes.

A publisher process stands in for the camera drivers: ``--cameras`` cameras, each publishing colour
(640x480 rgb8, 0.92 MB), registered depth (640x480 16UC1, 0.61 MB) and CameraInfo at ``--rates`` Hz for
``--seconds``, all cameras in phase (a hardware-synchronised rig: every tick is one burst of
cameras x 1.5 MB, the hardest case for the shared-memory transport), and counts what it published on
each topic. A receiver process takes them with the node's settings (config/oryx.yaml defaults):
BEST_EFFORT with the node's qos.sensor_depth (30) of history, an executor with the node's thread count, and

- ``bare``: one subscription per topic whose callback only counts, spun by rclpy's MultiThreadedExecutor
  (the reference: what a plain rclpy node gets);
- ``bare_yield``: the same on the node's main executor (GilYieldingExecutor: rclpy#1452 fixed);
- ``bare_own``: the same on a SideNode (a SingleThreadedExecutor on its own thread, as the node's sensors);
- ``bare_raw``: as ``bare`` with raw (serialized) subscriptions;
- ``ingest``: as the node: oryx_ros.ros.camera_ingest.CameraIngest with hand-off workers on a SideNode,
  into a FrameBuffer with the node's defaults (2 Hz rate cap, 120 s window, 1 GB, approximate-time sync
  with 50 ms slop), counted by the ingest's own per-camera message counters (what /diagnostics reports),
  the owner node spun by the node's main executor;
- ``inline``: the first version: the ingest's processing in its callbacks, on rclpy's MultiThreadedExecutor;
- ``node``: the node itself (``python -m oryx_ros.cli node``, tiny model, the defaults of config/oryx.yaml:
  encoding on arrival, periodic descriptions and the keyframe memory all running), counted by the camera
  counters it publishes on /diagnostics (Fast DDS's sample-lost count is not taken there). Not in the
  default set: its start-up takes about a minute.

The receivers alternate within each rate and repeat, so load drift on a shared machine hits both.
received/sent below 1 means the DDS layer or the receiver lost messages: best-effort history overflows
while the executor is busy, or the shared-memory segment is full. ``lost`` is Fast DDS's sample-lost
count (the message_lost QoS event) for the same subscriptions, so the loss can be placed: DDS-level
loss shows there, history overwrites (a receiver too slow to take its messages) do not.

    python bench/bench_ingest_rgbd.py                     # 4 cameras at 10 and 15 Hz, about 1 minute
    python bench/bench_ingest_rgbd.py --repeats 3 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from batches import wait_for_line
from machine import cpu_model

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
SHM_PROFILE: Final = REPO_ROOT / "config" / "fastdds_shm.xml"
RECEIVERS: Final = ("bare", "bare_yield", "bare_own", "bare_raw", "ingest", "inline", "node")
KINDS: Final = ("image", "depth", "camera_info")
READY_TIMEOUT_S: Final = 60.0
DRAIN_S: Final = 1.0  # after the publisher ends, what is still queued is taken within this


def _topics(name: str) -> dict[str, str]:
    from oryx_ros.bags.camera_bag import camera_topics

    topics = camera_topics(name)
    return {"image": topics.image, "depth": topics.depth, "camera_info": topics.camera_info}


# --------------------------------------------------------------------------------------------------
# Publisher (its own process: ``--role publisher``)
# --------------------------------------------------------------------------------------------------


def run_publisher(args: argparse.Namespace) -> int:
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    names = [f"cam{i}" for i in range(args.cameras)]
    context = rclpy.Context()
    rclpy.init(context=context)
    # A driver's usual QoS (RELIABLE, KEEP_LAST 10); against a BEST_EFFORT subscriber the link is best effort.
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    try:
        node = Node("bench_rgbd_cameras", context=context)
        rng = np.random.default_rng(0)
        colour_bytes = rng.integers(0, 256, args.height * args.width * 3, dtype=np.uint8).tobytes()
        depth_bytes = rng.integers(300, 5000, args.height * args.width, dtype=np.uint16).tobytes()
        streams: list[tuple[Any, Any, str]] = []  # (publisher, message, kind) in publishing order
        for name in names:
            topics = _topics(name)
            colour = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3,
                           data=colour_bytes)
            depth = Image(height=args.height, width=args.width, encoding="16UC1", step=args.width * 2,
                          data=depth_bytes)
            info = CameraInfo(height=args.height, width=args.width, distortion_model="plumb_bob",
                              d=[0.0] * 5, k=[500.0, 0.0, args.width / 2, 0.0, 500.0, args.height / 2, 0.0, 0.0, 1.0],
                              r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                              p=[500.0, 0.0, args.width / 2, 0.0, 0.0, 500.0, args.height / 2, 0.0, 0.0, 0.0, 1.0, 0.0])
            for msg in (colour, depth, info):
                msg.header.frame_id = f"{name}_optical"
            streams += [(node.create_publisher(Image, topics["image"], qos), colour, f"{name} image"),
                        (node.create_publisher(Image, topics["depth"], qos), depth, f"{name} depth"),
                        (node.create_publisher(CameraInfo, topics["camera_info"], qos), info, f"{name} camera_info")]
        deadline = time.monotonic() + args.timeout
        while any(publisher.get_subscription_count() == 0 for publisher, _, _ in streams):
            if time.monotonic() > deadline:
                raise TimeoutError("no subscriber matched")
            time.sleep(0.05)
        time.sleep(0.5)  # let the readers finish matching on every transport
        sent: Counter[str] = Counter()
        period_s = 1.0 / args.rate
        ticks = round(args.seconds * args.rate)
        start = time.monotonic()
        late = 0
        for tick in range(ticks):
            due = start + tick * period_s
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            elif pause < -period_s:
                late += 1
            stamp_ns = time.time_ns()
            for publisher, msg, key in streams:
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
                publisher.publish(msg)
                sent[key] += 1
        print(json.dumps({"sent": dict(sent), "publish_s": time.monotonic() - start, "late_ticks": late}), flush=True)
        node.destroy_node()
    finally:
        context.try_shutdown()
    return 0


# --------------------------------------------------------------------------------------------------
# Receiver (its own process: ``--role receiver --receiver bare|ingest``)
# --------------------------------------------------------------------------------------------------


def run_receiver(args: argparse.Namespace) -> int:
    if args.receiver == "node":
        return run_node_receiver(args)
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from oryx_ros.ros.parameters import PARAMETERS

    def default(name: str) -> Any:
        return PARAMETERS[name][0]

    names = [f"cam{i}" for i in range(args.cameras)]
    qos = QoSProfile(depth=args.qos_depth, reliability=ReliabilityPolicy.BEST_EFFORT) if args.qos_depth else \
        qos_profile_sensor_data
    context = rclpy.Context()
    rclpy.init(context=context)
    received: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    lock = threading.Lock()
    ingest = None
    try:
        node = Node(f"bench_rgbd_{args.receiver}", context=context)
        if args.receiver in ("bare", "bare_yield", "bare_own", "bare_raw"):
            from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

            from oryx_ros.ros.side_node import SideNode

            side = SideNode(node, "sensors") if args.receiver == "bare_own" else None
            subscriber = side.node if side is not None else node

            def counter(key: str) -> Any:
                def count(_msg: Any) -> None:
                    with lock:
                        received[key] += 1
                return count

            for name in names:
                group = MutuallyExclusiveCallbackGroup()
                for kind, topic in _topics(name).items():
                    if args.bare_groups == "subscription":
                        group = MutuallyExclusiveCallbackGroup()
                    subscriber.create_subscription(CameraInfo if kind == "camera_info" else Image, topic,
                                             counter(f"{name} {kind}"), qos,
                                             callback_group=group, raw=args.receiver == "bare_raw")
        else:  # ingest: as the node (workers); inline: processing in the callbacks (before the workers)
            from oryx_ros.perception.frame_buffer import FrameBuffer
            from oryx_ros.perception.sync import ApproximateTimeSynchronizer
            from oryx_ros.ros.camera_ingest import CameraConfig, CameraIngest

            buffer = FrameBuffer(memory_budget_bytes=int(default("buffer.max_megabytes") * 1024**2),
                                 window_ns=int(default("buffer.window_s") * 1e9),
                                 rate_cap_hz=args.rate_cap if args.rate_cap > 0 else None)
            sync = ApproximateTimeSynchronizer(names, default("sync.queue_size"), int(default("sync.slop_s") * 1e9),
                                               dead_camera_timeout_ns=int(default("sync.dead_camera_timeout_s") * 1e9))
            from oryx_ros.ros.side_node import SideNode

            side = SideNode(node, "sensors") if args.receiver == "ingest" else None  # as the node
            ingest = CameraIngest(node, [CameraConfig.standard(name, depth=True) for name in names], buffer,
                                  synchronizer=sync, qos=qos, workers=args.receiver == "ingest", side_node=side)
            node.create_timer(1.0, ingest.diagnostic_status)  # the node publishes /diagnostics at 1 Hz
            subscriber = ingest.subscriber
        # Fast DDS's sample-lost count per subscription: loss below the executor.
        topic_key = {topic: f"{name} {kind}" for name in names for kind, topic in _topics(name).items()}
        for subscription in list(subscriber.subscriptions):
            key = topic_key[subscription.topic_name]

            def on_lost(info: Any, key: str = key) -> None:
                with lock:
                    lost[key] += info.total_count_change

            _attach_lost_handler(subscriber, subscription, SubscriptionEventCallbacks(message_lost=on_lost))
        # Time in each callback, per kind: what the executor waits on.
        callback_s: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for subscription in list(subscriber.subscriptions):
            kind = topic_key[subscription.topic_name].split(" ")[1]

            def timed(msg: Any, inner: Any = subscription.callback, times: list[float] = callback_s[kind]) -> None:
                begin = time.perf_counter()
                inner(msg)
                times.append(time.perf_counter() - begin)

            subscription.callback = timed
        threads = args.threads or (default("ask.queue_size") + 1 + 4)  # as oryx_ros.ros.node._serve
        # The node's main executor (rclpy#1452 fixed) for the node's own receiver and bare_yield; rclpy's for the rest.
        from oryx_ros.ros.executors import GilYieldingExecutor

        node_executor = args.receiver in ("ingest", "bare_yield")
        executor = (GilYieldingExecutor if node_executor else MultiThreadedExecutor)(num_threads=threads,
                                                                                    context=context)
        executor.add_node(node)
        if args.busy_threads:  # the node's other Python work (inference worker, encoding) holding the GIL
            def busy() -> None:
                while True:
                    sum(range(10_000))

            for _ in range(args.busy_threads):
                threading.Thread(target=busy, daemon=True).start()
        print("READY", flush=True)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        spinner.start()
        select.select([sys.stdin], [], [], args.timeout)  # until the orchestrator says the publisher is done
        sys.stdin.readline()
        time.sleep(DRAIN_S)
        cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
        result: dict[str, Any] = {"receiver": args.receiver, "cpu_s": cpu_s, "wall_s": wall_s, "threads": threads}
        if ingest is not None:
            ingest.wait_idle()
            stats = ingest.stats()
            for name, c in stats.cameras.items():
                received[f"{name} image"] = c.images
                received[f"{name} depth"] = c.depth_images
                received[f"{name} camera_info"] = c.camera_infos
                for kind, n in c.queue_overflow.items():  # received, and counted as given up
                    received[f"{name} {kind}"] += n
            result["ingest"] = {
                name: {"stored": c.stored, "frames": c.frames, "skipped_rate_cap": c.skipped_rate_cap,
                       "decoded_late": c.decoded_late, "errors": c.conversion_errors,
                       "queue_overflow": c.queue_overflow}
                for name, c in stats.cameras.items()}
            result["sets_stored"] = stats.sets_stored
        result["callback_ms"] = {
            kind: {"mean": 1e3 * statistics.fmean(t), "p99": 1e3 * sorted(t)[int(0.99 * (len(t) - 1))],
                   "max": 1e3 * max(t)}
            for kind, t in callback_s.items() if t}
        with lock:
            result["received"], result["lost"] = dict(received), dict(lost)
        print(json.dumps(result), flush=True)
        executor.shutdown(timeout_sec=1.0)
        spinner.join(1.0)
        if ingest is not None:
            ingest.destroy()
        node.destroy_node()
    finally:
        context.try_shutdown()
    return 0


def run_node_receiver(args: argparse.Namespace) -> int:
    """The node in a process of its own; its /diagnostics counters say what it received."""
    import signal

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
    from oryx_ros.params_file import write_params_file
    from oryx_ros.srv import Ask

    names = [f"cam{i}" for i in range(args.cameras)]
    directory = Path(tempfile.mkdtemp(prefix="bench-rgbd-node-"))
    cameras: dict[str, Any] = {"names": names}
    for name in names:
        topics = _topics(name)
        cameras[name] = {"image_topic": topics["image"], "camera_info_topic": topics["camera_info"],
                         "depth_topic": topics["depth"]}
    params = write_params_file(directory / "oryx.yaml", {
        "model": {"path": str(ensure_tiny_checkpoint())}, "cameras": cameras,
        "qos": {"sensor_depth": args.qos_depth or 5},
        "memory": {"directory": str(directory / "memory")}})
    log = (directory / "node.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args", "--params-file",
                                str(params)], stdout=log, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        client = Node("bench_rgbd_node_client", context=context)
        arrays: list[Any] = []
        client.create_subscription(DiagnosticArray, "/diagnostics", arrays.append, 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(client)
        if not client.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=READY_TIMEOUT_S * 3):
            raise RuntimeError("the node did not come up: " + (directory / "node.log").read_text()[-2000:])
        print("READY", flush=True)
        cpu_start, wall_start = _process_cpu_s(process.pid), time.perf_counter()
        select.select([sys.stdin], [], [], args.timeout)
        sys.stdin.readline()
        time.sleep(DRAIN_S)
        cpu_s, wall_s = _process_cpu_s(process.pid) - cpu_start, time.perf_counter() - wall_start
        drained_ns = time.time_ns()
        values: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while not values and time.monotonic() < deadline:  # the first report (1 Hz) made after the drain
            executor.spin_once(timeout_sec=0.1)
            for array in arrays:  # older reports still queued from before come first: skipped by their stamp
                if array.header.stamp.sec * 1_000_000_000 + array.header.stamp.nanosec < drained_ns:
                    continue
                for status in array.status:
                    if status.name.endswith(": synchronizer"):
                        values = {kv.key: kv.value for kv in status.values}
        if not values:
            raise RuntimeError("no /diagnostics from the node")
        received: dict[str, int] = {}
        ingest: dict[str, Any] = {}
        for name in names:
            overflow = {kind: int(values.get(f"{name} queue_overflow {kind}", 0)) for kind in KINDS}
            for kind, key in (("image", "images"), ("depth", "depth_images"), ("camera_info", "camera_infos")):
                received[f"{name} {kind}"] = int(values[f"{name} {key}"]) + overflow[kind]
            ingest[name] = {"stored": int(values[f"{name} stored"]), "frames": int(values[f"{name} frames"]),
                            "skipped_rate_cap": int(values[f"{name} skipped_rate_cap"]),
                            "decoded_late": int(values[f"{name} decoded_late"]),
                            "errors": int(values[f"{name} conversion_errors"]),
                            "queue_overflow": {k: n for k, n in overflow.items() if n}}
        print(json.dumps({"receiver": "node", "cpu_s": cpu_s, "wall_s": wall_s, "received": received, "lost": {},
                          "ingest": ingest, "callback_ms": {}, "peak_rss_mb": _peak_rss_mb(process.pid)}),
              flush=True)
        executor.shutdown(timeout_sec=0)
        client.destroy_node()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        context.try_shutdown()
    return 0


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of process ``pid`` (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _attach_lost_handler(node: Any, subscription: Any, callbacks: Any) -> None:
    """Register ``callbacks.message_lost`` on an existing subscription (rclpy only takes event callbacks
    at creation, so this creates the handler the way Subscription.__init__ does)."""
    from rclpy.event_handler import EventHandler, QoSSubscriptionEventType

    handler = EventHandler(callback_group=node.default_callback_group,
                           callback=callbacks.message_lost,
                           event_type=QoSSubscriptionEventType.RCL_SUBSCRIPTION_MESSAGE_LOST,
                           parent_impl=subscription.handle)
    subscription.event_handlers.append(handler)
    node.add_waitable(handler)


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    rate_hz: float
    receiver: str
    sent: dict[str, int]
    received: dict[str, int]
    lost: dict[str, int]
    cpu_s: float
    wall_s: float
    late_ticks: int
    ingest: dict[str, Any]
    callback_ms: dict[str, dict[str, float]]
    peak_rss_mb: float | None = None

    def ratio(self, camera: str, kinds: tuple[str, ...] = KINDS) -> float:
        sent = sum(self.sent.get(f"{camera} {k}", 0) for k in kinds)
        return sum(self.received.get(f"{camera} {k}", 0) for k in kinds) / sent if sent else 0.0

    @property
    def cpu_ms_per_msg(self) -> float:
        total = sum(self.received.values())
        return self.cpu_s * 1e3 / total if total else 0.0


def _env(domain_id: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["ROS_DOMAIN_ID"] = domain_id
    paths = [str(REPO_ROOT), str(REPO_ROOT / "bench"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(SHM_PROFILE))
    return env


def _last_json(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result in:\n{text[-2000:]}")
    return json.loads(lines[-1])


def run_one(rate_hz: float, receiver: str, args: argparse.Namespace, domain_id: str) -> RunResult:
    env = _env(domain_id)
    script = str(Path(__file__).resolve())
    common = ["--cameras", str(args.cameras), "--width", str(args.width), "--height", str(args.height),
              "--timeout", str(args.timeout)]
    with tempfile.TemporaryFile("w+") as receiver_log, tempfile.TemporaryFile("w+") as publisher_log:
        receiving = subprocess.Popen(
            [sys.executable, script, "--role", "receiver", "--receiver", receiver, "--rate-cap", str(args.rate_cap),
             "--threads", str(args.threads), "--bare-groups", args.bare_groups, "--qos-depth", str(args.qos_depth),
             "--busy-threads", str(args.busy_threads), *common],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=receiver_log, text=True)
        publishing = None
        try:
            wait_for_line(receiving, "READY", READY_TIMEOUT_S * (4 if receiver == "node" else 1))
            publishing = subprocess.Popen(
                [sys.executable, script, "--role", "publisher", "--rate", str(rate_hz), "--seconds",
                 str(args.seconds), *common],
                env=env, stdout=subprocess.PIPE, stderr=publisher_log, text=True)
            published, _ = publishing.communicate(timeout=args.timeout + args.seconds)
            assert receiving.stdin is not None
            receiving.stdin.write("STOP\n")
            receiving.stdin.flush()
            out, _ = receiving.communicate(timeout=30)
        finally:
            for process in (receiving, publishing):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
        if receiving.returncode != 0 or publishing.returncode != 0:
            receiver_log.seek(0)
            publisher_log.seek(0)
            raise RuntimeError(f"{receiver} run failed: receiver rc {receiving.returncode}, publisher rc "
                               f"{publishing.returncode}\n{receiver_log.read()[-2000:]}\n{publisher_log.read()[-2000:]}")
    pub, rec = _last_json(published), _last_json(out)
    return RunResult(rate_hz=rate_hz, receiver=receiver, sent=pub["sent"], received=rec["received"],
                     lost=rec["lost"], cpu_s=rec["cpu_s"], wall_s=rec["wall_s"], late_ticks=pub["late_ticks"],
                     ingest=rec.get("ingest", {}), callback_ms=rec.get("callback_ms", {}),
                     peak_rss_mb=rec.get("peak_rss_mb"))


def report(results: list[RunResult], args: argparse.Namespace) -> None:
    names = [f"cam{i}" for i in range(args.cameras)]
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; python {platform.python_version()}; RMW {rmw}; "
          f"Fast DDS profile {os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', str(SHM_PROFILE))}")
    mb_s = args.cameras * args.width * args.height * 5 / 1e6 * max(args.rates)
    qos = f"BEST_EFFORT, depth {args.qos_depth}" if args.qos_depth else "sensor-data QoS: BEST_EFFORT, depth 5"
    print(f"{args.cameras} RGB-D cameras ({args.width}x{args.height} rgb8 + 16UC1 + CameraInfo, in phase; "
          f"{mb_s:.0f} MB/s at {max(args.rates):g} Hz), {args.seconds:g} s per run; {qos}; rate cap "
          f"{args.rate_cap:g} Hz; MultiThreadedExecutor({args.threads or 'the node default'} threads); "
          f"{args.busy_threads} busy Python thread(s) in the receiver; "
          f"{args.repeats} run(s) per row, receivers alternating; received/sent: the worst run\n")
    header = (f"{'rate':>5} {'receiver':<8} " + " ".join(f"{n + ' r/s':>10}" for n in names)
              + f" {'colour':>7} {'depth':>7} {'info':>7} {'DDS lost':>8} {'CPU ms/msg':>10} {'CPU %':>6}")
    print(header)
    print("-" * len(header))
    by_row: dict[tuple[float, str], list[RunResult]] = {}
    for run in results:
        by_row.setdefault((run.rate_hz, run.receiver), []).append(run)
    for (rate, receiver), runs in by_row.items():
        cams = " ".join(f"{min(r.ratio(n) for r in runs):>10.3f}" for n in names)
        kinds = " ".join(f"{min(min(r.ratio(n, (k,)) for n in names) for r in runs):>7.3f}" for k in KINDS)
        lost = max(sum(r.lost.values()) for r in runs)
        cpu = statistics.median(r.cpu_ms_per_msg for r in runs)
        load = statistics.median(100 * r.cpu_s / r.wall_s for r in runs)
        print(f"{rate:>5g} {receiver:<8} {cams} {kinds} {lost:>8} {cpu:>10.3f} {load:>6.0f}")
    print("\nratios in this run: receiver / bare, median CPU per message (same rate)")
    for rate in dict.fromkeys(r.rate_hz for r in results):
        bare = by_row.get((rate, "bare"))
        for receiver in RECEIVERS[1:]:
            runs = by_row.get((rate, receiver))
            if bare and runs:
                b = statistics.median(r.cpu_ms_per_msg for r in bare)
                i = statistics.median(r.cpu_ms_per_msg for r in runs)
                print(f"  {rate:g} Hz {receiver}: {i / b:.2f}" if b else f"  {rate:g} Hz {receiver}: n/a")
    print("\nevery run: received/sent per camera (colour, depth, info) | DDS lost | publisher late ticks")
    for run in results:
        per = "  ".join(f"{n} {run.ratio(n, ('image',)):.2f},{run.ratio(n, ('depth',)):.2f},"
                        f"{run.ratio(n, ('camera_info',)):.2f}" for n in names)
        rss = f" | node peak RSS {run.peak_rss_mb:.0f} MB" if run.peak_rss_mb is not None else ""
        print(f"  {run.rate_hz:g} Hz {run.receiver:<7} {per} | {sum(run.lost.values())} | {run.late_ticks}{rss}")
    print("\ntime in the callbacks, ms (mean / p99 / max) per kind")
    for run in results:
        per = "  ".join(f"{kind} {t['mean']:.2f}/{t['p99']:.2f}/{t['max']:.1f}" for kind, t in run.callback_ms.items())
        print(f"  {run.rate_hz:g} Hz {run.receiver:<7} {per}")
    ingest_runs = [r for r in results if r.receiver != "bare"]
    if ingest_runs:
        print("\ningest, per run and camera: stored / skipped by the rate cap (undecoded) / decoded late / errors"
              " / given up by the hand-off queue")
        for run in ingest_runs:
            per = "  ".join(f"{n} {c['stored']}/{c['skipped_rate_cap']}/{c['decoded_late']}/{c['errors']}/"
                            f"{sum(c['queue_overflow'].values())}" for n, c in run.ingest.items())
            print(f"  {run.rate_hz:g} Hz {run.receiver:<7} {per}")


def run_benchmark(args: argparse.Namespace) -> int:
    domain_id = os.environ.get("ROS_DOMAIN_ID") or str(random.SystemRandom().randint(1, 101))
    results: list[RunResult] = []
    started = time.monotonic()
    for rate in args.rates:
        for _ in range(args.repeats):
            for receiver in args.receivers:
                run = run_one(rate, receiver, args, domain_id)
                results.append(run)
                worst = min(run.ratio(f"cam{i}") for i in range(args.cameras))
                print(f"  {rate:g} Hz {receiver}: worst camera received/sent {worst:.3f}, "
                      f"DDS lost {sum(run.lost.values())}, CPU {run.cpu_s:.1f} s", file=sys.stderr)
    print(f"(measured in {time.monotonic() - started:.0f} s)", file=sys.stderr)
    report(results, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 15.0], help="camera rates, Hz")
    parser.add_argument("--seconds", type=float, default=6.0, help="publishing time per run")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--receivers", nargs="+", choices=RECEIVERS, default=[r for r in RECEIVERS if r != "node"],
                        help="see the module docstring (node: the node process itself, not in the default set)")
    parser.add_argument("--rate-cap", type=float, default=2.0, help="ingest buffer rate cap, Hz (node default 2)")
    parser.add_argument("--threads", type=int, default=0, help="executor threads (0 = the node's default)")
    parser.add_argument("--busy-threads", type=int, default=0,
                        help="pure-Python busy threads in the receiver (GIL contention from the node's other work)")
    parser.add_argument("--bare-groups", choices=("camera", "subscription"), default="subscription",
                        help="bare receiver: a mutually exclusive callback group per camera or per subscription")
    parser.add_argument("--qos-depth", type=int, default=30,
                        help="BEST_EFFORT history depth of the receivers (the node's qos.sensor_depth, 30; "
                             "0 = rclpy's sensor-data QoS, depth 5, the node before)")
    parser.add_argument("--timeout", type=float, default=60.0)
    # Internal: run as one process of the pair.
    parser.add_argument("--role", choices=("publisher", "receiver"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--receiver", choices=RECEIVERS, default="bare", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "publisher":
        return run_publisher(args)
    if args.role == "receiver":
        code = run_receiver(args)
        sys.stdout.flush()
        os._exit(code)  # the result is out: skip finalization, where a DDS thread could still abort the process
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
