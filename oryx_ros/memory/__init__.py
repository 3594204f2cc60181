"""Long-horizon (hour-scale) memory: keyframes and scene descriptions on disk, recalled by text, time, camera
and place. Pure Python, no ROS: the node feeds a KeyframeRecorder and asks the store.

- records: the data types (MemoryEntry, Moment, RecallQuery, ...)
- store: the MemoryStore protocol and open_memory_store (SQLite file or PostgreSQL server)
- recorder: KeyframeRecorder (rate limit on the camera thread, encode + write on its own thread)
- selection: choose_frames (frames near recalled moments + even coverage, within a budget)
- embedding: optional semantic recall with a local sentence-transformers model
"""

from oryx_ros.memory.recorder import KeyframeRecorder
from oryx_ros.memory.records import (
    KeyframeRecord,
    MemoryEntry,
    MemoryFullError,
    MemoryObject,
    MemoryStats,
    MemoryStoreError,
    Moment,
    NewKeyframe,
    Pose,
    RecallQuery,
    SchemaVersionError,
)
from oryx_ros.memory.selection import choose_frames
from oryx_ros.memory.store import MemoryStore, open_memory_store

__all__ = [
    "KeyframeRecord",
    "KeyframeRecorder",
    "MemoryEntry",
    "MemoryFullError",
    "MemoryObject",
    "MemoryStats",
    "MemoryStore",
    "MemoryStoreError",
    "Moment",
    "NewKeyframe",
    "Pose",
    "RecallQuery",
    "SchemaVersionError",
    "choose_frames",
    "open_memory_store",
]
