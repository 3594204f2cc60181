"""GilYieldingExecutor (the node's main executor): still a MultiThreadedExecutor (reentrant callbacks run at
the same time), and it hands the GIL over after every dispatch (the upstream fix of ros2/rclpy#1452)."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.node import Node  # noqa: E402

from oryx_ros.ros import executors  # noqa: E402
from oryx_ros.ros.executors import GilYieldingExecutor  # noqa: E402


def _spin_in_background(executor: GilYieldingExecutor) -> threading.Thread:
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    return spinner


def test_reentrant_callbacks_run_at_the_same_time(ros_context) -> None:
    node = Node("executor_reentrant", context=ros_context)
    barrier = threading.Barrier(2, timeout=10)
    met: list[str] = []
    group = ReentrantCallbackGroup()
    timers = []

    def meet(name: str) -> None:
        timers[0 if name == "a" else 1].cancel()
        barrier.wait()  # only passes when both callbacks are running at once
        met.append(name)

    timers.append(node.create_timer(0.01, lambda: meet("a"), callback_group=group))
    timers.append(node.create_timer(0.01, lambda: meet("b"), callback_group=group))
    executor = GilYieldingExecutor(num_threads=4, context=ros_context)
    executor.add_node(node)
    spinner = _spin_in_background(executor)
    try:
        deadline = time.monotonic() + 10
        while len(met) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(met) == ["a", "b"]
    finally:
        executor.shutdown(timeout_sec=1.0)
        spinner.join(2.0)
        node.destroy_node()


def test_every_dispatch_hands_the_gil_over(ros_context, monkeypatch) -> None:
    yields = [0]
    real_yield = executors.os.sched_yield

    def counted_yield() -> None:
        yields[0] += 1
        real_yield()

    monkeypatch.setattr(executors.os, "sched_yield", counted_yield)
    node = Node("executor_yield", context=ros_context)
    fired = [0]
    node.create_timer(0.01, lambda: fired.__setitem__(0, fired[0] + 1))
    executor = GilYieldingExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    for _ in range(20):
        executor.spin_once(timeout_sec=1.0)
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    assert fired[0] >= 1
    assert yields[0] == 20
