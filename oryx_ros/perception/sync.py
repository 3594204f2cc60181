"""Multi-camera time synchronisation on integer-nanosecond stamps, with a dead-camera fallback.

``ApproximateTimeSynchronizer`` reproduces the matching of ROS 2 message_filters' Python
``ApproximateTimeSynchronizer`` as a plain strategy object (no rclpy), so the node can inject it and
tests can feed crafted stamps:

- each camera has a queue keyed by stamp holding at most ``queue_size`` items; a new item with a stamp
  already queued replaces the old one, and when the queue is full the oldest stamp is dropped;
- only the arriving item triggers matching: for every other camera the queued stamps within ``slop``
  of the arriving stamp are candidates, ordered by their distance to it (ties in queue insertion order,
  as message_filters' stable sort over its dict); of the candidate combinations in that
  (``itertools.product``) order, the first one whose spread ``max - min`` is strictly below ``slop`` is
  emitted and its items are removed from the queues.

Bounded cost. message_filters walks the product, which is exponential in the number of cameras and
can be ``queue_size ** (cameras - 1)`` for crafted stamps. Here the same first combination is found by a
depth-first search over the cameras that only takes a candidate when a window of span < slop holding
the stamps chosen so far still has a candidate of every remaining camera (a sliding-window sweep over
the candidates, linear in their number). Taking a candidate between the chosen stamps never needs a
check, and beyond them feasibility only gets worse with distance, so one failed check closes that side:
at most ``2 * cameras + 1`` sweeps per match. With M <= (cameras - 1) * queue_size candidates, one
match costs O(M log M) to sort plus O(cameras * M) to sweep; ``stats().match_steps`` counts the
candidates visited, so tests can check the bound without timing anything.

Added on top, for a robot that must keep remembering when a camera dies: a camera that has been silent
for longer than ``dead_camera_timeout_ns`` (measured on the newest stamp seen from any camera, and
optionally on a wall clock) is left out of matching, so the live cameras produce PARTIAL sets. When it
publishes again it is live again and full sets resume. When a camera is declared dead, what the live
cameras queued while it was awaited is matched at once (oldest first), so that backlog is not lost.
Every item that leaves a queue unmatched is counted (``dropped_overflow``, ``replaced_same_stamp``).

Stamps are trusted: untrustworthy ones (future, zero, backwards jumps) are the job of
oryx_ros.perception.stamp_gate, which calls ``reset()`` when it confirms a jump.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["ApproximateTimeSynchronizer", "SyncSet", "SyncStats", "feed"]

_log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class SyncSet(Generic[ItemT]):
    """One synchronised set: an item per camera that took part, with its stamp.

    ``missing`` lists the cameras left out because they were dead when the set was made
    (empty for a full set).
    """

    items: Mapping[str, ItemT]
    stamps_ns: Mapping[str, int]
    missing: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def stamp_ns(self) -> int:
        """Stamp of the set: the newest member's stamp (the instant the set was complete)."""
        return max(self.stamps_ns.values())

    @property
    def spread_ns(self) -> int:
        return max(self.stamps_ns.values()) - min(self.stamps_ns.values())


@dataclass
class SyncStats:
    """Counters for diagnostics. Per-camera dicts are keyed by camera name."""

    full_sets: int = 0
    partial_sets: int = 0
    dropped_overflow: dict[str, int] = field(default_factory=dict)
    replaced_same_stamp: dict[str, int] = field(default_factory=dict)
    last_stamp_ns: dict[str, int | None] = field(default_factory=dict)
    dead_cameras: tuple[str, ...] = ()
    queued: dict[str, int] = field(default_factory=dict)
    resets: int = 0
    match_steps: int = 0  # candidates visited by matching, in total (see the module docstring)


class ApproximateTimeSynchronizer(Generic[ItemT]):
    """message_filters' approximate-time policy for N named cameras (see the module docstring)."""

    def __init__(
        self,
        cameras: Sequence[str],
        queue_size: int,
        slop_ns: int,
        *,
        dead_camera_timeout_ns: int | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """
        Args:
            cameras: input names, in the order sets list them.
            queue_size: items kept per camera while waiting for partners (message_filters' queue_size).
            slop_ns: a set's stamps must span strictly less than this (message_filters' ``slop``).
            dead_camera_timeout_ns: a camera whose last stamp is older than the newest stamp of any
                camera by more than this (or, with ``clock``, whose last item arrived longer ago than
                this in clock time) is dead and left out of matching. None disables the fallback.
            clock: optional wall clock in ns (e.g. ``time.monotonic_ns``) for the arrival-time test.
        """
        names = list(cameras)
        if not names:
            raise ValueError("a synchronizer needs at least one camera")
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop_ns <= 0:
            raise ValueError(f"slop_ns must be positive, got {slop_ns}")
        if dead_camera_timeout_ns is not None and dead_camera_timeout_ns <= 0:
            raise ValueError(f"dead_camera_timeout_ns must be positive, got {dead_camera_timeout_ns}")
        self.cameras: tuple[str, ...] = tuple(names)
        self.queue_size = int(queue_size)
        self.slop_ns = int(slop_ns)
        self.dead_camera_timeout_ns = dead_camera_timeout_ns
        self._clock = clock
        self._queues: dict[str, dict[int, ItemT]] = {name: {} for name in names}
        self._last_stamp_ns: dict[str, int | None] = dict.fromkeys(names)
        self._last_arrival_ns: dict[str, int | None] = dict.fromkeys(names)
        self._first_stamp_ns: int | None = None
        self._first_arrival_ns: int | None = None
        self._dead: frozenset[str] = frozenset()
        self._full_sets = 0
        self._partial_sets = 0
        self._dropped_overflow = dict.fromkeys(names, 0)
        self._replaced = dict.fromkeys(names, 0)
        self._resets = 0
        self._match_steps = 0

    # --- public API -------------------------------------------------------------------------------

    def add(self, camera: str, stamp_ns: int, item: ItemT) -> list[SyncSet[ItemT]]:
        """Queue ``item`` of ``camera`` stamped ``stamp_ns`` and return the sets it completes.

        Usually zero or one set; more when a camera has just been declared dead and the live
        cameras' backlog can now be matched without it.
        """
        if camera not in self._queues:
            raise KeyError(f"unknown camera {camera!r}; known: {list(self.cameras)}")
        stamp_ns = int(stamp_ns)
        now_ns = self._clock() if self._clock is not None else None
        if self._first_stamp_ns is None:
            self._first_stamp_ns, self._first_arrival_ns = stamp_ns, now_ns
        previous = self._last_stamp_ns[camera]
        self._last_stamp_ns[camera] = stamp_ns if previous is None else max(previous, stamp_ns)
        self._last_arrival_ns[camera] = now_ns

        queue = self._queues[camera]
        if stamp_ns in queue:
            self._replaced[camera] += 1
        queue[stamp_ns] = item
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self._dropped_overflow[camera] += 1

        sets: list[SyncSet[ItemT]] = []
        newly_dead = self._update_dead(now_ns)
        if newly_dead:
            sets.extend(self._sweep_backlog())
        if stamp_ns in queue:  # it may have been the oldest of a full queue, or matched by the sweep
            result = self._try_emit(camera, stamp_ns)
            if result is not None:
                sets.append(result)
        return sets

    def reset(self) -> None:
        """Forget queued items and stamps (counters are kept): a confirmed time jump."""
        for name in self.cameras:
            self._queues[name].clear()
            self._last_stamp_ns[name] = None
            self._last_arrival_ns[name] = None
        self._first_stamp_ns = self._first_arrival_ns = None
        self._dead = frozenset()
        self._resets += 1

    @property
    def dead_cameras(self) -> frozenset[str]:
        """Cameras currently left out of matching."""
        return self._dead

    def stats(self) -> SyncStats:
        return SyncStats(
            full_sets=self._full_sets,
            partial_sets=self._partial_sets,
            dropped_overflow=dict(self._dropped_overflow),
            replaced_same_stamp=dict(self._replaced),
            last_stamp_ns=dict(self._last_stamp_ns),
            dead_cameras=tuple(name for name in self.cameras if name in self._dead),
            queued={name: len(queue) for name, queue in self._queues.items()},
            resets=self._resets,
            match_steps=self._match_steps,
        )

    # --- matching ---------------------------------------------------------------------------------

    def _match(self, camera: str, stamp_ns: int, cameras: tuple[str, ...]) -> dict[str, int] | None:
        """Stamps (one per camera in ``cameras``) of the set the arriving item completes, or None.

        The first combination in message_filters' product order with spread < slop, found without
        walking the product (see the module docstring).
        """
        others = [name for name in cameras if name != camera]
        candidates: list[list[int]] = []
        for name in others:
            queue = self._queues[name]
            self._match_steps += len(queue)
            near = [s for s in queue if abs(s - stamp_ns) <= self.slop_ns]
            if not near:
                return None
            near.sort(key=lambda s: abs(s - stamp_ns))  # stable: ties keep queue insertion order
            candidates.append(near)
        if not others:
            return {camera: stamp_ns}
        # (stamp, index of its camera in ``others``), sorted by stamp, for the feasibility sweeps.
        merged = sorted((s, index) for index, near in enumerate(candidates) for s in near)
        if not self._feasible(merged, len(others), stamp_ns, stamp_ns, 0):
            return None
        low = high = stamp_ns  # the span of the stamps chosen so far
        chosen: list[int] = []
        for index, near in enumerate(candidates):
            closed_below = closed_above = False
            for s in near:
                self._match_steps += 1
                if low <= s <= high:
                    break  # inside the chosen span: the window that made the prefix feasible still fits
                if s > high and not closed_above:
                    if self._feasible(merged, len(others), low, s, index + 1):
                        break
                    closed_above = True  # farther above is only worse
                elif s < low and not closed_below:
                    if self._feasible(merged, len(others), s, high, index + 1):
                        break
                    closed_below = True
            else:  # unreachable: a feasible prefix always has a feasible next candidate
                raise AssertionError("approximate-time matching lost its feasible combination")
            chosen.append(s)
            low, high = min(low, s), max(high, s)
        return {camera: stamp_ns, **dict(zip(others, chosen, strict=True))}

    def _feasible(self, merged: list[tuple[int, int]], n_others: int, low: int, high: int, first: int) -> bool:
        """Whether a window of span < slop holding ``[low, high]`` has a candidate of every camera
        ``first .. n_others - 1`` (indices into ``others``)."""
        width = self.slop_ns - 1  # integer stamps: span < slop means span <= slop - 1
        if high - low > width:
            return False
        needed = n_others - first
        if needed == 0:
            return True
        # Every such window lies within [high - width, low + width]; any group of candidates there that
        # spans <= width can be covered by a window that also holds [low, high].
        start = bisect.bisect_left(merged, (high - width, -1))
        stop = bisect.bisect_right(merged, (low + width, n_others))
        counts: dict[int, int] = {}
        left = start
        for right in range(start, stop):
            self._match_steps += 1
            stamp, index = merged[right]
            if index < first:
                continue
            counts[index] = counts.get(index, 0) + 1
            while stamp - merged[left][0] > width:
                self._match_steps += 1
                left_index = merged[left][1]
                if left_index >= first:
                    counts[left_index] -= 1
                    if not counts[left_index]:
                        del counts[left_index]
                left += 1
            if len(counts) == needed:
                return True
        return False

    # --- dead cameras -----------------------------------------------------------------------------

    def _newest_stamp_ns(self) -> int | None:
        stamps = [s for s in self._last_stamp_ns.values() if s is not None]
        return max(stamps) if stamps else None

    def _is_dead(self, name: str, newest_ns: int, now_ns: int | None) -> bool:
        timeout = self.dead_camera_timeout_ns
        assert timeout is not None
        last = self._last_stamp_ns[name]
        reference = last if last is not None else self._first_stamp_ns
        if reference is not None and newest_ns - reference > timeout:
            return True
        if now_ns is None:
            return False
        arrival = self._last_arrival_ns[name]
        arrival = arrival if arrival is not None else self._first_arrival_ns
        return arrival is not None and now_ns - arrival > timeout

    def _update_dead(self, now_ns: int | None) -> bool:
        """Recompute the dead set; True when a camera has just died (its backlog may now match)."""
        if self.dead_camera_timeout_ns is None:
            return False
        newest = self._newest_stamp_ns()
        assert newest is not None
        dead = frozenset(name for name in self.cameras if self._is_dead(name, newest, now_ns))
        if dead == self._dead:
            return False
        for name in sorted(dead - self._dead):
            _log.warning("camera %r silent for more than %.3f s: emitting partial sets without it",
                         name, self.dead_camera_timeout_ns / 1e9)
        for name in sorted(self._dead - dead):
            _log.info("camera %r is back: full sets resume", name)
        newly_dead = bool(dead - self._dead)
        self._dead = dead
        return newly_dead

    def _live(self) -> tuple[str, ...]:
        return tuple(name for name in self.cameras if name not in self._dead)

    def _try_emit(self, camera: str, stamp_ns: int) -> SyncSet[ItemT] | None:
        live = self._live()
        if camera not in live:
            # A camera whose stamps lag the others by more than the timeout counts as dead even while
            # it publishes: its items wait in its queue (and overflow, counted) until it catches up.
            return None
        stamps = self._match(camera, stamp_ns, live)
        if stamps is None:
            return None
        items = {name: self._queues[name].pop(stamps[name]) for name in live}
        missing = tuple(name for name in self.cameras if name not in live)
        if missing:
            self._partial_sets += 1
        else:
            self._full_sets += 1
        return SyncSet(items=items, stamps_ns={name: stamps[name] for name in live}, missing=missing)

    def _sweep_backlog(self) -> list[SyncSet[ItemT]]:
        """Match what the live cameras queued while the now-dead camera was still awaited."""
        sets = []
        backlog = sorted((stamp, name) for name in self._live() for stamp in self._queues[name])
        for stamp, name in backlog:
            if stamp in self._queues[name]:
                result = self._try_emit(name, stamp)
                if result is not None:
                    sets.append(result)
        return sets


def feed(
    synchronizer: ApproximateTimeSynchronizer[Any], events: Iterable[tuple[str, int, Any]]
) -> list[SyncSet[Any]]:
    """Add ``(camera, stamp_ns, item)`` events in order and collect every set emitted (for tests/tools)."""
    sets: list[SyncSet[Any]] = []
    for camera, stamp_ns, item in events:
        sets.extend(synchronizer.add(camera, stamp_ns, item))
    return sets
