"""The memory in one SQLite file (stdlib sqlite3, WAL, FTS5): ``<directory>/memory.sqlite3``.

Durability: WAL with ``synchronous=NORMAL``. Each commit is appended to the WAL with write(2) before
COMMIT returns, so a process killed with SIGKILL loses nothing committed (the kernel has the pages); the
recorder commits every ``commit_interval_s``, so a kill loses at most that much plus the queue. Only the
fsync moves to checkpoints: a power cut may roll back the last commits, and the WAL's checksums make it
roll back to a consistent state, never a corrupt one. ``FULL`` would fsync on every commit (twice a second)
for nothing a robot's memory needs.

The schema is versioned with ``PRAGMA user_version`` and marked as ours with ``PRAGMA application_id``;
opening another program's database, or one written by a newer oryx_ros, is refused with the file named.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from oryx_ros.memory.embedding import TextEmbedder
from oryx_ros.memory.records import MemoryStoreError, SchemaVersionError
from oryx_ros.memory.sql_store import SqlMemoryStore

logger = logging.getLogger(__name__)

FILE_NAME: Final = "memory.sqlite3"
APPLICATION_ID: Final = 0x4F52594D  # "ORYM": this file is an oryx_ros memory
SCHEMA_VERSION: Final = 1
# Upgrades from version n to n + 1, run in one transaction when an older file is opened.
MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {}
_BUSY_TIMEOUT_MS: Final = 5000

POSE_DDL: Final = ("pose_x REAL, pose_y REAL, pose_z REAL, pose_qx REAL, pose_qy REAL, pose_qz REAL, pose_qw REAL, "
                   "pose_frame TEXT")
SCHEMA: Final = f"""
CREATE TABLE memory_keyframes (
    id INTEGER PRIMARY KEY, robot TEXT NOT NULL, camera TEXT NOT NULL, stamp_ns INTEGER NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, encoding TEXT NOT NULL, nbytes INTEGER NOT NULL, {POSE_DDL});
-- image bytes apart, so metadata scans never page through megabytes of JPEG
CREATE TABLE memory_keyframe_data (keyframe_id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE INDEX memory_keyframes_by_stamp ON memory_keyframes (robot, stamp_ns, nbytes);
CREATE INDEX memory_keyframes_by_camera ON memory_keyframes (robot, camera, stamp_ns);
CREATE TABLE memory_entries (
    id INTEGER PRIMARY KEY, robot TEXT NOT NULL, kind TEXT NOT NULL, stamp_ns INTEGER NOT NULL,
    window_start_ns INTEGER NOT NULL, window_end_ns INTEGER NOT NULL,
    cameras TEXT NOT NULL, text TEXT NOT NULL, labels TEXT NOT NULL, objects TEXT NOT NULL, {POSE_DDL},
    nbytes INTEGER NOT NULL);
CREATE INDEX memory_entries_by_stamp ON memory_entries (robot, stamp_ns, nbytes);
CREATE TABLE memory_entry_cameras (entry_id INTEGER NOT NULL, camera TEXT NOT NULL,
    PRIMARY KEY (entry_id, camera)) WITHOUT ROWID;
CREATE TABLE memory_entry_objects (entry_id INTEGER NOT NULL, ord INTEGER NOT NULL, x REAL NOT NULL,
    y REAL NOT NULL, z REAL NOT NULL, frame_id TEXT NOT NULL, PRIMARY KEY (entry_id, ord)) WITHOUT ROWID;
CREATE TABLE memory_entry_embeddings (entry_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
-- full text over descriptions and object labels; diacritics kept, as PostgreSQL's 'simple' configuration does
CREATE VIRTUAL TABLE memory_entries_fts USING fts5 (text, labels, content='memory_entries', content_rowid='id',
    tokenize='unicode61 remove_diacritics 0');
CREATE TRIGGER memory_entries_fts_insert AFTER INSERT ON memory_entries BEGIN
    INSERT INTO memory_entries_fts (rowid, text, labels) VALUES (new.id, new.text, new.labels);
END;
CREATE TRIGGER memory_entries_fts_delete AFTER DELETE ON memory_entries BEGIN
    INSERT INTO memory_entries_fts (memory_entries_fts, rowid, text, labels)
    VALUES ('delete', old.id, old.text, old.labels);
END;
"""


def sql_statements(script: str) -> Iterator[str]:
    """The complete statements of ``script`` (triggers' inner semicolons included)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


class SQLiteMemoryStore(SqlMemoryStore):
    """MemoryStore in ``<directory>/memory.sqlite3``. ``page_limit`` caps the file at that many pages
    (``PRAGMA max_page_count``): a hard size limit, and how the tests make a full disk."""

    def __init__(self, directory: str | Path, *, max_bytes: int, max_age_s: float, robot: str = "",
                 embedder: TextEmbedder | None = None, embedding_weight: float = 0.5,
                 page_limit: int | None = None) -> None:
        self.path = Path(directory).expanduser() / FILE_NAME
        super().__init__(where=str(self.path), robot=robot, max_bytes=max_bytes, max_age_s=max_age_s,
                         embedder=embedder, embedding_weight=embedding_weight)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MemoryStoreError(f"cannot create the memory directory {self.path.parent}: {error}; "
                                   "set memory.directory to a writable place") from error
        self._readers: dict[int, sqlite3.Connection] = {}
        self._readers_lock = threading.Lock()
        self._writer = self._connect()
        try:
            self._open_schema()
            if page_limit is not None:
                self._writer.execute(f"PRAGMA max_page_count = {int(page_limit)}")
            self._load_totals()
        except BaseException:
            self._writer.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE / COMMIT of _write().
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                         timeout=_BUSY_TIMEOUT_MS / 1000)
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
        except sqlite3.DatabaseError as error:
            raise MemoryStoreError(f"cannot open the memory file {self.path}: {error}; move it away or set "
                                   "memory.directory to another folder") from error
        return connection

    def _open_schema(self) -> None:
        """Create the schema in a new file, check it in an existing one (migrating an older version)."""
        try:
            self._writer.execute("BEGIN IMMEDIATE")  # two processes opening one new file: one creates it
            application_id = self._writer.execute("PRAGMA application_id").fetchone()[0]
            version = self._writer.execute("PRAGMA user_version").fetchone()[0]
            tables = self._writer.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as error:
            self._rollback()
            raise MemoryStoreError(f"{self.path} is not a readable SQLite database ({error}); move it away or set "
                                   "memory.directory to another folder") from error
        try:
            if application_id == 0 and version == 0 and tables == 0:
                for statement in sql_statements(SCHEMA):  # not executescript(): it would commit our transaction
                    self._writer.execute(statement)
                self._writer.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                logger.info("memory store: created %s (schema version %d)", self.path, SCHEMA_VERSION)
            elif application_id != APPLICATION_ID:
                raise MemoryStoreError(f"{self.path} is an SQLite database of another program (application_id "
                                       f"{application_id:#x}); move it away or set memory.directory to another folder")
            elif version > SCHEMA_VERSION:
                raise SchemaVersionError(f"{self.path} has memory schema version {version}, newer than this oryx_ros "
                                         f"reads ({SCHEMA_VERSION}); update oryx_ros or set memory.directory to "
                                         "another folder")
            elif version < SCHEMA_VERSION:
                self._migrate(version)
            self._writer.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            logger.warning("memory store %s: journal mode is %s, not WAL (a filesystem without shared memory?): "
                           "readers will wait for the recorder's writes", self.path, mode)

    def _migrate(self, version: int) -> None:
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise SchemaVersionError(f"{self.path} has memory schema version {version}, which this oryx_ros cannot "
                                         f"upgrade to {SCHEMA_VERSION}; move the file away to start a new memory")
            step(self._writer)
            version += 1
            self._writer.execute(f"PRAGMA user_version = {version}")
            logger.info("memory store %s: migrated to schema version %d", self.path, version)

    def _rollback(self) -> None:
        # SQLite rolls a transaction back by itself after some errors (SQLITE_FULL among them).
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")

    # ---- SqlMemoryStore hooks -----------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        key = threading.get_ident()
        connection = self._readers.get(key)
        if connection is None:
            connection = self._connect()
            with self._readers_lock:
                self._readers[key] = connection
        yield connection.cursor()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        with self._write_lock:
            cursor = self._writer.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _is_disk_full(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and (
            getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(error))

    def _text_hits(self, terms: list[str], condition: str, params: list[Any], limit: int
                   ) -> list[tuple[int, int, float]]:
        from oryx_ros.memory.text_query import fts5_match_expression

        with self._read() as cursor:
            rows = cursor.execute(
                f"SELECT e.id, e.stamp_ns, -bm25(memory_entries_fts) AS score FROM memory_entries_fts "
                f"JOIN memory_entries e ON e.id = memory_entries_fts.rowid "
                f"WHERE memory_entries_fts MATCH ? AND {condition} ORDER BY score DESC, e.stamp_ns DESC, e.id DESC "
                "LIMIT ?", [fts5_match_expression(terms), *params, limit]).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" for a sound file."""
        with self._read() as cursor:
            return "\n".join(row[0] for row in cursor.execute("PRAGMA integrity_check").fetchall())

    def file_bytes(self) -> int:
        """The file and its WAL on disk."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(FILE_NAME + "-wal")) if p.exists())

    def close(self) -> None:
        with self._write_lock:
            with self._readers_lock:
                readers, self._readers = list(self._readers.values()), {}
            for connection in readers:
                connection.close()
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA optimize")
            self._writer.close()
