"""A snapshot leaves the rows its filter drops to PostgreSQL, and nothing else changes."""

from __future__ import annotations

import asyncpg

from pgcast.capture.installer import track
from pgcast.filters import Condition, parse_filter
from pgcast.identifiers import parse_table_name
from pgcast.log_replay import TableRows, lend, snapshot
from pgcast.snapshot_filter import Pushdown, pushdown
from pgcast.unreadable import parse_row

TYPES = {
    "id": "int4",
    "n": "int4",
    "big": "int8",
    "s": "text",
    "v": "varchar",
    "c": "bpchar",
    "flag": "bool",
}


async def _rows(conn: asyncpg.Connection, where: Pushdown | None) -> list[str]:
    rows: list[str] = []
    async for item in snapshot(
        lend(conn), schema="public", table="pd", events=["INSERT"], timeout=30, where=where
    ):
        if isinstance(item, TableRows):
            rows += item.rows
    return rows


def _kept(rows: list[str], conditions: tuple[Condition, ...]) -> list[int]:
    """What the gateway sends: the rows its filter keeps (ids, sorted)."""
    parsed = [parse_row(row) for row in rows]
    return sorted(r["id"] for r in parsed if all(c.matches(r) for c in conditions))


async def test_pushed_down_filters_keep_exactly_the_rows_the_gateway_keeps(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(
        "CREATE TABLE pd (id int PRIMARY KEY, n int, big bigint, s text, v varchar(10), "
        "c char(3), flag boolean)"
    )
    await conn.execute(
        "INSERT INTO pd VALUES (1, 7, 9223372036854775807, 'pending', 'a', 'x', true), "
        "(2, 0, -9223372036854775808, 'NaN', 'b', 'x  ', false), "
        "(3, NULL, NULL, NULL, NULL, NULL, NULL), "
        "(4, -7, 7, '', 'A', 'abc', true), "
        "(5, 7, 0, 'Pending', 'a ', ' x', false), "
        "(6, 70, 1, 'pending ', 'b', 'y', NULL)"
    )
    await track(conn, parse_table_name("pd"))
    every = await _rows(conn, None)
    assert len(every) == 6
    for text in (
        "n=eq.7",
        "n=eq.7.0",
        "n=eq.07",
        "n=eq.-7",
        "n=in.(7,70,abc)",
        "big=eq.9223372036854775807",
        "big=eq.-9223372036854775808",
        "big=eq.9223372036854775808",
        "s=eq.pending",
        "s=eq.NaN",
        "s=eq.",
        "s=in.(pending,Pending)",
        "v=eq.a",
        "v=in.(a,A)",
        "c=eq.x",
        "c=eq.x  ",  # char(n) keeps its blanks in the row image
        "flag=eq.true",
        "flag=eq.false&n=eq.7",
        "n=not.eq.7&s=eq.pending",
        "id=in.(1,3,5)&flag=eq.true",
    ):
        conditions = parse_filter(text).conditions
        where = pushdown(conditions, TYPES)
        got = await _rows(conn, where)
        assert _kept(got, conditions) == _kept(every, conditions), text
        if where.where:  # PostgreSQL dropped rows the gateway would have dropped
            assert len(got) <= len(every)


async def _pages_read(conn: asyncpg.Connection) -> int:
    """Pages of table pd and its indexes this database has asked for so far (this
    backend's counts flushed first)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        await conn.fetchval(
            "SELECT heap_blks_hit + heap_blks_read + coalesce(idx_blks_hit, 0) "
            "+ coalesce(idx_blks_read, 0) FROM pg_statio_user_tables WHERE relid = 'pd'::regclass"
        )
    )


async def test_a_selective_filter_reads_a_few_pages_of_a_large_table(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE TABLE pd (id int PRIMARY KEY, n int NOT NULL, s text)")
    await conn.execute("CREATE INDEX ON pd (n)")
    await conn.execute(
        "INSERT INTO pd SELECT g, g % 5000, repeat('x', 50) FROM generate_series(1, 200000) g"
    )
    await conn.execute("ANALYZE pd")
    await track(conn, parse_table_name("pd"))
    conditions = parse_filter("n=eq.7").conditions
    pages = {}
    for name, where in (("pushed", pushdown(conditions, TYPES)), ("all", None)):
        before = await _pages_read(conn)
        rows = await _rows(conn, where)
        pages[name] = await _pages_read(conn) - before
        assert _kept(rows, conditions) == list(range(7, 200001, 5000))
    assert pages["all"] > 1000  # every page of the table
    assert pages["pushed"] < 100, pages  # the 40 rows, through the index on n


async def test_a_clause_made_for_an_older_table_is_dropped_not_fatal(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE TABLE pd (id int PRIMARY KEY, n text)")
    await conn.execute("INSERT INTO pd VALUES (1, '7'), (2, 'x')")
    await track(conn, parse_table_name("pd"))
    conditions = parse_filter("n=eq.7").conditions
    stale = pushdown(conditions, {"n": "int4"})  # the catalog still thought n an int
    assert stale.where
    rows = await _rows(conn, stale)
    assert len(rows) == 2  # read whole; the gateway's filter then decides
    assert _kept(rows, conditions) == [1]
