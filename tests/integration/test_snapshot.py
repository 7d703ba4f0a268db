"""Snapshot then stream: rows matching the filter, then every later change, no gap, no dup."""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg
import pytest

from pgcast.capture.installer import TrackOptions, track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, WsClient, running_gateway, ws_client

UPDATE = "UPDATE accounts SET balance = balance + 1, tenant = $2 WHERE id = $1"
UPSERT = (
    "INSERT INTO accounts VALUES ($1, $2, 0) "
    "ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1"
)


@pytest.fixture
async def accounts(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, tenant int, balance int)")
    await conn.execute("INSERT INTO accounts SELECT g, g % 3, 0 FROM generate_series(1, 1200) g")
    await track(conn, parse_table_name("accounts"))
    return conn


async def collect_snapshot(
    client: WsClient,
) -> tuple[dict[int, dict[str, object]], list[dict[str, object]]]:
    """Receive snapshot chunks, then changes, until `subscribed`."""
    rows: dict[int, dict[str, object]] = {}
    changes: list[dict[str, object]] = []
    async with asyncio.timeout(TIMEOUT * 3):
        while True:
            message = await client.recv()
            if message["type"] == "snapshot":
                for row in message["rows"]:
                    assert row["id"] not in rows, "a row appears twice in the snapshot"
                    rows[row["id"]] = row
            elif message["type"] == "change":
                changes.append(message)
            elif message["type"] == "subscribed":
                return rows, changes
            else:
                raise AssertionError(message)


def apply(mirror: dict[int, dict[str, object]], change: dict[str, object], tenant: int) -> None:
    record, old = change["record"], change["old_record"]
    if change["op"] == "DELETE":
        mirror.pop(old["id"], None)  # type: ignore[index]
    elif record["tenant"] == tenant:  # type: ignore[index]
        mirror[record["id"]] = record  # type: ignore[index]
    else:
        mirror.pop(record["id"], None)  # type: ignore[index]


async def test_snapshot_is_chunked_filtered_and_projected(
    database_url: str, accounts: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.send(
            {
                "type": "subscribe",
                "id": "s",
                "table": "accounts",
                "snapshot": True,
                "filter": "tenant=eq.1",
                "columns": ["id", "tenant"],
            }
        )
        chunks = []
        async with asyncio.timeout(TIMEOUT):
            while (message := await client.recv())["type"] == "snapshot":
                chunks.append(message)
        assert message["type"] == "subscribed" and message["snapshot_rows"] == 400
        assert chunks[-1]["done"] and not any(chunk["done"] for chunk in chunks[:-1])
        rows = [row for chunk in chunks for row in chunk["rows"]]
        assert sorted(r["id"] for r in rows) == list(range(1, 1201, 3))
        assert all(set(r) == {"id", "tenant"} for r in rows)
        # All 1,200 rows (no filter) come in several chunks.
        await client.send({"type": "subscribe", "id": "all", "table": "accounts", "snapshot": True})
        chunks = []
        async with asyncio.timeout(TIMEOUT):
            while (message := await client.recv())["type"] == "snapshot":
                chunks.append(message)
        assert message["type"] == "subscribed" and message["snapshot_rows"] == 1200
        assert len(chunks) >= 3 and chunks[-1]["done"] and not chunks[0]["done"]


async def test_snapshot_respects_tracked_columns(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text, password_hash text)")
    await conn.execute("INSERT INTO users VALUES (1, 'ann', 'secret')")
    await track(conn, parse_table_name("users"), TrackOptions(columns=("name",)))
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        await client.send({"type": "subscribe", "id": "s", "table": "users", "snapshot": True})
        rows, _ = await collect_snapshot(client)
    assert rows == {1: {"id": 1, "name": "ann"}}


async def test_snapshot_handoff_under_concurrent_writes_has_no_gap_and_no_duplicate(
    database_url: str, accounts: asyncpg.Connection
) -> None:
    stop = asyncio.Event()
    rng = random.Random(20261121)

    async def writer() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncpg.DeadlockDetectedError):
                    async with conn.transaction():
                        for _ in range(rng.randint(1, 4)):
                            row = rng.randint(1, 1300)
                            action = rng.random()
                            if action < 0.6:
                                await conn.execute(UPDATE, row, rng.randint(0, 2))
                            elif action < 0.8:
                                await conn.execute("DELETE FROM accounts WHERE id = $1", row)
                            else:
                                await conn.execute(UPSERT, row, rng.randint(0, 2))
        finally:
            await conn.close()

    async with running_gateway(database_url) as gateway:
        writers = [asyncio.create_task(writer()) for _ in range(3)]
        try:
            clients = []
            for _ in range(3):  # subscribe at different moments of the write stream
                ctx = ws_client(gateway)
                client = await ctx.__aenter__()
                clients.append((ctx, client))
                await client.send(
                    {
                        "type": "subscribe",
                        "id": "s",
                        "table": "accounts",
                        "snapshot": True,
                        "filter": "tenant=eq.1",
                    }
                )
            mirrors = []
            seen_ids: list[set[str]] = []
            for _, client in clients:
                rows, changes = await collect_snapshot(client)
                ids = set()
                for change in changes:
                    assert change["id"] not in ids
                    ids.add(change["id"])
                    apply(rows, change, tenant=1)
                mirrors.append(rows)
                seen_ids.append(ids)
        finally:
            stop.set()
            await asyncio.gather(*writers)
        await accounts.execute("INSERT INTO accounts VALUES (100000, 1, 0)")  # sentinel
        expected = {
            r["id"]: dict(r)
            for r in await accounts.fetch("SELECT * FROM accounts WHERE tenant = 1")
        }
        for (ctx, client), rows, ids in zip(clients, mirrors, seen_ids, strict=True):
            async with asyncio.timeout(TIMEOUT * 3):
                while 100000 not in rows:
                    change = (await client.changes(1))[0]
                    assert change["id"] not in ids, "a change was delivered twice"
                    ids.add(change["id"])
                    apply(rows, change, tenant=1)
            assert rows == expected
            await ctx.__aexit__(None, None, None)


async def test_python_client_snapshot_then_changes(
    database_url: str, accounts: asyncpg.Connection
) -> None:
    from pgcast.client import connect

    async with (
        running_gateway(database_url) as gateway,
        connect(f"ws://127.0.0.1:{gateway.port}") as client,
        client.subscribe("accounts", filter="tenant=eq.2", snapshot=True) as sub,
    ):
        mirror: dict[int, dict[str, object]] = {}
        parts = []
        async with asyncio.timeout(TIMEOUT):
            async for frame in sub:
                assert frame["type"] == "snapshot"
                parts.append(frame["part"])
                mirror.update({row["id"]: row for row in frame["rows"]})
                if frame["done"]:
                    break
        assert parts == list(range(len(parts))) and len(mirror) == 400
        await accounts.execute("UPDATE accounts SET tenant = 0 WHERE id = 2")
        async with asyncio.timeout(TIMEOUT):
            change = await anext(aiter(sub))
        assert change["type"] == "change" and change["old_record"]["id"] == 2
        apply(mirror, change, tenant=2)
        assert 2 not in mirror
