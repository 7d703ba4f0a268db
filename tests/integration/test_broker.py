"""The broker tier against a real nats-server with JetStream and real PostgreSQL:
changes reach clients on several nodes through the stream, only one connection
reads the log, and resume from a position works on a broker node.

Each test starts its own nats-server (free port, temporary store), never the
machine's 4222 server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcast.capture.installer import track
from pgcast.config import Settings
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway

from .gateway_helpers import running_gateway, ws_client
from .nats_server import NatsServer, nats_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with nats_server(tmp_path) as server:
        yield server


async def make_items(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    await track(conn, parse_table_name("items"))


async def backends(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT application_name, count(*) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE 'pgcast%'"
        " GROUP BY application_name"
    )
    return {row["application_name"]: row["n"] for row in rows}


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Poll the async ``condition()`` until it holds; AssertionError after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"{condition.__name__} not met"
        await asyncio.sleep(0.05)  # poll interval


@contextlib.asynccontextmanager
async def broker_node(dsn: str, nats: NatsServer, **overrides: Any) -> AsyncIterator[Gateway]:
    async with running_gateway(dsn, broker=nats.url, broker_stream="T", **overrides) as node:
        yield node


async def test_changes_reach_clients_on_two_nodes_through_one_reader(
    database_url: str, conn: asyncpg.Connection, nats: NatsServer
) -> None:
    await make_items(conn)
    async with broker_node(database_url, nats) as a, broker_node(database_url, nats) as b:

        async def one_reader() -> bool:
            return (a.broker is not None and a.broker.reader.leader) != (
                b.broker is not None and b.broker.reader.leader
            )

        await wait_for(one_reader)
        async with ws_client(a) as client_a, ws_client(b) as client_b:
            for client in (client_a, client_b):
                assert (await client.subscribe("s", table="items"))["type"] == "subscribed"
            await conn.executemany(
                "INSERT INTO items VALUES ($1, $1)", [(i,) for i in range(1, 51)]
            )
            got_a = await client_a.changes(50)
            got_b = await client_b.changes(50)
        for got in (got_a, got_b):
            assert sorted(c["record"]["id"] for c in got) == list(range(1, 51))
            assert len({c["id"] for c in got}) == 50
        seen = await backends(conn)
        # One log-reading connection for the fleet, none per node.
        assert seen.get("pgcast-reader") == 1, seen
        assert "pgcast-listener" not in seen, seen
        health_a, health_b = a.health(), b.health()
        assert {health_a["broker"]["role"], health_b["broker"]["role"]} == {"reader", "follower"}
        assert health_a["status"] == health_b["status"] == "ok"
        assert "pgcast_broker_stream_lag_messages" in a.metrics()


async def test_reader_takeover_when_the_reader_node_stops(
    database_url: str, conn: asyncpg.Connection, nats: NatsServer
) -> None:
    await make_items(conn)
    async with broker_node(database_url, nats) as a:
        assert a.broker is not None
        async with broker_node(database_url, nats) as b, ws_client(b) as client:
            assert b.broker is not None
            await client.subscribe("s", table="items")

            async def a_leads() -> bool:
                return a.broker is not None and a.broker.reader.leader

            await wait_for(a_leads)
            await conn.execute("INSERT INTO items VALUES (1, 1)")
            await client.changes(1)
            await a.stop()
            await conn.execute("INSERT INTO items VALUES (2, 2)")
            loop = asyncio.get_running_loop()
            started = loop.time()
            [change] = await client.changes(1, timeout=10)
            assert change["record"]["id"] == 2
            assert loop.time() - started < 5.0
            assert b.broker.reader.leader


async def resume_ids(client: Any, last: int, **subscribe: Any) -> list[int]:
    """Subscribe with ``since``; the record ids of the changes up to record ``last``."""
    reply = await client.subscribe("s", table="items", **subscribe)
    assert reply["type"] in ("change", "subscribed"), reply
    ids = [reply["record"]["id"]] if reply["type"] == "change" else []
    while last not in ids:
        [change] = await client.changes(1)
        ids.append(change["record"]["id"])
    return ids


def resumed(ids: list[int], owed: list[int], held: set[int]) -> bool:
    """``owed`` in order; anything else is a change the client holds (the conservative
    window the log's replay sends too; the client drops it by id)."""
    return [i for i in ids if i not in held] == owed and set(ids) - set(owed) <= held


async def test_resume_with_since_is_served_from_the_stream_while_it_holds_it(
    database_url: str, conn: asyncpg.Connection, nats: NatsServer
) -> None:
    await make_items(conn)
    async with broker_node(database_url, nats) as a:
        assert a.broker is not None
        async with ws_client(a) as client:
            await client.subscribe("s", table="items")
            # A read before row 1's transaction began: the stream reaches back to it.
            await conn.execute("INSERT INTO items VALUES (0, 0)")
            await client.changes(1)
            await conn.execute("INSERT INTO items VALUES (1, 1)")
            [first] = await client.changes(1)
        await conn.executemany("INSERT INTO items VALUES ($1, $1)", [(i,) for i in range(2, 6)])

        async def caught_up() -> bool:
            return a.broker is not None and a.broker.feed.lag == 0 and a.changes_in >= 6

        await wait_for(caught_up)
        position = a.position()
        await conn.executemany("INSERT INTO items VALUES ($1, $1)", [(i,) for i in range(6, 8)])
        async with ws_client(a) as client:
            ids = await resume_ids(client, 7, since=first["id"])
            assert resumed(ids, [2, 3, 4, 5, 6, 7], held={0, 1}), ids
        async with ws_client(a) as client:  # an exact position: exactly what followed it
            assert await resume_ids(client, 7, since=position) == [6, 7]
        assert a.catch_ups.stream_replays == 2  # neither replay read the log
        # A position the stream does not reach back to (the stream began with row
        # 0's read): served from the log.
        await conn.execute("INSERT INTO items VALUES (8, 8)")
        async with ws_client(a) as client:
            assert await resume_ids(client, 8, since="0") == list(range(0, 9))
        assert a.catch_ups.stream_replays == 2


async def test_a_node_started_before_nats_waits_and_then_serves(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await make_items(conn)
    server = NatsServer(tmp_path / "late-store")
    settings = Settings(port=0, poll_interval=0.5, probe_interval=2.0, broker=server.url)
    gateway = Gateway(settings, database_url)
    starting = asyncio.ensure_future(gateway.start(retry=True))
    try:
        done, _ = await asyncio.wait({starting}, timeout=1.5)
        assert not done, "the node must wait for NATS, not fail"
        assert gateway.broker is not None
        assert "cannot reach NATS" in (gateway.broker.link.last_error or "")
        await server.start()
        await asyncio.wait_for(starting, 20)
        async with ws_client(gateway) as client:
            await client.subscribe("s", table="items")
            await conn.execute("INSERT INTO items VALUES (1, 1)")
            [change] = await client.changes(1)
            assert change["record"]["id"] == 1
    finally:
        starting.cancel()
        await gateway.stop()
        await server.stop()


async def test_in_wal_mode_the_slot_consumer_is_the_reader_and_waiters_hold_no_connection(
    wal_dsn: str, wconn: asyncpg.Connection, nats: NatsServer
) -> None:
    await wconn.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    await track(wconn, parse_table_name("items"), capture="wal")
    async with broker_node(wal_dsn, nats) as a, broker_node(wal_dsn, nats) as b:
        async with ws_client(b) as client:
            await client.subscribe("s", table="items")
            await wconn.executemany("INSERT INTO items VALUES ($1, $1)", [(i,) for i in range(5)])
            got = await client.changes(5, timeout=20)
        assert sorted(c["record"]["id"] for c in got) == list(range(5))
        for node in (a, b):
            assert node.broker is not None
            assert node.broker.reader.leader == node.wal.leader  # one process does both
        seen = await backends(wconn)
        assert seen.get("pgcast-reader") == 1 and seen.get("pgcast-wal") == 1, seen
