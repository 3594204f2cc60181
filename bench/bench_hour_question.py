"""Answer latency of a 1-hour question (the memory on disk) vs a 30 s one (the RAM buffer), on a live node.

The hour bag (``oryx_ros.bags.hour_bag``: 2 RGB-D cameras, one set every 20 s of robot time) is replayed in sim
time at 60x into a node with a fresh SQLite memory, as the demo does. Then, alternating, ``--repeats`` times:

* reference: "What is on the table?" over ``window_s: 30`` (RAM frames only);
* 1 hour: "When did you last see the red object?" (a recall question: the whole memory is searched, and the
  frames near the best moments plus frames spread over the hour are read from disk, decoded and encoded at 16x).

Both ask ``max_frames: 8`` so the model sees the same number of frames: the ratio is the cost of reaching into
the memory (search, reading and decoding keyframes, no token cache for them), not of seeing more. Latency is the
node's own ``latency_s`` (request to last token). Markdown on stdout, progress on stderr.

    python bench/bench_hour_question.py [--repeats 5] [--model /path/to/Oryx-7B]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from rclpy.node import Node

from oryx_ros.bags.hour_bag import hour_topics
from oryx_ros.demo import _environment, ensure_hour_bag, hour_parameters
from oryx_ros.ros.client import call_service
from oryx_ros.srv import Ask

QUESTIONS = {
    "30 s (RAM)": Ask.Request(question="What is on the table?", window_s=30.0, max_frames=8),
    "1 h (memory)": Ask.Request(question="When did you last see the red object?", max_frames=8),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="", help="checkpoint directory (default: the tiny random one)")
    args = parser.parse_args()
    env = _environment()
    env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(110, 200))
    os.environ.update(env)
    out = ensure_hour_bag()
    memory_dir = Path(tempfile.mkdtemp(prefix="oryx-bench-memory-"))
    work = Path(tempfile.mkdtemp(prefix="oryx-bench-hour-"))
    shutil.copy(out / "cameras.yaml", work / "cameras.yaml")
    params = hour_parameters(work, {"directory": str(memory_dir)})
    command = [sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args", "--params-file", str(params)]
    if args.model:
        command += ["-p", f"model.path:={args.model}"]
    node = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latencies: dict[str, list[float]] = {name: [] for name in QUESTIONS}
    frames: dict[str, tuple[int, int]] = {}
    try:
        with rclpy.init():
            client = Node("bench_hour_question")
            assert client.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=300), "node did not start"
            topics = hour_topics(out)
            print("replaying the hour at 60x ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "oryx_ros.ros.replay", str(out / "bag"), "--wait-subscribers",
                            "1", "--clock", "--rate", "60", "--topics", *topics], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            time.sleep(2.0)
            for run in range(args.repeats + 1):  # the first round warms up and is not counted
                for name, request in QUESTIONS.items():
                    response = call_service(client, request)
                    assert response.success, (name, response.error)
                    if run:
                        latencies[name].append(response.latency_s)
                        frames[name] = (response.frames_used, response.evidence.frames_from_memory)
                print(f"round {run}: " + ", ".join(f"{n} {v[-1]:.3f} s" for n, v in latencies.items() if v),
                      file=sys.stderr)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
        shutil.rmtree(memory_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    reference = statistics.median(latencies["30 s (RAM)"])
    print("| question | frames (from memory) | median latency | ratio |\n|---|---|---|---|")
    for name, values in latencies.items():
        used, from_memory = frames[name]
        median = statistics.median(values)
        print(f"| {name} | {used} ({from_memory}) | {median:.3f} s | {median / reference:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
