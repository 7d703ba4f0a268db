"""An ``EventSource`` from a page on another origin, in a real headless Chromium.

The page is served from ``http://localhost:<port>``, the gateway listens on
``127.0.0.1:<another port>``: a cross-origin stream, which the browser reads only if
the gateway names the page's origin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcast.auth import AuthConfig
from pgcast.auth.limits import Limits
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from ..integration.gateway_helpers import running_gateway

OPEN_STREAM = """url => {
    window.seen = [];
    window.failed = false;
    const source = new EventSource(url);
    for (const kind of ["subscribed", "change"]) {
        source.addEventListener(kind, event => window.seen.push(JSON.parse(event.data)));
    }
    // A stream the browser blocks ends for good: the EventSource gives up (CLOSED).
    source.onerror = () => { window.failed = source.readyState === EventSource.CLOSED; };
}"""


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
    await track(conn, parse_table_name("orders"))
    return conn


async def _serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await reader.readuntil(b"\r\n\r\n")
        body = b"<!doctype html><title>app</title>"
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
    writer.close()


@pytest.fixture
async def page_origin() -> AsyncIterator[str]:
    """A second origin: a page server on another port, addressed as ``localhost``
    (loopback like the gateway, so Chromium's private-network rules stay out of it)."""
    server = await asyncio.start_server(_serve_page, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://localhost:{port}"


async def page_on_another_origin(browser: Any, origin: str) -> tuple[Any, list[str]]:
    """A page at ``origin`` and its console (where Chromium says why it blocks a request)."""
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    await page.goto(f"{origin}/")
    return page, console


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "any"])
async def test_an_event_source_on_an_allowed_origin_receives_changes(
    database_url: str, orders: asyncpg.Connection, browser: Any, page_origin: str, listed: bool
) -> None:
    """Listed in ``allowed_origins``, or any origin when it is empty (the default)."""
    auth = AuthConfig(limits=Limits(allowed_origins=(page_origin,) if listed else ()))
    async with running_gateway(database_url, auth=auth) as gateway:
        page, console = await page_on_another_origin(browser, page_origin)
        await page.evaluate(OPEN_STREAM, f"http://127.0.0.1:{gateway.port}/sse?table=orders")
        await page.wait_for_function(
            "window.failed || window.seen.some(m => m.type === 'subscribed')", timeout=10_000
        )
        assert not await page.evaluate("window.failed"), console
        await orders.execute("INSERT INTO orders (status) VALUES ('new')")
        await page.wait_for_function("window.seen.some(m => m.type === 'change')", timeout=10_000)
        changes = await page.evaluate("window.seen.filter(m => m.type === 'change')")
        assert changes[0]["record"]["status"] == "new"


async def test_an_event_source_on_an_origin_not_allowed_is_blocked(
    database_url: str, orders: asyncpg.Connection, browser: Any, page_origin: str
) -> None:
    auth = AuthConfig(limits=Limits(allowed_origins=("http://other.example",)))
    async with running_gateway(database_url, auth=auth) as gateway:
        page, console = await page_on_another_origin(browser, page_origin)
        await page.evaluate(OPEN_STREAM, f"http://127.0.0.1:{gateway.port}/sse?table=orders")
        await page.wait_for_function("window.failed", timeout=10_000)
        assert await page.evaluate("window.seen") == []
        # Blocked by CORS: the gateway's answer (403) names no origin.
        assert any("CORS policy" in line for line in console), console
