"""The LISTEN connection survives silent and abrupt deaths without losing changes."""

from __future__ import annotations

import asyncpg
import pytest

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import running_gateway, ws_client
from .tcp_proxy import tcp_proxy


@pytest.fixture
async def items(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    await track(conn, parse_table_name("items"))
    return conn


@pytest.mark.parametrize("failure", ["freeze", "cut"])
async def test_dead_listen_connection_is_detected_and_nothing_is_lost(
    database_url: str, items: asyncpg.Connection, failure: str
) -> None:
    async with (
        tcp_proxy(database_url) as proxy,
        running_gateway(proxy.dsn(database_url), poll_interval=0.2, probe_interval=1.0) as gateway,
        ws_client(gateway) as client,
    ):
        await client.subscribe("s", table="items")
        await items.execute("INSERT INTO items VALUES (1)")
        assert [c["record"]["id"] for c in await client.changes(1)] == [1]
        # freeze: packets stop, sockets stay open (a dead peer, a pulled cable)
        proxy.freeze() if failure == "freeze" else proxy.cut()
        await items.execute("INSERT INTO items SELECT g FROM generate_series(2, 5) g")
        await items.execute("INSERT INTO items VALUES (6)")
        # probe timeout 1 s + backoff: well within the 10 s the client waits
        got = await client.changes(5, timeout=10)
        assert [c["record"]["id"] for c in got] == [2, 3, 4, 5, 6]
        assert gateway.listener.reconnects >= 1
