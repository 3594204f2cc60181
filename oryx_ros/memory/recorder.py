"""Keyframes and entries into a MemoryStore, from camera threads, without ever blocking them.

``offer()`` runs on the camera thread: a per-camera rate check on the stamp and a ``put_nowait`` into a
bounded queue (microseconds; the frame's array is referenced, not copied: frames are immutable once made).
Everything with a cost — the pose lookup, resizing, JPEG/PNG encoding, the database transaction, eviction —
happens on the recorder's own thread, which commits what it gathered every ``commit_interval_s``. A failure
there (a full disk, a bad frame, a database error) is logged, counted and survived: the thread only stops
at ``close()``.

Rate limiting is by stamp, on a grid: a camera's frame is kept when it is the first in its slot of
``1 / keyframe_hz`` seconds. Every camera thus gets exactly ``keyframe_hz`` on average (a minimum gap would
drift below it with jitter) and the cameras' keyframes line up in time. A stamp that goes back (a bag
restarting, sim time reset) starts the camera afresh.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from oryx_ros.memory.records import MemoryEntry, MemoryFullError, NewKeyframe, Pose
from oryx_ros.memory.store import MemoryStore
from oryx_ros.perception.frames import Frame

logger = logging.getLogger(__name__)

_MAX_BATCH: Final = 64  # a commit never holds more frames than this, however fast they come
_ERROR_LOG_INTERVAL_S: Final = 10.0  # the same failure is logged at most this often (with a count)
_RECENT_ERROR_S: Final = 30.0  # a write failure this recent makes the diagnostics WARN


@dataclass(frozen=True)
class _Item:
    seq: int
    payload: Frame | MemoryEntry | None  # None: a flush marker


_STOP: Final = object()


def fit_to_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with ``width``/``height``'s aspect ratio and at most ``max_pixels`` pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    new_width, new_height = max(1, int(width * scale)), max(1, int(height * scale))
    while new_width * new_height > max_pixels:  # float rounding
        new_width, new_height = max(1, new_width - 1), max(1, round(new_height * (new_width - 1) / new_width))
    return new_width, new_height


def encode_image(rgb: npt.NDArray[np.uint8], max_pixels: int, encoding: str, quality: int) -> tuple[bytes, int, int]:
    """RGB (H, W, 3) → (encoded bytes, width, height), shrunk with INTER_AREA to fit ``max_pixels``."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"keyframe must be RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    new_width, new_height = fit_to_pixels(width, height, max_pixels)
    if (new_width, new_height) != (width, height):
        rgb = cv2.resize(rgb, (new_width, new_height), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if encoding == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:  # PNG is lossless; level 3 is OpenCV's (and zlib's) speed/size balance
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {new_width}x{new_height} {encoding}")
    return data.tobytes(), new_width, new_height


class KeyframeRecorder:
    """Writes rate-limited keyframes (and memory entries) into ``store`` on a thread of its own.

    The recorder does not own the store: close the recorder first, then the store.
    """

    def __init__(self, store: MemoryStore, *, keyframe_hz: float, max_pixels: int, encoding: str = "jpeg",
                 quality: int = 90, pose_at: Callable[[int], Pose | None] | None = None,
                 commit_interval_s: float = 0.5, queue_size: int = 256) -> None:
        if not keyframe_hz > 0 or not math.isfinite(keyframe_hz):
            raise ValueError(f"keyframe_hz must be > 0 (got {keyframe_hz})")
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1 (got {max_pixels})")
        if encoding not in ("jpeg", "png"):
            raise ValueError(f"encoding must be 'jpeg' or 'png' (got {encoding!r})")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must lie in 1..100 (got {quality})")
        if not commit_interval_s > 0 or queue_size < 1:
            raise ValueError(f"commit_interval_s must be > 0 and queue_size >= 1 (got {commit_interval_s}, "
                             f"{queue_size})")
        self._store = store
        self._period_ns = max(1, round(1e9 / keyframe_hz))
        self._max_pixels = max_pixels
        self._encoding = encoding
        self._quality = quality
        self._pose_at = pose_at
        self._commit_interval_s = commit_interval_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._offer_lock = threading.Lock()  # slot check + sequence + enqueue, atomic across camera threads
        self._last_slot: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._done_seq = 0
        self._done = threading.Condition()
        self._counters: dict[str, int | float] = dict.fromkeys(
            ("offered", "accepted", "written", "entries_written", "skipped_rate", "dropped_queue_full",
             "encode_errors", "pose_errors", "write_errors", "dropped_on_error", "disk_full_events", "evicted",
             "commits"), 0)
        self._counters.update(encode_s_total=0.0, write_s_total=0.0)
        self._last_error_log: dict[str, tuple[float, int]] = {}
        self._last_error: tuple[str, float] = ("", 0.0)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="oryx-memory-recorder", daemon=True)
        self._thread.start()

    # ---- caller side (camera threads, the node) ----------------------------------------------------
    # ---- run-time settings (the node's memory.keyframe_hz and memory.quality) ------------------------
    @property
    def keyframe_hz(self) -> float:
        return 1e9 / self._period_ns

    @keyframe_hz.setter
    def keyframe_hz(self, value: float) -> None:
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"keyframe_hz must be > 0 (got {value})")
        with self._offer_lock:  # slots of the old period mean nothing in the new one: start afresh
            self._period_ns = max(1, round(1e9 / value))
            self._last_slot.clear()

    @property
    def quality(self) -> int:
        return self._quality

    @quality.setter
    def quality(self, value: int) -> None:
        if not 1 <= value <= 100:
            raise ValueError(f"quality must lie in 1..100 (got {value})")
        self._quality = int(value)  # read by the recorder thread for each keyframe it encodes

    @property
    def last_error(self) -> str:
        """The last write failure if it is recent (the last 30 s), else "" (for diagnostics)."""
        message, at = self._last_error
        return message if message and time.monotonic() - at < _RECENT_ERROR_S else ""

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame`` as a keyframe if it is its camera's first in the current rate slot. Never blocks;
        True if queued."""
        slot = frame.stamp_ns // self._period_ns
        with self._offer_lock:
            self._counters["offered"] += 1
            last = self._last_slot.get(frame.camera)
            if self._closed or (last is not None and slot == last):
                self._counters["skipped_rate"] += 1
                return False
            if last is not None and slot < last:
                logger.info("memory recorder: %s stamps went back in time; rate limiting restarts", frame.camera)
            try:
                seq = next(self._seq)
                self._queue.put_nowait(_Item(seq, frame))
            except queue.Full:
                # The slot stays open, so the camera's next frame can take it once the queue drains.
                self._counters["dropped_queue_full"] += 1
                return False
            self._last_seq = seq
            self._last_slot[frame.camera] = slot
            self._counters["accepted"] += 1
            return True

    def add_entry(self, entry: MemoryEntry, timeout_s: float = 1.0) -> None:
        """Queue a memory entry for the recorder's thread (waits up to ``timeout_s`` for room: entries are
        rare and worth more than a keyframe)."""
        with self._offer_lock:
            seq = next(self._seq)
            self._last_seq = seq
        try:
            self._queue.put(_Item(seq, entry), timeout=timeout_s)
        except queue.Full:
            self._count_failure("dropped_queue_full", "queue full: a memory entry was dropped")
            self._mark_done(seq)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Commit everything queued so far now; True once it is (written or counted as failed)."""
        deadline = time.monotonic() + timeout_s
        with self._offer_lock:
            target = seq = next(self._seq)
            self._last_seq = seq
        try:
            self._queue.put(_Item(seq, None), timeout=max(0.0, timeout_s))
        except queue.Full:
            return False
        with self._done:
            return self._done.wait_for(lambda: self._done_seq >= target, max(0.0, deadline - time.monotonic()))

    def counters(self) -> dict[str, int | float]:
        """offered, accepted, written (keyframes), entries_written, skipped_rate, dropped_queue_full,
        encode_errors, pose_errors, write_errors, dropped_on_error, disk_full_events, evicted, commits,
        encode_s_total, write_s_total, queue_depth."""
        counters = dict(self._counters)
        counters["disk_full_events"] = int(getattr(self._store, "disk_full_events", 0))
        counters["queue_depth"] = self._queue.qsize()
        return counters

    def close(self, timeout_s: float = 2.0) -> None:
        """Commit what is queued (within ``timeout_s``) and stop the thread. Idempotent."""
        with self._offer_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            logger.warning("memory recorder: queue still full at close; %d items are not written",
                           self._queue.qsize())
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("memory recorder: the writer thread did not finish within %.1f s", timeout_s)

    # ---- recorder thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        keyframes: list[NewKeyframe] = []
        entries: list[MemoryEntry] = []
        pending_seq = 0
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            stop = item is _STOP
            flush = stop or (isinstance(item, _Item) and item.payload is None)
            if isinstance(item, _Item):
                pending_seq = item.seq
                if isinstance(item.payload, MemoryEntry):
                    entries.append(item.payload)
                elif item.payload is not None:
                    keyframe = self._keyframe(item.payload)
                    if keyframe is not None:
                        keyframes.append(keyframe)
                if deadline is None:
                    deadline = time.monotonic() + self._commit_interval_s
            due = deadline is not None and time.monotonic() >= deadline
            if flush or due or len(keyframes) >= _MAX_BATCH:
                self._commit(keyframes, entries)
                keyframes, entries, deadline = [], [], None
                self._mark_done(pending_seq)
            if stop:
                return

    def _keyframe(self, frame: Frame) -> NewKeyframe | None:
        start = time.perf_counter()
        try:
            data, width, height = encode_image(frame.rgb, self._max_pixels, self._encoding, self._quality)
        except Exception as error:  # a malformed frame must not stop the recorder
            self._count_failure("encode_errors", f"cannot encode a keyframe of {frame.camera}: {error}")
            return None
        finally:
            self._counters["encode_s_total"] += time.perf_counter() - start
        pose = None
        if self._pose_at is not None:
            try:
                pose = self._pose_at(frame.stamp_ns)
            except Exception as error:  # no transform yet, or a user callback's bug: keep the keyframe
                self._count_failure("pose_errors", f"pose_at({frame.stamp_ns}) failed: {error}")
        return NewKeyframe(frame.camera, frame.stamp_ns, data, width, height, self._encoding, pose)

    def _commit(self, keyframes: list[NewKeyframe], entries: list[MemoryEntry]) -> None:
        if not keyframes and not entries:
            return
        start = time.perf_counter()
        for write, batch, written in ((self._store.add_keyframes, keyframes, "written"),
                                      (self._store.add_entries, entries, "entries_written")):
            if not batch:
                continue
            try:
                write(batch)
                self._counters[written] += len(batch)
            except MemoryFullError as error:
                self._counters["dropped_on_error"] += len(batch)
                self._count_failure("write_errors", f"{error}; {len(batch)} records dropped")
            except Exception as error:  # the database said no: count it and keep recording
                self._counters["dropped_on_error"] += len(batch)
                self._count_failure("write_errors", f"memory write failed ({type(error).__name__}: {error}); "
                                                    f"{len(batch)} records dropped")
        try:
            self._counters["evicted"] += self._store.evict()
        except Exception as error:
            self._count_failure("write_errors", f"memory eviction failed ({type(error).__name__}: {error})")
        self._counters["commits"] += 1
        self._counters["write_s_total"] += time.perf_counter() - start

    def _mark_done(self, seq: int) -> None:
        with self._done:
            self._done_seq = max(self._done_seq, seq)
            self._done.notify_all()

    def _count_failure(self, counter: str, message: str) -> None:
        self._counters[counter] += 1
        self._last_error = (message, time.monotonic())
        now = time.monotonic()
        last, suppressed = self._last_error_log.get(counter, (-math.inf, 0))
        if now - last >= _ERROR_LOG_INTERVAL_S:
            extra = f" ({suppressed} more since the last report)" if suppressed else ""
            logger.error("memory recorder: %s%s", message, extra)
            self._last_error_log[counter] = (now, 0)
        else:
            self._last_error_log[counter] = (last, suppressed + 1)
