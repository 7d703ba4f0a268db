"""A page in headless Chromium using the unmodified supabase-js (its UMD build from
npm, served by the page's own server: no CDN) against a live gateway: the page gets
the changes of the table it subscribed to, converted by supabase-js."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from ..integration.gateway_helpers import running_gateway

UMD = (
    Path(__file__).resolve().parents[1]
    / "supabase_js"
    / "node_modules"
    / "@supabase"
    / "supabase-js"
    / "dist"
    / "umd"
    / "supabase.js"
)
PAGE = b"""<!doctype html><title>supabase-js on pgcast</title>
<script src="/supabase.js"></script>
<script>
window.seen = [];
window.statuses = [];
window.start = (url) => {
  const client = supabase.createClient(url, "anon-key");
  client
    .channel("orders-page")
    .on("postgres_changes", { event: "*", schema: "public", table: "orders" },
        (payload, position) => window.seen.push({ payload, position }))
    .subscribe((status) => window.statuses.push(status));
};
</script>"""


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1]
        if path == b"/supabase.js":
            body, kind = UMD.read_bytes(), "text/javascript"
        else:
            body, kind = PAGE, "text/html"
        response = f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        writer.write(response.encode() + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
    writer.close()


@pytest.fixture
async def page_server() -> AsyncIterator[str]:
    if not UMD.is_file():
        pytest.fail(f"{UMD} is missing: run `cd tests/supabase_js && npm ci` (.ci/run does)")
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    async with server:
        yield f"http://localhost:{server.sockets[0].getsockname()[1]}"


async def test_a_page_using_supabase_js_receives_postgres_changes(
    database_url: str, conn: asyncpg.Connection, browser: Any, page_server: str
) -> None:
    await conn.execute(
        "CREATE TABLE orders (id serial PRIMARY KEY, status text, paid bool DEFAULT false)"
    )
    await track(conn, parse_table_name("orders"))
    async with running_gateway(database_url) as gateway:
        page = await browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        await page.goto(f"{page_server}/")
        await page.evaluate("url => window.start(url)", f"http://127.0.0.1:{gateway.port}")
        await page.wait_for_function("window.statuses.includes('SUBSCRIBED')", timeout=15_000)
        await conn.execute("INSERT INTO orders (status) VALUES ('new')")
        await conn.execute("UPDATE orders SET paid = true")
        await page.wait_for_function("window.seen.length >= 2", timeout=10_000)
        seen = await page.evaluate("window.seen")
        assert [s["payload"]["eventType"] for s in seen] == ["INSERT", "UPDATE"], console
        assert seen[0]["payload"]["new"] == {"id": 1, "status": "new", "paid": False}
        assert seen[1]["payload"]["new"]["paid"] is True
        assert seen[1]["payload"]["old"]["paid"] is False
        assert all(s["position"].startswith("pgcast:") for s in seen)
