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


# ------------------------------------------------------------------------------------------ background
def test_a_background_job_runs_only_when_the_queue_is_empty_and_one_at_a_time() -> None:
    worker = InferenceWorker(max_queue=2)
    order: list[str] = []
    release = threading.Event()
    first, _ = worker.submit(lambda _t: release.wait(5) and order.append("question"))
    while not worker.stats().running:
        time.sleep(0.001)
    submitted = worker.submit_background(lambda _t: order.append("background") or "encoded")
    assert submitted is not None
    assert worker.submit_background(lambda _t: order.append("second background")) is None  # one at a time
    second, _ = worker.submit(lambda _t: order.append("queued question"))
    release.set()
    assert submitted[0].result(timeout=5) == "encoded" and first.done() and second.done()
    assert order == ["question", "queued question", "background"]  # submitted jobs first, then the slot
    stats = worker.stats()
    assert (stats.completed, stats.background_completed, stats.background_preempted) == (2, 1, 0)
    assert worker.submit_background(lambda _t: "next") is not None  # the slot is free again
    worker.stop()


def test_a_submit_preempts_the_running_background_job_at_once() -> None:
    worker = InferenceWorker(max_queue=2)
    order: list[str] = []
    started = threading.Event()

    def background(token: CancelToken) -> str:
        started.set()
        spin_until_cancelled(token)
        order.append("background stopped")
        return "preempted"

    submitted = worker.submit_background(background)
    assert submitted is not None
    future, token = submitted
    assert started.wait(5) and worker.idle  # a running background job leaves the worker idle for others
    assert worker.stats().background_running
    question, _ = worker.submit(lambda _t: order.append("question") or "answered")
    assert token()  # cancelled inside submit(), before it returned: the question never waits for more work
    assert question.result(timeout=5) == "answered" and future.result(timeout=5) == "preempted"
    assert order == ["background stopped", "question"]
    stats = worker.stats()
    assert (stats.background_preempted, stats.background_completed, stats.completed) == (1, 1, 1)
    assert not stats.background_running
    worker.stop()


def test_cancel_all_and_stop_reach_the_background_job_and_a_failing_one_leaves_the_worker_serving() -> None:
    worker = InferenceWorker(max_queue=1)
    started = threading.Event()
    submitted = worker.submit_background(lambda t: started.set() or spin_until_cancelled(t))
    assert submitted is not None and started.wait(5)
    worker.cancel_all()
    assert submitted[0].result(timeout=5) == "stopped"
    assert worker.stats().background_preempted == 0  # cancelled by cancel_all, not by a submitted job
    failing = worker.submit_background(lambda _t: 1 / 0)
    assert failing is not None
    with pytest.raises(ZeroDivisionError):
        failing[0].result(timeout=5)
    assert worker.stats().background_failed == 1 and worker.submit(lambda _t: "ok")[0].result(timeout=5) == "ok"
    running, _ = worker.submit(spin_until_cancelled)
    while not worker.stats().running:
        time.sleep(0.001)
    waiting = worker.submit_background(lambda _t: "never")
    assert waiting is not None
    assert worker.stop()  # cancels the running job and drops the waiting background one
    assert running.result(timeout=0) == "stopped" and waiting[0].cancelled()
