"""Change capture against a real PostgreSQL: what the triggers log, and the installer API."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcast.capture.installer import (
    TrackOptions,
    install,
    installed_version,
    track,
    tracked_tables,
    untrack,
)
from pgcast.capture.retention import log_stats, prune
from pgcast.capture.sql import CHANNEL, SCHEMA_VERSION
from pgcast.changelog import LogCursor, read_new
from pgcast.exceptions import CaptureError, IdentifierError
from pgcast.identifiers import TableName, parse_table_name, quote_ident

WAIT = 30.0  # seconds; generous for loaded CI machines, never slept


async def log(conn: asyncpg.Connection, table: str | None = None) -> list[dict[str, Any]]:
    """The change log (optionally for one table) in id order, jsonb decoded."""
    rows = await conn.fetch(
        "SELECT id, txid::text::bigint AS txid, tx_xmin::text::bigint AS tx_xmin, "
        "committed_at, schema_name, table_name, op, record::text, old_record::text, changed "
        "FROM pgcast.changes WHERE $1::text IS NULL OR table_name = $1 ORDER BY id",
        table,
    )
    result = []
    for row in rows:
        item = dict(row)
        for key in ("record", "old_record"):
            item[key] = None if item[key] is None else json.loads(item[key])
        result.append(item)
    return result


class Notifications:
    """Collects notifications on the pgcast channel; waits for a count with a timeout."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, connection: object, pid: int, channel: str, payload: str) -> None:
        assert channel == CHANNEL
        self.received.append(payload)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        async def reached() -> None:
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reached(), WAIT)


@pytest.fixture
async def listener(database_url: str) -> AsyncIterator[Notifications]:
    notifications = Notifications()
    connection = await asyncpg.connect(database_url)
    await connection.add_listener(CHANNEL, notifications)
    try:
        yield notifications
    finally:
        await connection.close()


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> TableName:
    await conn.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, status text, amount int)"
    )
    await track(conn, TableName(None, "orders"))
    return TableName("public", "orders")


# --- what each operation logs -------------------------------------------------------


async def test_insert_logs_each_new_row_in_statement_order(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await conn.execute(
        "INSERT INTO orders SELECT g, 'c' || g, 'pending', g * 10 FROM generate_series(5, 1, -1) g"
    )
    rows = await log(conn)
    assert [r["op"] for r in rows] == ["INSERT"] * 5
    assert [r["record"]["id"] for r in rows] == [5, 4, 3, 2, 1]
    assert rows[0]["record"] == {"id": 5, "customer": "c5", "status": "pending", "amount": 50}
    assert all(r["old_record"] is None and r["changed"] is None for r in rows)
    assert {(r["schema_name"], r["table_name"]) for r in rows} == {("public", "orders")}


async def test_log_rows_carry_the_writing_transaction_and_snapshot(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    async with conn.transaction():
        await conn.execute("INSERT INTO orders VALUES (1, 'a', 'new', 1)")
        await conn.execute("INSERT INTO orders VALUES (2, 'b', 'new', 2)")
        txid = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
        now = await conn.fetchval("SELECT clock_timestamp()")
    rows = await log(conn)
    assert {r["txid"] for r in rows} == {txid}
    assert all(r["tx_xmin"] <= txid for r in rows)
    assert all(r["committed_at"] <= now for r in rows)
    assert rows[0]["id"] < rows[1]["id"]


async def test_rolled_back_writes_leave_no_log_rows(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (1, 'a', 'new', 1)")
            raise RuntimeError("abort")
    assert await log(conn) == []


async def test_update_logs_old_and_new_rows_and_changed_columns(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await conn.execute("INSERT INTO orders VALUES (1, 'ann', 'pending', 10), (2, 'bob', 'x', 5)")
    await conn.execute("UPDATE orders SET status = 'shipped', amount = 11 WHERE id = 1")
    (row,) = [r for r in await log(conn) if r["op"] == "UPDATE"]
    assert row["record"] == {"id": 1, "customer": "ann", "status": "shipped", "amount": 11}
    assert row["old_record"] == {"id": 1, "customer": "ann", "status": "pending", "amount": 10}
    assert sorted(row["changed"]) == ["amount", "status"]


async def test_update_pairs_every_old_row_with_its_own_new_row(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    # Rows inserted in shuffled order, so the UPDATE visits them out of id order.
    await conn.execute(
        "INSERT INTO items SELECT g, g * 7 FROM generate_series(1, 1000) g ORDER BY random()"
    )
    await track(conn, TableName(None, "items"))
    returned = await conn.fetch("UPDATE items SET v = v * 3 + id RETURNING id")
    rows = await log(conn, "items")
    # Log ids follow the order in which the statement updated the rows.
    assert [r["record"]["id"] for r in rows] == [r["id"] for r in returned]
    assert [r["record"]["id"] for r in rows] != sorted(r["record"]["id"] for r in rows)
    for row in rows:
        old, new = row["old_record"], row["record"]
        assert old["id"] == new["id"]
        assert old["v"] == old["id"] * 7
        assert new["v"] == old["v"] * 3 + old["id"]
        assert row["changed"] == ["v"]
    assert sorted(r["record"]["id"] for r in rows) == list(range(1, 1001))


async def test_delete_logs_old_rows(conn: asyncpg.Connection, orders: TableName) -> None:
    await conn.execute("INSERT INTO orders VALUES (1, 'a', 'new', 1), (2, 'b', 'new', 2)")
    returned = await conn.fetch("DELETE FROM orders RETURNING id")
    rows = [r for r in await log(conn) if r["op"] == "DELETE"]
    assert [r["old_record"]["id"] for r in rows] == [r["id"] for r in returned]
    assert sorted(r["old_record"]["id"] for r in rows) == [1, 2]
    assert all(r["record"] is None and r["changed"] is None for r in rows)


async def test_truncate_logs_one_row(conn: asyncpg.Connection, orders: TableName) -> None:
    await conn.execute("INSERT INTO orders SELECT g, 'c', 's', g FROM generate_series(1, 50) g")
    await conn.execute("TRUNCATE orders")
    rows = [r for r in await log(conn) if r["op"] == "TRUNCATE"]
    assert len(rows) == 1
    assert rows[0]["record"] is None and rows[0]["old_record"] is None
    assert rows[0]["table_name"] == "orders"


async def test_statement_touching_no_rows_logs_nothing(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await conn.execute("UPDATE orders SET status = 'x' WHERE false")
    await conn.execute("DELETE FROM orders WHERE false")
    assert await log(conn) == []


async def test_changed_columns_helper_agrees_with_the_trigger(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await conn.execute("INSERT INTO orders VALUES (1, 'a', 'new', 1)")
    await conn.execute("UPDATE orders SET status = NULL, amount = 2")
    row = await conn.fetchrow(
        "SELECT changed, pgcast.changed_columns(record, old_record) AS helper "
        "FROM pgcast.changes WHERE op = 'UPDATE'"
    )
    assert row["changed"] == row["helper"]
    assert sorted(row["changed"]) == ["amount", "status"]
    assert await conn.fetchval(
        """SELECT pgcast.changed_columns('{"a": 1, "b": [1]}', '{"a": 1, "b": [2]}')"""
    ) == ["b"]


async def test_changed_stays_exact_as_columns_are_added_and_dropped_without_retracking(
    conn: asyncpg.Connection,
) -> None:
    """UPDATE's `changed` comes from the columns the table had when its capture
    function was generated (in jsonb key order), with a full comparison for columns
    added since: it always equals the comparison of the two logged images."""
    await conn.execute("CREATE TABLE evolve (id int PRIMARY KEY, bb int, a text, ccc text)")
    await track(conn, TableName(None, "evolve"))
    await conn.execute("INSERT INTO evolve VALUES (1, 1, 'x', 'y')")
    await conn.execute("ALTER TABLE evolve ADD COLUMN added text, ADD COLUMN z int")
    statements = {
        "UPDATE evolve SET added = 'new'": ["added"],  # only an added column
        "UPDATE evolve SET a = 'x2', z = 5, ccc = 'y2'": ["a", "z", "ccc"],  # both kinds
        "UPDATE evolve SET bb = 2": ["bb"],  # a known one, added ones unchanged
        "UPDATE evolve SET a = a, added = added": None,  # nothing: not logged
    }
    for statement, changed in statements.items():
        before = len(await log(conn, "evolve"))
        await conn.execute(statement)
        rows = await log(conn, "evolve")
        if changed is None:
            assert len(rows) == before, statement
            continue
        assert len(rows) == before + 1, statement
        assert rows[-1]["changed"] == changed, statement
    await conn.execute("ALTER TABLE evolve DROP COLUMN ccc")
    await conn.execute("UPDATE evolve SET a = 'x3'")
    last = (await log(conn, "evolve"))[-1]
    assert last["changed"] == ["a"]
    assert "ccc" not in last["record"] and "ccc" not in last["old_record"]
    mismatched = await conn.fetchval(
        "SELECT count(*) FROM pgcast.changes WHERE op = 'UPDATE' "
        "AND changed IS DISTINCT FROM pgcast.changed_columns(record, old_record)"
    )
    assert mismatched == 0


# --- notifications ------------------------------------------------------------------


async def _arm(conn: asyncpg.Connection) -> None:
    """Arm the wake-up as an idle gateway does (the arming read of the log)."""
    read = await read_new(conn, LogCursor(initialized=True), timeout=WAIT, arm=True)
    assert read.armed is True


async def _sentinel(conn: asyncpg.Connection, listener: Notifications, payload: str) -> None:
    """A marker in the channel: notifications arrive in commit order, so once it is
    received, any notification an earlier transaction sent has been received too."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    async with asyncio.timeout(WAIT):
        while payload not in listener.received:
            await listener.wait_for(len(listener.received) + 1)


async def test_one_notification_per_arming_even_for_100k_rows(
    conn: asyncpg.Connection, orders: TableName, listener: Notifications
) -> None:
    await _arm(conn)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO orders SELECT g, 'c', 'pending', g FROM generate_series(1, 100000) g"
        )
        await conn.execute("UPDATE orders SET status = 'shipped'")
        await conn.execute("DELETE FROM orders WHERE id <= 10")
    await listener.wait_for(1)
    assert listener.received == [""]  # constant, empty payload

    # The arming is used up: later transactions commit without notifying...
    for i in range(3):
        await conn.execute("INSERT INTO orders VALUES ($1, 'later', 'x', 0)", -1 - i)
    await _sentinel(conn, listener, "after-unarmed")
    assert listener.received == ["", "after-unarmed"]
    # ...until a reader arms it again.
    await _arm(conn)
    await conn.execute("INSERT INTO orders VALUES (0, 'sentinel', 'x', 0)")
    await listener.wait_for(3)
    assert listener.received == ["", "after-unarmed", ""]
    counts = dict(await conn.fetch("SELECT op, count(*) FROM pgcast.changes GROUP BY op"))
    assert counts == {"INSERT": 100004, "UPDATE": 100000, "DELETE": 10}


async def test_statement_logging_nothing_does_not_use_up_the_wake_up(
    conn: asyncpg.Connection, orders: TableName, listener: Notifications
) -> None:
    await _arm(conn)
    await conn.execute("UPDATE orders SET status = 'x' WHERE false")
    await _sentinel(conn, listener, "before-insert")
    await conn.execute("INSERT INTO orders VALUES (1, 'sentinel', 'x', 0)")
    await listener.wait_for(2)
    await _sentinel(conn, listener, "after-insert")
    assert listener.received == ["before-insert", "", "after-insert"]


# --- table names --------------------------------------------------------------------


async def test_mixed_case_quoted_table(conn: asyncpg.Connection) -> None:
    await conn.execute('CREATE TABLE "Booking" ("Id" int PRIMARY KEY, "Status" text)')
    await conn.execute("CREATE TABLE booking (id int)")  # the case-folded twin
    tracked = await track(conn, parse_table_name('"Booking"'))
    assert (tracked.schema, tracked.name, tracked.primary_key) == ("public", "Booking", ("Id",))
    await conn.execute("INSERT INTO \"Booking\" VALUES (1, 'new')")
    await conn.execute("INSERT INTO booking VALUES (1)")
    rows = await log(conn)
    assert [(r["table_name"], r["record"]) for r in rows] == [
        ("Booking", {"Id": 1, "Status": "new"})
    ]


async def test_schema_qualified_table(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE SCHEMA audit")
    await conn.execute("CREATE TABLE audit.events (id bigint PRIMARY KEY, kind text)")
    await conn.execute("CREATE TABLE public.events (id bigint PRIMARY KEY)")
    tracked = await track(conn, parse_table_name("audit.events"))
    assert (tracked.schema, tracked.name) == ("audit", "events")
    await conn.execute("INSERT INTO audit.events VALUES (1, 'login')")
    await conn.execute("INSERT INTO public.events VALUES (1)")
    rows = await log(conn)
    assert [(r["schema_name"], r["table_name"]) for r in rows] == [("audit", "events")]


async def test_unqualified_name_resolves_through_search_path(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE SCHEMA app")
    await conn.execute("CREATE TABLE app.jobs (id int PRIMARY KEY)")
    with pytest.raises(CaptureError, match="does not exist"):
        await track(conn, parse_table_name("jobs"))
    await conn.execute("SET search_path = app, public")
    tracked = await track(conn, parse_table_name("jobs"))
    assert (tracked.schema, tracked.name) == ("app", "jobs")


async def test_odd_but_valid_names_are_quoted_everywhere(conn: asyncpg.Connection) -> None:
    schema, name = 'we"ird sch.ema', 'ta"ble; DROP TABLE victim; --'
    table = TableName(schema, name)
    await conn.execute("CREATE TABLE victim (id int)")
    await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    await conn.execute(f'CREATE TABLE {table.quoted()} ("c""ol" int PRIMARY KEY)')
    tracked = await track(conn, parse_table_name(str(table)), TrackOptions(columns=('c"ol',)))
    assert (tracked.schema, tracked.name) == (schema, name)
    await conn.execute(f"INSERT INTO {table.quoted()} VALUES (1)")
    await conn.execute(f"TRUNCATE {table.quoted()}")
    assert [(r["op"], r["record"]) for r in await log(conn)] == [
        ("INSERT", {'c"ol': 1}),
        ("TRUNCATE", None),
    ]
    assert await untrack(conn, table) is True
    assert await conn.fetchval("SELECT to_regclass('victim') IS NOT NULL")


async def test_partitioned_table_is_captured_under_its_own_name(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE metrics (id int, day int, v int, PRIMARY KEY (id, day)) "
        "PARTITION BY RANGE (day)"
    )
    await conn.execute("CREATE TABLE metrics_1 PARTITION OF metrics FOR VALUES FROM (0) TO (10)")
    await conn.execute("CREATE TABLE metrics_2 PARTITION OF metrics FOR VALUES FROM (10) TO (20)")
    tracked = await track(conn, TableName(None, "metrics"))
    assert tracked.primary_key == ("id", "day")
    await conn.execute("INSERT INTO metrics VALUES (1, 1, 0), (2, 15, 0)")
    await conn.execute("UPDATE metrics SET day = 12, v = 1 WHERE id = 1")  # moves partition
    rows = await log(conn)
    assert [(r["table_name"], r["op"]) for r in rows] == [
        ("metrics", "INSERT"),
        ("metrics", "INSERT"),
        ("metrics", "UPDATE"),
    ]
    assert rows[2]["old_record"] == {"id": 1, "day": 1, "v": 0}
    assert rows[2]["record"] == {"id": 1, "day": 12, "v": 1}


# --- options ------------------------------------------------------------------------


async def test_updates_through_an_inheritance_parent_are_captured(
    conn: asyncpg.Connection,
) -> None:
    """The statement-level UPDATE trigger's transition tables hold the rows of
    inheritance children updated through the parent (a row-level trigger on the
    parent would not fire for them)."""
    await conn.execute("CREATE TABLE parent_t (id int PRIMARY KEY, v int)")
    await conn.execute("CREATE TABLE child_t (extra text) INHERITS (parent_t)")
    await track(conn, TableName(None, "parent_t"))
    await conn.execute("INSERT INTO child_t VALUES (1, 10, 'c')")
    await conn.execute("UPDATE parent_t SET v = 11 WHERE id = 1")
    rows = await log(conn, "parent_t")
    assert [(r["op"], r["record"], r["changed"]) for r in rows] == [
        ("UPDATE", {"id": 1, "v": 11}, ["v"])
    ]


async def test_table_without_primary_key(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE events (kind text, at int)")
    tracked = await track(conn, TableName(None, "events"))
    assert tracked.primary_key == ()
    await conn.execute("INSERT INTO events VALUES ('a', 1), ('a', 1)")
    await conn.execute("UPDATE events SET at = 2")
    await conn.execute("DELETE FROM events")
    assert [r["op"] for r in await log(conn)] == ["INSERT"] * 2 + ["UPDATE"] * 2 + ["DELETE"] * 2


async def test_columns_projection_always_keeps_the_primary_key(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE users (tenant int, id int, email text, secret text, PRIMARY KEY (tenant, id))"
    )
    tracked = await track(conn, TableName(None, "users"), TrackOptions(columns=("email",)))
    assert tracked.options.columns == ("email", "tenant", "id")
    await conn.execute("INSERT INTO users VALUES (1, 1, 'a@x', 's1')")
    await conn.execute("UPDATE users SET secret = 's2'")  # no logged column changes
    await conn.execute("UPDATE users SET email = 'b@x', secret = 's3'")
    await conn.execute("ALTER TABLE users ADD COLUMN later text")
    await conn.execute("DELETE FROM users")
    rows = await log(conn)
    assert [r["op"] for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    assert rows[0]["record"] == {"tenant": 1, "id": 1, "email": "a@x"}
    assert rows[1]["old_record"] == {"tenant": 1, "id": 1, "email": "a@x"}
    assert rows[1]["record"] == {"tenant": 1, "id": 1, "email": "b@x"}
    assert rows[1]["changed"] == ["email"]
    assert rows[2]["old_record"] == {"tenant": 1, "id": 1, "email": "b@x"}


async def test_when_changed_logs_only_updates_of_those_columns(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    tracked = await track(conn, orders, TrackOptions(when_changed=("status",)))
    assert tracked.options.when_changed == ("status",)
    await conn.execute("INSERT INTO orders VALUES (1, 'a', 'pending', 1), (2, 'b', 'pending', 2)")
    await conn.execute("UPDATE orders SET amount = amount + 1")
    await conn.execute("UPDATE orders SET status = 'shipped' WHERE id = 2")
    await conn.execute("DELETE FROM orders WHERE id = 1")  # other ops are unaffected
    rows = await log(conn)
    assert [(r["op"], (r["record"] or r["old_record"])["id"]) for r in rows] == [
        ("INSERT", 1),
        ("INSERT", 2),
        ("UPDATE", 2),
        ("DELETE", 1),
    ]
    assert rows[2]["changed"] == ["status"]


async def test_when_changed_columns_are_logged_even_outside_columns(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    tracked = await track(conn, orders, TrackOptions(columns=("amount",), when_changed=("status",)))
    assert tracked.options.columns == ("amount", "id", "status")
    await conn.execute("INSERT INTO orders VALUES (1, 'a', 'pending', 1)")
    await conn.execute("UPDATE orders SET status = 'paid'")
    (update,) = [r for r in await log(conn) if r["op"] == "UPDATE"]
    assert update["record"] == {"id": 1, "status": "paid", "amount": 1}


async def test_skip_unchanged_drops_no_op_updates(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await conn.execute("INSERT INTO orders VALUES (1, 'a', 'pending', 1), (2, 'b', 'x', 2)")
    await conn.execute("UPDATE orders SET status = status")
    await conn.execute("UPDATE orders SET status = 'x'")  # only row 1 changes
    updates = [r for r in await log(conn) if r["op"] == "UPDATE"]
    assert [(u["record"]["id"], u["changed"]) for u in updates] == [(1, ["status"])]


async def test_skip_unchanged_off_logs_no_op_updates(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await track(conn, orders, TrackOptions(skip_unchanged=False))
    await conn.execute("INSERT INTO orders VALUES (1, 'a', 'pending', 1), (2, 'b', 'x', 2)")
    await conn.execute("UPDATE orders SET status = status")
    updates = [r for r in await log(conn) if r["op"] == "UPDATE"]
    assert sorted((u["record"]["id"], u["changed"]) for u in updates) == [(1, []), (2, [])]


async def test_one_megabyte_value_is_logged_whole(
    conn: asyncpg.Connection, orders: TableName, listener: Notifications
) -> None:
    big = "x" * 1_000_000 + "é"
    await _arm(conn)
    await conn.execute("INSERT INTO orders VALUES (1, $1, 'new', 1)", big)
    await conn.execute("UPDATE orders SET status = 'done'")
    await listener.wait_for(1)
    assert listener.received == [""]  # the row travels in the log, never in a notification
    rows = await log(conn)
    assert rows[0]["record"]["customer"] == big
    assert rows[1]["record"]["customer"] == big
    assert rows[1]["old_record"]["customer"] == big
    assert rows[1]["changed"] == ["status"]
    assert await conn.fetchval("SELECT customer = $1 FROM orders", big)


async def test_writer_without_rights_on_pgcast_is_still_captured(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    role = f"pgcast_writer_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE ROLE {quote_ident(role)}")
    try:
        await conn.execute(f"GRANT INSERT ON orders TO {quote_ident(role)}")
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {quote_ident(role)}")
            await conn.execute("INSERT INTO orders VALUES (1, 'a', 'new', 1)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {quote_ident(role)}")
                await conn.fetch("SELECT 1 FROM pgcast.changes")
    finally:
        await conn.execute(f"DROP OWNED BY {quote_ident(role)}")
        await conn.execute(f"DROP ROLE {quote_ident(role)}")
    assert [r["record"]["id"] for r in await log(conn)] == [1]


# --- track / untrack / inspect ------------------------------------------------------


async def trigger_names(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal "
        "ORDER BY tgname",
        table,
    )
    return [r["tgname"] for r in rows]


async def test_track_and_untrack_are_idempotent(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
    table = TableName(None, "orders")
    first = await track(conn, table)
    again = await track(conn, table, TrackOptions(columns=("status",), skip_unchanged=False))
    assert first.options == TrackOptions()
    assert again.options == TrackOptions(columns=("status", "id"), skip_unchanged=False)
    assert await trigger_names(conn, "orders") == [
        "pgcast_capture_delete",
        "pgcast_capture_insert",
        "pgcast_capture_truncate",
        "pgcast_capture_update",
    ]
    await conn.execute("INSERT INTO orders VALUES (1, 'a')")
    assert len(await log(conn)) == 1  # one set of triggers, not two

    (listed,) = await tracked_tables(conn)
    assert listed == again.__class__(
        schema="public", name="orders", options=again.options, primary_key=("id",), changes=1
    )

    assert await untrack(conn, table) is True
    assert await untrack(conn, table) is False
    assert await trigger_names(conn, "orders") == []
    assert await tracked_tables(conn) == []
    await conn.execute("INSERT INTO orders VALUES (2, 'b')")
    assert len(await log(conn)) == 1  # log rows kept, nothing new captured


async def test_untrack_and_inspect_before_install_touch_nothing(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE orders (id int)")
    assert await untrack(conn, TableName(None, "orders")) is False
    assert await untrack(conn, TableName(None, "missing")) is False
    assert await tracked_tables(conn) == []
    assert await log_stats(conn) == (await log_stats(conn)).__class__(0, None, None, 0, 0)
    assert await prune(conn, keep_last=0) == 0
    assert await installed_version(conn) is None


async def test_hostile_names_are_rejected_before_reaching_the_database() -> None:
    for text in (
        "orders; DROP TABLE orders",
        "orders' OR '1'='1",
        'x"; DROP SCHEMA public CASCADE; --',
        "a.b.c",
        "",
        "ord\x00ers",
        "o" * 64,
    ):
        with pytest.raises(IdentifierError):
            parse_table_name(text)


async def test_unknown_table_is_a_capture_error_with_a_hint(conn: asyncpg.Connection) -> None:
    with pytest.raises(CaptureError, match="table nope does not exist") as caught:
        await track(conn, parse_table_name("nope"))
    assert caught.value.hint and "double-quoted" in caught.value.hint
    with pytest.raises(CaptureError, match="in schema 'audit'"):
        await track(conn, parse_table_name("audit.nope"))


async def test_unknown_column_is_a_capture_error_naming_it(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
    with pytest.raises(CaptureError, match=r"columns: table public\.orders has no column 'colour'"):
        await track(conn, TableName(None, "orders"), TrackOptions(columns=("status", "colour")))
    with pytest.raises(CaptureError, match=r"when_changed: .* no column 'Status'") as caught:
        await track(conn, TableName(None, "orders"), TrackOptions(when_changed=("Status",)))
    assert caught.value.hint == "its columns are id, status"
    assert await tracked_tables(conn) == []  # nothing half-applied


async def test_views_and_pgcast_tables_are_refused(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE orders (id int)")
    await conn.execute("CREATE VIEW recent AS SELECT * FROM orders")
    with pytest.raises(CaptureError, match="is a view"):
        await track(conn, TableName(None, "recent"))
    with pytest.raises(CaptureError, match="which pgcast does not track"):
        await track(conn, TableName("pgcast", "changes"))


async def test_dropping_a_tracked_table_leaves_a_clean_state(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE a (id int)")
    await conn.execute("CREATE TABLE b (id int)")
    await track(conn, TableName(None, "a"))
    await track(conn, TableName(None, "b"))
    await conn.execute("DROP TABLE a")
    assert [t.name for t in await tracked_tables(conn)] == ["b"]
    assert await untrack(conn, TableName(None, "a")) is False


# --- install ------------------------------------------------------------------------


async def test_concurrent_install_from_two_connections(database_url: str) -> None:
    connections = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        for _ in range(3):
            await asyncio.gather(*(install(c) for c in connections))
            assert await installed_version(connections[0]) == SCHEMA_VERSION
            await connections[0].execute("DROP SCHEMA pgcast CASCADE")
        await asyncio.gather(*(install(c) for c in connections))
        await install(connections[0])  # and again, when already installed
        assert await installed_version(connections[1]) == SCHEMA_VERSION
    finally:
        for c in connections:
            await c.close()


async def test_newer_schema_version_is_refused(conn: asyncpg.Connection) -> None:
    await install(conn)
    await conn.execute("UPDATE pgcast.state SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(CaptureError, match="version 999, newer"):
        await install(conn)


# --- log stats and prune ------------------------------------------------------------


async def test_log_stats_describe_the_log(conn: asyncpg.Connection, orders: TableName) -> None:
    await conn.execute("INSERT INTO orders SELECT g, 'c', 's', g FROM generate_series(1, 10) g")
    stats = await log_stats(conn)
    ids = [r["id"] for r in await log(conn)]
    assert (stats.rows, stats.first_id, stats.last_id) == (10, ids[0], ids[-1])
    assert stats.bytes > 0
    assert stats.pruned_through == 0


async def test_prune_by_age(conn: asyncpg.Connection, orders: TableName) -> None:
    await conn.execute("INSERT INTO orders SELECT g, 'c', 's', g FROM generate_series(1, 30) g")
    ids = [r["id"] for r in await log(conn)]
    await conn.execute(
        "UPDATE pgcast.changes SET committed_at = now() - interval '3 days' WHERE id <= $1",
        ids[19],
    )
    assert await prune(conn, older_than=datetime.timedelta(days=7)) == 0
    assert await prune(conn, older_than=datetime.timedelta(days=2), batch_size=7) == 20
    stats = await log_stats(conn)
    assert (stats.rows, stats.first_id, stats.pruned_through) == (10, ids[20], ids[19])
    assert await prune(conn, older_than=datetime.timedelta(days=2)) == 0


async def test_prune_keep_last_and_pruned_through_only_grows(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await conn.execute("INSERT INTO orders SELECT g, 'c', 's', g FROM generate_series(1, 25) g")
    ids = [r["id"] for r in await log(conn)]
    assert await prune(conn, keep_last=10) == 15
    assert [r["id"] for r in await log(conn)] == ids[15:]
    assert (await log_stats(conn)).pruned_through == ids[14]
    assert await prune(conn, keep_last=10) == 0
    await conn.execute("UPDATE pgcast.state SET value = '999999' WHERE key = 'pruned_through'")
    assert await prune(conn, keep_last=0) == 10
    assert (await log_stats(conn)).pruned_through == 999999  # max with the previous value
    assert (await log_stats(conn)).rows == 0


async def test_prune_with_both_limits_removes_rows_violating_either(
    conn: asyncpg.Connection, orders: TableName
) -> None:
    await conn.execute("INSERT INTO orders SELECT g, 'c', 's', g FROM generate_series(1, 10) g")
    ids = [r["id"] for r in await log(conn)]
    await conn.execute(
        "UPDATE pgcast.changes SET committed_at = now() - interval '1 day' WHERE id <= $1",
        ids[6],
    )
    deleted = await prune(conn, older_than=datetime.timedelta(hours=1), keep_last=5)
    assert deleted == 7
    assert (await log_stats(conn)).pruned_through == ids[6]


async def test_prune_needs_a_limit(conn: asyncpg.Connection) -> None:
    with pytest.raises(CaptureError, match="needs older_than or keep_last"):
        await prune(conn)
    with pytest.raises(CaptureError, match="negative"):
        await prune(conn, keep_last=-1)
