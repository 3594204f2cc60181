"""The inference worker: order, bounded queue, deadlines, cancellation, survival of failing jobs."""

from __future__ import annotations

import threading
import time

import pytest

from oryx_ros.ros.inference_worker import CancelToken, DeadlineExceededError, InferenceWorker, WorkerBusyError


def spin_until_cancelled(token: CancelToken) -> str:
    while not token():
        time.sleep(0.001)
    return "stopped"


def test_jobs_run_in_order_on_one_thread() -> None:
    worker = InferenceWorker(max_queue=4)
    seen: list[tuple[int, str]] = []
    futures = [worker.submit(lambda _t, i=i: seen.append((i, threading.current_thread().name)) or i)[0]
               for i in range(4)]
    assert [f.result(timeout=5) for f in futures] == [0, 1, 2, 3]
    assert [i for i, _ in seen] == [0, 1, 2, 3] and {name for _, name in seen} == {"oryx-inference"}
    assert worker.stats().completed == 4
    worker.stop()


def test_full_queue_is_refused_at_once_and_counted() -> None:
    worker = InferenceWorker(max_queue=1)
    release = threading.Event()
    running, _ = worker.submit(lambda _t: release.wait(5))
    while not worker.stats().running:
        time.sleep(0.001)
    waiting, _ = worker.submit(lambda _t: "second")
    with pytest.raises(WorkerBusyError, match="busy"):
        worker.submit(lambda _t: "third")
    assert worker.stats().running and not release.is_set()  # refused while the first job still ran: no wait
    release.set()
    assert running.result(timeout=5) is True and waiting.result(timeout=5) == "second"
    assert worker.stats().rejected_busy == 1
    worker.stop()


def test_deadline_expires_queued_job_and_cancels_running_one() -> None:
    worker = InferenceWorker(max_queue=2)

    first, _ = worker.submit(spin_until_cancelled, deadline_s=0.2)
    second, _ = worker.submit(lambda _t: "never", deadline_s=0.05)
    assert first.result(timeout=5) == "stopped"
    with pytest.raises(DeadlineExceededError):
        second.result(timeout=5)
    assert worker.stats().expired == 1
    worker.stop()


def test_explicit_cancel_and_failing_job_leave_the_worker_serving() -> None:
    worker = InferenceWorker(max_queue=2)

    future, token = worker.submit(spin_until_cancelled)
    token.cancel()
    assert future.result(timeout=5) == "stopped"
    bad, _ = worker.submit(lambda _t: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bad.result(timeout=5)
    good, _ = worker.submit(lambda _t: "still serving")
    assert good.result(timeout=5) == "still serving"
    assert worker.stats().failed == 1
    worker.stop()


def test_a_cancelled_queued_job_never_starts() -> None:
    worker = InferenceWorker(max_queue=2)
    started: list[str] = []

    running, running_token = worker.submit(spin_until_cancelled)
    queued, _ = worker.submit(lambda _t: started.append("queued"))
    assert queued.cancel() and queued.cancelled()  # still pending: cancelled without waiting for `running`
    assert not running.done()
    running_token.cancel()
    assert running.result(timeout=5) == "stopped"
    after, _ = worker.submit(lambda _t: "after")
    assert after.result(timeout=5) == "after" and started == []
    worker.stop()


def test_stop_cancels_the_running_and_the_queued_jobs() -> None:
    worker = InferenceWorker(max_queue=2)
    started: list[str] = []

    running, _ = worker.submit(spin_until_cancelled)
    queued, _ = worker.submit(lambda _t: started.append("queued"))
    while not worker.stats().running:
        time.sleep(0.01)
    assert worker.stop()  # the thread ended
    assert running.result(timeout=0) == "stopped" and queued.cancelled() and started == []
