"""Reading the change log (``pgcast.changes``) in commit-safe order.

Log ids come from a sequence, so they are allocated in statement order, not commit
order: a transaction can commit a row with a lower id after rows with higher ids
were already read. Two mechanisms make reads gap-free:

* The live cursor (``LogCursor``) remembers the transactions that were still in
  progress when it last read (``pg_snapshot_xip`` of its read snapshot). The next
  read fetches ``id > last_id`` plus every row of those transactions. A transaction
  that was not yet running at the last read can only allocate ids above ``last_id``
  (its log rows are written after its first write, which is after that snapshot).

* A replay from a client position ``since`` fetches ``id > since`` plus the rows at
  or below ``since`` of every other transaction that could still have been running
  when the row ``since`` was written: those with ``txid >= tx_xmin`` of that row.
  The client drops the ids it already holds.

A live read is one statement, so its rows and the snapshot it reasons about are the
same; a replay runs in one REPEATABLE READ, READ ONLY transaction for the same reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .events import ChangeEvent

PAGE_SIZE = 5000

_SELECT = """
SELECT id, txid::text::bigint AS txid, schema_name, table_name, op,
       record::text AS record, old_record::text AS old_record, changed,
       to_char(committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS committed_at
FROM pgcast.changes
"""

# Connection = asyncpg.Connection; typed loosely because asyncpg ships no stubs.
Connection = Any


def change_from_row(row: Any) -> ChangeEvent:
    return ChangeEvent(
        id=row["id"],
        schema=row["schema_name"],
        table=row["table_name"],
        op=row["op"],
        record_json=row["record"],
        old_record_json=row["old_record"],
        changed=row["changed"],
        txid=row["txid"],
        committed_at=row["committed_at"],
    )


@dataclass
class LogCursor:
    """Where the live reader stands.

    ``last_id``: every committed row with a higher id is still to be read.
    ``pending``: transactions in progress at the last read's snapshot; their rows
    may sit at or below ``last_id`` once they commit.
    """

    last_id: int = 0
    pending: list[int] = field(default_factory=list)
    initialized: bool = False


_HEAD = """
SELECT coalesce((SELECT max(id) FROM pgcast.changes), 0) AS head,
       ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())::text::bigint) AS pending
"""

_XIP = "SELECT ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())::text::bigint) AS pending"

# One statement, hence one snapshot, and one round trip: the rows of transactions
# that were pending at the previous read (at or below last_id), the next page above
# last_id, and the transactions still in progress in this very snapshot. The outer
# join yields one row even when there are no changes, to carry `pending`.
_READ = f"""
WITH snap AS MATERIALIZED (
    SELECT ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())::text::bigint) AS pending,
           (SELECT value::bigint FROM pgcast.state WHERE key = 'pruned_through') AS pruned
), found AS (
    ({_SELECT} WHERE txid = ANY($1::text[]::xid8[]) AND id <= $2)
    UNION ALL
    ({_SELECT} WHERE id > $2 ORDER BY id LIMIT $3)
)
SELECT snap.pending, snap.pruned, found.* FROM snap LEFT JOIN found ON true ORDER BY found.id
"""


async def log_installed(conn: Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('pgcast.changes') IS NOT NULL"))


async def start_cursor(conn: Connection, cursor: LogCursor, *, timeout: float | None) -> None:
    """Position a fresh cursor at the head of the log."""
    try:
        row = await conn.fetchrow(_HEAD, timeout=timeout)
        head, pending = row["head"], row["pending"]
    except asyncpg.UndefinedTableError:  # pgcast not installed yet: start from 0
        head, pending = 0, await conn.fetchval(_XIP, timeout=timeout)
    cursor.last_id = head
    cursor.pending = list(pending)
    cursor.initialized = True


@dataclass
class LogRead:
    """One live read: changes in id order, whether more may wait, and any gap.

    ``gap_through`` is set when the log was pruned past rows this reader had not
    read yet (it was away longer than the retention): those changes are lost to
    live subscribers, who must be told (``resync``).
    """

    changes: list[ChangeEvent]
    more: bool = False
    gap_through: int | None = None


async def read_new(
    conn: Connection, cursor: LogCursor, *, timeout: float | None, page_size: int = PAGE_SIZE
) -> LogRead:
    """Read changes committed since the cursor's last read and advance the cursor.

    Rows at or below the new ``last_id`` that are not visible yet belong to
    transactions in progress in this read's snapshot, which become ``pending``.
    """
    try:
        rows = await conn.fetch(
            _READ, [str(x) for x in cursor.pending], cursor.last_id, page_size, timeout=timeout
        )
    except asyncpg.UndefinedTableError:
        cursor.pending = list(await conn.fetchval(_XIP, timeout=timeout))
        return LogRead([])
    changes = [change_from_row(row) for row in rows if row["id"] is not None]
    tail = sum(1 for change in changes if change.id > cursor.last_id)
    pruned = rows[0]["pruned"]
    gap = pruned if pruned is not None and pruned > cursor.last_id else None
    if changes:
        cursor.last_id = max(cursor.last_id, changes[-1].id)
    if gap is not None:
        cursor.last_id = max(cursor.last_id, gap)
    cursor.pending = list(rows[0]["pending"])
    return LogRead(changes, tail >= page_size, gap)


@dataclass
class Replay:
    """Outcome of a replay request."""

    resync: bool = False
    reason: str = ""


async def replay(
    conn: Connection,
    *,
    since: int,
    schema: str,
    table: str,
    events: Sequence[str],
    timeout: float | None,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[list[ChangeEvent] | Replay]:
    """Yield pages of changes to ``schema.table`` a client at position ``since`` may lack.

    Yields a single ``Replay(resync=True)`` instead when the log no longer covers
    ``since`` (pruned beyond it).
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if not await log_installed(conn):
            return
        pruned = await conn.fetchval(
            "SELECT coalesce((SELECT value::bigint FROM pgcast.state"
            " WHERE key = 'pruned_through'), 0)"
        )
        if since < pruned:
            yield Replay(
                resync=True,
                reason=f"the change log was pruned through id {pruned}; position {since} "
                "is too old to resume",
            )
            return
        anchor = await conn.fetchrow(
            "SELECT txid::text AS txid, tx_xmin::text AS xmin FROM pgcast.changes"
            " WHERE id <= $1 ORDER BY id DESC LIMIT 1",
            since,
        )
        where = "schema_name = $1 AND table_name = $2 AND op = ANY($3::text[])"
        if anchor is not None:
            # The client holds row `since`, hence every earlier row of its own
            # transaction (a transaction is delivered whole, in id order).
            late = await conn.fetch(
                _SELECT + f"WHERE {where} AND id <= $4 AND txid >= $5::text::xid8"
                " AND txid <> $6::text::xid8 ORDER BY id",
                schema,
                table,
                list(events),
                since,
                anchor["xmin"],
                anchor["txid"],
                timeout=timeout,
            )
            if late:
                yield [change_from_row(row) for row in late]
        last_id = since
        while True:
            rows = await conn.fetch(
                _SELECT + f"WHERE {where} AND id > $4 ORDER BY id LIMIT $5",
                schema,
                table,
                list(events),
                last_id,
                page_size,
                timeout=timeout,
            )
            if rows:
                last_id = rows[-1]["id"]
                yield [change_from_row(row) for row in rows]
            if len(rows) < page_size:
                break
