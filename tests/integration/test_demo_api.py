"""The demo's REST API over real HTTP: writes a foreign page could forge are refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import orjson

from pgcast.demo.server import run_demo
from pgcast.server import Gateway

from .gateway_helpers import TIMEOUT

ORDER = b'{"customer_name": "Ada", "product_name": "Mug"}'


@contextlib.asynccontextmanager
async def demo(dsn: str) -> AsyncIterator[Gateway]:
    stop = asyncio.Event()
    ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_demo(dsn, port=0, stop=stop, on_ready=ready.set_result))
    try:
        yield await asyncio.wait_for(asyncio.shield(ready), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def request(
    port: int, method: str, path: str, body: bytes = b"", headers: str = ""
) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    )
    writer.write(head.encode() + body)
    try:
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    status, _, rest = response.partition(b"\r\n\r\n")
    return int(status.split(b" ")[1]), rest


async def test_cross_origin_and_non_json_writes_are_refused(
    database_url: str, conn: asyncpg.Connection
) -> None:
    async with demo(database_url) as gateway:
        port = gateway.port
        json = "Content-Type: application/json\r\n"
        own = f"Origin: http://127.0.0.1:{port}\r\n"
        forged = [
            # What an HTML form or a no-preflight fetch from another site can send.
            ("POST", "/api/orders", ORDER, "Content-Type: text/plain\r\n", 415),
            (
                "POST",
                "/api/orders",
                ORDER,
                "Content-Type: application/x-www-form-urlencoded\r\n",
                415,
            ),
            ("POST", "/api/orders", ORDER, "", 415),
            ("POST", "/api/orders", ORDER, f"Content-Type: text/plain\r\n{own}", 415),
            ("POST", "/api/orders", ORDER, json + "Origin: http://evil.example\r\n", 403),
            ("POST", "/api/orders", ORDER, json + "Origin: null\r\n", 403),
            ("POST", "/api/orders", ORDER, json + f"Origin: http://127.0.0.1:{port + 1}\r\n", 403),
            ("PUT", "/api/orders/1", b'{"status": "shipped"}', "Content-Type: text/plain\r\n", 415),
            (
                "PATCH",
                "/api/orders/1",
                b'{"status": "shipped"}',
                json + "Origin: https://x\r\n",
                403,
            ),
            ("DELETE", "/api/orders/1", b"", "Origin: http://evil.example\r\n", 403),
        ]
        created = await request(port, "POST", "/api/orders", ORDER, json + own)
        assert created[0] == 201, created
        for method, path, body, headers, status in forged:
            answer = await request(port, method, path, body, headers)
            assert answer[0] == status, (method, headers, answer)
            assert orjson.loads(answer[1])["error"]
        rows = await conn.fetch("SELECT id, status FROM orders")
        assert [(r["id"], r["status"]) for r in rows] == [(1, "pending")]
        # The page's own requests, and a script without an Origin (curl), still work.
        assert (await request(port, "POST", "/api/orders", ORDER, json))[0] == 201
        update = b'{"status": "shipped"}'
        assert (await request(port, "PUT", "/api/orders/1", update, json + own))[0] == 200
        assert (await request(port, "DELETE", "/api/orders/2", b"", own))[0] == 204
        evil = "Origin: http://evil.example\r\n"
        assert (await request(port, "GET", "/api/orders", b"", evil))[0] == 200  # reads pass
        rows = await conn.fetch("SELECT id, status FROM orders")
        assert [(r["id"], r["status"]) for r in rows] == [(1, "shipped")]


async def test_a_nul_character_is_a_400_not_a_database_error(
    database_url: str, conn: asyncpg.Connection
) -> None:
    async with demo(database_url) as gateway:
        body = b'{"customer_name": "A\\u0000da", "product_name": "Mug"}'
        status, answer = await request(
            gateway.port, "POST", "/api/orders", body, "Content-Type: application/json\r\n"
        )
        assert status == 400, answer
        assert "NUL" in orjson.loads(answer)["error"]
        assert await conn.fetchval("SELECT count(*) FROM orders") == 0
