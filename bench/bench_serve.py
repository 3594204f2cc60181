"""The fleet server (``oryx-ros serve``) under load, with :class:`RemoteEngine` clients, on a real local Ray.

Three figures, each a ratio to a reference measured in the same run:

* **scaling**: requests/s and p50/p95 latency of ``--clients`` concurrent robots against 1 replica, then 2
  replicas (1 CPU each: on a 2-core machine the second replica gets the second core, nothing more);
  every request carries frames never seen before, so each one runs the ViT and the LLM;
* **bytes**: what one question over a ``--window``-frame camera window sends (chosen frames only, resized to
  the model's input, PNG) vs the raw RGB frames of the window;
* **cache**: latency of a question about a window the server has already encoded (content-keyed token cache)
  vs the same question the first time. Medians of ``--repeats`` windows.

    python bench/bench_serve.py            # tiny random checkpoint, CPU
    python bench/bench_serve.py --quick    # fewer requests
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
from machine import cpu_model

from oryx_ros.model.engine import VisualInput
from oryx_ros.serving.config import ServeConfig
from oryx_ros.serving.deployment import APP_NAME, build_application
from oryx_ros.serving.remote_engine import RemoteEngine


def progress(message: str) -> None:
    print(f"[bench_serve] {message}", file=sys.stderr, flush=True)


def camera_window(n: int, seed: int, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """Smooth frames with a moving block and sensor-like noise (compress like camera images, unlike pure noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(n):
        base = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, (seed * 37 + t * 11) % 256)], axis=-1)
        frame = (base + rng.integers(0, 6, base.shape)).astype(np.uint8)
        frame[80 + 8 * t % 200:160 + 8 * t % 200, 200:300] = (210, 40, 30)
        frames.append(frame)
    return frames


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def deploy(url: str, replicas: int) -> None:
    import httpx
    from ray import serve

    config = ServeConfig().with_overrides({"replicas.num_replicas": replicas, "replicas.num_cpus": 1.0})
    serve.run(build_application(config), name=APP_NAME, route_prefix="/", blocking=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and str(status.status).endswith("RUNNING"):
            running = next(iter(status.deployments.values())).replica_states.get("RUNNING", 0)
            if running == replicas:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                        return
        time.sleep(0.5)
    raise TimeoutError(f"{replicas} replica(s) did not come up")


def load(url: str, clients: int, requests_each: int, max_new_tokens: int, seed: int) -> tuple[float, list[float]]:
    """(requests/s, latencies) of ``clients`` threads, each asking ``requests_each`` questions on fresh frames."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def robot(index: int) -> None:
        with RemoteEngine(url, timeout_s=300) as remote:
            for r in range(requests_each):
                frames = camera_window(2, seed=seed + 1000 * index + r, width=320, height=240)
                start = time.perf_counter()
                try:
                    remote.answer("What is in front of the robot?", [VisualInput(frames, label="Camera front")],
                                  max_new_tokens=max_new_tokens)
                except BaseException as err:  # reported after the run
                    errors.append(err)
                    return
                with lock:
                    latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return len(latencies) / elapsed, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (CI smoke run)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent robots in the scaling run")
    parser.add_argument("--window", type=int, default=16, help="frames per camera window (bytes and cache runs)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    requests_each = 2 if args.quick else 6
    repeats = 2 if args.quick else 5

    import ray

    temp_dir = tempfile.mkdtemp(prefix="rbench", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, str, str]] = []
    try:
        from ray import serve

        progress("starting Ray (2 CPUs)")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir,
                 configure_logging=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        # --- scaling: 1 vs 2 replicas, same clients, fresh frames every request.
        results = {}
        for replicas in (1, 2):
            progress(f"deploying {replicas} replica(s)")
            deploy(url, replicas)
            load(url, 1, 1, args.max_new_tokens, seed=99)  # warm-up, not counted
            progress(f"{args.clients} clients x {requests_each} requests against {replicas} replica(s)")
            results[replicas] = load(url, args.clients, requests_each, args.max_new_tokens, seed=replicas * 7919)
        (rps1, lat1), (rps2, lat2) = results[1], results[2]
        rows += [
            (f"requests/s, {args.clients} clients, 1 replica", f"{rps1:.2f}", "1.00 (reference)"),
            (f"requests/s, {args.clients} clients, 2 replicas", f"{rps2:.2f}", f"{rps2 / rps1:.2f}x"),
            ("latency p50 / p95, 1 replica", f"{statistics.median(lat1):.2f} / {percentile(lat1, 0.95):.2f} s",
             "1.00 (reference)"),
            ("latency p50 / p95, 2 replicas", f"{statistics.median(lat2):.2f} / {percentile(lat2, 0.95):.2f} s",
             f"{statistics.median(lat2) / statistics.median(lat1):.2f}x / "
             f"{percentile(lat2, 0.95) / percentile(lat1, 0.95):.2f}x"),
        ]

        # --- bytes and cache on one replica.
        progress("deploying 1 replica for the bytes and cache runs")
        deploy(url, 1)
        firsts, repeats_s, sent, raw = [], [], [], []
        with RemoteEngine(url, timeout_s=300) as remote:
            for r in range(repeats):
                window = [VisualInput(camera_window(args.window, seed=5000 + r), label="Camera front",
                                      stamps_ns=[i * 500_000_000 for i in range(args.window)])]
                for label, bucket in (("first", firsts), ("repeat", repeats_s)):
                    start = time.perf_counter()
                    answer = remote.answer("What changed in the last seconds?", window, mode="video",
                                           max_new_tokens=args.max_new_tokens)
                    bucket.append(time.perf_counter() - start)
                    progress(f"window {r} {label}: {bucket[-1]:.2f} s, {answer.frames_used} frames, "
                             f"{answer.frames_from_cache} from cache")
                sent.append(remote.last_request_bytes)
                raw.append(remote.last_raw_frame_bytes)
                frames_used = answer.frames_used
        first, repeat = statistics.median(firsts), statistics.median(repeats_s)
        rows += [
            (f"bytes per question, {args.window}-frame 640x480 window (raw RGB)", f"{statistics.median(raw):,.0f}",
             "1.00 (reference)"),
            (f"bytes per question as sent ({frames_used} frames, 512x384 PNG)", f"{statistics.median(sent):,.0f}",
             f"{statistics.median(sent) / statistics.median(raw):.3f}x"),
            ("latency, window asked the first time", f"{first:.2f} s", "1.00 (reference)"),
            ("latency, same window again (token cache)", f"{repeat:.2f} s", f"{repeat / first:.2f}x"),
        ]
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)

    print(f"CPU: {cpu_model()}, 2 cores given to Ray (replicas: 1 CPU each; the proxy, controller and clients share "
          "the same 2 cores). Tiny random checkpoint, fp32, batch 1 per replica.")
    print(f"Scaling run: {args.clients} clients x {requests_each} requests, 2 fresh 320x240 frames each, "
          f"{args.max_new_tokens} new tokens. Window runs: median of {repeats}.\n")
    print("| measure | value | ratio |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
