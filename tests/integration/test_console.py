"""The operator console (/console) on a real gateway, natively and under ASGI: off
unless configured, its data only for the admin token, hostile requests refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, running_gateway, ws_client
from .test_asgi import make_app, serving

TOKEN = "console-admin-token-for-tests-0123"
BEARER = f"Authorization: Bearer {TOKEN}"
STATS = "/console/api/stats"

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
    await track(conn, parse_table_name("orders"))
    return conn


async def request(port: int, target: str, *extra: str, method: str = "GET") -> Response:
    """One raw request on a fresh connection: status, headers (lowercase), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *extra]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        async with asyncio.timeout(TIMEOUT):
            raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return int(status_line.split()[1]), headers, body


async def stats(port: int, query: str = "") -> dict[str, Any]:
    status, _, body = await request(port, STATS + query, BEARER)
    assert status == 200, body
    document: dict[str, Any] = orjson.loads(body)
    return document


async def wait_for_stats(
    port: int, condition: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:
    """Poll the stats (as the page does) until ``condition`` holds; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            document = await stats(port)
            if condition(document):
                return document
            await asyncio.sleep(0.2)  # a poll interval, not a wait for the event


@contextlib.asynccontextmanager
async def native(dsn: str, token: str | None) -> AsyncIterator[int]:
    async with running_gateway(dsn, admin_token=token) as gateway:
        yield gateway.port


@contextlib.asynccontextmanager
async def under_asgi(dsn: str, token: str | None) -> AsyncIterator[int]:
    async with serving(make_app(dsn, admin_token=token)) as server:
        yield server.port


SERVERS = {"native": native, "asgi": under_asgi}


@pytest.mark.parametrize("server", SERVERS)
async def test_the_console_is_absent_unless_an_admin_token_is_configured(
    database_url: str, server: str
) -> None:
    async with SERVERS[server](database_url, None) as port:
        for target in ["/console", "/console/", "/console/console.js", STATS, "/console/js/x.js"]:
            status, _, body = await request(port, target, BEARER)
            assert status == 404, target
            assert body == b'{"error":"not found"}'


async def test_an_unconfigured_gateway_does_not_sample_for_the_console(database_url: str) -> None:
    async with running_gateway(database_url) as gateway:
        names = {task.get_name() for task in gateway._background}
        assert "pgcast-housekeeping" in names and "pgcast-console-feed" not in names
        assert gateway.console_samples.latest is None


@pytest.mark.parametrize("server", SERVERS)
async def test_without_the_admin_token_the_stats_say_nothing(
    database_url: str, orders: asyncpg.Connection, server: str
) -> None:
    async with SERVERS[server](database_url, TOKEN) as port:
        status, headers, body = await request(port, STATS)
        assert status == 401
        assert headers["www-authenticate"] == 'Bearer realm="pgcast console"'
        assert set(orjson.loads(body)) == {"error"}
        for header in [
            f"Authorization: Bearer {TOKEN[:-1]}",
            f"Authorization: Bearer {TOKEN}x",
            f"Authorization: Basic {TOKEN}",
            f"Authorization: {TOKEN}",
            "Authorization: Bearer \xff\xfe\x80garbage\x7f",
            "Authorization: Bearer " + "A" * 12_000,
        ]:
            status, _, body = await request(port, STATS, header)
            assert status in (401, 403), header[:40]
            assert set(orjson.loads(body)) == {"error"}, header[:40]
        # Heads past h11's bound on an unfinished head (16 KiB) may be refused before any
        # route runs (431, 400) or reach the check (403): never the data.
        for size in [20_000, 300_000]:
            try:
                status, _, body = await request(port, STATS, "Authorization: " + "A" * size)
            except ConnectionResetError:  # answered and closed while the head was sent
                continue
            assert status in (400, 401, 431) and b'"now"' not in body, (size, status)
        # Still serving, and the right token opens it.
        document = await stats(port)
        assert {"node", "now", "series", "cluster"} <= set(document)


@pytest.mark.parametrize("server", SERVERS)
async def test_bad_query_parameters_and_methods_are_refused(database_url: str, server: str) -> None:
    async with SERVERS[server](database_url, TOKEN) as port:
        for query in [
            "?seconds=abc",
            "?seconds=0",
            "?seconds=301",
            "?seconds=-1",
            "?seconds=99999999999999999999999",
            "?seconds=%EF%BC%91",  # a full-width digit: isdigit() but not ASCII
            "?seconds=",
            "?limit=5",
            "?seconds=5&seconds=5&seconds=5&seconds=5&seconds=5",
            "?" + "&".join(f"k{i}=v" for i in range(500)),
        ]:
            status, _, body = await request(port, STATS + query, BEARER)
            assert status == 400, query[:40]
            assert set(orjson.loads(body)) == {"error"}
        assert len((await stats(port, "?seconds=5"))["series"]["at"]) <= 5
        status, headers, _ = await request(port, STATS, BEARER, method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        for target in [
            "/console/../health",
            "/console/%2e%2e/health",
            "/console/js/../../pyproject.toml",
            "/console/js/test/x.js",
            "/console/index.html/",
            "/console/api/stats/",
            "/console/" + "a" * 4000,
        ]:
            status, _, body = await request(port, target, BEARER)
            assert status in (400, 404), target[:40]
            assert b"pgcast" not in body and b"[project]" not in body, target[:40]


@pytest.mark.parametrize("server", SERVERS)
async def test_the_page_shell_is_served_with_strict_headers_and_no_data(
    database_url: str, server: str
) -> None:
    async with SERVERS[server](database_url, TOKEN) as port:
        status, headers, _ = await request(port, "/console")
        assert status == 308 and headers["location"] == "console/"
        status, headers, body = await request(port, "/console/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert b'id="changes-rate"' in body and TOKEN.encode() not in body
        for name in ["console.js", "charts.js", "inspector.js", "console.css", "js/pgcast.js"]:
            status, headers, body = await request(port, f"/console/{name}")
            assert status == 200 and body, name
        # No CORS: a page on another origin cannot read the console.
        status, headers, _ = await request(port, STATS, BEARER, "Origin: http://evil.example")
        assert status == 200 and "access-control-allow-origin" not in headers


async def test_the_stats_follow_connections_subscriptions_and_changes(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url, admin_token=TOKEN) as gateway:
        async with ws_client(gateway) as client:
            assert (await client.subscribe("s1", table="orders"))["type"] == "subscribed"
            document = await wait_for_stats(
                gateway.port, lambda d: d["now"]["tables"].get("public.orders") == 1
            )
            assert document["now"]["connections"] == 1
            assert document["now"]["subscriptions"] == 1

            await orders.execute(
                "INSERT INTO orders (status) SELECT 'new' FROM generate_series(1, 50)"
            )
            await client.changes(50)
            document = await wait_for_stats(
                gateway.port, lambda d: max(d["series"]["changes_per_s"], default=0) > 0
            )
            assert document["now"]["changes_total"] == 50
            assert document["now"]["deliveries_total"] >= 50
            assert max(document["series"]["deliveries_per_s"]) > 0
            assert document["now"]["capture_lag"] is not None
            assert document["node"]["listener"]["state"] == "listening"
        await wait_for_stats(gateway.port, lambda d: d["now"]["connections"] == 0)


async def test_every_gateway_node_on_the_database_is_listed(database_url: str) -> None:
    async with (
        running_gateway(database_url, admin_token=TOKEN) as first,
        running_gateway(database_url) as second,
    ):
        own = first.listener.backend_pid
        other = second.listener.backend_pid
        document = await wait_for_stats(
            first.port,
            lambda d: {n["pid"] for n in d["cluster"]["nodes"]} >= {own, other},
        )
        nodes = {node["pid"]: node for node in document["cluster"]["nodes"]}
        assert nodes[own]["self"] is True and nodes[other]["self"] is False
        assert nodes[other]["address"] == "127.0.0.1" and nodes[other]["since"]
    assert document["cluster"]["error"] is None
