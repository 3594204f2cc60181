"""A throwaway real PostgreSQL server for tests: socket-only, trust auth, deleted afterwards.

    from postgres_server import postgres_server, require_postgres

    with postgres_server() as server:          # or the pytest fixture below
        url = server.create_schema("t1")       # a fresh, isolated schema: postgresql://...&options=...
        ...

The server needs PostgreSQL's binaries (Debian: ``apt-get install postgresql``, found in
/usr/lib/postgresql/<version>/bin or on PATH); ``require_postgres()`` skips the calling test with that
reason when they are missing. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` user (``runuser``), with the temporary directory handed to it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

INSTALL_HINT = "PostgreSQL server binaries not found (initdb, pg_ctl): apt-get install postgresql"
_USER = "oryx"
_schema_numbers = itertools.count(1)


def find_postgres_bin() -> Path | None:
    """The directory holding initdb and pg_ctl (newest Debian version first, then PATH), or None."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    for directory in versions:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def require_postgres() -> Path:
    """The binaries' directory; inside a pytest test, skips it when there are none."""
    directory = find_postgres_bin()
    if directory is None:
        import pytest

        pytest.skip(INSTALL_HINT)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        import pytest

        pytest.skip("running as root needs runuser (util-linux) to start PostgreSQL as the postgres user")
    return directory


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: Path
    port: int
    user: str = _USER

    def url(self, database: str = "postgres", *, search_path: str | None = None) -> str:
        """A libpq URL reaching the server through its socket directory."""
        url = f"postgresql://{self.user}@/{database}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"
        if search_path:
            url += "&options=" + quote(f"-csearch_path={search_path}", safe="")
        return url

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:
            connection.execute(sql)

    def create_schema(self, name: str | None = None) -> str:
        """A new empty schema (fresh tables for one test) and the URL whose search_path is it."""
        name = name or f"test_{os.getpid()}_{next(_schema_numbers)}"
        self.execute(f'CREATE SCHEMA "{name}"')
        return self.url(search_path=name)


def _free_port() -> int:
    # The server listens on no TCP port (listen_addresses=''), but the port names its socket file and keys
    # its shared memory: one that no TCP server holds either keeps clear of a developer's own PostgreSQL.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_server(bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    """Start a server in a temporary directory, yield it, stop it and delete everything."""
    bin_dir = bin_dir or find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError(INSTALL_HINT)
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="oryx-pg-"))
    if as_root:
        shutil.chown(base, user="postgres")
    data, log, port = base / "data", base / "server.log", _free_port()
    started = False
    try:
        initdb = subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", _USER,
                                 "--no-sync", "-E", "UTF8"], capture_output=True, text=True)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()}")
        # fsync=off: a throwaway cluster needs no durability, and tests run faster without it.
        options = f"-p {port} -k {base} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        result = subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
                                 "-w", "-t", "60", "start"], capture_output=True, text=True)
        if result.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{server_log[-2000:]}")
        started = True
        yield PostgresServer(socket_dir=base, port=port)
    finally:
        if started:
            subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def postgres_fixture() -> Iterator[PostgresServer]:
    """Body of a pytest fixture (``pytest.fixture(scope="session")(postgres_fixture)``): one server per
    session, skipped when PostgreSQL is not installed."""
    require_postgres()
    with postgres_server() as server:
        yield server
