"""Records ↔ table rows, and the recall filters as SQL, shared by the SQLite and PostgreSQL stores.

The SQL here is the subset both databases run unchanged, written with ``?`` placeholders (the PostgreSQL
store turns them into ``%s``). Keeping one copy is what makes the two backends answer alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final

from oryx_ros.memory.records import KeyframeRecord, MemoryEntry, MemoryObject, NewKeyframe, Pose, RecallQuery
from oryx_ros.memory.text_query import object_labels_text

# Rough per-row cost of the row itself and its index entries, so that many tiny entries still count
# against the byte budget (measured: ~150-250 B per entry in SQLite with its FTS index).
ROW_OVERHEAD_BYTES: Final = 128
POSE_COLUMNS: Final = "pose_x, pose_y, pose_z, pose_qx, pose_qy, pose_qz, pose_qw, pose_frame"
KEYFRAME_COLUMNS: Final = f"id, camera, stamp_ns, width, height, encoding, nbytes, {POSE_COLUMNS}"
ENTRY_COLUMNS: Final = f"id, stamp_ns, window_start_ns, window_end_ns, cameras, text, objects, kind, {POSE_COLUMNS}"


def pose_values(pose: Pose | None) -> tuple[Any, ...]:
    if pose is None:
        return (None,) * 8
    values = (pose.x, pose.y, pose.z, pose.qx, pose.qy, pose.qz, pose.qw)
    # SQLite stores NaN as NULL, which would read back as "no pose": refuse it in both backends.
    if not all(map(math.isfinite, values)):
        raise ValueError(f"pose has a non-finite value: {pose}")
    return (*values, pose.frame_id)


def pose_from(values: Sequence[Any]) -> Pose | None:
    if values[0] is None:
        return None
    return Pose(*(float(v) for v in values[:7]), frame_id=values[7])


def keyframe_row(robot: str, keyframe: NewKeyframe) -> tuple[Any, ...]:
    if keyframe.encoding not in ("jpeg", "png"):
        raise ValueError(f"keyframe encoding must be 'jpeg' or 'png' (got {keyframe.encoding!r})")
    return (robot, keyframe.camera, int(keyframe.stamp_ns), keyframe.width, keyframe.height, keyframe.encoding,
            len(keyframe.data) + ROW_OVERHEAD_BYTES, *pose_values(keyframe.pose))


def keyframe_from(row: Sequence[Any]) -> KeyframeRecord:
    return KeyframeRecord(id=row[0], camera=row[1], stamp_ns=row[2], width=row[3], height=row[4], encoding=row[5],
                          nbytes=row[6], pose=pose_from(row[7:15]))


def clean_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL; drop it in both backends so they store the same thing.
    return text.replace("\x00", "")


def entry_row(robot: str, entry: MemoryEntry, embedding_bytes: int) -> tuple[Any, ...]:
    """The memory_entries row (before its id); ``nbytes`` counts text, JSON and the embedding."""
    objects = [[clean_text(o.label), float(o.x), float(o.y), float(o.z), o.frame_id] for o in entry.objects]
    if not all(math.isfinite(v) for o in objects for v in o[1:4]):
        raise ValueError(f"object position has a non-finite value: {entry.objects}")
    text = clean_text(entry.text)
    labels = object_labels_text([o[0] for o in objects])
    cameras_json = json.dumps(list(entry.cameras))
    objects_json = json.dumps(objects)
    nbytes = (len(text.encode()) + len(labels.encode()) + len(cameras_json) + len(objects_json) + embedding_bytes
              + ROW_OVERHEAD_BYTES * (1 + len(entry.cameras) + len(objects)))
    return (robot, entry.kind, int(entry.stamp_ns), int(entry.window_start_ns), int(entry.window_end_ns),
            cameras_json, text, labels, objects_json, *pose_values(entry.pose), nbytes)


def entry_from(row: Sequence[Any]) -> MemoryEntry:
    objects = tuple(MemoryObject(label, x, y, z, frame) for label, x, y, z, frame in json.loads(row[6]))
    return MemoryEntry(stamp_ns=row[1], window_start_ns=row[2], window_end_ns=row[3], cameras=tuple(json.loads(row[4])),
                       text=row[5], pose=pose_from(row[8:16]), objects=objects, kind=row[7], id=row[0])


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def entry_filter(query: RecallQuery, robots: Sequence[str], alias: str = "e") -> tuple[str, list[Any]]:
    """The WHERE condition (and its parameters) of ``query``'s filters on memory_entries ``alias``."""
    conditions = [f"{alias}.robot IN ({placeholders(len(robots))})"]
    params: list[Any] = list(robots)
    if query.start_ns is not None:  # the window overlaps [start, end]
        conditions.append(f"{alias}.window_end_ns >= ?")
        params.append(int(query.start_ns))
    if query.end_ns is not None:
        conditions.append(f"{alias}.window_start_ns <= ?")
        params.append(int(query.end_ns))
    if query.cameras:
        cameras = list(dict.fromkeys(query.cameras))
        conditions.append(f"EXISTS (SELECT 1 FROM memory_entry_cameras c WHERE c.entry_id = {alias}.id "
                          f"AND c.camera IN ({placeholders(len(cameras))}))")
        params += cameras
    if query.position is not None:
        x, y, z = (float(v) for v in query.position)
        r2 = float(query.radius_m) ** 2
        pose_frame = f" AND {alias}.pose_frame = ?" if query.frame_id else ""
        object_frame = " AND o.frame_id = ?" if query.frame_id else ""
        frame = [query.frame_id] if query.frame_id else []
        conditions.append(
            f"(({alias}.pose_x IS NOT NULL{pose_frame} AND ({alias}.pose_x - ?) * ({alias}.pose_x - ?) "
            f"+ ({alias}.pose_y - ?) * ({alias}.pose_y - ?) + ({alias}.pose_z - ?) * ({alias}.pose_z - ?) <= ?) "
            f"OR EXISTS (SELECT 1 FROM memory_entry_objects o WHERE o.entry_id = {alias}.id{object_frame} "
            "AND (o.x - ?) * (o.x - ?) + (o.y - ?) * (o.y - ?) + (o.z - ?) * (o.z - ?) <= ?))")
        params += [*frame, x, x, y, y, z, z, r2, *frame, x, x, y, y, z, z, r2]
    return " AND ".join(conditions), params
