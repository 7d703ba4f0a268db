"""End to end on real PostgreSQL: capture -> listener -> hub -> WebSocket."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from pgcast.capture.installer import TrackOptions, track
from pgcast.client import connect
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, running_gateway, ws_client


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute(
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_name text, status text, "
        "amount int, note text)"
    )
    await track(conn, parse_table_name("orders"))
    return conn


async def test_each_op_from_sql_reaches_a_subscriber(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        ack = await client.subscribe("s1", table="orders")
        assert ack == {"type": "subscribed", "id": "s1", "schema": "public", "table": "orders"}
        await orders.execute(
            "INSERT INTO orders (customer_name, status, amount) VALUES ('ann', 'pending', 5)"
        )
        await orders.execute("UPDATE orders SET status = 'shipped' WHERE id = 1")
        await orders.execute("DELETE FROM orders WHERE id = 1")
        await orders.execute("TRUNCATE orders")
        insert, update, delete, truncate = await client.changes(4)
    assert insert["op"] == "INSERT" and insert["record"]["customer_name"] == "ann"
    assert insert["old_record"] is None and insert["sub"] == "s1"
    assert update["op"] == "UPDATE" and update["changed"] == ["status"]
    assert update["record"]["status"] == "shipped" and update["old_record"]["status"] == "pending"
    assert delete["op"] == "DELETE" and delete["record"] is None and delete["old_record"]["id"] == 1
    assert truncate["op"] == "TRUNCATE" and truncate["record"] is None
    ids = [int(m["id"]) for m in (insert, update, delete, truncate)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert all(m["committed_at"].endswith("Z") and int(m["txid"]) > 0 for m in (insert, update))


async def test_filters_events_and_columns(database_url: str, orders: asyncpg.Connection) -> None:
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.subscribe("pending", table="orders", filter="status=eq.pending")
        await client.subscribe(
            "big", table="orders", filter="amount=gt.100&status=in.(new,pending)"
        )
        await client.subscribe("deletes", table="orders", events=["DELETE"], columns=["id"])
        await orders.execute(
            "INSERT INTO orders (status, amount) VALUES ('pending', 5), ('new', 500), ('x', 1000)"
        )
        await orders.execute("DELETE FROM orders WHERE status = 'pending'")
        await orders.execute("INSERT INTO orders (status, amount) VALUES ('sentinel', 0)")
        got = await client.changes(4)
    by_sub = {(m["sub"], m["op"]) for m in got}
    assert by_sub == {
        ("pending", "INSERT"),
        ("big", "INSERT"),
        ("pending", "DELETE"),
        ("deletes", "DELETE"),
    }
    big = next(m for m in got if m["sub"] == "big")
    assert big["record"]["amount"] == 500
    deleted = next(m for m in got if m["sub"] == "deletes")
    assert deleted["old_record"] == {"id": 1}


async def test_mixed_case_and_schema_qualified_tables(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute('CREATE TABLE "Booking" (id int PRIMARY KEY, "Status" text)')
    await conn.execute(
        "CREATE SCHEMA audit; CREATE TABLE audit.events (kind text)"
    )  # no primary key
    await track(conn, parse_table_name('"Booking"'))
    await track(conn, parse_table_name("audit.events"))
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        ack = await client.subscribe("b", table="Booking", filter="Status=eq.Confirmed")
        assert ack["type"] == "subscribed" and ack["table"] == "Booking"
        ack = await client.subscribe("e", table="events", schema="audit")
        assert ack["type"] == "subscribed"
        await conn.execute("""INSERT INTO "Booking" VALUES (1, 'Confirmed'), (2, 'Cancelled')""")
        await conn.execute("INSERT INTO audit.events VALUES ('login')")
        got = await client.changes(2)
    assert {(m["sub"], orjson.dumps(m["record"])) for m in got} == {
        ("b", b'{"id":1,"Status":"Confirmed"}'),
        ("e", b'{"kind":"login"}'),
    }


async def test_one_megabyte_row_arrives_whole(
    database_url: str, orders: asyncpg.Connection
) -> None:
    big = "x" * 1_000_000 + "end"
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.subscribe("s", table="orders")
        await orders.execute("INSERT INTO orders (note) VALUES ($1)", big)
        (change,) = await client.changes(1)
    assert change["record"]["note"] == big


async def test_hundred_thousand_row_update_is_delivered_completely(
    database_url: str, orders: asyncpg.Connection
) -> None:
    """A burst larger than a connection's outbox closes it with 4001; the client
    library resumes from its last id and the replay (paced by the socket) completes."""
    await orders.execute(
        "INSERT INTO orders (status, amount) SELECT 'new', g FROM generate_series(1, 100000) g"
    )
    seen: set[int] = set()
    async with (
        running_gateway(database_url) as gateway,
        connect(f"ws://127.0.0.1:{gateway.port}") as client,
        client.subscribe("orders", events=["UPDATE"]) as sub,
    ):
        await orders.execute("UPDATE orders SET status = 'done'")
        async with asyncio.timeout(90):
            async for change in sub:
                assert change["type"] == "change"
                assert change["record"]["status"] == "done"
                assert change["old_record"]["status"] == "new"
                seen.add(change["record"]["id"])
                if len(seen) == 100_000:
                    break
    assert seen == set(range(1, 100_001))


async def test_listener_killed_mid_stream_loses_nothing(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.subscribe("s", table="orders")
        await orders.execute("INSERT INTO orders (amount) SELECT g FROM generate_series(1, 10) g")
        pid = gateway.listener.backend_pid
        assert await orders.fetchval("SELECT pg_terminate_backend($1)", pid)
        # committed while the listener is down or reconnecting
        for i in range(11, 21):
            await orders.execute("INSERT INTO orders (amount) VALUES ($1)", i)
        got = await client.changes(20, timeout=TIMEOUT * 2)
        assert gateway.listener.reconnects >= 1
        assert gateway.listener.backend_pid != pid
    assert [m["record"]["amount"] for m in got] == list(range(1, 21))


async def test_since_replays_missed_changes_then_goes_live(
    database_url: str, orders: asyncpg.Connection
) -> None:
    await orders.execute("INSERT INTO orders (amount) SELECT g FROM generate_series(1, 5) g")
    first_id = await orders.fetchval("SELECT min(id) FROM pgcast.changes")
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.send(
            {"type": "subscribe", "id": "s", "table": "orders", "since": str(first_id + 1)}
        )
        replayed = await client.changes(3)
        ack = await client.recv_type("subscribed")
        assert ack["replayed"] == 3
        await orders.execute("INSERT INTO orders (amount) VALUES (6)")
        (live,) = await client.changes(1)
    assert [m["record"]["amount"] for m in replayed] == [3, 4, 5]
    assert live["record"]["amount"] == 6


async def test_update_only_when_given_columns_change(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute("CREATE TABLE t (id int PRIMARY KEY, status text, touched int)")
    await track(conn, parse_table_name("t"), TrackOptions(when_changed=("status",)))
    await conn.execute("INSERT INTO t VALUES (1, 'a', 0)")
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.subscribe("s", table="t", events=["UPDATE"])
        await conn.execute("UPDATE t SET touched = 1")
        await conn.execute("UPDATE t SET status = 'b'")
        # the first UPDATE (committed first) was not captured: the first change is the second
        (change,) = await client.changes(1)
        assert change["record"]["status"] == "b"
        assert change["changed"] == ["status"]


async def test_health_reports_clients_and_listener(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, ws_client(gateway):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    health = orjson.loads(body)
    assert health["status"] == "ok" and health["clients"] == 1
    assert health["listener"]["state"] == "listening"


async def test_metrics_are_exposed_in_prometheus_format(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.subscribe("s", table="orders")
        await orders.execute("INSERT INTO orders (status) VALUES ('a'), ('b')")
        await client.changes(2)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/plain" in head
    metrics = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            metrics[name] = float(value)
    assert metrics["pgcast_connections"] == 1
    assert metrics["pgcast_subscriptions"] == 1
    assert metrics["pgcast_changes_total"] >= 2
    assert metrics["pgcast_deliveries_total"] >= 2
    assert metrics["pgcast_listener_up"] == 1
    assert metrics["pgcast_dispatch_seconds_count"] >= 1
    assert metrics['pgcast_capture_to_send_seconds_bucket{le="+Inf"}'] >= 1
