"""Run the demo: embedded PostgreSQL, a tracked ``orders`` table, the gateway, the REST
API and the live page, all on one port."""

from __future__ import annotations

import asyncio
import sys
import webbrowser
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import asyncpg
import orjson
from websockets.http11 import Response

from ..capture.installer import track
from ..config import Settings
from ..identifiers import parse_table_name
from ..server import Gateway, serve
from ..transports.http import HttpRequest
from ..transports.websocket import http_response
from . import api

_REASONS = {200: "OK", 201: "Created", 403: "Forbidden", 415: "Unsupported Media Type"}


def _page() -> bytes:
    return resources.files("pgcast.demo").joinpath("static/index.html").read_bytes()


def make_routes(pool: Any) -> Callable[[HttpRequest], Awaitable[Response | None]]:
    """The demo's HTTP routes: ``/`` (the page) and ``/api/orders``; the gateway itself
    serves the browser client at ``/js/`` (pgcast.browser_client)."""
    page = _page()

    async def routes(request: HttpRequest) -> Response | None:
        if request.path in ("/", "/index.html") and request.method in ("GET", "HEAD"):
            return http_response(200, "OK", page, "text/html; charset=utf-8")
        reply = await api.handle(pool, request.method, request.path, request.body, request.headers)
        if reply is None:
            return None
        status, payload = reply
        if status == 204:
            return http_response(204, "No Content", b"", "application/json")
        reason = _REASONS.get(status, "Error")
        return http_response(status, reason, orjson.dumps(payload), "application/json")

    return routes


async def prepare(dsn: str) -> None:
    """Create and track the ``orders`` table (idempotent)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(api.SCHEMA_SQL)
        await track(conn, parse_table_name("orders"))
    finally:
        await conn.close()


async def run_demo(
    dsn: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    open_browser: bool = False,
    psql: str | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Gateway], None] | None = None,
) -> None:
    """Serve the demo until ``stop`` is set (Ctrl-C in the CLI)."""
    await prepare(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    settings = Settings(host=host, port=port, poll_interval=1.0)

    def ready(gateway: Gateway) -> None:
        url = f"http://{host}:{gateway.port}/"
        print(f"pgcast demo: open {url}", file=sys.stderr, flush=True)
        if psql:
            print(
                f"  change orders from SQL too: {psql} {dsn}\n"
                "  e.g. UPDATE orders SET status = 'shipped' WHERE id = 1;",
                file=sys.stderr,
                flush=True,
            )
        print("  Ctrl-C stops the demo.", file=sys.stderr, flush=True)
        if open_browser:
            webbrowser.open(url)
        if on_ready is not None:
            on_ready(gateway)

    try:
        await serve(settings, dsn, stop=stop, on_ready=ready, routes=make_routes(pool))
    finally:
        await pool.close()
