"""The node's main executor: rclpy's MultiThreadedExecutor with the GIL handed over after each dispatch.

Why: rclpy's MultiThreadedExecutor submits a ready task to its thread pool and goes straight back to
waiting, still holding the GIL; a task that has not started yet is yielded and submitted again, and the
wait returns at once while one is pending, so the loop spins and re-scans a growing list of futures
(ros2/rclpy#1452). Upstream fixed it by yielding the processor after each dispatch (rclpy PR #1547,
rclpy 10.0.4 for Rolling); the Humble, Jazzy and Kilted releases we run on do not have it. Measured here
(bench/bench_executor.py, 100 Hz nav_msgs/Odometry): 0.61 received/sent at 8.3 ms of CPU a message
without it, every message at well under 1 ms with it. ``os.sched_yield`` releases the GIL, so a pool
thread can start the task before the loop waits again.
"""

from __future__ import annotations

import os
import time

from rclpy.executors import MultiThreadedExecutor

__all__ = ["GilYieldingExecutor"]


class GilYieldingExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor that lets its pool threads run after each dispatch (see the module docstring)."""

    def spin_once(self, timeout_sec: float | None = None) -> None:
        super().spin_once(timeout_sec)
        if hasattr(os, "sched_yield"):
            os.sched_yield()
        else:
            time.sleep(0)
