"""Schema changes while the gateway runs, and rules checked against the schema at start.

Real PostgreSQL, a real gateway: a column added, renamed or dropped is what the next
subscribe checks and its snapshot shows, without a restart; the subscribers of a table
renamed or dropped are told (``table_gone``); a rule naming a missing table or column
is a warning at start; a filter literal its column's type can never equal is refused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest

import pgcast.catalog
from pgcast.auth import AuthConfig, parse_rules
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, WsClient, running_gateway, ws_client


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
    await conn.execute("INSERT INTO orders VALUES (1, 'new'), (2, 'paid')")
    await track(conn, parse_table_name("orders"))
    return conn


@pytest.fixture
def quick_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcast.catalog, "CATALOG_REFRESH_EVERY", 0.2, raising=False)


async def refused_once_refreshed(client: WsClient, **fields: Any) -> dict[str, Any]:
    """Subscribe until refused (the catalog refreshes every 0.2 s here); the refusal."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            answer = await client.subscribe("probe", **fields)
            if answer["type"] == "error":
                return answer
            await client.send({"type": "unsubscribe", "id": "probe"})
            assert (await client.recv())["type"] == "unsubscribed"
            await asyncio.sleep(0.1)


async def snapshot_rows(client: WsClient, sub_id: str, **fields: Any) -> list[dict[str, Any]]:
    await client.send({"type": "subscribe", "id": sub_id, "snapshot": True, **fields})
    rows: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = await client.recv()
            if message["type"] == "snapshot":
                rows += message["rows"]
            elif message["type"] == "subscribed":
                return sorted(rows, key=lambda row: row["id"])
            elif message["type"] != "change":
                raise AssertionError(message)


async def test_added_column_is_filterable_and_in_snapshots_without_restart(
    orders: asyncpg.Connection, database_url: str
) -> None:
    async with running_gateway(database_url) as gw, ws_client(gw) as client:
        assert (await client.subscribe("before", table="orders"))["type"] == "subscribed"
        await orders.execute("ALTER TABLE orders ADD COLUMN merchant_id int")
        await orders.execute("UPDATE orders SET merchant_id = id * 7")
        rows = await snapshot_rows(client, "after", table="orders", filter="merchant_id=eq.14")
        assert rows == [{"id": 2, "status": "paid", "merchant_id": 14}]
        whole = await snapshot_rows(client, "all", table="orders")
        assert [row["merchant_id"] for row in whole] == [7, 14]
        await orders.execute("INSERT INTO orders VALUES (3, 'new', 14)")
        async with asyncio.timeout(TIMEOUT):
            while True:
                change = await client.recv_type("change")
                if change["sub"] == "after" and change["record"]["id"] == 3:
                    break
        assert change["record"]["merchant_id"] == 14


async def test_renamed_column_is_known_by_its_new_name_only(
    orders: asyncpg.Connection, database_url: str, quick_refresh: None
) -> None:
    async with running_gateway(database_url) as gw, ws_client(gw) as client:
        assert (await client.subscribe("before", table="orders"))["type"] == "subscribed"
        await orders.execute("ALTER TABLE orders RENAME COLUMN status TO state")
        rows = await snapshot_rows(client, "new", table="orders", filter="state=eq.paid")
        assert rows == [{"id": 2, "state": "paid"}]
        refused = await refused_once_refreshed(client, table="orders", filter="status=eq.paid")
        assert refused["type"] == "error" and refused["code"] == "bad_filter"
        assert "unknown column 'status'" in refused["message"]


async def test_dropped_column_is_refused_and_left_out_of_snapshots(
    orders: asyncpg.Connection, database_url: str, quick_refresh: None
) -> None:
    async with running_gateway(database_url) as gw, ws_client(gw) as client:
        assert (await client.subscribe("before", table="orders"))["type"] == "subscribed"
        await orders.execute("ALTER TABLE orders DROP COLUMN status")
        refused = await refused_once_refreshed(client, table="orders", filter="status=eq.paid")
        assert refused["type"] == "error" and refused["code"] == "bad_filter"
        assert await snapshot_rows(client, "all", table="orders") == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize(
    ("ddl", "said"),
    [
        ("ALTER TABLE orders RENAME TO purchases", "renamed to 'public.purchases'"),
        ("DROP TABLE orders", "dropped"),
    ],
)
async def test_subscribers_of_a_renamed_or_dropped_table_are_told(
    orders: asyncpg.Connection, database_url: str, quick_refresh: None, ddl: str, said: str
) -> None:
    async with running_gateway(database_url) as gw, ws_client(gw) as client:
        assert (await client.subscribe("o", table="orders"))["type"] == "subscribed"
        await orders.execute(ddl)
        told = await client.recv_type("error")
        assert told["id"] == "o" and told["code"] == "table_gone"
        assert "'public.orders'" in told["message"] and said in told["message"]
        # The subscription is over: its id is free again, and unsubscribing it is an error.
        await client.send({"type": "unsubscribe", "id": "o"})
        assert (await client.recv())["code"] == "unknown_subscription"


async def test_rule_naming_a_missing_column_or_table_warns_at_start(
    orders: asyncpg.Connection, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rules = parse_rules(
        {
            "tables": {
                "orders": {"read": "merchant_id = claims.merchant_id"},
                "invoices": {"read": "true"},
            }
        }
    )
    auth = AuthConfig(anonymous=True, rules=rules, mode="anonymous")
    with caplog.at_level(logging.WARNING, logger="pgcast.server"):
        async with running_gateway(database_url, auth=auth):
            pass
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "[rules.tables.'public.orders']" in line and "column 'merchant_id'" in line
        for line in warned
    ), warned
    assert any(
        "public.invoices" in line and "not tracked" in line and "pgcast track" in line
        for line in warned
    ), warned


@pytest.mark.parametrize(
    ("filter_", "said"),
    [
        ("id=gt.abc", "'abc' in filter term 'id=gt.abc' cannot be compared"),
        ("id=in.(1,x)", "'x'"),
    ],
)
async def test_literal_that_cannot_compare_with_the_column_type_is_refused(
    orders: asyncpg.Connection, database_url: str, filter_: str, said: str
) -> None:
    async with running_gateway(database_url) as gw, ws_client(gw) as client:
        refused = await client.subscribe("bad", table="orders", filter=filter_)
        assert refused["type"] == "error" and refused["code"] == "bad_filter", refused
        assert said in refused["message"] and "numeric" in refused["message"]
        ok = await client.subscribe("ok", table="orders", filter="id=gt.1&status=eq.abc")
        assert ok["type"] == "subscribed"


async def test_rename_found_by_a_subscribe_is_still_told(
    orders: asyncpg.Connection, database_url: str, quick_refresh: None
) -> None:
    """A subscribe to the new name reloads the catalog first: the rename it finds is
    still told to the old name's subscribers by the periodic refresh."""
    async with (
        running_gateway(database_url) as gw,
        ws_client(gw) as old,
        ws_client(gw) as new,
    ):
        assert (await old.subscribe("o", table="orders"))["type"] == "subscribed"
        await orders.execute("ALTER TABLE orders RENAME TO purchases")
        assert (await new.subscribe("p", table="purchases"))["type"] == "subscribed"
        told = await old.recv_type("error")
        assert told["id"] == "o" and told["code"] == "table_gone"
        assert "renamed to 'public.purchases'" in told["message"]
