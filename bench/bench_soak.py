"""Soak: does the oryx node's process memory stay bounded under cameras, questions and descriptions?

Three processes talk over real Fast DDS:

- the node (``oryx-ros node``, tiny random checkpoint on CPU, default parameters except the cameras),
- a camera publisher (``bench_soak.py --publisher``): 3 synthetic 640x480 rgb8 cameras with CameraInfo at
  10, 20 and 30 Hz (sensor-data QoS, as a camera driver), each frame with fresh pixels in one corner,
- this process: a question every ``--question-period-s`` seconds (alternately over the ``/oryx/ask``
  service and the streaming action, each from its own thread, so they overlap when one is slow), the
  periodic descriptions left on (``description.enabled``), a /diagnostics listener, and a sampler that
  reads the node's /proc/PID/status (VmRSS, RssAnon, RssFile, RssShmem) every ``--sample-s`` seconds.

Reported: start (first sample once frames flow), peak and end RSS, the RSS slope after warm-up (least
squares over the post-warm-up samples, MB/min; goal < 5 MB/min over 10 minutes), the frame buffer's
and the token cache's own bytes from /diagnostics, and the bound:

    RSS <= idle node (model, Python, ROS; measured before any frame) + buffer.max_megabytes
           + model.token_cache_megabytes + overhead

where the overhead is measured as the largest RSS - idle - buffer bytes - cache bytes after warm-up (decode
and inference working memory, messages in flight, allocator slack). Where the resident memory lives (glibc's
main heap, its other arenas, mmapped blocks, the rest) is read from /proc/PID/smaps when idle, after
warm-up and at the end. ``--trace-python`` runs the node under tracemalloc and also reports the slope of
the Python heap less the frame buffer's bytes (tracemalloc traces numpy's buffers too), which separates
objects kept alive from allocator growth. ``--node-env ORYX_ROS_MALLOC_TUNING=0`` gives the untuned
reference (oryx_ros/ros/process_memory.py).

    python bench/bench_soak.py                        # 4 minutes' warm-up + 10 minutes + start-up
    python bench/bench_soak.py --minutes 3 --warmup-minutes 1.5 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from machine import cpu_model

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
CAMERAS: Final = {"cam0": 10.0, "cam1": 20.0, "cam2": 30.0}
WIDTH, HEIGHT = 640, 480
MB: Final = 1024 * 1024
NODE_READY_TIMEOUT_S: Final = 180.0
QUESTIONS: Final = ("What do the cameras see?", "Is anything moving?", "Describe the scene on the left camera.",
                    "How many objects are there?", "What changed in the last seconds?")


# --------------------------------------------------------------------------------------------------
# Camera publisher (its own process: ``bench_soak.py --publisher``)
# --------------------------------------------------------------------------------------------------


def run_publisher(args: argparse.Namespace) -> int:
    import numpy as np
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from oryx_ros.bags.synthetic import synthetic_intrinsics

    intrinsics = synthetic_intrinsics(WIDTH, HEIGHT)
    rng = np.random.default_rng(0)
    with rclpy.init(args=[sys.argv[0]]):
        node = Node("soak_camera_publisher")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        published = dict.fromkeys(CAMERAS, 0)

        def make_camera(index: int, name: str, rate_hz: float) -> None:
            image_pub = node.create_publisher(Image, f"/{name}/image_raw", qos_profile_sensor_data)
            info_pub = node.create_publisher(CameraInfo, f"/{name}/camera_info", qos_profile_sensor_data)
            pixels = np.full((HEIGHT, WIDTH, 3), 40 + 60 * index, dtype=np.uint8)
            image = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, is_bigendian=0)
            image.header.frame_id = f"{name}_optical"
            info = CameraInfo(height=HEIGHT, width=WIDTH, distortion_model="plumb_bob", d=[0.0] * 5,
                              k=[intrinsics.fx, 0.0, intrinsics.cx, 0.0, intrinsics.fy, intrinsics.cy, 0.0, 0.0, 1.0],
                              r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                              p=[intrinsics.fx, 0.0, intrinsics.cx, 0.0, 0.0, intrinsics.fy, intrinsics.cy, 0.0,
                                 0.0, 0.0, 1.0, 0.0])
            info.header.frame_id = image.header.frame_id

            def publish() -> None:
                # New pixels in one corner each frame, so no two frames are the same picture.
                pixels[:32, :32] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                image.data = pixels.tobytes()
                stamp = node.get_clock().now().to_msg()
                image.header.stamp = info.header.stamp = stamp
                info_pub.publish(info)
                image_pub.publish(image)
                published[name] += 1

            node.create_timer(1.0 / rate_hz, publish)

        for index, (name, rate_hz) in enumerate(CAMERAS.items()):
            make_camera(index, name, rate_hz)
        print("publishing", flush=True)
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()
        print(json.dumps(published), file=sys.stderr, flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# Node bootstrap with tracemalloc (its own process: ``bench_soak.py --node ...``)
# --------------------------------------------------------------------------------------------------


def run_node(args: argparse.Namespace, ros_args: list[str]) -> int:
    """The plain node, with a thread that appends the Python heap's traced size to ``--trace-file``."""
    import tracemalloc

    import torch  # noqa: F401  (imported before tracing starts: imports under tracemalloc take minutes)

    import oryx_ros.model.engine
    import oryx_ros.ros.camera_ingest  # noqa: F401
    from oryx_ros.ros.node import main as node_main

    tracemalloc.start(args.trace_depth)
    trace_file = Path(args.trace_file)

    def sample() -> None:
        baseline = None
        while True:
            time.sleep(args.sample_s)
            current, _peak = tracemalloc.get_traced_memory()
            record: dict[str, Any] = {"t": time.time(), "python_heap_bytes": current}
            snapshot = tracemalloc.take_snapshot()
            if baseline is None:
                baseline = snapshot
            else:
                growth = snapshot.compare_to(baseline, "traceback")[:5]
                record["top_growth"] = [{"size_diff": stat.size_diff, "count_diff": stat.count_diff,
                                         "where": stat.traceback.format()[-6:]} for stat in growth]
            with trace_file.open("a") as out:
                out.write(json.dumps(record) + "\n")

    threading.Thread(target=sample, name="soak-tracemalloc", daemon=True).start()
    return node_main(ros_args)


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    t_s: float  # since the node started
    rss_mb: float
    anon_mb: float
    file_mb: float
    shmem_mb: float
    buffer_mb: float = 0.0  # the frame buffer's and the token cache's own bytes, from the latest /diagnostics
    cache_mb: float = 0.0

    @property
    def unbudgeted_mb(self) -> float:
        return self.rss_mb - self.buffer_mb - self.cache_mb


@dataclass
class Counters:
    service_ok: int = 0
    action_ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    descriptions: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)  # latest buffer / cache / worker values
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def error(self, text: str) -> None:
        with self.lock:
            self.failed += 1
            key = text[:80]
            self.errors[key] = self.errors.get(key, 0) + 1


def read_memory(pid: int) -> dict[str, float]:
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                number = float(rest.split()[0])
                values[key] = number / 1024 if key != "Threads" else number
    return values


def allocator_breakdown(pid: int) -> dict[str, float]:
    """Resident MB of the node's anonymous memory by who mapped it (from /proc/PID/smaps): glibc's main
    heap (``[heap]``), its other arenas (64 MB-aligned mappings), other anonymous mappings >= 1 MB (mmapped
    blocks: frames, tensors, weights) and the rest (files, shared memory, stacks, small mappings)."""
    groups = dict.fromkeys(("main_heap", "arenas", "mmapped", "other"), 0.0)
    group = "other"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                path = head[5].strip() if len(head) > 5 else ""
                if path == "[heap]":
                    group = "main_heap"
                elif path:
                    group = "other"
                elif start % (64 * MB) == 0:
                    group = "arenas"
                else:
                    group = "mmapped" if end - start >= MB else "other"
            elif head[0] == "Rss:":
                groups[group] += int(head[1]) / 1024
    return {name: round(value, 1) for name, value in groups.items()}


def slope_mb_per_min(samples: list[Sample], attribute: str = "rss_mb") -> float:
    if len(samples) < 2:
        return float("nan")
    xs = [s.t_s / 60 for s in samples]
    ys = [getattr(s, attribute) for s in samples]
    return statistics.linear_regression(xs, ys).slope


def _write_params(path: Path, token_cache_mb: float, buffer_mb: float) -> Path:
    groups = "\n".join(f"      {c}: {{image_topic: /{c}/image_raw, camera_info_topic: /{c}/camera_info}}"
                       for c in CAMERAS)
    path.write_text(f"""/**:
  ros__parameters:
    cameras:
      names: [{", ".join(CAMERAS)}]
{groups}
    buffer: {{max_megabytes: {buffer_mb}}}
    model: {{token_cache_megabytes: {token_cache_mb}}}
""")
    return path


def _clients(counters: Counters, stop: threading.Event, ready: threading.Event, period_s: float,
             max_new_tokens: int, rng: random.Random) -> list[threading.Thread]:
    import rclpy
    from rclpy.node import Node

    from oryx_ros.action import Ask as AskAction
    from oryx_ros.ros.client import call_action, call_service
    from oryx_ros.srv import Ask

    def ask_loop(via: str, offset_s: float) -> None:
        node = Node(f"soak_{via}_client")
        while not ready.wait(0.5):  # every camera has frames buffered (else the first questions fail)
            if stop.is_set():
                node.destroy_node()
                return
        next_at = time.monotonic() + offset_s
        try:
            while not stop.is_set():
                if stop.wait(max(0.0, next_at - time.monotonic())):
                    break
                next_at += 2 * period_s  # two loops, interleaved: a question every period_s overall
                # Modest requests (a few seconds each on 2 cores), so the worker is idle now and then
                # and the periodic descriptions run too.
                fields: dict[str, Any] = {"question": rng.choice(QUESTIONS), "max_new_tokens": max_new_tokens,
                                          "window_s": rng.choice((2.0, 5.0, 10.0)),
                                          "max_frames": rng.choice((4, 8, 12))}
                if rng.random() < 0.3:
                    fields["cameras"] = rng.sample(list(CAMERAS), 2)
                try:
                    if via == "service":
                        result = call_service(node, Ask.Request(**fields), timeout_s=300)
                    else:
                        _status, result = call_action(node, AskAction.Goal(**fields), timeout_s=300)
                except Exception as error:  # a lost call is counted, the soak goes on
                    counters.error(f"{type(error).__name__}: {error}")
                    continue
                if result.success:
                    with counters.lock:
                        if via == "service":
                            counters.service_ok += 1
                        else:
                            counters.action_ok += 1
                else:
                    counters.error(result.error)
        finally:
            if rclpy.ok():
                node.destroy_node()

    return [threading.Thread(target=ask_loop, args=("service", 0.0), daemon=True),
            threading.Thread(target=ask_loop, args=("action", period_s), daemon=True)]


def _listen(counters: Counters, stop: threading.Event) -> threading.Thread:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile

    from oryx_ros.msg import SceneDescription

    node = Node("soak_listener")

    def on_diagnostics(array: DiagnosticArray) -> None:
        for status in array.status:
            if status.name.endswith(("frame buffer", "model")):
                with counters.lock:
                    counters.diagnostics.update({kv.key: kv.value for kv in status.values})

    def on_description(_message: SceneDescription) -> None:
        with counters.lock:
            counters.descriptions += 1

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    node.create_subscription(SceneDescription, "/oryx/scene_description", on_description,
                             QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL))

    def spin() -> None:
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown(timeout_sec=0)
        node.destroy_node()

    return threading.Thread(target=spin, daemon=True)


def _wait_for_node(process: subprocess.Popen) -> None:
    from rclpy.node import Node

    from oryx_ros.srv import Ask

    node = Node("soak_probe")
    client = node.create_client(Ask, "/oryx/ask")
    deadline = time.monotonic() + NODE_READY_TIMEOUT_S
    try:
        while not client.wait_for_service(timeout_sec=0.5):
            if process.poll() is not None:
                raise RuntimeError(f"the node exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("the node did not come up")
    finally:
        node.destroy_node()


def _stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    import rclpy

    workdir = Path(tempfile.mkdtemp(prefix="oryx_soak_"))
    params = _write_params(workdir / "oryx.yaml", args.token_cache_mb, args.buffer_budget_mb)
    trace_file = workdir / "tracemalloc.jsonl"
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "")
                                                                                    .split(os.pathsep))]))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "PYTHONPATH")})
    node_env = dict(env)
    for assignment in args.node_env:
        key, _, value = assignment.partition("=")
        node_env[key] = value
    ros_args = ["--ros-args", "--params-file", str(params), *[a for p in args.set for a in ("-p", p)]]
    if args.trace_python:
        command = [sys.executable, str(Path(__file__).resolve()), "--node", "--trace-file", str(trace_file),
                   "--sample-s", str(args.trace_every_s), *ros_args]
    else:
        command = [sys.executable, "-m", "oryx_ros.cli", "node", *ros_args]

    from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

    ensure_tiny_checkpoint()  # written here once, so the node's start-up time is only loading
    log_path = workdir / "node.log"
    log = log_path.open("w")
    print(f"[soak] starting the node (log {log_path})", file=sys.stderr, flush=True)
    started = time.monotonic()
    node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=node_env, cwd=REPO_ROOT)
    publisher = None
    stop = threading.Event()
    counters = Counters()
    samples: list[Sample] = []
    threads: list[threading.Thread] = []
    try:
        with rclpy.init():
            _wait_for_node(node)
            time.sleep(2.0)  # let start-up allocations settle
            idle = read_memory(node.pid)
            breakdown = {"idle": allocator_breakdown(node.pid)}
            print(f"[soak] node up after {time.monotonic() - started:.0f} s, idle RSS {idle['VmRSS']:.0f} MB; "
                  "starting cameras", file=sys.stderr, flush=True)
            publisher = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--publisher"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
            ready = threading.Event()
            threads = [_listen(counters, stop),
                       *_clients(counters, stop, ready, args.question_period_s, args.max_new_tokens,
                                 random.Random(args.seed))]
            for thread in threads:
                thread.start()
            soak_start = time.monotonic()
            soak_start_wall = time.time()
            end_at = soak_start + args.minutes * 60
            next_report = soak_start + 60
            while time.monotonic() < end_at:
                if node.poll() is not None:
                    raise RuntimeError(f"the node exited with status {node.returncode} during the soak")
                memory = read_memory(node.pid)
                with counters.lock:
                    buffer_mb = int(counters.diagnostics.get("bytes", 0)) / MB
                    cache_mb = int(counters.diagnostics.get("token_cache_bytes_used", 0)) / MB
                    cameras_ready = all(int(counters.diagnostics.get(f"frames_{c}", 0)) for c in CAMERAS)
                samples.append(Sample(time.monotonic() - soak_start, memory["VmRSS"], memory["RssAnon"],
                                      memory["RssFile"], memory["RssShmem"], buffer_mb, cache_mb))
                if cameras_ready or samples[-1].t_s > 60:
                    ready.set()
                if "after_warmup" not in breakdown and samples[-1].t_s >= args.warmup_minutes * 60:
                    breakdown["after_warmup"] = allocator_breakdown(node.pid)
                if time.monotonic() >= next_report:
                    next_report += 60
                    with counters.lock:
                        done = counters.service_ok + counters.action_ok
                    print(f"[soak] {samples[-1].t_s / 60:4.1f} min: RSS {memory['VmRSS']:.0f} MB (anon "
                          f"{memory['RssAnon']:.0f}), buffer {buffer_mb:.0f} MB, token cache {cache_mb:.0f} MB, "
                          f"{done} answers, {counters.failed} failed, {counters.descriptions} descriptions, "
                          f"{memory['Threads']:.0f} threads", file=sys.stderr, flush=True)
                time.sleep(args.sample_s)
            breakdown["end"] = allocator_breakdown(node.pid)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    finally:
        stop.set()
        if publisher is not None:
            _stop(publisher)
        _stop(node)
        log.close()

    result = summarise(args, idle, samples, counters, trace_file if args.trace_python else None, log_path,
                       soak_start_wall)
    result["resident_mb_by_mapping"] = breakdown
    return result


def summarise(args: argparse.Namespace, idle: dict[str, float], samples: list[Sample], counters: Counters,
              trace_file: Path | None, log_path: Path, soak_start_wall: float = 0.0) -> dict[str, Any]:
    warm = [s for s in samples if s.t_s >= args.warmup_minutes * 60]
    peak = max(samples, key=lambda s: s.rss_mb)
    # Budgeted structures as the node reported them at the peak and at the last sample (the node is
    # stopped by now, so its final /diagnostics may describe a buffer being torn down).
    end = samples[-1]
    cache_budget_mb = int(counters.diagnostics.get("token_cache_max_bytes", 0)) / MB or args.token_cache_mb
    buffer_budget_mb = args.buffer_budget_mb
    overhead_mb = max(s.unbudgeted_mb for s in warm or samples) - idle["VmRSS"]
    result: dict[str, Any] = {
        "minutes": args.minutes, "warmup_minutes": args.warmup_minutes, "samples": len(samples),
        "post_warmup_samples": len(warm),
        "rss_idle_mb": round(idle["VmRSS"], 1),
        "rss_start_mb": round(samples[0].rss_mb, 1), "rss_peak_mb": round(peak.rss_mb, 1),
        "rss_peak_at_min": round(peak.t_s / 60, 2), "rss_end_mb": round(samples[-1].rss_mb, 1),
        "rss_after_warmup_mb": round(warm[0].rss_mb, 1) if warm else None,
        "rss_slope_mb_per_min": round(slope_mb_per_min(warm), 2),
        "anon_slope_mb_per_min": round(slope_mb_per_min(warm, "anon_mb"), 2),
        "unbudgeted_slope_mb_per_min": round(slope_mb_per_min(warm, "unbudgeted_mb"), 2),
        "shmem_end_mb": round(samples[-1].shmem_mb, 1),
        "buffer_end_mb": round(end.buffer_mb, 1), "buffer_budget_mb": buffer_budget_mb,
        "token_cache_end_mb": round(end.cache_mb, 1), "token_cache_budget_mb": round(cache_budget_mb, 1),
        "overhead_mb": round(overhead_mb, 1),
        "bound_mb": round(idle["VmRSS"] + buffer_budget_mb + cache_budget_mb + max(overhead_mb, 0.0), 1),
        "answers": counters.service_ok + counters.action_ok, "service_answers": counters.service_ok,
        "action_answers": counters.action_ok, "failed": counters.failed, "errors": counters.errors,
        "descriptions": counters.descriptions,
        "goal_mb_per_min": args.goal, "token_cache_param_mb": args.token_cache_mb, "node_env": args.node_env,
        "set": args.set,
        "machine": f"{cpu_model()}, {os.cpu_count()} logical cores", "node_log": str(log_path),
        "series_t_rss_buffer_cache_mb": [[round(s.t_s), round(s.rss_mb), round(s.buffer_mb), round(s.cache_mb)]
                                         for s in samples],
    }
    result["pass"] = bool(result["rss_slope_mb_per_min"] < args.goal)
    if trace_file is not None and trace_file.exists():
        records = [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
        # tracemalloc also traces numpy's buffers, so the frame buffer's frames are in the Python heap: the
        # slope that matters is that of the heap less the buffer's bytes (at the nearest RSS sample).
        heap = []
        for record in records:
            t_s = record["t"] - soak_start_wall
            nearest = min(samples, key=lambda s: abs(s.t_s - t_s))
            heap.append(Sample(t_s, record["python_heap_bytes"] / MB, 0, 0, 0, buffer_mb=nearest.buffer_mb))
        heap_warm = [s for s in heap if s.t_s >= args.warmup_minutes * 60]
        result["python_heap_end_mb"] = round(heap[-1].rss_mb, 1) if heap else None
        result["python_heap_slope_mb_per_min"] = round(slope_mb_per_min(heap_warm), 2)
        result["python_heap_less_buffer_slope_mb_per_min"] = round(slope_mb_per_min(heap_warm, "unbudgeted_mb"), 2)
        result["python_top_growth"] = records[-1].get("top_growth", []) if records else []
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Soak: {result['minutes']:g} min, slope over the samples after {result['warmup_minutes']:g} min of warm-up "
        f"({result['post_warmup_samples']} samples); {result['machine']}.",
        f"Node: tiny checkpoint on CPU, 3 cameras 640x480 rgb8 at {', '.join(f'{r:g}' for r in CAMERAS.values())} Hz, "
        f"a question every few seconds (service and action), descriptions on"
        + (f"; env {' '.join(result['node_env'])}" if result["node_env"] else "")
        + (f"; -p {' -p '.join(result['set'])}" if result["set"] else "") + ".",
        "",
        "| RSS, MB | value |",
        "|---|---|",
        f"| idle (model loaded, no frames) | {result['rss_idle_mb']:.0f} |",
        f"| start / after warm-up / peak / end | {result['rss_start_mb']:.0f} / {result['rss_after_warmup_mb']:.0f} / "
        f"{result['rss_peak_mb']:.0f} / {result['rss_end_mb']:.0f} |",
        f"| **slope after warm-up, MB/min** | **{result['rss_slope_mb_per_min']:+.2f}** (goal < "
        f"{result['goal_mb_per_min']:g}: {'pass' if result['pass'] else 'FAIL'}; anonymous memory "
        f"{result['anon_slope_mb_per_min']:+.2f}) |",
        f"| slope of RSS - buffer - token cache, MB/min | {result['unbudgeted_slope_mb_per_min']:+.2f} |",
        f"| frame buffer at the end / budget | {result['buffer_end_mb']:.0f} / {result['buffer_budget_mb']:.0f} |",
        f"| token cache at the end / budget | {result['token_cache_end_mb']:.0f} / "
        f"{result['token_cache_budget_mb']:.0f} |",
        f"| overhead: max after warm-up of RSS - idle - buffer - cache | {result['overhead_mb']:.0f} |",
        f"| bound: idle + buffer budget + cache budget + overhead | {result['bound_mb']:.0f} |",
    ]
    if "python_heap_slope_mb_per_min" in result:
        lines.append(f"| Python heap incl. numpy (tracemalloc) end / slope; less the frame buffer, MB/min | "
                     f"{result['python_heap_end_mb']:.1f} / {result['python_heap_slope_mb_per_min']:+.2f}; "
                     f"{result['python_heap_less_buffer_slope_mb_per_min']:+.2f} |")
    mappings = result.get("resident_mb_by_mapping", {})
    if mappings:
        lines += ["", "| resident MB by mapping | " + " | ".join(mappings) + " |",
                  "|---|" + "---|" * len(mappings)]
        for kind in ("main_heap", "arenas", "mmapped", "other"):
            lines.append(f"| {kind} | " + " | ".join(f"{m[kind]:.0f}" for m in mappings.values()) + " |")
    lines += ["", f"{result['answers']} answers ({result['service_answers']} service, {result['action_answers']} "
              f"action), {result['failed']} failed, {result['descriptions']} descriptions received."]
    if result["errors"]:
        lines.append("Failures: " + "; ".join(f"{count} x {text}" for text, count in result["errors"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--minutes", type=float, default=14.0,
                        help="soak length after the cameras start (default: 10 minutes after the warm-up)")
    parser.add_argument("--warmup-minutes", type=float, default=4.0,
                        help="samples before this are left out of the slope (the buffer's 120 s window and the "
                             "32 MB token cache fill)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    parser.add_argument("--question-period-s", type=float, default=3.0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--buffer-budget-mb", type=float, default=512.0,
                        help="the node's buffer.max_megabytes: less than the ~0.9 GB its 120 s window holds here, "
                             "so the buffer is at its budget before the warm-up ends (as the token cache) and its "
                             "legitimate filling, which follows the stored frame rate, is not counted as growth")
    parser.add_argument("--token-cache-mb", type=float, default=32.0,
                        help="the node's model.token_cache_megabytes: small, so the cache is full before the "
                             "warm-up ends and its legitimate filling is not counted as growth")
    parser.add_argument("--goal", type=float, default=5.0, help="slope goal, MB/min")
    parser.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the node only (e.g. to compare allocator settings)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME:=VALUE", help="a node parameter")
    parser.add_argument("--trace-python", action="store_true", help="run the node under tracemalloc")
    parser.add_argument("--trace-every-s", type=float, default=30.0)
    parser.add_argument("--trace-depth", type=int, default=8)
    parser.add_argument("--trace-file", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.publisher:
        return run_publisher(args)
    if args.node:
        return run_node(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    result = run_soak(args)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
