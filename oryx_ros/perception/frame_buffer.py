"""Bounded, time-indexed memory of camera frames, with an index of synchronised sets over them.

Frames are stored PER CAMERA ON ARRIVAL (``add``); storing a camera never waits for the others.
Synchronised sets are an index over stored frames (``add_set`` links members already stored and stores
the others), for what needs simultaneous views; where no set formed, ``nearest_frames`` gives the
frame of each camera nearest a stamp, with their spread.

The sensor callbacks add frames while the inference thread queries, so every public method takes the
buffer's lock. Bounds and drop policies, each counted by reason (``drop_counts()``):

- resolution: a frame is stored at the largest size the model can use and never more: Oryx resizes
  any image to an area of at most 1536² px (oryx-inference-spec §2.3), so larger frames are
  downscaled here to area <= 1536² (aspect kept; INTER_AREA for RGB, nearest for depth so no depth is
  invented between surfaces; intrinsics scaled to match);
- ``rate_cap``: per camera, a frame closer than 1/rate to a stored neighbour of that camera is skipped,
  less a 10 % tolerance so that stamp jitter and rounding do not halve the rate (a 30 Hz camera capped at
  10 Hz keeps every third frame). ``refuse_by_stamp`` tells a producer before it decodes anything.
  Sets are capped as a whole (by their members' strictest rate, against the nearest indexed set;
  refused sets are counted in ``sets_refused_rate_cap``); the members of an admitted set are stored
  even where the per-camera cap refused them on arrival, so sets stay complete (at most one extra frame
  per camera and set period);
- ``duplicate``: a second frame with the same camera and stamp is skipped;
- ``too_old``: a frame older than the reference − window (a late arrival) is skipped;
- ``evicted_window``: stored frames that fall out of the window as time advances;
- ``evicted_memory``: over the byte budget, the camera holding the most bytes loses its oldest frame,
  repeatedly, so every camera keeps a fair share of the budget;
- ``over_budget``: a single frame larger than the whole budget is skipped;
- ``time_jump``: frames removed by ``clear("time_jump")`` (the stamp gate confirmed a backwards jump;
  the buffer never decides that itself).

The window is measured from a ROBUST newest time, ``reference_stamp_ns()``: the second-newest stored
stamp over all cameras (the newest while one frame is stored). One outlier stamp can therefore never
move the window and evict the other frames; with one camera it is that camera's previous frame, and a
dead camera's old frames do not hold the window back. The cost: the horizon trails the newest frame
by one frame interval.

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

__all__ = ["MAX_MODEL_PIXELS", "CameraStats", "FrameBuffer", "FrameSet", "NearestFrames", "fit_to_max_pixels"]

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
# Reasons a frame can be refused on its stamp alone, before its pixels exist (``refuse_by_stamp``).
STAMP_REFUSALS: Final = ("duplicate", "too_old", "rate_cap")


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
class NearestFrames:
    """The stored frame of each camera nearest to a stamp; ``spread_ns`` = newest − oldest of them."""

    stamp_ns: int
    frames: Mapping[str, Frame]

    @property
    def spread_ns(self) -> int:
        stamps = [frame.stamp_ns for frame in self.frames.values()]
        return max(stamps) - min(stamps) if stamps else 0


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

    def at(self, stamp_ns: int) -> Frame | None:
        index = bisect.bisect_left(self.stamps, stamp_ns)
        return self.frames[index] if index < len(self.stamps) and self.stamps[index] == stamp_ns else None

    def nearest(self, stamp_ns: int) -> Frame | None:
        """The stored frame closest to ``stamp_ns`` (ties: the older), None when empty."""
        index = bisect.bisect_left(self.stamps, stamp_ns)
        near = [i for i in (index - 1, index) if 0 <= i < len(self.stamps)]
        if not near:
            return None
        return self.frames[min(near, key=lambda i: (abs(self.stamps[i] - stamp_ns), self.stamps[i]))]

    def nearest_gap_ns(self, stamp_ns: int) -> int | None:
        """Distance to the closest stored stamp, None when empty."""
        frame = self.nearest(stamp_ns)
        return None if frame is None else abs(frame.stamp_ns - stamp_ns)

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
    ) -> None:
        """
        Args:
            memory_budget_bytes: total bytes of stored RGB + depth arrays.
            window_ns: keep frames no older than the reference (robust newest) stamp minus this; None =
                no window.
            rate_cap_hz: stored frames per second per camera (one value for all, a dict per camera, with
                cameras not in the dict uncapped); None = no cap.
            max_pixels: largest stored image area in pixels.
        """
        if memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        if window_ns is not None and window_ns <= 0:
            raise ValueError(f"window_ns must be positive or None, got {window_ns}")
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        rates = rate_cap_hz.values() if isinstance(rate_cap_hz, Mapping) else [rate_cap_hz]
        if any(rate is not None and rate <= 0 for rate in rates):
            raise ValueError(f"rate_cap_hz values must be positive, got {rate_cap_hz}")
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.window_ns = window_ns
        self.rate_cap_hz = rate_cap_hz
        self.max_pixels = int(max_pixels)
        self._lock = threading.RLock()
        self._cameras: dict[str, _CameraFrames] = {}
        self._by_uid: dict[int, Frame] = {}
        self._sets: dict[int, _SetRecord] = {}  # insertion order
        self._sets_of_uid: dict[int, list[int]] = {}
        self._set_stamps: list[tuple[int, int]] = []  # sorted (stamp_ns, set_id)
        self._set_ids = itertools.count(1)
        self._total_bytes = 0
        self._drops: dict[str, dict[str, int]] = {}  # reason -> camera -> count
        self._sets_refused_rate_cap = 0
        self._time_jumps = 0

    # --- adding -----------------------------------------------------------------------------------

    def add(self, frame: Frame) -> Frame | None:
        """Store one frame on arrival; returns the stored (possibly downscaled) frame, or None when
        skipped (counted)."""
        with self._lock:
            reason = self._stamp_refusal(frame.camera, frame.stamp_ns, check_rate=True)
            if reason is not None:
                self._count(reason, frame.camera)
                return None
            prepared = self._prepare(frame)
            if prepared is None:
                return None
            stored = self._store(prepared)
            self._enforce_bounds()
            return stored if stored.uid in self._by_uid else None

    def refuse_by_stamp(self, camera: str, stamp_ns: int, *, count: bool = True) -> str | None:
        """The reason ``add`` would refuse a frame of ``camera`` stamped ``stamp_ns`` whatever its pixels
        (one of ``STAMP_REFUSALS``), counted as ``add`` counts it (unless ``count`` is False: only
        asking); None when it would be stored.

        For producers that decode only what will be stored.
        """
        with self._lock:
            reason = self._stamp_refusal(camera, int(stamp_ns), check_rate=True)
            if reason is not None and count:
                self._count(reason, camera)
            return reason

    def add_set(self, frames: Iterable[Frame], missing: Sequence[str] = ()) -> int | None:
        """Index a synchronised set (one frame per camera); returns its ``set_id``, or None if refused.

        Members already stored (the same frame, or the same camera and stamp) are linked; the others are
        stored, past the per-camera rate cap but inside the window and the byte budget. ``missing``
        names cameras absent from the set (a partial set). The set's stamp is its newest member's; the
        rate cap applies to the set as a whole, against the nearest indexed set, with the strictest
        rate of its members (refusals counted in ``sets_refused_rate_cap``).
        """
        members = list(frames)
        if not members:
            raise ValueError("a frame set needs at least one frame")
        cameras = [frame.camera for frame in members]
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"a frame set holds one frame per camera, got cameras {cameras}")
        stamp_ns = max(frame.stamp_ns for frame in members)
        with self._lock:
            if self._rate_capped_set(stamp_ns, cameras):
                self._sets_refused_rate_cap += 1
                return None
            linked: list[Frame] = []
            for frame in members:
                store = self._cameras.get(frame.camera)
                existing = None if store is None else store.at(frame.stamp_ns)
                if existing is not None:
                    linked.append(existing)
                    continue
                reason = self._stamp_refusal(frame.camera, frame.stamp_ns, check_rate=False)
                if reason is not None:
                    self._count(reason, frame.camera)
                    continue
                prepared = self._prepare(frame)
                if prepared is not None:
                    linked.append(self._store(prepared))
            if not linked:
                return None
            set_id = next(self._set_ids)
            self._sets[set_id] = _SetRecord(
                set_id=set_id,
                stamp_ns=stamp_ns,
                members={frame.camera: frame.uid for frame in linked},
                cameras=tuple(frame.camera for frame in linked),
                missing=tuple(missing),
            )
            bisect.insort(self._set_stamps, (stamp_ns, set_id))
            for frame in linked:
                self._sets_of_uid.setdefault(frame.uid, []).append(set_id)
            self._enforce_bounds()
            return set_id if set_id in self._sets else None

    def refuse_rate_capped_set(self, stamps_ns: Mapping[str, int]) -> bool:
        """Refuse a set by its members' stamps alone when ``add_set`` would refuse it for the rate cap.

        ``stamps_ns`` maps each member camera to its frame's stamp (a SyncSet's ``stamps_ns``). When
        refused, it is counted as ``add_set`` counts it and True is returned; otherwise nothing changes.
        For producers that decode a set's members only once the set is admitted.
        """
        if not stamps_ns:
            raise ValueError("a frame set needs at least one frame")
        with self._lock:
            if not self._rate_capped_set(max(stamps_ns.values()), stamps_ns):
                return False
            self._sets_refused_rate_cap += 1
            return True

    def clear(self, reason: str | None = None) -> int:
        """Drop every frame and set; returns the number of frames removed.

        With a ``reason`` (``"time_jump"``: the stamp gate confirmed a backwards jump) the frames are
        counted as drops under it and ``time_jumps`` goes up; without, nothing is counted.
        """
        if reason is not None and reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; known: {DROP_REASONS}")
        with self._lock:
            removed = len(self._by_uid)
            if reason is not None:
                for name, store in self._cameras.items():
                    if store.stamps:
                        self._count(reason, name, len(store.stamps))
                if reason == "time_jump":
                    self._time_jumps += 1
                    _log.warning("time jumped back (looping bag or sim-time reset): cleared %d frames", removed)
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

    def nearest_frames(self, stamp_ns: int, cameras: Iterable[str] | None = None) -> NearestFrames:
        """The stored frame of each camera (of ``cameras``, all when None) nearest to ``stamp_ns`` (ties:
        the older), for simultaneous views where no synchronised set formed; cameras with nothing stored
        are left out. ``spread_ns`` says how far apart the frames are."""
        with self._lock:
            names = sorted(self._cameras) if cameras is None else [c for c in cameras if c in self._cameras]
            frames = {name: frame for name in names if (frame := self._cameras[name].nearest(stamp_ns)) is not None}
        return NearestFrames(int(stamp_ns), frames)

    def latest_stamp_ns(self, camera: str | None = None) -> int | None:
        """Newest stored stamp of ``camera`` (of any camera when None); None when empty."""
        with self._lock:
            return self._newest_stamp_ns(camera)

    def reference_stamp_ns(self) -> int | None:
        """The robust newest stamp the window is measured from (see the module docstring)."""
        with self._lock:
            return self._reference_ns()

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
    def sets_refused_rate_cap(self) -> int:
        with self._lock:
            return self._sets_refused_rate_cap

    @property
    def time_jumps(self) -> int:
        """Times the buffer was cleared for a confirmed backwards time jump."""
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

    def _reference_ns(self) -> int | None:
        """Second-newest stored stamp over all cameras (the newest while only one frame is stored)."""
        newest = sorted((s for store in self._cameras.values() for s in store.stamps[-2:]), reverse=True)[:2]
        return newest[-1] if newest else None

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

    def _stamp_refusal(self, camera: str, stamp_ns: int, *, check_rate: bool) -> str | None:
        store = self._cameras.get(camera)
        if store is not None and store.has_stamp(stamp_ns):
            return "duplicate"
        reference = self._reference_ns()
        if self.window_ns is not None and reference is not None and stamp_ns < reference - self.window_ns:
            return "too_old"
        if check_rate and store is not None:
            interval = self._min_interval_ns(camera)
            gap = store.nearest_gap_ns(stamp_ns)
            if interval and gap is not None and gap < interval:
                return "rate_cap"
        return None

    def _clear(self) -> None:
        self._cameras.clear()
        self._by_uid.clear()
        self._sets.clear()
        self._sets_of_uid.clear()
        self._set_stamps.clear()
        self._total_bytes = 0

    def _prepare(self, frame: Frame) -> Frame | None:
        """The frame as it would be stored (downscaled), or None when over the whole budget (counted)."""
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
        for set_id in self._sets_of_uid.pop(frame.uid, ()):
            record = self._sets[set_id]
            del record.members[frame.camera]
            if not record.members:
                del self._sets[set_id]
                self._set_stamps.remove((record.stamp_ns, set_id))

    def _enforce_bounds(self) -> None:
        reference = self._reference_ns()
        if self.window_ns is not None and reference is not None:
            horizon = reference - self.window_ns
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
