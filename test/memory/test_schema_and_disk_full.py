"""Schema versioning (both backends) and a full disk (SQLite's page limit → SQLITE_FULL)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from postgres_server import PostgresServer

from oryx_ros.memory import (
    KeyframeRecorder,
    MemoryStoreError,
    NewKeyframe,
    SchemaVersionError,
    open_memory_store,
)
from oryx_ros.memory.sqlite_store import SQLiteMemoryStore
from oryx_ros.perception.frames import Frame

S = 1_000_000_000


def open_sqlite(directory: Path, **kwargs: object) -> SQLiteMemoryStore:
    kwargs.setdefault("max_bytes", 0)
    kwargs.setdefault("max_age_s", 0.0)
    return SQLiteMemoryStore(directory, **kwargs)  # type: ignore[arg-type]


def set_pragma(path: Path, pragma: str) -> None:
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA {pragma}")
    connection.commit()
    connection.close()


def test_sqlite_file_is_wal_and_versioned(tmp_path: Path) -> None:
    open_sqlite(tmp_path).close()
    connection = sqlite3.connect(tmp_path / "memory.sqlite3")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    connection.close()


def test_sqlite_newer_schema_is_refused_naming_the_file(tmp_path: Path) -> None:
    open_sqlite(tmp_path).close()
    set_pragma(tmp_path / "memory.sqlite3", "user_version = 99")
    with pytest.raises(SchemaVersionError, match=r"memory\.sqlite3 has memory schema version 99, newer.*update"):
        open_sqlite(tmp_path)


def test_sqlite_older_schema_without_a_migration_is_refused(tmp_path: Path) -> None:
    open_sqlite(tmp_path).close()
    set_pragma(tmp_path / "memory.sqlite3", "user_version = 0")
    with pytest.raises(SchemaVersionError, match="cannot upgrade to 1; move the file away"):
        open_sqlite(tmp_path)


def test_sqlite_foreign_database_and_garbage_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    connection = sqlite3.connect(other / "memory.sqlite3")
    connection.execute("CREATE TABLE notes (text TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(MemoryStoreError, match=r"other/memory\.sqlite3 is an SQLite database of another program"):
        open_sqlite(other)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "memory.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(MemoryStoreError, match=r"garbage/memory\.sqlite3.*not a .*database.*move it away"):
        open_sqlite(garbage)


def test_unknown_url_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MemoryStoreError, match="mysql://u:\\*\\*\\*@h/db"):
        open_memory_store("mysql://u:secret@h/db", directory=tmp_path, max_bytes=0, max_age_s=0)


def test_postgres_newer_schema_is_refused_naming_the_url(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.create_schema()
    open_memory_store(url, directory=tmp_path, max_bytes=0, max_age_s=0).close()
    schema = url.rsplit("%3D", 1)[1]
    postgres.execute(f'UPDATE "{schema}".memory_schema SET version = 7')
    with pytest.raises(SchemaVersionError, match=f"host=.*{schema}.* has memory schema version 7, newer"):
        open_memory_store(url, directory=tmp_path, max_bytes=0, max_age_s=0)


def incompressible(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def test_full_disk_evicts_lowers_the_budget_and_keeps_writing(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    # 300 pages of 4 KiB: room for about 50 keyframes of 20 kB.
    store = open_sqlite(tmp_path, page_limit=300)
    caplog.set_level(logging.ERROR, logger="oryx_ros.memory")
    for i in range(150):
        store.add_keyframes([NewKeyframe("cam0", i * S, incompressible(20_000, i), 64, 48, "jpeg")])
    stats = store.stats()
    assert stats.disk_full_events >= 1
    assert stats.evicted_keyframes >= 1 and stats.keyframes + stats.evicted_keyframes == 150
    assert 0 < stats.byte_budget < 300 * 4096
    assert store.keyframes()[-1].stamp_ns == 149 * S  # the newest is kept, the oldest went
    assert "disk full" in caplog.text and str(tmp_path / "memory.sqlite3") in caplog.text
    assert "Free disk space or lower" in caplog.text
    assert store.integrity_check() == "ok"
    store.close()


def test_recorder_survives_a_full_disk(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path, page_limit=200)
    recorder = KeyframeRecorder(store, keyframe_hz=10.0, max_pixels=10**6, encoding="png", commit_interval_s=0.05)
    rng = np.random.default_rng(0)
    for i in range(80):
        noise = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)  # PNG of noise: ~18 kB that do not compress
        assert recorder.offer(Frame("cam0", i * S // 10, noise))
        if i % 10 == 9:
            assert recorder.flush(timeout_s=30.0)
    counters = recorder.counters()
    assert counters["disk_full_events"] >= 1 and counters["evicted"] >= 1
    assert counters["written"] + counters["dropped_on_error"] == 80
    assert store.keyframes()[-1].stamp_ns == 79 * S // 10  # still writing after the disk filled
    recorder.close()
    assert store.integrity_check() == "ok"
    store.close()
