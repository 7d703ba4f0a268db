"""Hostile data end to end: column names and values chosen to break capture or routing.

* Columns named like the capture function's aliases, variables and the log's own
  columns: every write still succeeds and the log (hence every subscriber, live and
  in snapshots) holds the true row, never a jsonb column's value passed off as it.
* Numbers PostgreSQL can store but a float cannot hold (1e400, 4,300+ digits,
  2**64 + 1, 0.1000000000000000001): they reach clients as ``to_jsonb`` wrote them,
  rules and filters compare them exactly, and one change that cannot be read costs
  no other change its delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import jwt
from websockets.asyncio.client import connect

from pgcast.auth import AuthConfig, load_auth_config
from pgcast.capture.installer import TrackOptions, install, installed_version, track
from pgcast.capture.sql import SCHEMA_VERSION, install_script
from pgcast.identifiers import TableName
from pgcast.server import Gateway

from .gateway_helpers import TIMEOUT, WsClient, running_gateway, ws_client

SECRET = "hostile-data-secret-" + "k" * 40
RULES = """
[rules.tables.accounts]
read = "merchant_id = claims.merchant_id"

[rules.tables.amounts]
read = "merchant_id = claims.merchant_id"
"""


def auth_config(tmp_path: Path) -> AuthConfig:
    config = tmp_path / "pgcast.toml"
    config.write_text(RULES)
    return load_auth_config({"jwt_secret": SECRET}, env={}, config_file=config)


def token(merchant: Any) -> str:
    claims = {"sub": f"tenant-{merchant}", "merchant_id": merchant, "exp": time.time() + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@contextlib.asynccontextmanager
async def tenant(gateway: Gateway, merchant: Any) -> AsyncIterator[WsClient]:
    url = f"ws://127.0.0.1:{gateway.port}/ws?token={token(merchant)}"
    async with connect(url, max_size=None) as ws:
        client = WsClient(ws)
        assert (await client.recv())["type"] == "welcome"
        yield client


def exact(raw: str | bytes) -> Any:
    """A frame decoded with every number kept as its text, to compare texts."""
    return json.loads(raw, parse_float=str, parse_int=str)


async def recv_exact(client: WsClient, kind: str) -> dict[str, Any]:
    """The next message of type ``kind``, numbers as text (others are skipped)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            message: dict[str, Any] = exact(await client.ws.recv())
            if message["type"] == kind:
                return message


async def snapshot_rows(client: WsClient, sub: str, **fields: Any) -> list[dict[str, Any]]:
    """Subscribe with a snapshot; every snapshot row (numbers as text) until `subscribed`."""
    await client.send({"type": "subscribe", "id": sub, "snapshot": True, **fields})
    rows: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = exact(await client.ws.recv())
            assert message["type"] in ("snapshot", "subscribed"), message
            if message["type"] == "subscribed":
                return rows
            rows.extend(message["rows"])


async def pg_texts(conn: asyncpg.Connection, table: str, key: str) -> dict[str, dict[str, Any]]:
    """Each row of ``table`` as PostgreSQL's to_jsonb writes it, numbers as text, by ``key``."""
    texts = await conn.fetch(f"SELECT to_jsonb(t.*)::text AS row FROM {table} t")
    return {str(exact(r["row"])[key]): exact(r["row"]) for r in texts}


# --- item 1: column names that collide with the capture function's names ---------------

SHADOW_COLUMNS = (
    "id int PRIMARY KEY, merchant_id int, n jsonb, t jsonb, o jsonb, r jsonb, x jsonb, "
    "pgcast_new jsonb, pgcast_old text, ord int, record jsonb, old_record jsonb, "
    'changed text, txid text, op text, "select" text, "user" text, "order" int, '
    '"MixedCase" text, v_txid int, v_drop text, v_rows int, tg_op text, tg_table_name text, '
    '"new" jsonb, "old" jsonb, v_new jsonb, v_old jsonb, v_changed text, k text'
)
FORGED = {"id": 4242, "merchant_id": 2}


def shadow_row(row_id: int, merchant: int, jsonb_value: Any) -> dict[str, Any]:
    """A row whose alias-named jsonb columns all hold ``jsonb_value``."""
    return {
        "id": row_id,
        "merchant_id": merchant,
        "n": jsonb_value,
        "t": jsonb_value,
        "o": jsonb_value,
        "r": jsonb_value,
        "x": jsonb_value,
        "pgcast_new": jsonb_value,
        "pgcast_old": "old",
        "ord": 3,
        "record": jsonb_value,
        "old_record": jsonb_value,
        "changed": "c",
        "txid": "t",
        "op": "DELETE",
        "select": "s",
        "user": "u",
        "order": 5,
        "MixedCase": "M",
        "v_txid": 1,
        "v_drop": "d",
        "v_rows": 0,
        "tg_op": "TRUNCATE",
        "tg_table_name": "other",
        "new": jsonb_value,
        "old": jsonb_value,
        "v_new": jsonb_value,
        "v_old": jsonb_value,
        "v_changed": "vc",
        "k": "k",
    }


async def insert_shadow(conn: asyncpg.Connection, table: str, row: dict[str, Any]) -> None:
    names = ", ".join(f'"{name}"' for name in row)
    jsonb = {"n", "t", "o", "r", "x", "pgcast_new", "record", "old_record", "new", "old"}
    jsonb |= {"v_new", "v_old"}
    values = ", ".join(
        f"${i}::jsonb" if name in jsonb else f"${i}" for i, name in enumerate(row, start=1)
    )
    await conn.execute(
        f"INSERT INTO {table} ({names}) VALUES ({values})",
        *(json.dumps(v) if k in jsonb else v for k, v in row.items()),
    )


async def logged(conn: asyncpg.Connection, table: str) -> list[tuple[str, Any, Any]]:
    rows = await conn.fetch(
        "SELECT op, record::text, old_record::text FROM pgcast.changes "
        "WHERE table_name = $1 ORDER BY id",
        table,
    )
    return [
        (
            r["op"],
            None if r["record"] is None else json.loads(r["record"]),
            None if r["old_record"] is None else json.loads(r["old_record"]),
        )
        for r in rows
    ]


async def test_columns_named_like_capture_aliases_and_variables_log_the_true_row(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(f"CREATE TABLE shadow ({SHADOW_COLUMNS})")
    await conn.execute(f"CREATE TABLE projected ({SHADOW_COLUMNS})")
    await track(conn, TableName(None, "shadow"))
    # A column projection makes the trigger subtract a non-empty key list.
    await track(conn, TableName(None, "projected"), TrackOptions(columns=("n", "o", "t")))
    scalar, forged = shadow_row(1, 1, 7), shadow_row(2, 1, FORGED)
    updated = {**scalar, "x": "moved", "n": None}
    for table in ("shadow", "projected"):
        # Writes of every kind succeed: pgcast never breaks the application's writes.
        await insert_shadow(conn, table, scalar)
        await insert_shadow(conn, table, forged)
        await conn.execute(f"UPDATE {table} SET x = '\"moved\"', n = NULL WHERE id = 1")
        await conn.execute(f"DELETE FROM {table} WHERE id = 2")
        await conn.execute(f"TRUNCATE {table}")

    assert await logged(conn, "shadow") == [
        ("INSERT", scalar, None),
        ("INSERT", forged, None),
        ("UPDATE", updated, scalar),
        ("DELETE", None, forged),
        ("TRUNCATE", None, None),
    ]

    def keep(row: dict[str, Any]) -> dict[str, Any]:
        return {k: row[k] for k in ("id", "n", "o", "t")}  # the primary key is always kept

    assert await logged(conn, "projected") == [
        ("INSERT", keep(scalar), None),
        ("INSERT", keep(forged), None),
        ("UPDATE", keep(updated), keep(scalar)),
        ("DELETE", None, keep(forged)),
        ("TRUNCATE", None, None),
    ]


def account(row_id: int, merchant: int, jsonb_value: Any) -> dict[str, Any]:
    """A row of ``accounts``: the alias-named jsonb columns hold ``jsonb_value``."""
    return {"id": row_id, "merchant_id": merchant} | dict.fromkeys("nto", jsonb_value)


async def test_a_jsonb_column_named_like_an_alias_cannot_forge_another_tenants_row(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    await conn.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, merchant_id int, n jsonb, t jsonb, o jsonb)"
    )
    await track(conn, TableName(None, "accounts"))
    # Tenant 1 stores a value shaped like a row of tenant 2 in every alias-named column.
    await insert_shadow(conn, "accounts", account(1, 1, FORGED))
    async with (
        running_gateway(database_url, auth=auth_config(tmp_path)) as gateway,
        tenant(gateway, 1) as one,
        tenant(gateway, 2) as two,
    ):
        assert await snapshot_rows(two, "s", table="accounts") == []
        assert await snapshot_rows(one, "s", table="accounts") == [
            exact(json.dumps(account(1, 1, FORGED)))
        ]
        await insert_shadow(conn, "accounts", account(2, 1, FORGED))
        await insert_shadow(conn, "accounts", account(3, 2, 7))  # tenant 2's own
        await conn.execute("DELETE FROM accounts WHERE id = 2")
        seen_by_two = await recv_exact(two, "change")
        assert seen_by_two["record"] == exact(json.dumps(account(3, 2, 7)))
        changes = [await recv_exact(one, "change") for _ in range(2)]
        assert [c["op"] for c in changes] == ["INSERT", "DELETE"]
        assert changes[0]["record"] == exact(json.dumps(account(2, 1, FORGED)))
        assert changes[1]["old_record"] == changes[0]["record"]
        # Tenant 2 saw nothing of tenant 1's writes (its next message is a pong).
        await two.send({"type": "ping"})
        assert (await two.recv())["type"] == "pong"


async def test_an_install_whose_capture_can_be_shadowed_is_upgraded(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, r jsonb)")
    await track(conn, TableName(None, "docs"))
    # What version 1 installed: row images named by a bare alias.
    old = install_script().replace("to_jsonb(r.*)", "to_jsonb(r)")
    await conn.execute(old.replace("#variable_conflict use_variable", ""))
    await conn.execute("SELECT pgcast.generate_capture('docs')")
    await conn.execute("UPDATE pgcast.state SET value = '1' WHERE key = 'schema_version'")
    await conn.execute("""INSERT INTO docs VALUES (1, '7')""")
    assert await logged(conn, "docs") == [("INSERT", 7, None)]  # the column, not the row
    await install(conn)  # what `pgcast track` runs first
    assert await installed_version(conn) == SCHEMA_VERSION
    await conn.execute("""INSERT INTO docs VALUES (2, '7')""")
    assert (await logged(conn, "docs"))[1:] == [("INSERT", {"id": 2, "r": 7}, None)]


# --- item 2: numbers ----------------------------------------------------------------------

AMOUNTS = (
    "0.1",
    "0.1000000000000000001",
    "123456789012345678901234567890.000000000000000000001",
    "1e400",
    "1e-400",
    "-0",
    "18446744073709551617",
)


async def test_every_number_reaches_clients_exactly_as_postgresql_wrote_it(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    await conn.execute(
        "CREATE TABLE amounts (id int PRIMARY KEY, merchant_id numeric, "
        "amount numeric, ratio float8, note text)"
    )
    await track(conn, TableName(None, "amounts"))
    for i, amount in enumerate(AMOUNTS, start=1):
        await conn.execute(
            "INSERT INTO amounts VALUES ($1, 1, $2::text::numeric, $3::text::float8, 'n')",
            i,
            amount,
            ("1e-300", "0.1", "1e308", "-0", "5e-324", "1.5", "2")[i - 1],
        )
    await conn.execute("INSERT INTO amounts VALUES (100, 2, 1e400, 1, 'other tenant')")
    expected = await pg_texts(conn, "amounts", "id")
    mine = {k: v for k, v in expected.items() if v["merchant_id"] == "1"}

    def projected(row: dict[str, Any]) -> dict[str, Any]:
        return {k: row[k] for k in ("id", "amount", "ratio")}

    async with (
        running_gateway(database_url, auth=auth_config(tmp_path)) as gateway,
        tenant(gateway, 1) as client,
    ):
        # Snapshot, whole rows and projected, through the tenant's rule.
        rows = await snapshot_rows(client, "all", table="amounts")
        assert {row["id"]: row for row in rows} == mine
        columns = ["id", "amount", "ratio"]
        rows = await snapshot_rows(client, "cols", table="amounts", columns=columns)
        assert {row["id"]: row for row in rows} == {k: projected(v) for k, v in mine.items()}
        # Replay of the whole log through the rule.
        await client.send({"type": "subscribe", "id": "replay", "table": "amounts", "since": "0"})
        replayed = [await recv_exact(client, "change") for _ in mine]
        assert {c["record"]["id"]: c["record"] for c in replayed} == mine
        assert (await recv_exact(client, "subscribed"))["id"] == "replay"
        await client.send({"type": "unsubscribe", "id": "replay"})
        await recv_exact(client, "unsubscribed")  # before the writes below
        # Live, whole and projected: UPDATE every row of tenant 1 (the note only).
        await conn.execute("UPDATE amounts SET note = 'm' WHERE merchant_id = 1")
        live = [await recv_exact(client, "change") for _ in range(2 * len(mine))]
    after = await pg_texts(conn, "amounts", "id")
    whole = {c["record"]["id"]: c for c in live if c["sub"] == "all"}
    cols = {c["record"]["id"]: c for c in live if c["sub"] == "cols"}
    assert {k: c["record"] for k, c in whole.items()} == {k: after[k] for k in mine}
    assert {k: c["old_record"] for k, c in whole.items()} == mine
    assert {k: c["record"] for k, c in cols.items()} == {k: projected(after[k]) for k in mine}


async def test_tenant_claims_beyond_64_bits_see_exactly_their_own_rows(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    await conn.execute(
        "CREATE TABLE amounts (id int PRIMARY KEY, merchant_id numeric, amount numeric)"
    )
    await track(conn, TableName(None, "amounts"))
    tenants = [2**64 + i for i in range(4)]
    for i, merchant in enumerate(tenants):
        await conn.execute(
            "INSERT INTO amounts VALUES ($1, $2::text::numeric, 0)", i, str(merchant)
        )
    async with (
        running_gateway(database_url, auth=auth_config(tmp_path)) as gateway,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [await stack.enter_async_context(tenant(gateway, m)) for m in tenants]
        for i, client in enumerate(clients):
            rows = await snapshot_rows(client, "s", table="amounts")
            assert [row["id"] for row in rows] == [str(i)]
        await conn.execute("UPDATE amounts SET amount = amount + 1")
        for i, client in enumerate(clients):
            change = await recv_exact(client, "change")
            assert change["record"]["id"] == str(i)
            assert change["record"]["merchant_id"] == str(tenants[i])
            await client.send({"type": "ping"})  # nothing else was sent before the pong
            assert (await client.recv())["type"] == "pong"


async def test_unreadable_and_huge_values_cost_no_other_change_of_their_page(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    await conn.execute(
        "CREATE TABLE amounts (id int PRIMARY KEY, merchant_id numeric, amount numeric, doc jsonb)"
    )
    await track(conn, TableName(None, "amounts"))
    huge = "9" * 5000  # beyond Python's 4,300-digit int limit
    deep = "[" * 3000 + "]" * 3000  # beyond orjson's and Python's nesting limits
    async with (
        running_gateway(database_url, auth=auth_config(tmp_path)) as gateway,
        tenant(gateway, 1) as one,
        tenant(gateway, 2) as two,
        tenant(gateway, 3) as three,
    ):
        for client in (one, two, three):
            assert (await client.subscribe("s", table="amounts"))["type"] == "subscribed"
        # One transaction, so one page: rows of three tenants around the bad ones.
        async with conn.transaction():
            await conn.execute("INSERT INTO amounts VALUES (1, 1, $1::text::numeric)", huge)
            await conn.execute("INSERT INTO amounts VALUES (2, 2, 2, $1::text::jsonb)", deep)
            await conn.execute("INSERT INTO amounts VALUES (3, 3, 3)")
            await conn.execute("INSERT INTO amounts VALUES (4, 2, 4)")
        change = await recv_exact(one, "change")
        assert change["record"]["amount"] == huge
        assert (await recv_exact(three, "change"))["record"]["id"] == "3"
        # Row 2 cannot be read to apply tenant 2's rule: withheld (fail closed),
        # counted; row 4 of the same page still arrives.
        assert (await recv_exact(two, "change"))["record"]["id"] == "4"
        assert gateway.unreadable.count == 1
        assert "pgcast_unreadable_rows_total 1" in gateway.metrics()


async def test_an_unreadable_row_is_withheld_from_projections_once_not_per_subscriber(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, doc jsonb)")
    await track(conn, TableName(None, "docs"))
    deep = "[" * 3000 + "]" * 3000  # beyond orjson's and Python's nesting limits
    async with running_gateway(database_url) as gateway, contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(ws_client(gateway)) for _ in range(3)]
        for i, client in enumerate(clients):
            columns = None if i == 0 else ["id", "doc"]
            await client.send({"type": "subscribe", "id": "s", "table": "docs", "columns": columns})
            assert (await client.recv())["type"] == "subscribed"
        async with conn.transaction():
            await conn.execute("INSERT INTO docs VALUES (1, $1::text::jsonb)", deep)
            await conn.execute("INSERT INTO docs VALUES (2, '{}')")
        # Without a projection the row passes through as PostgreSQL wrote it.
        async with asyncio.timeout(TIMEOUT):
            first = await clients[0].ws.recv()
        assert '"record":{"id":1' in str(first).replace(" ", "") and deep in str(first)
        assert (await recv_exact(clients[0], "change"))["record"]["id"] == "2"
        for client in clients[1:]:
            assert (await recv_exact(client, "change"))["record"]["id"] == "2"
        assert gateway.unreadable.count == 1
