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

Every read runs in one REPEATABLE READ, READ ONLY transaction so its rows and the
snapshot it reasons about are the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    ``pending``: transactions in progress at the read snapshot; their rows may sit at
    or below ``last_id`` once they commit. ``seen_late``: rows of ``pending``
    transactions already delivered by a read that did not complete.
    """

    last_id: int = 0
    pending: list[int] = field(default_factory=list)
    seen_late: set[int] = field(default_factory=set)
    initialized: bool = False


async def _snapshot_pending(conn: Connection) -> list[int]:
    rows = await conn.fetch("SELECT pg_snapshot_xip(pg_current_snapshot())::text::bigint AS x")
    return [row["x"] for row in rows]


async def log_installed(conn: Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('pgcast.changes') IS NOT NULL"))


async def start_cursor(conn: Connection, cursor: LogCursor, *, timeout: float | None) -> None:
    """Position a fresh cursor at the head of the log."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = 0
        if await log_installed(conn):
            head = await conn.fetchval(
                "SELECT coalesce(max(id), 0) FROM pgcast.changes", timeout=timeout
            )
        cursor.pending = await _snapshot_pending(conn)
    cursor.last_id = head
    cursor.seen_late.clear()
    cursor.initialized = True


async def read_new(
    conn: Connection, cursor: LogCursor, *, timeout: float | None, page_size: int = PAGE_SIZE
) -> AsyncIterator[list[ChangeEvent]]:
    """Yield pages of changes committed since the cursor's last read, advancing it.

    The cursor advances with every page, so a read cut short by a lost connection
    resumes where it stopped: no page is yielded twice, none is skipped.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        new_pending = await _snapshot_pending(conn)
        if not await log_installed(conn):
            cursor.pending = new_pending
            return
        if cursor.pending:
            late = [
                row
                for row in await conn.fetch(
                    _SELECT + "WHERE txid = ANY($1::text[]::xid8[]) AND id <= $2 ORDER BY id",
                    [str(x) for x in cursor.pending],
                    cursor.last_id,
                    timeout=timeout,
                )
                if row["id"] not in cursor.seen_late
            ]
            if late:
                cursor.seen_late.update(row["id"] for row in late)
                yield [change_from_row(row) for row in late]
        watched = set(cursor.pending)
        widened = False
        while True:
            rows = await conn.fetch(
                _SELECT + "WHERE id > $1 ORDER BY id LIMIT $2",
                cursor.last_id,
                page_size,
                timeout=timeout,
            )
            if rows:
                if not widened:
                    # Past this point last_id comes from this snapshot, so transactions
                    # open in it must be watched too (until the read completes).
                    cursor.pending = sorted(set(cursor.pending) | set(new_pending))
                    widened = True
                cursor.last_id = rows[-1]["id"]
                if watched:
                    # Should this read fail, the next one fetches these transactions'
                    # rows again by txid; remember which were already delivered.
                    cursor.seen_late.update(r["id"] for r in rows if r["txid"] in watched)
                yield [change_from_row(row) for row in rows]
            if len(rows) < page_size:
                break
    cursor.pending = new_pending
    cursor.seen_late.clear()


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
