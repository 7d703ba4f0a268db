"""The change log reader is gap-free although ids are not in commit order."""

from __future__ import annotations

import asyncpg
import pytest

from pgcast.capture.installer import prune, track
from pgcast.changelog import LogCursor, Replay, read_new, replay, start_cursor
from pgcast.identifiers import parse_table_name


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
            log, since=position, schema="public", table="t", events=["INSERT"], timeout=5
        ):
            assert not isinstance(page, Replay)
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
                log, since=1, schema="public", table="t", events=["INSERT"], timeout=5
            )
        ]
        assert len(pages) == 1 and isinstance(pages[0], Replay) and pages[0].resync
    finally:
        await reader.close()
