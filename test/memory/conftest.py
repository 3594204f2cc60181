"""Fixtures of the memory tests: a store factory parametrised over both backends (SQLite file, real
PostgreSQL server), so every store test runs on both and the two provably behave alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer, postgres_fixture

from oryx_ros.memory import MemoryStore, open_memory_store

postgres = pytest.fixture(scope="session")(postgres_fixture)

StoreOpener = Callable[..., MemoryStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str:
    """Where this test's store lives: "" (a file in tmp_path) or a fresh schema on the session's server."""
    if backend == "sqlite":
        return ""
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_schema()


@pytest.fixture
def open_store(store_url: str, tmp_path: Path) -> Iterator[StoreOpener]:
    """``open_store(**kwargs)`` opens the test's store (the same file or schema each call; budgets default
    to unlimited); every store it opened is closed afterwards."""
    opened: list[MemoryStore] = []

    def open_(**kwargs: object) -> MemoryStore:
        kwargs.setdefault("max_bytes", 0)
        kwargs.setdefault("max_age_s", 0.0)
        store = open_memory_store(store_url, directory=tmp_path, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()
