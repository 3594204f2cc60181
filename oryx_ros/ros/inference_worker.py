"""A single inference thread behind a bounded queue (plain Python; the node wraps it).

The model runs one request at a time, so ROS callbacks never run it themselves: they submit a job and
wait on its future from their own callback group, while sensor callbacks keep filling the buffer. A full
queue is refused at once (``WorkerBusyError``) rather than making the caller hang, and a job that has
waited past its deadline, or whose future was cancelled while it waited (``Future.cancel()``), is not
started at all.
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
        return job.future, token

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._running and self._queue.empty()

    def stats(self) -> WorkerStats:
        with self._lock:
            return WorkerStats(self._queue.qsize(), self._running, self._completed, self._failed,
                               self._rejected, self._expired, self._last_latency_s)

    def cancel_all(self) -> None:
        """Cancel the queued jobs (never started) and ask the running one to stop (its token)."""
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
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
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
