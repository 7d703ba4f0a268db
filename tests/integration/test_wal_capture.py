"""WAL capture on real PostgreSQL (a cluster of its own with wal_level = logical)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import orjson
import pytest

from pgcast.capture import installer, wal_setup
from pgcast.capture.installer import TrackOptions, track, untrack
from pgcast.exceptions import CaptureError
from pgcast.identifiers import parse_table_name

from ..conftest import ADMIN_DSN
from .gateway_helpers import TIMEOUT, running_gateway, ws_client
from .wal_cluster import WalCluster, fresh_database, wal_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[WalCluster]:
    with wal_cluster() as c:
        yield c


@pytest.fixture
async def wal_dsn(cluster: WalCluster) -> AsyncIterator[str]:
    async with fresh_database(cluster) as dsn:
        yield dsn


@pytest.fixture
async def wconn(wal_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(wal_dsn)
    try:
        yield connection
    finally:
        await connection.close()


ORDERS = (
    "CREATE TABLE orders (id serial PRIMARY KEY, customer_name text, status text, "
    "amount int, note text)"
)


async def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` (async) until true: the log is written by another task."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def log_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, op, table_name, record::text, old_record::text, changed "
        "FROM pgcast.changes ORDER BY id"
    )
    return [
        {
            "id": r["id"],
            "op": r["op"],
            "table": r["table_name"],
            "record": None if r["record"] is None else orjson.loads(r["record"]),
            "old_record": None if r["old_record"] is None else orjson.loads(r["old_record"]),
            "changed": r["changed"],
        }
        for r in rows
    ]


async def test_each_op_reaches_a_subscriber_through_the_gateway(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(ORDERS)
    tracked = await track(wconn, parse_table_name("orders"), capture="wal")
    assert tracked.capture == "wal"
    assert not await wconn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal"
    )
    async with running_gateway(wal_dsn) as gateway, ws_client(gateway) as client:
        await client.subscribe("s1", table="orders")
        await wconn.execute(
            "INSERT INTO orders (customer_name, status, amount) VALUES ('ann', 'pending', 5)"
        )
        await wconn.execute("UPDATE orders SET status = 'shipped' WHERE id = 1")
        await wconn.execute("DELETE FROM orders WHERE id = 1")
        await wconn.execute("TRUNCATE orders")
        insert, update, delete, truncate = await client.changes(4)
    assert insert["op"] == "INSERT" and insert["record"] == {
        "id": 1,
        "customer_name": "ann",
        "status": "pending",
        "amount": 5,
        "note": None,
    }
    assert insert["old_record"] is None
    assert update["op"] == "UPDATE" and update["changed"] == ["status"]
    assert update["record"]["status"] == "shipped" and update["old_record"]["status"] == "pending"
    assert delete["op"] == "DELETE" and delete["record"] is None
    assert delete["old_record"]["id"] == 1 and delete["old_record"]["amount"] == 5
    assert truncate["op"] == "TRUNCATE" and truncate["record"] is None
    ids = [int(m["id"]) for m in (insert, update, delete, truncate)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert insert["committed_at"].endswith("Z")


async def test_wal_capture_refused_where_wal_level_is_replica_installs_nothing(
    database_url: str, conn: asyncpg.Connection
) -> None:
    if await conn.fetchval("SHOW wal_level") == "logical":
        pytest.skip("the main test server already has wal_level = logical")
    await conn.execute(ORDERS)
    with pytest.raises(CaptureError) as caught:
        await track(conn, parse_table_name("orders"), capture="wal")
    assert "wal_level = logical" in str(caught.value)
    assert "ALTER SYSTEM SET wal_level = logical" in str(caught.value)
    assert await conn.fetchval("SELECT to_regclass('pgcast.changes')") is None
    assert not await conn.fetchval("SELECT count(*) FROM pg_publication")
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        )
    finally:
        await admin.close()
