"""The memory in PostgreSQL (psycopg 3): several robots can share one server, each seeing its own rows.

Same tables and semantics as the SQLite store (oryx_ros.memory.sql_store holds the shared SQL); keyframes
are ``bytea`` stored uncompressed (JPEG/PNG do not compress), full text is a generated
``to_tsvector('simple', text || ' ' || labels)`` column with a GIN index, queried with the OR of
``plainto_tsquery('simple', term)`` per term and ranked by ``ts_rank_cd``. Tables live in the connection's
``search_path`` schema (``?options=-csearch_path%3Dname`` in the URL picks another one).

The schema version is the row of ``memory_schema``; a newer version is refused with the URL named.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from oryx_ros.memory.embedding import TextEmbedder
from oryx_ros.memory.records import MemoryStoreError, SchemaVersionError
from oryx_ros.memory.sql_store import SqlMemoryStore

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
MIGRATIONS: Final[dict[int, Callable[[Any], None]]] = {}  # version n → n + 1, given a cursor in a transaction
# ts_rank_cd normalisation 1: divide by 1 + log(document length), as bm25 favours short documents.
_RANK_NORMALISATION: Final = 1
_SCHEMA_LOCK_KEY: Final = 0x4F52594D  # advisory lock: robots starting together create the schema once

POSE_DDL: Final = ("pose_x double precision, pose_y double precision, pose_z double precision, "
                   "pose_qx double precision, pose_qy double precision, pose_qz double precision, "
                   "pose_qw double precision, pose_frame text")
SCHEMA: Final = (
    "CREATE TABLE memory_schema (name text PRIMARY KEY, version integer NOT NULL)",
    f"""CREATE TABLE memory_keyframes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, robot text NOT NULL, camera text NOT NULL,
        stamp_ns bigint NOT NULL, width integer NOT NULL, height integer NOT NULL, encoding text NOT NULL,
        nbytes bigint NOT NULL, {POSE_DDL})""",
    "CREATE TABLE memory_keyframe_data (keyframe_id bigint PRIMARY KEY, data bytea NOT NULL)",
    "ALTER TABLE memory_keyframe_data ALTER COLUMN data SET STORAGE EXTERNAL",  # no pglz on JPEG
    "CREATE INDEX memory_keyframes_by_stamp ON memory_keyframes (robot, stamp_ns) INCLUDE (nbytes)",
    "CREATE INDEX memory_keyframes_by_camera ON memory_keyframes (robot, camera, stamp_ns)",
    f"""CREATE TABLE memory_entries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, robot text NOT NULL, kind text NOT NULL,
        stamp_ns bigint NOT NULL, window_start_ns bigint NOT NULL, window_end_ns bigint NOT NULL,
        cameras text NOT NULL, text text NOT NULL, labels text NOT NULL, objects text NOT NULL, {POSE_DDL},
        nbytes bigint NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text || ' ' || labels)) STORED)""",
    "CREATE INDEX memory_entries_by_stamp ON memory_entries (robot, stamp_ns) INCLUDE (nbytes)",
    "CREATE INDEX memory_entries_tsv ON memory_entries USING gin (tsv)",
    """CREATE TABLE memory_entry_cameras (entry_id bigint NOT NULL, camera text NOT NULL,
        PRIMARY KEY (entry_id, camera))""",
    """CREATE TABLE memory_entry_objects (entry_id bigint NOT NULL, ord integer NOT NULL,
        x double precision NOT NULL, y double precision NOT NULL, z double precision NOT NULL,
        frame_id text NOT NULL, PRIMARY KEY (entry_id, ord))""",
    "CREATE TABLE memory_entry_embeddings (entry_id bigint PRIMARY KEY, vector bytea NOT NULL)",
)


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", re.sub(r"(password=)[^&\s]*", r"\1***", url))


class PostgresMemoryStore(SqlMemoryStore):
    """MemoryStore on a PostgreSQL server at ``url`` (a libpq URL: ``postgresql://user@host/db``)."""

    def __init__(self, url: str, *, max_bytes: int, max_age_s: float, robot: str = "",
                 embedder: TextEmbedder | None = None, embedding_weight: float = 0.5) -> None:
        super().__init__(where=redacted(url), robot=robot, max_bytes=max_bytes, max_age_s=max_age_s,
                         embedder=embedder, embedding_weight=embedding_weight)
        try:
            import psycopg
        except ImportError as error:
            raise MemoryStoreError(f"memory.url {self.where} needs psycopg 3: pip install 'psycopg[binary]'") from error
        self._psycopg = psycopg
        try:
            # Two connections: the recorder's writes never queue behind a service's recall, nor the reverse.
            self._writer = psycopg.connect(url, autocommit=True)
            self._reader = psycopg.connect(url, autocommit=True)
        except psycopg.Error as error:
            raise MemoryStoreError(f"cannot connect to the memory server {self.where}: {error}".strip()) from error
        self._reader_lock = threading.Lock()
        try:
            self._open_schema()
            self._load_totals()
        except BaseException:
            self.close()
            raise

    def _open_schema(self) -> None:
        with self._writer.transaction(), self._writer.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            cursor.execute("SELECT to_regclass('memory_schema') IS NOT NULL")
            if not cursor.fetchone()[0]:
                for statement in SCHEMA:
                    cursor.execute(statement)
                cursor.execute("INSERT INTO memory_schema (name, version) VALUES ('oryx_memory', %s)",
                               (SCHEMA_VERSION,))
                logger.info("memory store: created the schema (version %d) on %s", SCHEMA_VERSION, self.where)
                return
            cursor.execute("SELECT version FROM memory_schema WHERE name = 'oryx_memory'")
            row = cursor.fetchone()
            if row is None:
                raise MemoryStoreError(f"{self.where} has a memory_schema table that oryx_ros did not write; use "
                                       "another database or schema (options=-csearch_path=...)")
            version = row[0]
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(f"{self.where} has memory schema version {version}, newer than this oryx_ros "
                                         f"reads ({SCHEMA_VERSION}); update oryx_ros or use another database")
            while version < SCHEMA_VERSION:
                step = MIGRATIONS.get(version)
                if step is None:
                    raise SchemaVersionError(f"{self.where} has memory schema version {version}, which this oryx_ros "
                                             f"cannot upgrade to {SCHEMA_VERSION}; use another database")
                step(cursor)
                version += 1
                cursor.execute("UPDATE memory_schema SET version = %s WHERE name = 'oryx_memory'", (version,))

    # ---- SqlMemoryStore hooks -----------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")  # the shared SQL holds no other "?" and no "%"

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with self._reader_lock, self._reader.cursor() as cursor:
            yield cursor

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        with self._write_lock, self._writer.transaction(), self._writer.cursor() as cursor:
            yield cursor

    def _is_disk_full(self, error: BaseException) -> bool:
        return isinstance(error, self._psycopg.errors.DiskFull)

    def _text_hits(self, terms: list[str], condition: str, params: list[Any], limit: int
                   ) -> list[tuple[int, int, float]]:
        tsquery = " || ".join(["plainto_tsquery('simple', %s)"] * len(terms))
        with self._read() as cursor:
            cursor.execute(
                f"SELECT e.id, e.stamp_ns, ts_rank_cd(e.tsv, query.q, {_RANK_NORMALISATION}) AS score "
                f"FROM memory_entries e, (SELECT {tsquery} AS q) AS query "
                f"WHERE e.tsv @@ query.q AND {self._sql(condition)} ORDER BY score DESC, e.stamp_ns DESC, e.id DESC "
                "LIMIT %s", [*terms, *params, limit])
            return [(row[0], row[1], float(row[2])) for row in cursor.fetchall()]

    def close(self) -> None:
        for name in ("_writer", "_reader"):
            connection = getattr(self, name, None)
            if connection is not None:
                connection.close()
