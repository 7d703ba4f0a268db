"""pgcast.asgi_app under a real ASGI server (in-process uvicorn on a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import pgcast
from pgcast.asgi import AppState, PgcastASGI
from pgcast.auth import AuthConfig, load_auth_config
from pgcast.capture.installer import track
from pgcast.config import Settings
from pgcast.exceptions import PgcastError
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, WsClient, stalled_subscriber

SETTINGS = {"poll_interval": 0.5, "probe_interval": 2.0}


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute(
        "CREATE TABLE orders (id serial PRIMARY KEY, status text, amount int, note text)"
    )
    await track(conn, parse_table_name("orders"))
    return conn


def make_app(dsn: str, **overrides: Any) -> PgcastASGI:
    auth = overrides.pop("auth", AuthConfig())
    return pgcast.asgi_app(Settings(**{**SETTINGS, **overrides}), dsn=dsn, auth=auth)


class RunningServer:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        self.server = server
        self.task = task

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(asyncio.shield(self.task), TIMEOUT)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[RunningServer]:
    """``app`` under uvicorn (lifespan on) on a free port, until the block ends."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", ws_ping_interval=None
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(TIMEOUT):
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
    running = RunningServer(server, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.stop()


@contextlib.asynccontextmanager
async def ws(url: str, **kwargs: Any) -> AsyncIterator[WsClient]:
    async with connect(url, max_size=None, **kwargs) as socket:
        client = WsClient(socket)
        assert (await client.recv())["type"] == "welcome"
        yield client


async def test_subscriber_receives_committed_changes_over_asgi(
    database_url: str, orders: asyncpg.Connection
) -> None:
    app = make_app(database_url)
    async with serving(app) as server, ws(server.url("/ws", "ws")) as client:
        ack = await client.subscribe("s1", table="orders")
        assert ack == {"type": "subscribed", "id": "s1", "schema": "public", "table": "orders"}
        await orders.execute("INSERT INTO orders (status, amount) VALUES ('new', 5)")
        await orders.execute("UPDATE orders SET status = 'paid'")
        insert, update = await client.changes(2)
        assert insert["op"] == "INSERT" and insert["record"]["amount"] == 5
        assert update["op"] == "UPDATE" and update["changed"] == ["status"]
        await client.send({"type": "ping", "data": "p"})
        assert await client.recv_type("pong") == {"type": "pong", "data": "p"}


async def test_mounted_in_starlette_under_a_prefix_with_the_hosts_lifespan(
    database_url: str, orders: asyncpg.Connection
) -> None:
    realtime = make_app(database_url)

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(
        routes=[Route("/", home), Mount("/realtime", realtime)], lifespan=realtime.lifespan
    )
    async with serving(host) as server:
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.url("/"))).text == "host app"
            health = await http.get(server.url("/realtime/health"))
            assert health.status_code == 200 and health.json()["status"] == "ok"
        async with ws(server.url("/realtime/ws", "ws")) as client:
            await client.subscribe("s", table="orders")
            await orders.execute("INSERT INTO orders (status) VALUES ('mounted')")
            (change,) = await client.changes(1)
            assert change["record"]["status"] == "mounted"
    assert realtime.state is AppState.STOPPED


async def test_health_metrics_and_unknown_paths(
    database_url: str, orders: asyncpg.Connection
) -> None:
    app = make_app(database_url)
    async with serving(app) as server, httpx.AsyncClient() as http:
        async with ws(server.url("/ws", "ws")) as client:
            await client.subscribe("s", table="orders")
            await orders.execute("INSERT INTO orders (status) VALUES ('x')")
            await client.changes(1)
            health = (await http.get(server.url("/health"))).json()
            assert health["status"] == "ok" and health["clients"] == 1
            assert health["subscriptions"] == 1 and health["changes_in"] == 1
            metrics = await http.get(server.url("/metrics"))
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        samples = dict(
            line.rsplit(" ", 1)
            for line in metrics.text.splitlines()
            if line and not line.startswith("#")
        )
        assert float(samples["pgcast_connections"]) == 1
        assert float(samples["pgcast_deliveries_total"]) == 1
        assert float(samples["pgcast_hook_drops_total"]) == 0
        assert (await http.get(server.url("/nope"))).status_code == 404
        index = (await http.get(server.url("/"))).json()
        assert index["websocket"] == "ws" and index["sse"] == "sse"


async def test_not_started_app_answers_503_and_names_the_missing_lifespan(
    database_url: str,
) -> None:
    app = make_app(database_url)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:  # noqa: ASYNC110 (uvicorn has no event to await)
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/health")
        assert answer.status_code == 503 and "lifespan" in answer.json()["error"]
        with pytest.raises(PgcastError, match="expected running"):
            _ = app.gateway
    finally:
        server.should_exit = True
        await task


async def test_refused_handshake_gets_the_gateways_http_answer(
    database_url: str, orders: asyncpg.Connection
) -> None:
    auth = load_auth_config({"jwt_secret": "s" * 32}, env={})
    app = make_app(database_url, auth=auth)
    async with serving(app) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.url("/ws?token=not-a-jwt", "ws")):
                pass
        assert refused.value.response.status_code == 401
        assert orjson.loads(refused.value.response.body)["code"] == "unauthorized"


async def test_client_that_stops_reading_is_closed_with_4001_and_others_unaffected(
    database_url: str, orders: asyncpg.Connection
) -> None:
    """The ASGI outbox is bounded like the native one: a stalled client costs bounded
    memory, is told to reconnect and resume (4001), and nobody else waits."""
    app = make_app(database_url, outbox_limit=50)
    async with serving(app) as server, ws(server.url("/ws", "ws")) as healthy:
        await healthy.subscribe("s", table="orders")
        # A client whose socket is read by nobody: its kernel buffers fill, then uvicorn's.
        reader, writer = await stalled_subscriber(server.port, "orders")
        gateway = app.gateway
        _, stalled = gateway.clients  # in connection order
        note = "x" * 2000
        async with asyncio.timeout(60):
            while stalled.is_open:
                await orders.execute(
                    "INSERT INTO orders (status, note) SELECT 'bulk', $1 "
                    "FROM generate_series(1, 200)",
                    note,
                )
                await healthy.changes(200)
        assert gateway.overflows == 1
        # the stalled socket, read at last, ends with a close frame carrying 4001
        assert await asyncio.wait_for(_close_code(reader), TIMEOUT) == 4001
        writer.close()
        await orders.execute("INSERT INTO orders (status) VALUES ('after')")
        (after,) = await healthy.changes(1)
        assert after["record"]["status"] == "after"


async def test_pgcast_shutdown_closes_clients_with_4000(
    database_url: str, orders: asyncpg.Connection
) -> None:
    """The app's shutdown (what lifespan.shutdown runs, or a host app stopping pgcast
    first) tells each client to reconnect and resume elsewhere, after what was queued."""
    app = make_app(database_url)
    async with serving(app) as server, ws(server.url("/ws", "ws")) as client:
        await client.subscribe("s", table="orders")
        await app.shutdown()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        assert app.state is AppState.STOPPED


async def test_server_shutdown_with_connected_clients_is_clean(
    database_url: str, orders: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn closes its WebSockets (1012, service restart: reconnect) before it runs
    lifespan.shutdown; pgcast then stops its listener, pool and hooks without errors."""
    app = make_app(database_url)
    async with serving(app) as server, ws(server.url("/ws", "ws")) as client:
        await client.subscribe("s", table="orders")
        gateway = app.gateway
        with caplog.at_level(logging.WARNING):
            await server.stop()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1012, 4000)
    assert app.state is AppState.STOPPED and not gateway.clients
    assert gateway.listener.state.value == "stopped"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_on_change_hooks_sync_and_async_run_for_each_change_and_errors_are_contained(
    database_url: str, orders: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(database_url)
    seen_async: list[dict[str, Any]] = []
    seen_sync: list[tuple[str, int]] = []
    all_seen = asyncio.Event()

    @app.on_change("orders")
    async def audit(change: dict[str, Any]) -> None:
        seen_async.append(change)
        if len(seen_async) == 3:
            all_seen.set()

    @app.on_change("orders", events=("INSERT",))
    def in_a_thread(change: dict[str, Any]) -> None:
        assert threading.current_thread() is not threading.main_thread()
        seen_sync.append((change["op"], change["record"]["amount"]))

    broken_ran = threading.Event()

    @app.on_change("orders", events=("UPDATE",))
    def broken(change: dict[str, Any]) -> None:
        broken_ran.set()
        raise RuntimeError("hook bug")

    with pytest.raises(ValueError, match="events must be"):
        app.on_change("orders", events=("UPSERT",))

    async with serving(app) as server:
        with pytest.raises(PgcastError, match="expected idle"):
            app.on_change("orders")
        with caplog.at_level(logging.ERROR, logger="pgcast.hooks"):
            await orders.execute("INSERT INTO orders (status, amount) VALUES ('a', 1), ('b', 2)")
            await orders.execute("UPDATE orders SET status = 'c' WHERE amount = 1")
            await asyncio.wait_for(all_seen.wait(), TIMEOUT)
            assert await asyncio.to_thread(broken_ran.wait, TIMEOUT)
            # hooks run one at a time, in registration order: `broken` was after `audit`;
            # its error is counted once the worker is past it
            await asyncio.wait_for(_hooks_idle(app), TIMEOUT)
        assert [c["op"] for c in seen_async] == ["INSERT", "INSERT", "UPDATE"]
        assert seen_async[2]["old_record"]["status"] == "a" and "type" not in seen_async[2]
        assert sorted(seen_sync) == [("INSERT", 1), ("INSERT", 2)]
        assert any("hook bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(server.url("/metrics"))).text
        assert "pgcast_hook_errors_total 1" in metrics


async def _hooks_idle(app: PgcastASGI) -> None:
    queue = app.gateway.hooks._queue
    assert queue is not None
    await queue.join()


async def _close_code(reader: asyncio.StreamReader) -> int:
    """Skip server frames until the close frame; return its code."""
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        if first & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


async def _events(lines: AsyncIterator[str], count: int) -> list[dict[str, str]]:
    """The next ``count`` events of an SSE body (comments skipped)."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(TIMEOUT):
        async for line in lines:
            if not line:
                if "data" in fields:
                    events.append(fields)
                    if len(events) == count:
                        return events
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    raise AssertionError(f"the stream ended after {events}")


async def test_sse_is_served_under_asgi_like_under_pgcast_serve(
    database_url: str, orders: asyncpg.Connection
) -> None:
    app = make_app(database_url)
    async with serving(app) as server, httpx.AsyncClient(timeout=TIMEOUT) as http:
        refused = await http.get(server.url("/sse?table=nope"))
        assert refused.status_code == 404 and refused.json()["code"] == "unknown_table"
        async with http.stream("GET", server.url("/sse?table=orders")) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream"
            lines = stream.aiter_lines()
            [subscribed] = await _events(lines, 1)
            assert subscribed["event"] == "subscribed"
            assert orjson.loads(subscribed["data"])["table"] == "orders"
            await orders.execute("INSERT INTO orders (status) VALUES ('sse')")
            [change] = await _events(lines, 1)
            data = orjson.loads(change["data"])
            assert change["event"] == "change" and change["id"] == data["id"]
            assert data["record"]["status"] == "sse"
            assert app.gateway.health()["clients"] == 1
        async with asyncio.timeout(TIMEOUT):
            while app.gateway.health()["clients"]:  # noqa: ASYNC110 (no event to await)
                await asyncio.sleep(0.01)
