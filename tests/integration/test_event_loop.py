"""The gateway runs under uvloop as under asyncio: WebSocket, SSE and plain HTTP."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgcast import event_loop
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, running_gateway, ws_client

pytest.importorskip("uvloop")


async def _scenario(dsn: str) -> tuple[str, dict[str, object], bytes]:
    loop_name = type(asyncio.get_running_loop()).__module__
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
        await track(conn, parse_table_name("orders"))
        async with running_gateway(dsn) as gateway, ws_client(gateway) as client:
            ack = await client.subscribe("s", table="orders")
            assert ack["type"] == "subscribed"
            # An SSE stream and a plain request on the same loop's transports.
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(b"GET /sse?table=orders HTTP/1.1\r\nHost: x\r\n\r\n")
            await conn.execute("INSERT INTO orders (status) VALUES ('uv')")
            [change] = await client.changes(1)
            async with asyncio.timeout(TIMEOUT):
                stream = b""
                while b"event: change" not in stream:
                    stream += await reader.read(65536)
            writer.close()
            return loop_name, change["record"], stream
    finally:
        await conn.close()


async def test_the_gateway_serves_under_uvloop(database_url: str) -> None:
    loop_name, record, stream = await asyncio.to_thread(
        event_loop.run, _scenario(database_url), env={"PGCAST_EVENT_LOOP": "uvloop"}
    )
    assert loop_name.startswith("uvloop")
    assert record["status"] == "uv"
    assert stream.startswith(b"HTTP/1.1 200 OK") and b'"uv"' in stream


def test_the_event_loop_choice() -> None:
    assert event_loop.loop_factory({"PGCAST_EVENT_LOOP": "asyncio"}) is None
    assert event_loop.loop_factory({}) is not None  # uvloop is installed: it is the default
    with pytest.raises(Exception, match="not an event loop"):
        event_loop.loop_factory({"PGCAST_EVENT_LOOP": "trio"})
