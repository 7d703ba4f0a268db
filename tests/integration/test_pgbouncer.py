"""LISTEN through a real PgBouncer (Debian package): transaction mode is detected and explained.

PgBouncer runs in the foreground with a config in a temporary directory (``auth_type
= any``, every database forwarded to the test server as its user, a free port), in
``transaction`` or ``session`` pool mode. ``pgcast.pgbouncer.check_listen``, ``pgcast
status`` and ``pgcast serve`` (with ``--log-format json``) are checked through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name
from pgcast.pgbouncer import check_listen, decide

from ..conftest import ADMIN_DSN
from .gateway_helpers import TIMEOUT
from .test_cli import Cli, free_port

pytestmark = pytest.mark.timeout(90)


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "pgbouncer is not installed: these tests run a real PgBouncer. Install the "
            "Debian package (apt-get install pgbouncer); .ci/run does it."
        )
    return found


def run_as() -> list[str]:
    """PgBouncer refuses to run as root: switch to the postgres (or nobody) user."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return ["-u", user]
    pytest.fail("running as root with neither a postgres nor a nobody user for PgBouncer")


def write_config(pool_mode: str) -> tuple[Path, int]:
    server = urlsplit(ADMIN_DSN)
    target = f"host={server.hostname or '127.0.0.1'} port={server.port or 5432}"
    target += f" user={server.username or 'postgres'}"
    if server.password:
        target += f" password={server.password}"
    directory = Path(tempfile.mkdtemp(prefix="pgcast-pgbouncer-"))
    directory.chmod(0o755)
    port = free_port()
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = {pool_mode}
"""
    )
    ini.chmod(0o644)
    return ini, port


def through(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))


@contextlib.asynccontextmanager
async def running_pgbouncer(pool_mode: str) -> AsyncIterator[int]:
    binary = pgbouncer_binary()
    ini, port = write_config(pool_mode)
    proc = await asyncio.create_subprocess_exec(
        binary,
        *run_as(),
        str(ini),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                if proc.returncode is not None:
                    assert proc.stdout is not None
                    output = (await proc.stdout.read()).decode()
                    raise AssertionError(f"pgbouncer exited: {output}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)  # poll while it binds, not a wait for an outcome
                    continue
                writer.close()
                break
        yield port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # SIGINT: safe shutdown
        try:
            await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        shutil.rmtree(ini.parent, ignore_errors=True)


async def test_transaction_mode_is_detected_and_a_direct_connection_passes(
    database_url: str,
) -> None:
    direct = await check_listen(database_url)
    assert direct.delivered is True and not direct.broken
    assert not direct.pgbouncer and not direct.via_proxy
    async with running_pgbouncer("transaction") as port:
        pooled = await check_listen(through(database_url, port))
    assert pooled.broken and pooled.pgbouncer and pooled.via_proxy
    text = pooled.explain()
    assert "does not work through PgBouncer" in text
    assert "transaction" in text and "direct connection" in text


async def test_session_mode_keeps_listen_working(database_url: str) -> None:
    async with running_pgbouncer("session") as port:
        check = await check_listen(through(database_url, port))
    assert check.delivered is True and check.pgbouncer and not check.broken
    assert "session pool mode" in check.explain()


async def test_status_explains_transaction_mode(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    await track(conn, parse_table_name("orders"))
    cli = Cli(tmp_path, database_url)
    ok = await cli.run("status")
    assert ok.code == 0, ok
    assert "LISTEN/NOTIFY works." in ok.stdout
    async with running_pgbouncer("transaction") as port:
        pooled = Cli(tmp_path, through(database_url, port))
        text = await pooled.run("status")
        as_json = await pooled.run("status", "--json")
    assert text.code == 1, text
    assert "tracked tables: 1" in text.stdout
    assert "does not work through PgBouncer" in text.stdout
    assert "direct connection" in text.stdout
    assert as_json.code == 1, as_json
    report = orjson.loads(as_json.stdout)
    assert report["listen_notify"]["works"] is False
    assert report["listen_notify"]["pgbouncer"] is True


async def test_serve_logs_an_error_at_startup_as_json(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    await track(conn, parse_table_name("orders"))
    async with running_pgbouncer("transaction") as port:
        cli = Cli(tmp_path, through(database_url, port))
        args = ("serve", "--log-format", "json", "--port", str(free_port()))
        async with cli.start(*args) as proc:
            line = await proc.stderr.expect(lambda text: "pgcast.pgbouncer" in text)
            proc.proc.send_signal(signal.SIGTERM)
            await proc.exit_code()
    entry = orjson.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "pgcast.pgbouncer"
    assert "direct connection" in entry["message"]
    assert set(entry) >= {"ts", "level", "logger", "message"}


async def test_serve_json_logs_are_one_object_per_line(database_url: str, tmp_path: Path) -> None:
    cli = Cli(tmp_path, database_url)
    async with cli.start("serve", "--log-format", "json", "--port", str(free_port())) as proc:
        await proc.stderr.expect(lambda text: "serving ws://" in text)
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.exit_code() == 0
    entries = [orjson.loads(line) for line in proc.stderr.lines if line]
    assert entries and all(isinstance(e, dict) for e in entries)
    assert all(e["level"] != "error" for e in entries), entries  # no PgBouncer complaint
    ready = next(e for e in entries if "serving ws://" in e["message"])
    assert ready["logger"] == "pgcast.cli" and ready["level"] == "info"


@pytest.mark.parametrize(
    ("delivered", "rejected", "server_port", "url_port", "broken", "pgbouncer", "proxy"),
    [
        (True, False, 5432, 5432, False, False, False),
        (False, True, 5432, 6432, True, True, True),
        (False, False, 5432, 6432, True, False, True),
        (False, False, None, None, True, False, False),
        (True, True, 5432, 6432, False, True, True),
    ],
)
def test_decision(
    delivered: bool,
    rejected: bool,
    server_port: int | None,
    url_port: int | None,
    broken: bool,
    pgbouncer: bool,
    proxy: bool,
) -> None:
    check = decide(
        delivered=delivered,
        rejected_probe=rejected,
        server_port=server_port,
        dsn_port=url_port,
        timeout=2.0,
    )
    assert (check.broken, check.pgbouncer, check.via_proxy) == (broken, pgbouncer, proxy)
    assert ("direct connection" in check.explain()) is broken
