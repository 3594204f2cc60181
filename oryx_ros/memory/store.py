"""The MemoryStore protocol and ``open_memory_store``, which picks the backend from a URL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from oryx_ros.memory.embedding import SentenceEmbedder, TextEmbedder
from oryx_ros.memory.postgres_store import PostgresMemoryStore, redacted
from oryx_ros.memory.records import (
    KeyframeRecord,
    MemoryEntry,
    MemoryStats,
    MemoryStoreError,
    Moment,
    NewKeyframe,
    RecallQuery,
)
from oryx_ros.memory.sqlite_store import SQLiteMemoryStore


@runtime_checkable
class MemoryStore(Protocol):
    """Long-horizon memory of keyframes and entries. Thread-safe: one writer (the recorder) while any thread
    reads. Both backends (SQLite, PostgreSQL) implement it with the same semantics."""

    robot: str
    disk_full_events: int
    max_bytes: int  # budgets in force (0 = unlimited); change them with set_budgets
    max_age_ns: int

    def add_keyframes(self, keyframes: Sequence[NewKeyframe]) -> list[int]: ...
    def add_entry(self, entry: MemoryEntry) -> int: ...
    def add_entries(self, entries: Sequence[MemoryEntry]) -> list[int]: ...
    def keyframes(self, cameras: Sequence[str] = (), start_ns: int | None = None, end_ns: int | None = None,
                  limit: int | None = None) -> list[KeyframeRecord]: ...
    def keyframe_bytes(self, record_id: int) -> tuple[bytes, str]: ...
    def keyframe_rgb(self, record_id: int) -> npt.NDArray[np.uint8]: ...
    def nearest_keyframe(self, camera: str, stamp_ns: int, max_gap_ns: int) -> KeyframeRecord | None: ...
    def entries(self, start_ns: int | None = None, end_ns: int | None = None, limit: int = 100
                ) -> list[MemoryEntry]: ...
    def recall(self, query: RecallQuery) -> list[Moment]: ...
    def evict(self, now_ns: int | None = None) -> int: ...
    def stats(self) -> MemoryStats: ...
    def set_budgets(self, max_bytes: int, max_age_s: float) -> None: ...
    def close(self) -> None: ...


def open_memory_store(url: str, *, directory: str | Path, max_bytes: int, max_age_s: float, robot: str = "",
                      embedding_model_path: str | Path | None = None, embedding_weight: float = 0.5,
                      embedder: TextEmbedder | None = None) -> MemoryStore:
    """Open (creating if needed) the memory at ``url``: "" or "sqlite" → ``<directory>/memory.sqlite3``,
    "postgresql://..." (or "postgres://...") → that server. ``max_bytes``/``max_age_s`` are the budgets
    (0 = unlimited); ``robot`` names this robot's rows on a shared server; ``embedding_model_path`` (a local
    sentence-transformers directory) turns on semantic recall, weighted ``embedding_weight`` against text."""
    if embedder is None and embedding_model_path:
        embedder = SentenceEmbedder(embedding_model_path)
    scheme = url.split(":", 1)[0].lower() if url else ""
    if scheme in ("", "sqlite"):
        return SQLiteMemoryStore(directory, max_bytes=max_bytes, max_age_s=max_age_s, robot=robot, embedder=embedder,
                                 embedding_weight=embedding_weight)
    if scheme in ("postgresql", "postgres"):
        return PostgresMemoryStore(url, max_bytes=max_bytes, max_age_s=max_age_s, robot=robot, embedder=embedder,
                                   embedding_weight=embedding_weight)
    raise MemoryStoreError(f"memory.url {redacted(url)!r} is neither empty/'sqlite' (a file in memory.directory) nor "
                           "'postgresql://user@host/database'")
