"""Run every benchmark under bench/ with modest settings and print the results as markdown for the README.

Each benchmark runs in its own process (``make bench`` sets up the environment first), its output goes
into one section with the command that produced it, under a header that names the machine (CPU model
from /proc/cpuinfo, cores, torch threads), the date and the commit. Progress and warnings go to stderr,
so ``python bench/run_all.py > bench.md`` keeps only the markdown.

    python bench/run_all.py                      # about 15 minutes on 2 cores
    python bench/run_all.py --only sensor ingest
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from machine import cpu_model

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = BENCH_DIR.parent


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    script: str
    args: tuple[str, ...]
    what: str


BENCHMARKS: Final = (
    Benchmark("engine", "Engine stage timings, cold vs warm token cache", "bench_engine.py", ("--repeats", "3"),
              "Tiny random checkpoint on CPU: pipeline overheads, not model speed. Headline: warm / cold TTFT."),
    Benchmark("scaling", "Engine scaling with frames and cameras, under the planner", "bench_scaling.py",
              ("--frames", "8", "32", "128", "--max-cameras", "3", "--frames-per-camera", "8"),
              "Tiny random checkpoint on CPU: pipeline cost, not model speed. Shortened sweep; the README plots come "
              "from the full one (`--plot-dir docs/images`, 8 → 256 frames, 1 → 4 cameras)."),
    Benchmark("encode_ahead", "Encoding on arrival: time to first token of a 32-frame question",
              "bench_encode_ahead.py", ("--repeats", "3"),
              "Tiny random checkpoint on CPU. Headline: TTFT with the frames encoded ahead / prefill + first decode "
              "step alone (goal <= 1.3), and / TTFT cold."),
    Benchmark("ingest", "Camera ingest over Fast DDS (separate processes)", "bench_ingest.py", (),
              "Headline: ingest / bare rclpy subscriber (CPU per message, throughput) and built-in transports "
              "/ config/fastdds_shm.xml."),
    Benchmark("ingest_rgbd", "4 RGB-D cameras over Fast DDS: node ingest vs bare subscribers", "bench_ingest_rgbd.py",
              (), "Headline: received/sent per camera at 10 and 15 Hz (goal: 1 for every camera), the node's ingest "
              "against bare subscribers spun by the MultiThreadedExecutor and by a side node."),
    Benchmark("executor", "A 50/100 Hz pose stream: rclpy's MultiThreadedExecutor vs the node's executors",
              "bench_executor.py", (),
              "Headline: received/sent and CPU per message, GilYieldingExecutor and SideNode / rclpy's "
              "MultiThreadedExecutor (rclpy#1452)."),
    Benchmark("sensor", "Sensor-side per-call costs (in process, no DDS)", "bench_sensor.py", (),
              "Each case as a ratio to a memcpy measured next to it."),
    Benchmark("preprocess", "Oryx preprocessing of 1280x720 frames, exact and fast resize", "bench_preprocess.py",
              (),
              "Speed-ups over the official pipeline (PIL bicubic + CLIP normalisation) measured in alternating "
              "batches; then the fast backend's difference from Pillow in 8-bit levels."),
    Benchmark("spatial", "Spatial pipeline: build_scene stages and accuracy", "bench_spatial.py",
              ("--seeds", "3", "--repeats", "2", "--width", "320", "--height", "240"),
              "Synthetic RGB-D scenes with ground truth; stage times and accuracy."),
    Benchmark("hostile", "Hostile input: what a rejected payload costs", "bench_hostile.py", ("--repeats", "3"),
              "Image bombs, corrupt and float payloads against a normal JPEG decode; the synchronizer's crafted "
              "worst case against an ordinary add."),
    Benchmark("stop_cancel", "Stop and cancel latency of the node (separate processes, Fast DDS)",
              "bench_stop_cancel.py", ("--repeats", "2"),
              "Signal to exit at each stage, cancel to result while queued, in vision and in decoding; goals 2 s and "
              "0.5 s. The soak (bench_soak.py, 10+ minutes) is run on its own."),
    Benchmark("memory", "Long-horizon memory: recall latency, disk per camera-hour, keyframe write cost",
              "bench_memory.py", ("--quick",),
              "SQLite and PostgreSQL recall at growing entry counts (the full run reaches 10^6), JPEG keyframe size, "
              "encode + insert against a 10 Hz camera's callback budget."),
    Benchmark("hour_question", "Answer latency: a question over an hour of memory vs one over 30 s of RAM",
              "bench_hour_question.py", ("--repeats", "3"),
              "The hour bag replayed in sim time into a live node; ratio to the 30 s question."),
    Benchmark("serve", "Fleet serving on Ray Serve: replicas, bytes sent, the server's token cache",
              "bench_serve.py", ("--quick",),
              "Requests/s and p50/p95 with 1 vs 2 replicas, bytes per question vs raw frames, a repeated window."),
)


def git_revision() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' with local changes' if dirty else ''}"


def machine_header() -> str:
    import torch  # only for its thread count and version

    try:
        load = ", load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = ""
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        memory = f", {total_kb / 1024**2:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return "\n".join([
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores{memory}{gpu}; torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; python {platform.python_version()}; {platform.platform()}",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}{load} at the start",
        f"- Commit: {git_revision()}",
        f"- RMW: {os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp (default)')}, ROS_DOMAIN_ID "
        f"{os.environ.get('ROS_DOMAIN_ID', '(random per run)')}",
    ])


def run(benchmark: Benchmark, timeout_s: float) -> tuple[int, str, float]:
    command = [sys.executable, str(BENCH_DIR / benchmark.script), *benchmark.args]
    print(f"running {benchmark.script} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, timeout=timeout_s)
        code, output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as err:
        code, output = -1, f"{err.stdout or ''}\n(timed out after {timeout_s:.0f} s)"
    return code, output.rstrip(), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[b.key for b in BENCHMARKS], default=None)
    parser.add_argument("--timeout", type=float, default=300.0, help="per benchmark, seconds")
    args = parser.parse_args(argv)
    selected = [b for b in BENCHMARKS if args.only is None or b.key in args.only]

    print("## Benchmarks\n")
    print(machine_header())
    print("\nAbsolute times depend on the machine and on its load; compare the ratios, which are measured "
          "against a reference in the same run. Reproduce with `make bench`.")
    failures = 0
    for benchmark in selected:
        code, output, wall_s = run(benchmark, args.timeout)
        args_text = " ".join(benchmark.args)
        print(f"\n### {benchmark.title}\n")
        print(f"`python bench/{benchmark.script}{' ' + args_text if args_text else ''}` ({wall_s:.0f} s). "
              f"{benchmark.what}\n")
        print("```text")
        print(output or "(no output)")
        print("```")
        if code != 0:
            failures += 1
            print(f"\n**{benchmark.script} failed with exit status {code}.**")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
