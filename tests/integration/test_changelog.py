"""The change log reader is gap-free although ids are not in commit order."""

from __future__ import annotations

import json

import asyncpg
import pytest

from pgcast.capture.installer import track
from pgcast.capture.retention import prune
from pgcast.changelog import (
    _HEAD,
    _READ,
    Horizon,
    LogCursor,
    prepare_reader_session,
    read_new,
    start_cursor,
)
from pgcast.identifiers import parse_table_name
from pgcast.log_replay import Replay, lend, replay


@pytest.fixture
async def log(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    await track(conn, parse_table_name("t"))
    return conn


async def test_a_lower_id_committed_later_is_still_read(
    database_url: str, log: asyncpg.Connection
) -> None:
    reader = await asyncpg.connect(database_url)
    slow = await asyncpg.connect(database_url)
    try:
        cursor = LogCursor()
        await start_cursor(reader, cursor, timeout=5)
        slow_tx = slow.transaction()
        await slow_tx.start()
        await slow.execute("INSERT INTO t VALUES (1, 'slow')")  # takes the lower log id
        await log.execute("INSERT INTO t VALUES (2, 'fast')")  # higher id, committed first
        first = await read_new(reader, cursor, timeout=5)
        assert [c.record["v"] for c in first.changes if c.record] == ["fast"]
        assert cursor.pending, "the open transaction must be remembered"
        await slow_tx.commit()
        second = await read_new(reader, cursor, timeout=5)
        assert [c.record["v"] for c in second.changes if c.record] == ["slow"]
        assert second.changes[0].id < first.changes[0].id
        third = await read_new(reader, cursor, timeout=5)
        assert third.changes == []  # nothing is read twice
    finally:
        await reader.close()
        await slow.close()


async def test_replay_from_a_position_includes_late_commits_below_it(
    database_url: str, log: asyncpg.Connection
) -> None:
    slow = await asyncpg.connect(database_url)
    try:
        slow_tx = slow.transaction()
        await slow_tx.start()
        await slow.execute("INSERT INTO t VALUES (1, 'slow')")
        await log.execute("INSERT INTO t VALUES (2, 'fast')")
        position = await log.fetchval("SELECT max(id) FROM pgcast.changes")  # client saw 'fast'
        await slow_tx.commit()
        await log.execute("INSERT INTO t VALUES (3, 'after')")
        got = []
        async for page in replay(
            lend(log), since=position, schema="public", table="t", events=["INSERT"], timeout=5
        ):
            assert not isinstance(page, Replay)
            if isinstance(page, Horizon):
                assert page.head >= position
                continue
            got += [c.record["v"] for c in page if c.record]
        assert got == ["slow", "after"]
    finally:
        await slow.close()


async def test_pruning_past_an_unread_position_is_reported_as_a_gap(
    database_url: str, log: asyncpg.Connection
) -> None:
    reader = await asyncpg.connect(database_url)
    try:
        cursor = LogCursor()
        await start_cursor(reader, cursor, timeout=5)
        await log.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g")
        assert await prune(log, keep_last=2) == 8
        read = await read_new(reader, cursor, timeout=5)
        assert read.gap_through is not None
        assert [c.record["id"] for c in read.changes if c.record] == [9, 10]
        pages = [
            page
            async for page in replay(
                lend(log), since=1, schema="public", table="t", events=["INSERT"], timeout=5
            )
        ]
        assert isinstance(pages[0], Horizon)
        assert len(pages) == 2 and isinstance(pages[1], Replay) and pages[1].resync
    finally:
        await reader.close()


async def test_a_younger_open_transaction_above_xmax_is_not_skipped(
    database_url: str, log: asyncpg.Connection
) -> None:
    """PostgreSQL's xip lists only running xids below xmax (latest completed + 1).

    The fast transaction takes its xid first; the slow one takes a younger xid and
    the lower log id, and is still open when the fast one commits: at the next read
    the slow xid is >= xmax and absent from xip, yet its row must not be skipped.
    """
    await log.execute("CREATE TABLE scratch (x int)")
    reader = await asyncpg.connect(database_url)
    fast = await asyncpg.connect(database_url)
    slow = await asyncpg.connect(database_url)
    try:
        cursor = LogCursor()
        await start_cursor(reader, cursor, timeout=5)
        fast_tx, slow_tx = fast.transaction(), slow.transaction()
        await fast_tx.start()
        await fast.execute("INSERT INTO scratch VALUES (1)")  # fast takes the older xid
        await slow_tx.start()
        await slow.execute("INSERT INTO t VALUES (1, 'slow')")  # younger xid, lower log id
        await fast.execute("INSERT INTO t VALUES (2, 'fast')")
        await fast_tx.commit()
        first = await read_new(reader, cursor, timeout=5)
        assert [c.record["v"] for c in first.changes if c.record] == ["fast"]
        await slow_tx.commit()
        second = await read_new(reader, cursor, timeout=5)
        assert [c.record["v"] for c in second.changes if c.record] == ["slow"]
    finally:
        for conn in (reader, fast, slow):
            await conn.close()


def _buffers(plan: dict[str, object]) -> int:
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])  # type: ignore[call-overload]


async def test_a_live_read_stays_cheap_however_long_the_log_grows(
    database_url: str, log: asyncpg.Connection
) -> None:
    """A reader's plan is made at its first read, usually on an empty or young log, and kept.
    Whatever the log grows to afterwards, a read touches a few index and heap pages,
    not the whole log (before prepare_reader_session and the rewritten open-transaction
    branch, the same read scanned or bitmapped every row: 0.4 of a core at 60 reads/s)."""
    reader = await asyncpg.connect(database_url)
    slow = await asyncpg.connect(database_url)
    try:
        # A young log: a few rows, analyzed (as autovacuum does early on).
        await log.execute("INSERT INTO t SELECT g, 'young' FROM generate_series(100, 119) g")
        await log.execute("ANALYZE pgcast.changes")
        await prepare_reader_session(reader)
        await reader.execute(f"PREPARE live_read(text[], text, bigint, int, boolean) AS {_READ}")
        young = await reader.fetchrow(_HEAD)
        args = f"'{{}}', '{young['xmax']}', {young['head']}, 5000, false"
        await reader.execute(f"EXECUTE live_read({args})")  # planned on the young log
        # 200,000 committed rows, 100 per transaction id, then an open writer.
        await log.execute(
            "INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, "
            "table_name, op, record) SELECT (3 + g / 100)::text::xid8, '3', now(), 'public', "
            "'t', 'INSERT', jsonb_build_object('id', g) FROM generate_series(1, 200000) g"
        )
        slow_tx = slow.transaction()
        await slow_tx.start()
        await slow.execute("INSERT INTO t VALUES (1, 'slow')")
        await log.execute("INSERT INTO t VALUES (2, 'fast')")
        now = await reader.fetchrow(_HEAD)
        await slow_tx.commit()
        pending = "{" + ",".join(str(x) for x in now["pending"]) + "}"
        assert now["pending"], "the slow transaction was open at that snapshot"
        explained = await reader.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE live_read("
            f"'{pending}', '{now['xmax']}', {now['head']}, 5000, false)"
        )
        plan = json.loads(explained)[0]["Plan"]
        log_pages = await log.fetchval("SELECT pg_relation_size('pgcast.changes') / 8192")
        assert log_pages > 1000
        assert plan["Actual Rows"] == 1  # the slow row, committed below the head
        assert _buffers(plan) < 100, (_buffers(plan), log_pages)
    finally:
        await reader.close()
        await slow.close()


async def _blocks_fetched(conn: asyncpg.Connection) -> int:
    """Pages of the log and its indexes this transaction has asked for."""
    return int(
        await conn.fetchval(
            "SELECT sum(pg_stat_get_xact_blocks_fetched(c.oid)) FROM pg_class c "
            "WHERE c.oid IN ('pgcast.changes'::regclass, 'pgcast.changes_pkey'::regclass, "
            "'pgcast.changes_txid_idx'::regclass)"
        )
    )


async def _replayed(conn: asyncpg.Connection, since: int | Horizon) -> list[int]:
    ids: list[int] = []
    async for page in replay(
        lend(conn), since=since, schema="public", table="t", events=["INSERT"], timeout=30
    ):
        if isinstance(page, list):
            ids += [change.id for change in page]
    return ids


async def test_a_resume_stays_cheap_however_long_the_log_grows(log: asyncpg.Connection) -> None:
    """A replay's statements are prepared, so after a few resumes PostgreSQL plans
    them once for any parameters. The rows of transactions open at the position must
    still be found through the txid index: a plan that walked the id index from the
    start of the log cost ~300 ms per resume at 1,000,000 rows (one per reconnecting
    client) where ~5 ms do."""
    # 200,000 committed rows, 100 per transaction id, each written while the five
    # transactions before it could still be open (tx_xmin = txid - 5).
    await log.execute(
        "INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, "
        "op, record) SELECT (100 + g / 100)::text::xid8, (95 + g / 100)::text::xid8, now(), "
        "'public', 't', 'INSERT', jsonb_build_object('id', g) FROM generate_series(1, 200000) g"
    )
    await log.execute("ANALYZE pgcast.changes")
    head = await log.fetchval("SELECT max(id) FROM pgcast.changes")
    top = await log.fetchval("SELECT max(txid)::text::bigint FROM pgcast.changes")
    positions: list[int | Horizon] = [head - 10, Horizon(head - 10, frozenset({top - 4}), top - 2)]
    expected = [
        # Rows of the transactions from the position row's tx_xmin on (but its own),
        # then everything after the position.
        await log.fetchval(
            "SELECT count(*) FROM pgcast.changes c, pgcast.changes a WHERE a.id = $1 "
            "AND ((c.id <= $1 AND c.txid >= a.tx_xmin AND c.txid <> a.txid) OR c.id > $1)",
            head - 10,
        ),
        await log.fetchval(
            "SELECT count(*) FROM pgcast.changes WHERE (id <= $1 AND (txid = $2::text::xid8 "
            "OR txid >= $3::text::xid8)) OR id > $1",
            head - 10,
            str(top - 4),
            str(top - 2),
        ),
    ]
    for since, count in zip(positions, expected, strict=True):
        for _ in range(7):  # past the point where PostgreSQL settles on one plan
            ids = await _replayed(log, since)
            assert len(ids) == len(set(ids)) == count
        async with log.transaction():
            before = await _blocks_fetched(log)
            assert len(await _replayed(log, since)) == count
            fetched = await _blocks_fetched(log) - before
        assert fetched < 400, (since, fetched)
