"""CORS over raw HTTP, native and ASGI: the routes a page on another origin calls name
that origin when ``allowed_origins`` admits it, and only then."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgcast.auth import AuthConfig
from pgcast.auth.limits import Limits
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, running_gateway
from .test_asgi import make_app, serving

APP = "http://app.example"
EVIL = "http://evil.example"
ACAO = "access-control-allow-origin"


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
    await track(conn, parse_table_name("orders"))
    return conn


async def request(
    port: int, method: str, target: str, origin: str | None, *extra: str
) -> tuple[int, dict[str, str]]:
    """One raw request; the status and headers (lowercase names) of its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *extra]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
    return int(status_line.split()[1]), headers


def auth(*origins: str) -> AuthConfig:
    return AuthConfig(limits=Limits(allowed_origins=origins))


@contextlib.asynccontextmanager
async def native(dsn: str, *origins: str) -> AsyncIterator[int]:
    async with running_gateway(dsn, auth=auth(*origins)) as gateway:
        yield gateway.port


@contextlib.asynccontextmanager
async def under_asgi(dsn: str, *origins: str) -> AsyncIterator[int]:
    async with serving(make_app(dsn, auth=auth(*origins))) as server:
        yield server.port


SERVERS = {"native": native, "asgi": under_asgi}
PAGES = ["/sse?table=orders", "/health", "/"]


@pytest.mark.parametrize("server", SERVERS)
async def test_an_allowed_origin_is_named_on_the_routes_pages_call(
    database_url: str, orders: asyncpg.Connection, server: str
) -> None:
    async with SERVERS[server](database_url, APP) as port:
        for target in PAGES:
            status, headers = await request(port, "GET", target, APP)
            assert status == 200, target
            assert headers.get(ACAO) == APP, target
            assert headers.get("vary") == "Origin", target
            assert "access-control-allow-credentials" not in headers
        # Scrapers read /metrics, pages do not: no origin is named there.
        status, headers = await request(port, "GET", "/metrics", APP)
        assert status == 200 and ACAO not in headers


@pytest.mark.parametrize("server", SERVERS)
async def test_a_disallowed_origin_or_none_gets_no_cors_headers(
    database_url: str, orders: asyncpg.Connection, server: str
) -> None:
    async with SERVERS[server](database_url, APP) as port:
        status, headers = await request(port, "GET", "/sse?table=orders", EVIL)
        assert status == 403 and ACAO not in headers
        for target in ["/health", "/"]:
            status, headers = await request(port, "GET", target, EVIL)
            assert status == 200 and ACAO not in headers, target
        for target in PAGES:
            status, headers = await request(port, "GET", target, None)
            assert status == 200 and ACAO not in headers, target


@pytest.mark.parametrize("server", SERVERS)
async def test_empty_allowed_origins_names_any_origin(
    database_url: str, orders: asyncpg.Connection, server: str
) -> None:
    async with SERVERS[server](database_url) as port:
        for target in PAGES:
            status, headers = await request(port, "GET", target, EVIL)
            assert status == 200 and headers.get(ACAO) == EVIL, target


@pytest.mark.parametrize("server", SERVERS)
async def test_preflight_answers_an_allowed_origin_and_refuses_another(
    database_url: str, orders: asyncpg.Connection, server: str
) -> None:
    asks = ("Access-Control-Request-Method: GET", "Access-Control-Request-Headers: last-event-id")
    async with SERVERS[server](database_url, APP) as port:
        for target in ["/sse?table=orders", "/health"]:
            status, headers = await request(port, "OPTIONS", target, APP, *asks)
            assert status == 204, target
            assert headers.get(ACAO) == APP
            assert "GET" in headers["access-control-allow-methods"]
            allowed = headers["access-control-allow-headers"].lower()
            assert {"authorization", "last-event-id", "content-type"} <= {
                name.strip() for name in allowed.split(",")
            }
            assert int(headers["access-control-max-age"]) > 0
            status, headers = await request(port, "OPTIONS", target, EVIL, *asks)
            assert status == 403 and ACAO not in headers, target


async def test_the_browser_client_module_is_served_to_an_allowed_origin(
    database_url: str,
) -> None:
    """``<script type="module">`` fetches cross-origin in CORS mode."""
    async with native(database_url, APP) as port:
        status, headers = await request(port, "GET", "/js/pgcast.js", APP)
        assert status == 200 and headers.get(ACAO) == APP
        status, headers = await request(port, "GET", "/js/pgcast.js", EVIL)
        assert status == 200 and ACAO not in headers
