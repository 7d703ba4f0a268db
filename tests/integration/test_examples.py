"""The FastAPI and Django examples, each run by uvicorn in a subprocess against the
per-test database: a WebSocket client through the mounted path receives a change,
the on_change hook writes its audit row, and SIGTERM shuts the app down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .test_asgi import ws

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STARTUP_TIMEOUT = 30.0
_RUNNING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class App:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.log = bytearray()

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def uvicorn_app(cwd: Path, target: str, database_url: str) -> AsyncIterator[App]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(cwd)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "uvicorn", target, "--host", "127.0.0.1", "--port", "0"),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    startup = bytearray()
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not (found := _RUNNING.search(startup)):
                line = await process.stderr.readline()
                if not line:
                    raise AssertionError(f"{target} exited at startup:\n{startup.decode()}")
                startup += line
        app = App(process, int(found.group(1)))
        app.log += startup
        yield app
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), STARTUP_TIMEOUT)
        await process.wait()
        log = (startup + rest).decode()
        # a clean lifespan shutdown: no traceback, pgcast stopped (uvicorn re-raises
        # the SIGTERM it handled, so its exit status is that signal's)
        assert process.returncode in (0, -signal.SIGTERM), log
        assert "Traceback" not in log, log
        assert "Application shutdown complete." in log, log


async def _wait_for_audit(http: httpx.AsyncClient, url: str, count: int) -> list[dict[str, object]]:
    """Poll the app's audit endpoint (the hook writes asynchronously)."""
    async with asyncio.timeout(10):
        while True:
            rows: list[dict[str, object]] = (await http.get(url)).json()
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.05)


async def test_fastapi_example_streams_changes_and_audits_them(database_url: str) -> None:
    async with (
        uvicorn_app(EXAMPLES / "fastapi_app", "app:app", database_url) as app,
        httpx.AsyncClient() as http,
        ws(app.url("/realtime/ws", "ws")) as client,
    ):
        assert (await client.subscribe("s", table="orders"))["type"] == "subscribed"
        created = await http.post(app.url("/orders"), json={"customer": "ada", "amount": 42})
        assert created.status_code == 201
        (change,) = await client.changes(1)
        assert change["op"] == "INSERT" and change["record"]["customer"] == "ada"
        (entry,) = await _wait_for_audit(http, app.url("/audit"), 1)
        assert entry == {"change_id": int(change["id"]), "op": "INSERT", "order_id": 1}
        health = await http.get(app.url("/realtime/health"))
        assert health.json()["clients"] == 1


@pytest.fixture
async def django_database(database_url: str) -> str:
    """The per-test database, migrated by the example's manage.py, orders tracked."""
    cwd = EXAMPLES / "django_app"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("manage.py", "migrate", "--noinput"),
        cwd=cwd,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT)
    assert process.returncode == 0, output.decode()
    conn = await asyncpg.connect(database_url)
    try:
        await track(conn, parse_table_name("orders"))
    finally:
        await conn.close()
    return database_url


async def test_django_example_routes_realtime_to_pgcast_and_audits_with_the_orm(
    django_database: str,
) -> None:
    async with (
        uvicorn_app(EXAMPLES / "django_app", "project.asgi:application", django_database) as app,
        httpx.AsyncClient() as http,
        ws(app.url("/realtime/ws", "ws")) as client,
    ):
        assert (await client.subscribe("s", table="orders"))["type"] == "subscribed"
        created = await http.post(app.url("/orders"), json={"customer": "lin", "amount": 7})
        assert created.status_code == 201, created.text
        (change,) = await client.changes(1)
        assert change["record"]["customer"] == "lin"
        (entry,) = await _wait_for_audit(http, app.url("/audit"), 1)
        assert entry == {"change_id": int(change["id"]), "op": "INSERT", "order_id": 1}
        assert (await http.get(app.url("/orders"))).json()[0]["customer"] == "lin"
        assert (await http.get(app.url("/realtime/health"))).json()["status"] == "ok"
