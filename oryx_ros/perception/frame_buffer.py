"""Bounded, time-indexed memory of camera frames (and synchronised sets of them) for the model.

The sensor callbacks add frames while the inference thread queries, so every public method takes the
buffer's lock. Bounds and drop policies, each counted by reason (``drop_counts()``):

- resolution: a frame is stored at the largest size the model can use and never more: Oryx resizes
  any image to an area of at most 1536² px (oryx-inference-spec §2.3), so larger frames are
  downscaled here to area <= 1536² (aspect kept; INTER_AREA for RGB, nearest for depth so no depth is
  invented between surfaces; intrinsics scaled to match);
- ``rate_cap``: per camera, a frame closer than 1/rate to a stored neighbour of that camera is skipped,
  less a 10 % tolerance so that stamp jitter and rounding do not halve the rate (a 30 Hz camera capped at
  10 Hz keeps every third frame); synchronised sets are capped as a whole (by their members' strictest
  rate) so sets stay complete. ``rate_capped_span_ns`` tells a producer which set stamps are refused
  before it decodes anything, and ``skip_rate_capped_set`` refuses (and counts) such a set by its
  stamps alone;
- ``duplicate``: a second frame with the same camera and stamp is skipped;
- ``too_old``: a frame older than newest − window (a late arrival) is skipped;
- ``time_jump``: a stamp older than the newest stored stamp of the same camera by more than
  ``time_jump_threshold_ns`` (looping bag, sim-time reset) clears the whole buffer first; the frames
  cleared are counted under this reason. Per camera, so a camera whose clock runs seconds behind the
  others does not clear the buffer with every frame;
- ``evicted_window``: stored frames that fall out of the window as time advances;
- ``evicted_memory``: over the byte budget, the camera holding the most bytes loses its oldest frame,
  repeatedly, so every camera keeps a fair share of the budget;
- ``over_budget``: a single frame larger than the whole budget is skipped.

The buffer takes ownership of the arrays it stores: they are made read-only, since the same frames are
shared with every reader.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import cv2

from oryx_ros.perception.frames import Frame

__all__ = ["MAX_MODEL_PIXELS", "CameraStats", "FrameBuffer", "FrameSet", "fit_to_max_pixels"]

_log = logging.getLogger(__name__)

# Oryx's "highres" rule downscales any image with area > 1536² to area ~1536² (MAXRES = 1536), so
# storing more pixels than that would only cost memory.
MAX_MODEL_PIXELS: Final = 1536 * 1536
_NS_PER_S: Final = 1_000_000_000
# Share of the rate-cap period a gap may fall short and still be kept (stamp jitter, ns rounding).
RATE_CAP_TOLERANCE: Final = 0.1

DROP_REASONS: Final = (
    "rate_cap", "duplicate", "too_old", "time_jump", "evicted_window", "evicted_memory", "over_budget",
)


@dataclass(frozen=True)
class FrameSet:
    """A synchronised multi-camera snapshot as stored.

    ``frames`` holds the members still in the buffer (eviction may have removed some); ``cameras`` the
    members stored when the set was added; ``missing`` the cameras that were not in the set at all
    (a partial set made while a camera was dead).
    """

    set_id: int
    stamp_ns: int
    frames: Mapping[str, Frame]
    cameras: tuple[str, ...]
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when no camera was missing and no member has been evicted since."""
        return not self.missing and len(self.frames) == len(self.cameras)


@dataclass(frozen=True)
class CameraStats:
    """What the buffer holds for one camera. ``rate_hz`` is the stored-frame rate over the held span."""

    count: int
    nbytes: int
    rate_hz: float
    oldest_stamp_ns: int | None
    newest_stamp_ns: int | None


@dataclass
class _SetRecord:
    set_id: int
    stamp_ns: int
    members: dict[str, int]  # camera -> frame uid
    cameras: tuple[str, ...]
    missing: tuple[str, ...]


def fit_to_max_pixels(width: int, height: int, max_pixels: int = MAX_MODEL_PIXELS) -> tuple[int, int]:
    """Largest ``(width, height)`` with the same aspect and ``width * height <= max_pixels``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    new_w, new_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    while new_w * new_h > max_pixels:  # guard against float rounding up
        if new_w >= new_h:
            new_w -= 1
        else:
            new_h -= 1
    return new_w, new_h


def _downscaled(frame: Frame, max_pixels: int) -> Frame:
    """``frame`` at area <= max_pixels (depth resized to the RGB size), arrays made read-only."""
    height, width = frame.rgb.shape[:2]
    new_w, new_h = fit_to_max_pixels(width, height, max_pixels)
    rgb, depth_m, intrinsics = frame.rgb, frame.depth_m, frame.intrinsics
    if (new_w, new_h) != (width, height):
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        if intrinsics is not None:
            intrinsics = intrinsics.scaled(new_w, new_h)
    if depth_m is not None and depth_m.shape[:2] != (new_h, new_w):
        depth_m = cv2.resize(depth_m, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    for array in (rgb, depth_m):
        if array is not None:
            array.setflags(write=False)
    if rgb is frame.rgb and depth_m is frame.depth_m:
        return frame
    return dataclasses.replace(frame, rgb=rgb, depth_m=depth_m, intrinsics=intrinsics)  # keeps uid


class _CameraFrames:
    """One camera's frames, sorted by stamp."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.frames: list[Frame] = []
        self.nbytes = 0

    def insert(self, frame: Frame) -> None:
        index = bisect.bisect_left(self.stamps, frame.stamp_ns)
        self.stamps.insert(index, frame.stamp_ns)
        self.frames.insert(index, frame)
        self.nbytes += frame.nbytes

    def pop_oldest(self) -> Frame:
        self.stamps.pop(0)
        frame = self.frames.pop(0)
        self.nbytes -= frame.nbytes
        return frame

    def has_stamp(self, stamp_ns: int) -> bool:
        index = bisect.bisect_left(self.stamps, stamp_ns)
        return index < len(self.stamps) and self.stamps[index] == stamp_ns

    def nearest_gap_ns(self, stamp_ns: int) -> int | None:
        """Distance to the closest stored stamp, None when empty."""
        index = bisect.bisect_left(self.stamps, stamp_ns)
        gaps = [abs(self.stamps[i] - stamp_ns) for i in (index - 1, index) if 0 <= i < len(self.stamps)]
        return min(gaps) if gaps else None

    def between(self, start_ns: int | None, end_ns: int | None) -> list[Frame]:
        lo = 0 if start_ns is None else bisect.bisect_left(self.stamps, start_ns)
        hi = len(self.stamps) if end_ns is None else bisect.bisect_right(self.stamps, end_ns)
        return self.frames[lo:hi]


class FrameBuffer:
    """Per-camera, time-indexed frame store bounded by bytes, window and per-camera rate (thread-safe)."""

    def __init__(
        self,
        *,
        memory_budget_bytes: int = 2 * 1024**3,
        window_ns: int | None = 600 * _NS_PER_S,
        rate_cap_hz: float | Mapping[str, float] | None = None,
        max_pixels: int = MAX_MODEL_PIXELS,
        time_jump_threshold_ns: int | None = 3 * _NS_PER_S,
    ) -> None:
        """
        Args:
            memory_budget_bytes: total bytes of stored RGB + depth arrays.
            window_ns: keep frames no older than the newest stamp minus this; None = no window.
            rate_cap_hz: stored frames per second per camera (one value for all, a dict per camera, with
                cameras not in the dict uncapped); None = no cap.
            max_pixels: largest stored image area in pixels.
            time_jump_threshold_ns: a stamp this much older than the newest of its camera clears the
                buffer (a bag loop or sim-time reset); None = never. Out-of-order stamps within it are
                inserted in order.
        """
        if memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        if window_ns is not None and window_ns <= 0:
            raise ValueError(f"window_ns must be positive or None, got {window_ns}")
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        if time_jump_threshold_ns is not None and time_jump_threshold_ns <= 0:
            raise ValueError(f"time_jump_threshold_ns must be positive or None, got {time_jump_threshold_ns}")
        rates = rate_cap_hz.values() if isinstance(rate_cap_hz, Mapping) else [rate_cap_hz]
        if any(rate is not None and rate <= 0 for rate in rates):
            raise ValueError(f"rate_cap_hz values must be positive, got {rate_cap_hz}")
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.window_ns = window_ns
        self.rate_cap_hz = rate_cap_hz
        self.max_pixels = int(max_pixels)
        self.time_jump_threshold_ns = time_jump_threshold_ns
        self._lock = threading.RLock()
        self._cameras: dict[str, _CameraFrames] = {}
        self._by_uid: dict[int, Frame] = {}
        self._sets: dict[int, _SetRecord] = {}  # insertion order
        self._set_of_uid: dict[int, int] = {}
        self._set_stamps: list[tuple[int, int]] = []  # sorted (stamp_ns, set_id)
        self._set_ids = itertools.count(1)
        self._total_bytes = 0
        self._drops: dict[str, dict[str, int]] = {}  # reason -> camera -> count
        self._time_jumps = 0

    # --- adding -----------------------------------------------------------------------------------

    def add(self, frame: Frame) -> Frame | None:
        """Store one frame; returns the stored (possibly downscaled) frame, or None when skipped."""
        with self._lock:
            self._check_time_jump(frame.stamp_ns, frame.camera)
            prepared = self._prepare(frame, check_rate=True)
            if prepared is None:
                return None
            stored = self._store(prepared)
            self._enforce_bounds()
            return stored if stored.uid in self._by_uid else None

    def add_set(self, frames: Iterable[Frame], missing: Sequence[str] = ()) -> int | None:
        """Store a synchronised set (one frame per camera); returns its ``set_id``, or None if skipped.

        ``missing`` names cameras absent from the set (a partial set). The rate cap applies to the set
        as a whole, against the nearest stored set, with the strictest rate of its members.
        """
        members = list(frames)
        if not members:
            raise ValueError("a frame set needs at least one frame")
        cameras = [frame.camera for frame in members]
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"a frame set holds one frame per camera, got cameras {cameras}")
        stamp_ns = max(frame.stamp_ns for frame in members)
        with self._lock:
            for frame in members:
                self._check_time_jump(frame.stamp_ns, frame.camera)
            if self._rate_capped_set(stamp_ns, cameras):
                for camera in cameras:
                    self._count("rate_cap", camera)
                return None
            prepared = [self._prepare(frame, check_rate=False) for frame in members]
            stored = [self._store(frame) for frame in prepared if frame is not None]
            if not stored:
                return None
            set_id = next(self._set_ids)
            record = _SetRecord(
                set_id=set_id,
                stamp_ns=stamp_ns,
                members={frame.camera: frame.uid for frame in stored},
                cameras=tuple(frame.camera for frame in stored),
                missing=tuple(missing),
            )
            self._sets[set_id] = record
            bisect.insort(self._set_stamps, (stamp_ns, set_id))
            for frame in stored:
                self._set_of_uid[frame.uid] = set_id
            self._enforce_bounds()
            return set_id if set_id in self._sets else None

    def skip_rate_capped_set(self, stamps_ns: Mapping[str, int]) -> bool:
        """Refuse a set by its members' stamps alone when ``add_set`` would refuse it for the rate cap.

        ``stamps_ns`` maps each member camera to its frame's stamp (a SyncSet's ``stamps_ns``). When
        ``add_set`` with such frames would refuse the set by the rate cap, the refusal is counted exactly
        as ``add_set`` counts it and True is returned; otherwise (no cap, far enough from every stored
        set, or a member stamp that is a backwards time jump, on which ``add_set`` would first clear the
        buffer) nothing changes and False is returned: add the set with its frames. For callers that
        skipped decoding the frames (see ``rate_capped_span_ns``).
        """
        if not stamps_ns:
            raise ValueError("a frame set needs at least one frame")
        with self._lock:
            if any(self._is_time_jump(stamp, camera) for camera, stamp in stamps_ns.items()):
                return False
            if not self._rate_capped_set(max(stamps_ns.values()), stamps_ns):
                return False
            for camera in stamps_ns:
                self._count("rate_cap", camera)
            return True

    def clear(self) -> int:
        """Drop every frame and set; returns the number of frames removed (not counted as drops)."""
        with self._lock:
            removed = len(self._by_uid)
            self._clear()
            return removed

    # --- queries ----------------------------------------------------------------------------------

    def query(
        self,
        cameras: Iterable[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> list[Frame]:
        """Frames of ``cameras`` (all when None) with ``start_ns <= stamp <= end_ns``, in time order
        (ties in camera-name order)."""
        with self._lock:
            names = sorted(self._cameras) if cameras is None else [c for c in cameras if c in self._cameras]
            frames = [f for name in names for f in self._cameras[name].between(start_ns, end_ns)]
        frames.sort(key=lambda frame: (frame.stamp_ns, frame.camera))
        return frames

    def query_sets(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        cameras: Iterable[str] | None = None,
        *,
        complete_only: bool = False,
    ) -> list[FrameSet]:
        """Synchronised sets with ``start_ns <= set stamp <= end_ns``, in time order.

        ``cameras`` restricts each set's frames to those cameras (sets left empty are omitted);
        ``complete_only`` keeps only sets with every camera present and nothing evicted.
        """
        wanted = None if cameras is None else set(cameras)
        with self._lock:
            lo = 0 if start_ns is None else bisect.bisect_left(self._set_stamps, (start_ns, -1))
            hi = (
                len(self._set_stamps)
                if end_ns is None
                else bisect.bisect_right(self._set_stamps, (end_ns, math.inf))
            )
            result = []
            for _, set_id in self._set_stamps[lo:hi]:
                record = self._sets[set_id]
                frames = {
                    camera: self._by_uid[uid]
                    for camera, uid in record.members.items()
                    if wanted is None or camera in wanted
                }
                snapshot = FrameSet(set_id, record.stamp_ns, frames, record.cameras, record.missing)
                if frames and (snapshot.complete or not complete_only):
                    result.append(snapshot)
        return result

    def latest_stamp_ns(self, camera: str | None = None) -> int | None:
        """Newest stored stamp of ``camera`` (of any camera when None); None when empty."""
        with self._lock:
            return self._newest_stamp_ns(camera)

    def rate_capped_span_ns(self, camera: str) -> tuple[int, int] | None:
        """Set stamps the rate cap refuses for any set with ``camera`` among its members, as it stands.

        Returns ``(start_ns, end_ns)``: every set stamp with ``start_ns <= stamp < end_ns`` is refused;
        None when ``camera`` is uncapped or no set is stored. The span starts at the newest stored set
        and lasts ``camera``'s minimum set interval: a set is capped by the strictest rate of its
        members, so by at least this camera's, and is refused when it is closer than that to a stored
        set. Sets added later only keep the span refused; it stops holding when its newest set leaves
        the buffer (evicted, or cleared by a time jump), so a caller that acts on it ahead of time must
        confirm with ``skip_rate_capped_set`` when the set is made. Older, out-of-order stamps are not
        covered (they may be a time jump).
        """
        with self._lock:
            interval = self._min_interval_ns(camera)
            if not interval or not self._set_stamps:
                return None
            newest = self._set_stamps[-1][0]
            return newest, newest + interval

    def camera_stats(self) -> dict[str, CameraStats]:
        with self._lock:
            stats = {}
            for name, store in sorted(self._cameras.items()):
                count = len(store.stamps)
                span_ns = store.stamps[-1] - store.stamps[0] if count >= 2 else 0
                stats[name] = CameraStats(
                    count=count,
                    nbytes=store.nbytes,
                    rate_hz=(count - 1) * _NS_PER_S / span_ns if span_ns > 0 else 0.0,
                    oldest_stamp_ns=store.stamps[0] if count else None,
                    newest_stamp_ns=store.stamps[-1] if count else None,
                )
            return stats

    def total_bytes(self) -> int:
        with self._lock:
            return self._total_bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uid)

    def set_count(self) -> int:
        with self._lock:
            return len(self._sets)

    def drop_counts(self, camera: str | None = None) -> dict[str, int]:
        """Frames not stored or no longer stored, by reason (see the module docstring)."""
        with self._lock:
            return {
                reason: sum(per_camera.values()) if camera is None else per_camera.get(camera, 0)
                for reason, per_camera in ((r, self._drops.get(r, {})) for r in DROP_REASONS)
            }

    @property
    def time_jumps(self) -> int:
        with self._lock:
            return self._time_jumps

    # --- internals (lock held) --------------------------------------------------------------------

    def _count(self, reason: str, camera: str, n: int = 1) -> None:
        per_camera = self._drops.setdefault(reason, {})
        per_camera[camera] = per_camera.get(camera, 0) + n

    def _min_interval_ns(self, camera: str) -> int:
        rate = self.rate_cap_hz.get(camera) if isinstance(self.rate_cap_hz, Mapping) else self.rate_cap_hz
        return 0 if rate is None else round(_NS_PER_S * (1.0 - RATE_CAP_TOLERANCE) / rate)

    def _newest_stamp_ns(self, camera: str | None = None) -> int | None:
        stores = self._cameras.values() if camera is None else [self._cameras.get(camera)]
        stamps = [store.stamps[-1] for store in stores if store is not None and store.stamps]
        return max(stamps) if stamps else None

    def _nearest_set_gap_ns(self, stamp_ns: int) -> int | None:
        index = bisect.bisect_left(self._set_stamps, (stamp_ns, -1))
        gaps = [
            abs(self._set_stamps[i][0] - stamp_ns)
            for i in (index - 1, index)
            if 0 <= i < len(self._set_stamps)
        ]
        return min(gaps) if gaps else None

    def _rate_capped_set(self, stamp_ns: int, cameras: Iterable[str]) -> bool:
        """Whether a set stamped ``stamp_ns`` with members ``cameras`` is refused by the rate cap."""
        interval = max(self._min_interval_ns(camera) for camera in cameras)
        gap = self._nearest_set_gap_ns(stamp_ns)
        return bool(interval) and gap is not None and gap < interval

    def _is_time_jump(self, stamp_ns: int, camera: str) -> bool:
        newest = self._newest_stamp_ns(camera)
        if self.time_jump_threshold_ns is None or newest is None:
            return False
        return stamp_ns < newest - self.time_jump_threshold_ns

    def _check_time_jump(self, stamp_ns: int, camera: str) -> None:
        if not self._is_time_jump(stamp_ns, camera):
            return
        newest = self._newest_stamp_ns(camera)
        assert newest is not None
        cleared: dict[str, int] = {name: len(store.stamps) for name, store in self._cameras.items()}
        _log.warning(
            "time jumped back %.3f s (camera %r, looping bag or sim-time reset): cleared %d frames",
            (newest - stamp_ns) / _NS_PER_S, camera, sum(cleared.values()),
        )
        self._time_jumps += 1
        for name, n in cleared.items():
            if n:
                self._count("time_jump", name, n)
        self._clear()

    def _clear(self) -> None:
        self._cameras.clear()
        self._by_uid.clear()
        self._sets.clear()
        self._set_of_uid.clear()
        self._set_stamps.clear()
        self._total_bytes = 0

    def _prepare(self, frame: Frame, *, check_rate: bool) -> Frame | None:
        """The frame as it would be stored (downscaled), or None when a check skips it (counted)."""
        store = self._cameras.get(frame.camera)
        if store is not None and store.has_stamp(frame.stamp_ns):
            self._count("duplicate", frame.camera)
            return None
        newest = self._newest_stamp_ns()
        if self.window_ns is not None and newest is not None and frame.stamp_ns < newest - self.window_ns:
            self._count("too_old", frame.camera)
            return None
        if check_rate and store is not None:
            interval = self._min_interval_ns(frame.camera)
            gap = store.nearest_gap_ns(frame.stamp_ns)
            if interval and gap is not None and gap < interval:
                self._count("rate_cap", frame.camera)
                return None
        frame = _downscaled(frame, self.max_pixels)
        if frame.nbytes > self.memory_budget_bytes:
            _log.warning("frame of camera %r has %d bytes, more than the whole budget of %d bytes",
                         frame.camera, frame.nbytes, self.memory_budget_bytes)
            self._count("over_budget", frame.camera)
            return None
        return frame

    def _store(self, frame: Frame) -> Frame:
        self._cameras.setdefault(frame.camera, _CameraFrames()).insert(frame)
        self._by_uid[frame.uid] = frame
        self._total_bytes += frame.nbytes
        return frame

    def _forget(self, frame: Frame, reason: str) -> None:
        """Bookkeeping after a stored frame was popped from its camera store."""
        self._total_bytes -= frame.nbytes
        del self._by_uid[frame.uid]
        self._count(reason, frame.camera)
        set_id = self._set_of_uid.pop(frame.uid, None)
        if set_id is not None:
            record = self._sets[set_id]
            del record.members[frame.camera]
            if not record.members:
                del self._sets[set_id]
                self._set_stamps.remove((record.stamp_ns, set_id))

    def _enforce_bounds(self) -> None:
        newest = self._newest_stamp_ns()
        if self.window_ns is not None and newest is not None:
            horizon = newest - self.window_ns
            for store in self._cameras.values():
                while store.stamps and store.stamps[0] < horizon:
                    self._forget(store.pop_oldest(), "evicted_window")
        while self._total_bytes > self.memory_budget_bytes:
            # Fair share: the camera holding the most bytes gives up its oldest frame (ties: older).
            store = max(
                (store for store in self._cameras.values() if store.stamps),
                key=lambda store: (store.nbytes, -store.stamps[0]),
            )
            self._forget(store.pop_oldest(), "evicted_memory")
        for name in [name for name, store in self._cameras.items() if not store.stamps]:
            del self._cameras[name]
