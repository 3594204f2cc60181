"""A pose stream (nav_msgs/Odometry) spun by rclpy's MultiThreadedExecutor, by the node's main executor
(GilYieldingExecutor, rclpy#1452 fixed) and by the SideNode the node uses for sensor subscriptions (a
SingleThreadedExecutor on a thread of its own), in the same run.

One process, two rclpy contexts: a publisher context publishes Odometry at ``--rates`` Hz for ``--seconds``;
the receiver context has an owner node spun by a MultiThreadedExecutor (``yielding``: GilYieldingExecutor)
with the node's thread count (ask.queue_size + 5 = 13). The subscription (history 50, as the node's pose
subscription) is on the owner (``multi``, ``yielding``) or on a SideNode (``side``); ``none`` has no
subscription and measures the publisher alone, which is subtracted from the process CPU of the others.
Modes alternate within each repeat.

    python bench/bench_executor.py            # about 1 minute
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Final

from machine import cpu_model

MODES: Final = ("none", "multi", "yielding", "side")
LABELS: Final = {"multi": "MultiThreadedExecutor", "yielding": "GilYieldingExecutor", "side": "SideNode (sensors)"}
EXECUTOR_THREADS: Final = 13  # oryx_ros.ros.node._serve: ask.queue_size (8) + 1 + 4
HISTORY: Final = 50


@dataclass
class Run:
    mode: str
    rate_hz: float
    sent: int
    received: int
    cpu_s: float


def run_once(mode: str, rate_hz: float, seconds: float) -> Run:
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node

    from oryx_ros.ros.executors import GilYieldingExecutor
    from oryx_ros.ros.side_node import SideNode

    receiving, publishing = rclpy.Context(), rclpy.Context()
    rclpy.init(context=receiving)
    rclpy.init(context=publishing)
    received = [0]

    def count(_msg: Odometry) -> None:
        received[0] += 1

    try:
        owner = Node("bench_owner", context=receiving)
        side = SideNode(owner, "sensors") if mode == "side" else None
        if mode != "none":
            (side.node if side is not None else owner).create_subscription(Odometry, "/bench_odom", count, HISTORY)
        executor_type = GilYieldingExecutor if mode == "yielding" else MultiThreadedExecutor
        executor = executor_type(num_threads=EXECUTOR_THREADS, context=receiving)
        executor.add_node(owner)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        driver = Node("bench_driver", context=publishing)
        publisher = driver.create_publisher(Odometry, "/bench_odom", HISTORY)
        deadline = time.monotonic() + 10
        while mode != "none" and publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        msg, ticks = Odometry(), round(rate_hz * seconds)
        cpu_start, start = time.process_time(), time.monotonic()
        for tick in range(ticks):
            pause = start + tick / rate_hz - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            publisher.publish(msg)
        time.sleep(0.5)  # what is still queued is taken within this
        cpu_s = time.process_time() - cpu_start
        executor.shutdown(timeout_sec=1.0)
        if side is not None:
            side.close()
        return Run(mode, rate_hz, ticks, received[0], cpu_s)
    finally:
        receiving.try_shutdown()
        publishing.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0, 100.0], help="pose rates, Hz")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # A domain of its own: never take a running robot's /bench_odom or pose topics into the count.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    runs: list[Run] = []
    for rate in args.rates:
        for _ in range(args.repeats):
            for mode in MODES:
                runs.append(run_once(mode, rate, args.seconds))
                print(f"  {rate:g} Hz {mode}: {runs[-1].received}/{runs[-1].sent}, CPU {runs[-1].cpu_s:.2f} s",
                      file=sys.stderr)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; python {platform.python_version()}; "
          f"nav_msgs/Odometry, history {HISTORY}, {args.seconds:g} s per run, {args.repeats} run(s) per row; "
          f"owner spun by MultiThreadedExecutor({EXECUTOR_THREADS}); CPU: process CPU minus the publisher alone "
          "(mode none), median\n")
    print(f"{'rate':>5} {'spun by':<24} {'received/sent (worst)':>22} {'CPU ms/msg':>11} {'cores':>6}")
    medians: dict[tuple[float, str], float] = {}
    for rate in args.rates:
        alone = statistics.median(r.cpu_s for r in runs if r.rate_hz == rate and r.mode == "none")
        for mode, label in LABELS.items():
            mine = [r for r in runs if r.rate_hz == rate and r.mode == mode]
            worst = min(r.received / r.sent for r in mine)
            cpu = max(0.0, statistics.median(r.cpu_s for r in mine) - alone)
            per_msg = 1e3 * cpu / statistics.median(max(1, r.received) for r in mine)
            medians[(rate, mode)] = per_msg
            print(f"{rate:>5g} {label:<24} {worst:>22.3f} {per_msg:>11.3f} {cpu / args.seconds:>6.2f}")
    print("\nratios to rclpy's MultiThreadedExecutor, CPU per message (same rate)")
    for rate in args.rates:
        multi = medians[(rate, "multi")]
        for mode in ("yielding", "side"):
            ratio = f"{medians[(rate, mode)] / multi:.2f}" if multi else "n/a"
            print(f"  {rate:g} Hz {LABELS[mode]}: {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
