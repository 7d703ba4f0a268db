"""Reading the change log (``pgcast.changes``) in commit-safe order.

Log ids come from a sequence, so they are allocated in statement order, not commit
order: a transaction can commit a row with a lower id after rows with higher ids
were already read. Two mechanisms make reads gap-free:

* The live cursor (``LogCursor``) remembers which transactions its last read's
  snapshot saw as in progress: those in ``pg_snapshot_xip`` and every xid at or
  above ``pg_snapshot_xmax`` (xmax is the latest *completed* xid + 1, so running
  transactions younger than that are not listed in xip; missing them loses
  changes under concurrent writers). The next read fetches ``id > last_id`` plus
  those transactions' rows at or below ``last_id``. A row at or below ``last_id``
  was allocated before that snapshot, so its transaction either committed (read
  then), aborted, or was in progress then.

* A replay from a client position ``since`` fetches ``id > since`` plus the rows at
  or below ``since`` of every other transaction that could still have been running
  when the row ``since`` was written: those with ``txid >= tx_xmin`` of that row.
  The client drops the ids it already holds.

A live read is one statement, so its rows and the snapshot it reasons about are the
same. Replays and snapshots (catch-up reads) are in :mod:`pgcast.log_replay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .events import ChangeEvent, Horizon
from .wakeup import ARM_AND_CHECK

PAGE_SIZE = 5000

# Everything a query can raise when the database or the link to it fails (as opposed
# to a bug): callers retry, reconnect or answer `unavailable`.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a protocol state error on a connection cut mid-query
)

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
    ``pending`` and ``xmax``: the transactions the last read's snapshot saw as in
    progress: those listed in its ``xip`` and every xid at or above its ``xmax``
    (PostgreSQL lists only running xids below ``xmax``, which is the latest
    *completed* xid + 1, so younger running transactions are not in ``xip``). Their
    rows may sit at or below ``last_id`` once they commit.
    """

    last_id: int = 0
    pending: list[int] = field(default_factory=list)
    xmax: int = 0
    initialized: bool = False


_SNAPSHOT_COLUMNS = """
       ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())::text::bigint) AS pending,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax"""

# The head is at least the prune position: a log pruned empty still ends there, and a
# cursor starting below it would report the pruned ids as a gap it never had.
_HEAD = f"""
SELECT greatest(
           (SELECT max(id) FROM pgcast.changes),
           (SELECT value::bigint FROM pgcast.state WHERE key = 'pruned_through'),
           0) AS head,{_SNAPSHOT_COLUMNS}
"""

_XIP = f"SELECT {_SNAPSHOT_COLUMNS}"

# Rows at or below last_id ($3) of transactions that were in progress at the previous
# read's snapshot (xip list $1, xmax $2), written so that the plan stays cheap however
# long the log is. A reader runs with a generic plan (prepare_reader_session), made
# once for any parameters, with PostgreSQL's guesses for unknown values: a third of
# the log for an open range such as `txid >= $2` or `id <= $3`, 5% for
# `txid = ANY($1)`. Written plainly, the plan either ANDed a bitmap of every id <= $3
# (the whole log: 14 ms per read at 176,000 rows) or scanned the whole log, casting
# $1 for every row (0.4 of a core at 60 reads/s). Hence:
# * the listed xids are taken from the array one by one (OFFSET 0 keeps the lateral
#   sub-select from being turned into a join, which was planned as a hash join over
#   a scan of the whole log), each looked up in the txid index;
# * `txid < xmax of this statement's snapshot` closes the range above $2 (rows of
#   later transactions are invisible to this snapshot anyway), so it is estimated as
#   a narrow range and read from the txid index;
# * `id + 0` keeps the id index out of both: their rows are found by txid and only
#   then checked against last_id.
_OPEN_THEN_ROWS = f"""
    (SELECT c.* FROM unnest($1::text[]::xid8[]) AS open_tx(txid)
       JOIN LATERAL ({_SELECT} WHERE txid = open_tx.txid AND id + 0 <= $3 OFFSET 0) AS c
         ON true)
    UNION ALL
    ({_SELECT} WHERE txid >= $2::text::xid8
                 AND txid < pg_snapshot_xmax(pg_current_snapshot()) AND id + 0 <= $3)
"""

# One statement, hence one snapshot, and one round trip: the rows of transactions
# that were in progress at the previous read (at or below last_id), the next page
# above last_id, this snapshot's in-progress transactions and, when $5, the arming
# of the wake-up (wakeup.py). The outer joins yield one row even when there are no
# changes, to carry the snapshot columns.
_READ = f"""
WITH snap AS MATERIALIZED (
    SELECT {_SNAPSHOT_COLUMNS},
           (SELECT value::bigint FROM pgcast.state WHERE key = 'pruned_through') AS pruned
), wake AS MATERIALIZED ({ARM_AND_CHECK}), found AS (
    {_OPEN_THEN_ROWS}
    UNION ALL
    ({_SELECT} WHERE id > $3 ORDER BY id LIMIT $4)
)
SELECT snap.pending, snap.xmax, snap.pruned, wake.armed, wake.writers, found.*
FROM snap LEFT JOIN wake ON true LEFT JOIN found ON true
ORDER BY found.id
"""


async def prepare_reader_session(conn: Connection) -> None:
    """Settings of a live reader's session (the listener's, the broker reader's).

    A reader runs :data:`_READ` up to hundreds of times a second, so:

    * ``plan_cache_mode = force_generic_plan``: plan it once, not at every run. Left
      to choose, PostgreSQL kept making a custom plan per run: ~0.36 ms of server
      CPU for a read that finds nothing, against ~0.09 ms (bench/RESULTS.md). The
      statement is written so that one plan suits any parameters (_OPEN_THEN_ROWS).
    * ``enable_seqscan = off``: the plan is made at the session's first read, often
      when the log is empty, and kept until the next ANALYZE. On an empty or small
      table a sequential scan looks cheapest, and the log then grows under that plan:
      one read scanned the whole log (0.4 of a core for ~60 reads/s while 16 writers
      ran). Every part of the read has an index path, which is what this makes the
      planner take whatever the statistics say.

    Plain ``SET`` statements, so they work through any pooler in session mode.
    """
    await conn.execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")


async def log_installed(conn: Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('pgcast.changes') IS NOT NULL"))


async def start_cursor(conn: Connection, cursor: LogCursor, *, timeout: float | None) -> None:
    """Position a fresh cursor at the head of the log."""
    try:
        row = await conn.fetchrow(_HEAD, timeout=timeout)
        head = row["head"]
    except asyncpg.UndefinedTableError:  # pgcast not installed yet: start from 0
        row = await conn.fetchrow(_XIP, timeout=timeout)
        head = 0
    cursor.last_id = head
    cursor.pending = list(row["pending"])
    cursor.xmax = row["xmax"]
    cursor.initialized = True


@dataclass
class LogRead:
    """One live read: changes in id order, whether more may wait, and any gap.

    ``gap_through`` is set when the log was pruned past rows this reader had not
    read yet (it was away longer than the retention): those changes are lost to
    live subscribers, who must be told (``resync``).

    ``armed`` and ``writers`` answer an arming read (see wakeup.py): whether the
    wake-up is armed (None: unavailable) and whether another session had a log
    write open after the arming.
    """

    changes: list[ChangeEvent]
    more: bool = False
    gap_through: int | None = None
    armed: bool | None = None
    writers: bool | None = None


async def read_new(
    conn: Connection,
    cursor: LogCursor,
    *,
    timeout: float | None,
    page_size: int = PAGE_SIZE,
    arm: bool = False,
) -> LogRead:
    """Read changes committed since the cursor's last read and advance the cursor.

    Rows at or below the new ``last_id`` that are not visible yet belong to
    transactions in progress in this read's snapshot, which become ``pending``.
    With ``arm``, also arm the wake-up and report open log writers (wakeup.py).
    """
    try:
        rows = await conn.fetch(
            _READ,
            [str(x) for x in cursor.pending],
            str(cursor.xmax),
            cursor.last_id,
            page_size,
            arm,
            timeout=timeout,
        )
    except asyncpg.UndefinedTableError:
        row = await conn.fetchrow(_XIP, timeout=timeout)
        cursor.pending, cursor.xmax = list(row["pending"]), row["xmax"]
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
    cursor.xmax = rows[0]["xmax"]
    return LogRead(changes, tail >= page_size, gap, rows[0]["armed"], rows[0]["writers"])


def horizon_from_row(row: Any) -> Horizon:
    """The Horizon of a ``_HEAD`` query row."""
    return Horizon(row["head"], frozenset(row["pending"]), row["xmax"])
