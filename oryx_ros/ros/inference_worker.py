"""A single inference thread behind a bounded queue (plain Python; the node wraps it).

The model runs one request at a time, so ROS callbacks never run it themselves: they submit a job and
wait on its future from their own callback group, while sensor callbacks keep filling the buffer. A full
queue is refused at once (``WorkerBusyError``) rather than making the caller hang, and a job that has
waited past its deadline, or whose future was cancelled while it waited (``Future.cancel()``), is not
started at all.

One job at a time may also wait in the background slot (:meth:`InferenceWorker.submit_background`): it
runs only while no submitted job waits, and every :meth:`~InferenceWorker.submit` cancels a running
background job's token at once, so a question never waits for background work longer than the job
takes to notice its token (the model reads it before every layer). The node encodes newly stored
frames into the token cache this way (:mod:`oryx_ros.ros.node`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class WorkerBusyError(RuntimeError):
    """The queue in front of the model is full."""


class DeadlineExceededError(RuntimeError):
    """The request's deadline passed before (or while) it ran."""


@dataclass
class CancelToken:
    """Tells a running job to stop: set explicitly (goal cancelled) or by its deadline passing."""

    deadline_monotonic: float | None = None
    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def deadline_passed(self) -> bool:
        return self.deadline_monotonic is not None and time.monotonic() > self.deadline_monotonic

    def __call__(self) -> bool:
        return self._event.is_set() or self.deadline_passed


@dataclass
class _Job(Generic[T]):
    run: Callable[[CancelToken], T]
    token: CancelToken
    future: Future[T]
    submitted: float


@dataclass
class WorkerStats:
    queued: int
    running: bool
    completed: int
    failed: int
    rejected_busy: int
    expired: int
    last_latency_s: float
    # The background slot (not counted above: ``running``/``completed``/``failed`` are submitted jobs only).
    background_running: bool = False
    background_completed: int = 0  # background jobs that returned (whether or not cut short)
    background_failed: int = 0
    background_preempted: int = 0  # running background jobs whose token a submit() cancelled


class InferenceWorker:
    """Runs submitted jobs one at a time, in order, on a daemon thread."""

    def __init__(self, max_queue: int = 2, name: str = "oryx-inference") -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._running = False
        self._completed = self._failed = self._rejected = self._expired = 0
        self._last_latency_s = 0.0
        self._current: _Job | None = None
        # The background slot: one job waiting to run when the queue is empty, or running (flag).
        self._background: _Job | None = None
        self._background_running = False
        self._background_completed = self._background_failed = self._background_preempted = 0
        self._wake = threading.Event()  # set on every submit and stop: the loop looks at the queue and slot again
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, run: Callable[[CancelToken], T], deadline_s: float = 0.0) -> tuple[Future[T], CancelToken]:
        """Queue ``run(cancel_token)``; ``deadline_s`` > 0 bounds queueing plus running time.

        Raises ``WorkerBusyError`` at once when the queue is full.
        """
        token = CancelToken(time.monotonic() + deadline_s if deadline_s > 0 else None)
        job: _Job[T] = _Job(run, token, Future(), time.monotonic())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._rejected += 1
            raise WorkerBusyError(
                f"busy: {self._queue.maxsize} request(s) already waiting for the model; try again later"
            ) from None
        self._preempt_background()
        self._wake.set()
        return job.future, token

    def submit_background(self, run: Callable[[CancelToken], T]) -> tuple[Future[T], CancelToken] | None:
        """Run ``run(cancel_token)`` when no submitted job waits; lowest priority, cancelled by any
        :meth:`submit` while it runs (it should then return soon; its future gets what it returns).

        At most one background job waits or runs: None (nothing queued) while one does.
        """
        job: _Job[T] = _Job(run, CancelToken(), Future(), time.monotonic())
        with self._lock:
            if self._background is not None or self._background_running:
                return None
            self._background = job
        self._wake.set()
        return job.future, job.token

    def _preempt_background(self) -> None:
        with self._lock:
            current = self._current if self._background_running else None
            if current is None or current.token():
                return
            self._background_preempted += 1
        current.token.cancel()

    @property
    def idle(self) -> bool:
        """No submitted job runs or waits (a background job may run: any submit preempts it)."""
        with self._lock:
            return not self._running and self._queue.empty()

    def stats(self) -> WorkerStats:
        with self._lock:
            return WorkerStats(self._queue.qsize(), self._running, self._completed, self._failed,
                               self._rejected, self._expired, self._last_latency_s, self._background_running,
                               self._background_completed, self._background_failed, self._background_preempted)

    def cancel_background(self) -> None:
        """Drop the waiting background job (never started) and ask the running one to stop."""
        with self._lock:
            waiting, self._background = self._background, None
            running = self._current if self._background_running else None
        if waiting is not None:
            waiting.future.cancel()
        if running is not None:
            running.token.cancel()

    def cancel_all(self) -> None:
        """Cancel the queued jobs (never started) and ask the running one to stop (its token); the
        background job as well."""
        self.cancel_background()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
        with self._lock:
            running = self._current
        if running is not None:
            running.token.cancel()

    def stop(self, timeout_s: float = 1.0) -> bool:
        """Cancel the queued and running jobs and end the thread; False if it still runs after ``timeout_s``
        (a job that ignores its token; the thread is a daemon, so it never holds the process)."""
        self.cancel_all()
        self._queue.put(None)
        self._wake.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _next(self) -> tuple[_Job | None, bool]:
        """(job, is background) to run next; (None, False) means stop. Submitted jobs come first."""
        while True:
            self._wake.clear()  # before looking: a submit after the look sets it again, so no wake is lost
            with self._lock:  # submit() preempts under this lock: a background job taken here is seen there
                try:
                    return self._queue.get_nowait(), False
                except queue.Empty:
                    pass
                if self._background is not None:
                    job, self._background = self._background, None
                    self._current, self._background_running = job, True
                    return job, True
            self._wake.wait()

    def _run_background(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            with self._lock:
                self._current, self._background_running = None, False
            return
        error: BaseException | None = None
        try:
            result = job.run(job.token)
        except BaseException as raised:  # the worker must survive any job
            log.exception("background job failed")
            error = raised
        # The slot is free before the future's callbacks run: they may submit the next background job.
        with self._lock:
            self._current, self._background_running = None, False
            if error is None:
                self._background_completed += 1
            else:
                self._background_failed += 1
        if error is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(error)

    def _loop(self) -> None:
        while True:
            job, background = self._next()
            if job is None:
                return
            if background:
                self._run_background(job)
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            if job.token.deadline_passed:
                with self._lock:
                    self._expired += 1
                job.future.set_exception(DeadlineExceededError("the request's deadline passed while it waited"))
                continue
            with self._lock:
                self._running, self._current = True, job
            started = time.monotonic()
            try:
                result = job.run(job.token)
            except BaseException as error:  # the worker must survive any job
                log.exception("inference job failed")
                with self._lock:
                    self._failed += 1
                job.future.set_exception(error)
            else:
                with self._lock:
                    self._completed += 1
                job.future.set_result(result)
            finally:
                with self._lock:
                    self._running, self._current = False, None
                    self._last_latency_s = time.monotonic() - started
