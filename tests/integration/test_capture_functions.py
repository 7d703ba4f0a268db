"""Per-table capture functions (schema version 4): generated on track, dropped on
untrack, and an install of version 3 (the generic ``pgcast.capture()``) upgraded in
place on real PostgreSQL, writes captured alike before and after."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg

from pgcast.capture.installer import TrackOptions, install, installed_version, track, untrack
from pgcast.capture.sql import SCHEMA_VERSION, TRIGGERS, capture_function
from pgcast.identifiers import TableName

SCHEMA_V3 = Path(__file__).with_name("schema_v3.sql")
WAIT = 30.0


async def logged(conn: asyncpg.Connection, table: str) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT op, record::text, old_record::text, changed FROM pgcast.changes "
        "WHERE table_name = $1 ORDER BY id",
        table,
    )
    return [
        (
            r["op"],
            None if r["record"] is None else json.loads(r["record"]),
            None if r["old_record"] is None else json.loads(r["old_record"]),
            r["changed"],
        )
        for r in rows
    ]


async def trigger_functions(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT tgfoid::regprocedure::text AS f FROM pg_trigger "
        "WHERE tgrelid = $1::regclass AND tgname = ANY($2)",
        table,
        [name for name, _, _ in TRIGGERS],
    )
    return {r["f"] for r in rows}


async def install_v3(conn: asyncpg.Connection) -> None:
    """pgcast version 3, and two tables tracked by it (one with options)."""
    await conn.execute(SCHEMA_V3.read_text())
    await conn.execute("CREATE TABLE plain_t (id int PRIMARY KEY, a text)")
    await conn.execute(
        "CREATE TABLE opts_t (id int PRIMARY KEY, a text, b int, secret text DEFAULT 's')"
    )
    await conn.execute(
        "INSERT INTO pgcast.tracked (relid, columns, when_changed, skip_unchanged) VALUES "
        "('plain_t', NULL, NULL, true), ('opts_t', '{id,b}', '{b}', true)"
    )
    for table in ("plain_t", "opts_t"):
        for name, event, referencing in TRIGGERS:
            await conn.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} {referencing} "
                'FOR EACH STATEMENT EXECUTE FUNCTION "pgcast".capture()'
            )


async def writes(conn: asyncpg.Connection, first: int) -> None:
    await conn.execute("INSERT INTO plain_t VALUES ($1, 'x'), ($1 + 1, 'y')", first)
    await conn.execute("UPDATE plain_t SET a = a || '!' WHERE id >= $1", first)
    await conn.execute("DELETE FROM plain_t WHERE id = $1", first)
    await conn.execute("INSERT INTO opts_t (id, a, b) VALUES ($1, 'x', 1)", first)
    await conn.execute("UPDATE opts_t SET a = 'not logged' WHERE id = $1", first)
    await conn.execute("UPDATE opts_t SET b = 2 WHERE id = $1", first)


def expected(first: int) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "plain_t": [
            ("INSERT", {"id": first, "a": "x"}, None, None),
            ("INSERT", {"id": first + 1, "a": "y"}, None, None),
            ("UPDATE", {"id": first, "a": "x!"}, {"id": first, "a": "x"}, ["a"]),
            ("UPDATE", {"id": first + 1, "a": "y!"}, {"id": first + 1, "a": "y"}, ["a"]),
            ("DELETE", None, {"id": first, "a": "x!"}, None),
        ],
        "opts_t": [
            ("INSERT", {"id": first, "b": 1}, None, None),
            ("UPDATE", {"id": first, "b": 2}, {"id": first, "b": 1}, ["b"]),
        ],
    }


async def test_a_version_3_install_is_upgraded_in_place_and_captures_alike(
    conn: asyncpg.Connection,
) -> None:
    await install_v3(conn)
    await writes(conn, 1)
    before = {t: await logged(conn, t) for t in ("plain_t", "opts_t")}
    assert before == expected(1)  # what version 3 logged

    await install(conn)  # what `pgcast track` runs first

    assert await installed_version(conn) == SCHEMA_VERSION
    assert await conn.fetchval("SELECT to_regprocedure('pgcast.capture()')") is None
    for table in ("plain_t", "opts_t"):
        oid = await conn.fetchval("SELECT $1::regclass::oid", table)
        want = await conn.fetchval("SELECT to_regprocedure($1)::text", capture_function(oid))
        assert await trigger_functions(conn, table) == {want}
        await conn.execute(f"DELETE FROM pgcast.changes WHERE table_name = '{table}'")
    await writes(conn, 10)
    assert {t: await logged(conn, t) for t in ("plain_t", "opts_t")} == expected(10)
    # Columns added after the upgrade are projected away like before it.
    await conn.execute("ALTER TABLE opts_t ADD COLUMN later int DEFAULT 5")
    await conn.execute("INSERT INTO opts_t (id, a, b) VALUES (99, 'x', 3)")
    assert (await logged(conn, "opts_t"))[-1] == ("INSERT", {"id": 99, "b": 3}, None, None)


async def test_upgrade_keeps_writers_captured_while_it_runs(
    conn: asyncpg.Connection, database_url: str
) -> None:
    """Writers running through the upgrade: every committed row is logged once."""
    await install_v3(conn)
    stop = asyncio.Event()
    progress = asyncio.Event()
    committed: list[int] = []

    async def until(count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(committed) < count:
                progress.clear()
                await progress.wait()

    async def writer(first: int) -> None:
        own = await asyncpg.connect(database_url)
        try:
            n = first
            while not stop.is_set():
                await own.execute("INSERT INTO plain_t VALUES ($1, 'w')", n)
                committed.append(n)
                progress.set()
                n += 1
        finally:
            await own.close()

    tasks = [asyncio.create_task(writer(k * 1_000_000)) for k in range(3)]
    await until(30)
    upgrader = await asyncpg.connect(database_url)
    try:
        await install(upgrader)
    finally:
        await upgrader.close()
    await until(len(committed) + 30)
    stop.set()
    await asyncio.gather(*tasks)
    ids = [record["id"] for _, record, _, _ in await logged(conn, "plain_t")]
    assert sorted(ids) == sorted(committed)  # none lost, none doubled
    assert await installed_version(conn) == SCHEMA_VERSION


async def test_each_tracked_table_gets_its_own_function_dropped_with_it(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE TABLE a_t (id int PRIMARY KEY)")
    await conn.execute("CREATE TABLE b_t (id int PRIMARY KEY)")
    await track(conn, TableName(None, "a_t"))
    await track(conn, TableName(None, "b_t"), TrackOptions(skip_unchanged=False))
    a_fn, b_fn = await trigger_functions(conn, "a_t"), await trigger_functions(conn, "b_t")
    assert len(a_fn) == 1 and len(b_fn) == 1 and a_fn != b_fn
    # Options live in the function: re-tracking regenerates it.
    await conn.execute("INSERT INTO b_t VALUES (1)")
    await conn.execute("UPDATE b_t SET id = id")  # no change: logged (skip_unchanged off)
    await track(conn, TableName(None, "b_t"))
    await conn.execute("UPDATE b_t SET id = id")  # now skipped
    assert [op for op, *_ in await logged(conn, "b_t")] == ["INSERT", "UPDATE"]
    await untrack(conn, TableName(None, "a_t"))
    assert await conn.fetchval("SELECT to_regprocedure($1)", a_fn.pop()) is None
    # A table dropped while tracked: its function goes at the next track.
    await conn.execute("DROP TABLE b_t")
    await conn.execute("CREATE TABLE c_t (id int PRIMARY KEY)")
    await track(conn, TableName(None, "c_t"))
    assert await conn.fetchval("SELECT to_regprocedure($1)", b_fn.pop()) is None


async def test_hostile_option_names_reach_the_function_only_as_literals(
    conn: asyncpg.Connection,
) -> None:
    name = "x'); DROP TABLE victim; --$body$ $gen$ $fn$"
    await conn.execute("CREATE TABLE victim (id int)")
    await conn.execute(f'CREATE TABLE h_t (id int PRIMARY KEY, "{name}" int, other int)')
    await track(conn, TableName(None, "h_t"), TrackOptions(columns=(name,), when_changed=(name,)))
    await conn.execute(f'INSERT INTO h_t (id, "{name}", other) VALUES (1, 1, 1)')
    await conn.execute("UPDATE h_t SET other = 2")  # not a when_changed column
    await conn.execute(f'UPDATE h_t SET "{name}" = 2')
    assert await logged(conn, "h_t") == [
        ("INSERT", {"id": 1, name: 1}, None, None),
        ("UPDATE", {"id": 1, name: 2}, {"id": 1, name: 1}, [name]),
    ]
    assert await conn.fetchval("SELECT to_regclass('victim') IS NOT NULL")
