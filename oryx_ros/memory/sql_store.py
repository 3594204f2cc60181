"""What the SQLite and PostgreSQL stores share: writes, budgets and eviction, recall, stats.

A backend supplies connections (``_read``/``_write`` context managers yielding a DB-API cursor), its
full-text search (``_text_hits``) and how it recognises a full disk; everything else, SQL included, is
here once, so both backends behave alike (test/memory/test_store.py runs the same tests on both).

Thread safety: writes are serialised by ``_write_lock`` (one writer per store; a recorder thread), reads may
run from any thread at the same time (ROS service threads). The byte/row totals live in memory, loaded at
open and kept exact by this store's own inserts and deletes: one writer per robot.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from oryx_ros.memory.embedding import TextEmbedder
from oryx_ros.memory.records import (
    KeyframeRecord,
    MemoryEntry,
    MemoryFullError,
    MemoryStats,
    Moment,
    NewKeyframe,
    RecallQuery,
)
from oryx_ros.memory.rows import (
    ENTRY_COLUMNS,
    KEYFRAME_COLUMNS,
    entry_filter,
    entry_from,
    entry_row,
    keyframe_from,
    keyframe_row,
    placeholders,
)
from oryx_ros.memory.text_query import object_labels_text, query_terms

logger = logging.getLogger(__name__)

# After a full disk the byte budget drops to this share of what was stored when it happened, so the next
# writes find room freed by eviction instead of hitting the wall again.
DISK_FULL_BUDGET_SHARE: Final = 0.9
# Text hits fetched per result wanted when they are merged with semantic hits.
_CANDIDATES_PER_RESULT: Final = 4
_EVICTION_SCAN_START: Final = 256


def normalised_text_score(raw: float) -> float:
    """bm25 / ts_rank (>= 0, unbounded, higher = better) → [0, 1), keeping the order."""
    raw = max(0.0, float(raw))
    return raw / (1.0 + raw)


class SqlMemoryStore(ABC):
    """The MemoryStore protocol over an SQL database (see oryx_ros.memory.store)."""

    def __init__(self, *, where: str, robot: str, max_bytes: int, max_age_s: float,
                 embedder: TextEmbedder | None = None, embedding_weight: float = 0.5,
                 semantic_candidates: int = 20_000) -> None:
        if max_bytes < 0 or not max_age_s >= 0:
            raise ValueError(f"max_bytes and max_age_s must be >= 0 (0 = unlimited); got {max_bytes}, {max_age_s}")
        if not 0.0 <= embedding_weight <= 1.0:
            raise ValueError(f"embedding_weight must lie in [0, 1] (got {embedding_weight})")
        self.where = where  # the file or (password-free) URL, for messages
        self.robot = robot
        self.max_bytes = int(max_bytes)
        self.max_age_ns = round(max_age_s * 1e9) if max_age_s != float("inf") else 0
        self._byte_budget = self.max_bytes
        self._embedder = embedder
        self._embedding_weight = embedding_weight
        self._semantic_candidates = semantic_candidates
        self._write_lock = threading.RLock()
        self._keyframe_count = self._entry_count = self._bytes = 0
        self.evicted_keyframes = self.evicted_entries = self.disk_full_events = 0

    def set_budgets(self, max_bytes: int, max_age_s: float) -> None:
        """New budgets (0 = unlimited), applied at the next eviction; a budget lowered by a full disk is reset."""
        if max_bytes < 0 or not max_age_s >= 0:
            raise ValueError(f"max_bytes and max_age_s must be >= 0 (0 = unlimited); got {max_bytes}, {max_age_s}")
        with self._write_lock:
            self.max_bytes = self._byte_budget = int(max_bytes)
            self.max_age_ns = round(max_age_s * 1e9) if max_age_s != float("inf") else 0

    # ---- backend hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Any]:
        """A cursor for reads (safe from any thread)."""

    @abstractmethod
    def _write(self) -> contextlib.AbstractContextManager[Any]:
        """A cursor inside one transaction: committed on exit, rolled back on an exception."""

    @abstractmethod
    def _sql(self, sql: str) -> str:
        """The backend's spelling of shared SQL written with ``?`` placeholders."""

    @abstractmethod
    def _is_disk_full(self, error: BaseException) -> bool: ...

    @abstractmethod
    def _text_hits(self, terms: list[str], condition: str, params: list[Any], limit: int
                   ) -> list[tuple[int, int, float]]:
        """(id, stamp_ns, raw score >= 0, higher = better) of entries matching any term and ``condition``."""

    @abstractmethod
    def close(self) -> None: ...

    # ---- helpers ----------------------------------------------------------------------------------
    def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor.execute(self._sql(sql), params)
        return cursor

    def _load_totals(self) -> None:
        with self._read() as cursor:
            for table in ("memory_keyframes", "memory_entries"):
                count, nbytes = self._execute(
                    cursor, f"SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM {table} WHERE robot = ?",
                    (self.robot,)).fetchone()
                if table == "memory_keyframes":
                    self._keyframe_count = int(count)
                else:
                    self._entry_count = int(count)
                self._bytes += int(nbytes)

    def _write_with_disk_full_retry(self, write: Any) -> Any:
        """Run ``write(cursor)`` in a transaction; on a full disk evict the oldest memories, lower the byte
        budget and try once more (a full disk must cost memories, never the recorder)."""
        with self._write_lock:
            for attempt in (1, 2):
                try:
                    with self._write() as cursor:
                        return write(cursor)
                except Exception as error:
                    if not self._is_disk_full(error):
                        raise
                    if attempt == 1:
                        self._on_disk_full(error)
                        continue
                    self.disk_full_events += 1
                    raise MemoryFullError(
                        f"memory store {self.where} is still full after evicting down to {self._bytes / 1e6:.1f} "
                        "MB: free disk space, or lower memory.max_megabytes") from error
        raise AssertionError("unreachable")  # the loop returns or raises

    def _on_disk_full(self, error: BaseException) -> None:
        self.disk_full_events += 1
        lowered = int(self._bytes * DISK_FULL_BUDGET_SHARE)
        if self._byte_budget == 0 or lowered < self._byte_budget:
            self._byte_budget = lowered
        logger.error("memory store %s: disk full (%s) with %.1f MB stored; evicting the oldest memories and "
                     "lowering the byte budget to %.1f MB until restart. Free disk space or lower "
                     "memory.max_megabytes.",
                     self.where, error, self._bytes / 1e6, self._byte_budget / 1e6)
        try:
            self.evict()
        except Exception as evict_error:  # a disk too full even to delete: the retry reports it
            logger.error("memory store %s: eviction after a full disk failed: %s", self.where, evict_error)

    # ---- writes -------------------------------------------------------------------------------------
    def add_keyframes(self, keyframes: Sequence[NewKeyframe]) -> list[int]:
        """Store encoded keyframes in one transaction; their ids, in order."""
        rows = [(keyframe_row(self.robot, k), bytes(k.data)) for k in keyframes]
        if not rows:
            return []

        def write(cursor: Any) -> list[int]:
            ids = []
            for row, data in rows:
                ids.append(self._execute(cursor, f"INSERT INTO memory_keyframes (robot, camera, stamp_ns, width, "
                                                 f"height, encoding, nbytes, pose_x, pose_y, pose_z, pose_qx, pose_qy, "
                                                 f"pose_qz, pose_qw, pose_frame) VALUES ({placeholders(15)}) "
                                                 "RETURNING id", row).fetchone()[0])
                self._execute(cursor, "INSERT INTO memory_keyframe_data (keyframe_id, data) VALUES (?, ?)",
                              (ids[-1], data))
            return ids

        ids = self._write_with_disk_full_retry(write)
        self._keyframe_count += len(rows)
        self._bytes += sum(row[6] for row, _ in rows)
        return ids

    def add_entry(self, entry: MemoryEntry) -> int:
        return self.add_entries([entry])[0]

    def add_entries(self, entries: Sequence[MemoryEntry]) -> list[int]:
        """Store memory entries in one transaction (embedding them first, when a model is set); their ids."""
        if not entries:
            return []
        vectors: list[bytes | None] = [None] * len(entries)
        if self._embedder is not None:
            embedded = self._embedder.embed([e.text + " " + object_labels_text([o.label for o in e.objects])
                                             for e in entries])
            vectors = [v.astype(np.float32).tobytes() for v in embedded]
        rows = [entry_row(self.robot, e, len(v or b"")) for e, v in zip(entries, vectors, strict=True)]

        def write(cursor: Any) -> list[int]:
            ids = []
            for entry, row, vector in zip(entries, rows, vectors, strict=True):
                entry_id = self._execute(
                    cursor, f"INSERT INTO memory_entries (robot, kind, stamp_ns, window_start_ns, window_end_ns, "
                            f"cameras, text, labels, objects, pose_x, pose_y, pose_z, pose_qx, pose_qy, pose_qz, "
                            f"pose_qw, pose_frame, nbytes) VALUES ({placeholders(18)}) RETURNING id", row
                ).fetchone()[0]
                ids.append(entry_id)
                cameras = [(entry_id, c) for c in dict.fromkeys(entry.cameras)]
                if cameras:
                    cursor.executemany(self._sql("INSERT INTO memory_entry_cameras (entry_id, camera) VALUES (?, ?)"),
                                       cameras)
                if entry.objects:
                    cursor.executemany(
                        self._sql("INSERT INTO memory_entry_objects (entry_id, ord, x, y, z, frame_id) "
                                  "VALUES (?, ?, ?, ?, ?, ?)"),
                        [(entry_id, i, o.x, o.y, o.z, o.frame_id) for i, o in enumerate(entry.objects)])
                if vector is not None:
                    self._execute(cursor, "INSERT INTO memory_entry_embeddings (entry_id, vector) VALUES (?, ?)",
                                  (entry_id, vector))
            return ids

        ids = self._write_with_disk_full_retry(write)
        self._entry_count += len(rows)
        self._bytes += sum(row[-1] for row in rows)
        return ids

    # ---- eviction ----------------------------------------------------------------------------------
    def evict(self, now_ns: int | None = None) -> int:
        """Delete memories older than max_age_s before ``now_ns`` (default: the newest stamp stored, so bag
        replays and sim time age by their own clock), then the oldest until the bytes fit the budget.
        Keyframes and entries age together, oldest stamp first. Returns the rows deleted."""
        with self._write_lock:
            deleted = 0
            if self.max_age_ns:
                reference = now_ns if now_ns is not None else self._newest_stamp()
                if reference is not None:
                    deleted += self._delete_through(reference - self.max_age_ns - 1)
            if self._byte_budget and self._bytes > self._byte_budget:
                cutoff = self._byte_cutoff(self._bytes - self._byte_budget)
                if cutoff is not None:
                    deleted += self._delete_through(cutoff)
            return deleted

    def _newest_stamp(self) -> int | None:
        with self._read() as cursor:
            stamps = [self._execute(cursor, f"SELECT MAX(stamp_ns) FROM {table} WHERE robot = ?",
                                    (self.robot,)).fetchone()[0] for table in ("memory_keyframes", "memory_entries")]
        stamps = [s for s in stamps if s is not None]
        return max(stamps) if stamps else None

    def _byte_cutoff(self, excess: int) -> int | None:
        """The stamp through which deleting the oldest rows frees at least ``excess`` bytes."""
        fetch = _EVICTION_SCAN_START
        while True:
            with self._read() as cursor:
                tables = [self._execute(cursor, f"SELECT stamp_ns, nbytes FROM {table} WHERE robot = ? "
                                                "ORDER BY stamp_ns LIMIT ?", (self.robot, fetch)).fetchall()
                          for table in ("memory_keyframes", "memory_entries")]
            # The merged order is exact only up to the last stamp fetched from a table that has more rows.
            frontier = min((rows[-1][0] for rows in tables if len(rows) == fetch), default=None)
            freed, cutoff = 0, None
            for stamp, nbytes in sorted(tables[0] + tables[1]):
                if frontier is not None and stamp > frontier:
                    break
                freed += nbytes
                cutoff = stamp
                if freed >= excess:
                    return cutoff
            if frontier is None:  # everything was fetched
                return cutoff
            fetch *= 4

    def _delete_through(self, stamp_ns: int) -> int:
        def delete(cursor: Any) -> tuple[int, int, int]:
            counts = []
            for table in ("memory_keyframes", "memory_entries"):
                counts.append(self._execute(cursor, f"SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM {table} "
                                                    "WHERE robot = ? AND stamp_ns <= ?",
                                            (self.robot, stamp_ns)).fetchone())
            if counts[0][0]:
                self._execute(cursor, "DELETE FROM memory_keyframe_data WHERE keyframe_id IN (SELECT id FROM "
                                      "memory_keyframes WHERE robot = ? AND stamp_ns <= ?)", (self.robot, stamp_ns))
                self._execute(cursor, "DELETE FROM memory_keyframes WHERE robot = ? AND stamp_ns <= ?",
                              (self.robot, stamp_ns))
            if counts[1][0]:
                for child in ("memory_entry_cameras", "memory_entry_objects", "memory_entry_embeddings"):
                    self._execute(cursor, f"DELETE FROM {child} WHERE entry_id IN (SELECT id FROM memory_entries "
                                          "WHERE robot = ? AND stamp_ns <= ?)", (self.robot, stamp_ns))
                self._execute(cursor, "DELETE FROM memory_entries WHERE robot = ? AND stamp_ns <= ?",
                              (self.robot, stamp_ns))
            return int(counts[0][0]), int(counts[1][0]), int(counts[0][1]) + int(counts[1][1])

        with self._write_lock, self._write() as cursor:
            keyframes, entries, nbytes = delete(cursor)
        self._keyframe_count -= keyframes
        self._entry_count -= entries
        self._bytes -= nbytes
        self.evicted_keyframes += keyframes
        self.evicted_entries += entries
        if keyframes or entries:
            logger.debug("memory store %s: evicted %d keyframes and %d entries through stamp %d (%.1f MB)",
                         self.where, keyframes, entries, stamp_ns, nbytes / 1e6)
        return keyframes + entries

    # ---- reads -------------------------------------------------------------------------------------
    def keyframes(self, cameras: Sequence[str] = (), start_ns: int | None = None, end_ns: int | None = None,
                  limit: int | None = None) -> list[KeyframeRecord]:
        """Keyframe metadata by stamp (then id), optionally of some cameras and within [start_ns, end_ns]."""
        conditions, params = ["robot = ?"], [self.robot]
        if cameras:
            conditions.append(f"camera IN ({placeholders(len(cameras))})")
            params += list(cameras)
        if start_ns is not None:
            conditions.append("stamp_ns >= ?")
            params.append(int(start_ns))
        if end_ns is not None:
            conditions.append("stamp_ns <= ?")
            params.append(int(end_ns))
        sql = f"SELECT {KEYFRAME_COLUMNS} FROM memory_keyframes WHERE {' AND '.join(conditions)} ORDER BY stamp_ns, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._read() as cursor:
            return [keyframe_from(row) for row in self._execute(cursor, sql, params).fetchall()]

    def keyframe_bytes(self, record_id: int) -> tuple[bytes, str]:
        """The stored (encoded) image of a keyframe and its encoding."""
        with self._read() as cursor:
            row = self._execute(cursor, "SELECT d.data, k.encoding FROM memory_keyframes k JOIN memory_keyframe_data d "
                                        "ON d.keyframe_id = k.id WHERE k.id = ? AND k.robot = ?",
                                (int(record_id), self.robot)).fetchone()
        if row is None:
            raise KeyError(f"keyframe {record_id} is not in memory store {self.where} (evicted?)")
        return bytes(row[0]), row[1]

    def keyframe_rgb(self, record_id: int) -> npt.NDArray[np.uint8]:
        """A keyframe decoded to RGB uint8 (H, W, 3)."""
        data, encoding = self.keyframe_bytes(record_id)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"keyframe {record_id} in {self.where} does not decode as {encoding}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def nearest_keyframe(self, camera: str, stamp_ns: int, max_gap_ns: int) -> KeyframeRecord | None:
        """The camera's keyframe nearest ``stamp_ns`` (the earlier one on a tie), if within ``max_gap_ns``."""
        base = f"SELECT {KEYFRAME_COLUMNS} FROM memory_keyframes WHERE robot = ? AND camera = ? AND stamp_ns "
        with self._read() as cursor:
            before = self._execute(cursor, base + "<= ? ORDER BY stamp_ns DESC, id DESC LIMIT 1",
                                   (self.robot, camera, int(stamp_ns))).fetchone()
            after = self._execute(cursor, base + ">= ? ORDER BY stamp_ns, id LIMIT 1",
                                  (self.robot, camera, int(stamp_ns))).fetchone()
        candidates = [keyframe_from(row) for row in (before, after) if row is not None]
        best = min(candidates, key=lambda k: (abs(k.stamp_ns - stamp_ns), k.stamp_ns), default=None)
        return best if best is not None and abs(best.stamp_ns - stamp_ns) <= max_gap_ns else None

    def entries(self, start_ns: int | None = None, end_ns: int | None = None, limit: int = 100) -> list[MemoryEntry]:
        """The newest ``limit`` entries whose window overlaps [start_ns, end_ns], oldest first."""
        condition, params = entry_filter(RecallQuery(start_ns=start_ns, end_ns=end_ns), [self.robot])
        with self._read() as cursor:
            rows = self._execute(cursor, f"SELECT {ENTRY_COLUMNS} FROM memory_entries e "
                                         f"WHERE {condition} ORDER BY e.stamp_ns DESC, e.id DESC LIMIT ?",
                                 [*params, int(limit)]).fetchall()
        return [entry_from(row) for row in reversed(rows)]

    def recall(self, query: RecallQuery) -> list[Moment]:
        """Entries matching ``query``, best first (ties: newer first).

        With text: full-text score in [0, 1) (bm25 / ts_rank normalised); with an embedding model, combined
        as ``(1 - w) * text + w * max(cosine, 0)``. Without text: the most recent matches, score 0.
        """
        robots = list(query.robots) or [self.robot]
        condition, params = entry_filter(query, robots)
        terms = query_terms(query.text)
        semantic = self._embedder is not None and bool(query.text.strip())
        if not terms and not semantic:
            scored = [(i, stamp, 0.0) for i, stamp in self._recent(condition, params, query.limit)]
        else:
            fetch = query.limit * (_CANDIDATES_PER_RESULT if semantic else 1)
            text = {i: (stamp, normalised_text_score(raw))
                    for i, stamp, raw in (self._text_hits(terms, condition, params, fetch) if terms else [])}
            if semantic:
                cosine = self._semantic_hits(query.text, condition, params, fetch)
                w = self._embedding_weight
                scored = [(i, stamp, (1 - w) * text.get(i, (stamp, 0.0))[1] + w * max(cos, 0.0))
                          for i, (stamp, cos) in cosine.items()]
                scored += [(i, stamp, (1 - w) * score) for i, (stamp, score) in text.items() if i not in cosine]
            else:
                scored = [(i, stamp, score) for i, (stamp, score) in text.items()]
        scored.sort(key=lambda hit: (-hit[2], -hit[1], -hit[0]))
        scored = scored[:query.limit]
        entries = self._load_entries([i for i, _, _ in scored])
        return [Moment(entries[i], score) for i, _, score in scored if i in entries]

    def _recent(self, condition: str, params: list[Any], limit: int) -> list[tuple[int, int]]:
        with self._read() as cursor:
            return [tuple(row) for row in self._execute(
                cursor, f"SELECT e.id, e.stamp_ns FROM memory_entries e WHERE {condition} "
                        "ORDER BY e.stamp_ns DESC, e.id DESC LIMIT ?", [*params, limit]).fetchall()]

    def _semantic_hits(self, text: str, condition: str, params: list[Any], limit: int) -> dict[int, tuple[int, float]]:
        """Cosine similarity of the query to the newest ``semantic_candidates`` matching entries; the best
        ``limit`` as {id: (stamp_ns, cosine)}. A scan, not an index: hours of 1 Hz entries, not years."""
        assert self._embedder is not None
        query_vector = self._embedder.embed([text])[0].astype(np.float32)
        with self._read() as cursor:
            rows = self._execute(cursor, f"SELECT e.id, e.stamp_ns, v.vector FROM memory_entries e JOIN "
                                         f"memory_entry_embeddings v ON v.entry_id = e.id WHERE {condition} "
                                         "ORDER BY e.stamp_ns DESC LIMIT ?",
                                 [*params, self._semantic_candidates]).fetchall()
        rows = [row for row in rows if len(row[2]) == query_vector.nbytes]  # another model's vectors: skip
        if not rows:
            return {}
        matrix = np.frombuffer(b"".join(bytes(row[2]) for row in rows), np.float32).reshape(len(rows), -1)
        cosine = matrix @ query_vector  # both sides are L2-normalised
        best = np.argsort(-cosine, kind="stable")[:limit]
        return {rows[k][0]: (rows[k][1], float(cosine[k])) for k in best}

    def _load_entries(self, ids: Sequence[int]) -> dict[int, MemoryEntry]:
        if not ids:
            return {}
        with self._read() as cursor:
            rows = self._execute(cursor, f"SELECT {ENTRY_COLUMNS} FROM memory_entries WHERE id IN "
                                         f"({placeholders(len(ids))})", list(ids)).fetchall()
        return {row[0]: entry_from(row) for row in rows}

    def stats(self) -> MemoryStats:
        with self._read() as cursor:
            bounds = [self._execute(cursor, f"SELECT MIN(stamp_ns), MAX(stamp_ns) FROM {table} WHERE robot = ?",
                                    (self.robot,)).fetchone() for table in ("memory_keyframes", "memory_entries")]
        oldest = [b[0] for b in bounds if b[0] is not None]
        newest = [b[1] for b in bounds if b[1] is not None]
        return MemoryStats(keyframes=self._keyframe_count, entries=self._entry_count, bytes=self._bytes,
                           oldest_ns=min(oldest) if oldest else None, newest_ns=max(newest) if newest else None,
                           evicted_keyframes=self.evicted_keyframes, evicted_entries=self.evicted_entries,
                           disk_full_events=self.disk_full_events, byte_budget=self._byte_budget)

    def __enter__(self) -> SqlMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
