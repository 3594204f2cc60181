"""Plain records of the long-horizon memory (no ROS, no database): what is stored and what recall returns.

Stamps are integer nanoseconds (as everywhere in oryx_ros), positions are metres in the frame named by
``frame_id`` (the node's fixed frame), quaternions are ROS order ``(x, y, z, w)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class MemoryStoreError(RuntimeError):
    """A memory store cannot be opened or used; the message names the file or URL and the fix."""


class SchemaVersionError(MemoryStoreError):
    """The store on disk was written with a schema this version of oryx_ros does not read."""


class MemoryFullError(MemoryStoreError):
    """The disk (or the file's page limit) stayed full after evicting the oldest memories."""


@dataclass(frozen=True)
class Pose:
    """Robot pose in the fixed frame ``frame_id``; quaternion in ROS order (x, y, z, w)."""

    x: float
    y: float
    z: float
    qx: float
    qy: float
    qz: float
    qw: float
    frame_id: str


@dataclass(frozen=True)
class MemoryObject:
    """An object seen during an entry's window, at a position in ``frame_id`` (metres)."""

    label: str
    x: float
    y: float
    z: float
    frame_id: str


@dataclass(frozen=True)
class MemoryEntry:
    """One remembered moment: a description (or other text) of what ``cameras`` saw over a window.

    ``stamp_ns`` orders and ages the entry (eviction, "newest first"); the window is what a time-range
    query overlaps. ``id`` is None until the store has written it.
    """

    stamp_ns: int
    window_start_ns: int
    window_end_ns: int
    cameras: tuple[str, ...]
    text: str
    pose: Pose | None = None
    objects: tuple[MemoryObject, ...] = ()
    kind: str = "description"
    id: int | None = None

    def __post_init__(self) -> None:
        if self.window_start_ns > self.window_end_ns:
            raise ValueError(f"window_start_ns {self.window_start_ns} is after window_end_ns {self.window_end_ns}")


@dataclass(frozen=True)
class NewKeyframe:
    """A keyframe to store: already encoded image bytes (``encoding`` "jpeg" or "png") of ``width`` x ``height``."""

    camera: str
    stamp_ns: int
    data: bytes
    width: int
    height: int
    encoding: str
    pose: Pose | None = None


@dataclass(frozen=True)
class KeyframeRecord:
    """A stored keyframe's metadata (the image itself comes from ``store.keyframe_rgb(id)``)."""

    id: int
    camera: str
    stamp_ns: int
    width: int
    height: int
    encoding: str
    nbytes: int
    pose: Pose | None


@dataclass(frozen=True)
class Moment:
    """One recall hit; higher ``score`` is better (text scores lie in [0, 1))."""

    entry: MemoryEntry
    score: float


@dataclass(frozen=True)
class RecallQuery:
    """What to recall. Every filter given must hold; ``text`` "" returns the most recent matching entries.

    - ``start_ns``/``end_ns``: the entry's window overlaps ``[start_ns, end_ns]``.
    - ``cameras``: the entry shares at least one camera with these.
    - ``position`` + ``radius_m``: the entry's pose or one of its objects lies within ``radius_m`` of the
      point, in ``frame_id`` ("" = whatever frame the entry used: the node stores a single fixed frame).
    - ``robots``: whose entries to search on a shared server; () = the store's own robot.
    """

    text: str = ""
    start_ns: int | None = None
    end_ns: int | None = None
    position: tuple[float, float, float] | None = None
    radius_m: float = 0.0
    cameras: tuple[str, ...] = ()
    limit: int = 10
    frame_id: str = ""
    robots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be >= 1 (got {self.limit})")
        if not (self.radius_m >= 0.0 and math.isfinite(self.radius_m)):
            raise ValueError(f"radius_m must be a finite distance >= 0 (got {self.radius_m})")
        if self.position is not None and (len(self.position) != 3 or not all(map(math.isfinite, self.position))):
            raise ValueError(f"position must be three finite coordinates (got {self.position})")


@dataclass(frozen=True)
class MemoryStats:
    """What a store holds for its robot. ``bytes`` is what the byte budget counts (image bytes + text and
    index estimates); the evicted and disk-full counts are since the store was opened."""

    keyframes: int
    entries: int
    bytes: int
    oldest_ns: int | None
    newest_ns: int | None
    evicted_keyframes: int
    evicted_entries: int
    disk_full_events: int
    byte_budget: int = 0  # the budget now in force (lowered after a full disk); 0 = unlimited
