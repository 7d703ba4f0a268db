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
same. A replay takes its horizon H (head, xip, xmax) in one statement and then reads
each page in a statement of its own, bounded to what H saw as committed, so it holds
no transaction and no connection while its client drains a page (see ``replay``).
Every catch-up read is paginated: a position only decides where the pages start, and
one that is ahead of the log is refused (``resync_reason``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .events import ChangeEvent, Horizon
from .identifiers import quote_ident
from .wakeup import ARM_AND_CHECK

PAGE_SIZE = 5000
PAGE_BYTES = 1 << 20  # row-image bytes a replay page aims at (see _PageReader)

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


@dataclass
class Replay:
    """Outcome of a replay request: the position cannot be resumed from (``resync``)."""

    resync: bool = False
    reason: str = ""


def horizon_from_row(row: Any) -> Horizon:
    """The Horizon of a ``_HEAD`` query row."""
    return Horizon(row["head"], frozenset(row["pending"]), row["xmax"])


# A pool checkout: each use lends a connection for a statement or two. The gateway's
# lends it only while a catch-up slot is free (pgcast.catch_up); ``lend`` serves tests.
Acquire = Callable[[], AbstractAsyncContextManager[Connection]]


def lend(conn: Connection) -> Acquire:
    """An ``Acquire`` that lends the same connection every time."""

    @contextlib.asynccontextmanager
    async def acquire() -> AsyncIterator[Connection]:
        yield conn

    return acquire


# The replay's horizon, and the bounds a resume position must respect, in one statement.
_HORIZON = f"""
SELECT coalesce((SELECT max(id) FROM pgcast.changes), 0) AS head,{_SNAPSHOT_COLUMNS},
       coalesce((SELECT value::bigint FROM pgcast.state WHERE key = 'pruned_through'), 0)
           AS pruned
"""

# Xids below FirstNormalTransactionId (3) are never in a snapshot's xmax.
_FIRST_NORMAL_XID = 3
_MAX_INT8 = 2**63 - 1


def malformed_position(since: int | Horizon) -> str | None:
    """Why ``since`` cannot be a position any gateway handed out, or None."""
    if isinstance(since, int):
        return None if 0 <= since <= _MAX_INT8 else "the change id is out of range"
    if not 0 <= since.head <= _MAX_INT8 or not _FIRST_NORMAL_XID <= since.xmax <= _MAX_INT8:
        return "the position is out of range"
    if any(not 0 < xid < since.xmax for xid in since.pending):
        return "the position lists an open transaction at or above its xmax"
    return None


def resync_reason(since: int | Horizon, now: Horizon, pruned: int) -> str | None:
    """Why ``since`` cannot be resumed from on the log as it is ``now``, or None.

    A position ahead of the log (a higher id than any written, or a snapshot younger
    than the database's) was not handed out by this database: it comes from another
    one, or from before a backup was restored. Either way the client's state does
    not match this log and must be refetched, which is what ``resync`` says.
    """
    head = since.head if isinstance(since, Horizon) else since
    if head < pruned:
        return (
            f"the change log was pruned through id {pruned}; position {head} is too old to resume"
        )
    if head > max(now.head, pruned) or (isinstance(since, Horizon) and since.xmax > now.xmax):
        return (
            "the position is ahead of this database's change log (from another database, "
            "or from before a restore): refetch"
        )
    return None


async def replay(
    acquire: Acquire,
    *,
    since: int | Horizon,
    schema: str,
    table: str,
    events: Sequence[str],
    timeout: float | None,
    page_size: int = PAGE_SIZE,
) -> AsyncGenerator[list[ChangeEvent] | Replay | Horizon, None]:
    """Yield pages of changes to ``schema.table`` a client at position ``since`` may lack.

    ``since`` is a change id (the client holds that change), or an exact ``Horizon``
    (a snapshot's or the welcome's position): then exactly the changes after it are
    replayed. First yields the replay's own ``Horizon`` H: the pages hold exactly
    the changes after ``since`` that H sees as committed; later ones are the live
    stream's. Yields ``Replay(resync=True)`` instead of pages when the log cannot
    resume ``since`` (pruned past it, or a position ahead of the log).

    H is taken in one statement, then every page is its own statement, bounded to
    the rows H sees as committed (id <= H.head, and a transaction neither in H's
    pending set nor at or above its xmax: an aborted one's rows are invisible in
    every later snapshot too, a committed one's visible). So no transaction stays
    open and no connection is held between pages, while the client drains one.
    """
    try:
        async with acquire() as conn:
            row = await conn.fetchrow(_HORIZON, timeout=timeout)
    except asyncpg.UndefinedTableError:  # pgcast is not installed: nothing to replay
        return
    now, pruned = horizon_from_row(row), row["pruned"]
    yield now
    reason = resync_reason(since, now, pruned)
    if reason is not None:
        yield Replay(resync=True, reason=reason)
        return
    read = _PageReader(acquire, schema, table, events, now, pruned, timeout, page_size)
    late: tuple[str, Any, Any] | None
    if isinstance(since, Horizon):
        head = since.head
        late = (
            "(txid = ANY($9::text[]::xid8[]) OR txid >= $10::text::xid8)",
            [str(x) for x in since.pending],
            str(since.xmax),
        )
    else:
        head = since
        async with acquire() as conn:
            anchor = await conn.fetchrow(
                "SELECT txid::text AS txid, tx_xmin::text AS xmin FROM pgcast.changes"
                " WHERE id <= $1 ORDER BY id DESC LIMIT 1",
                since,
                timeout=timeout,
            )
        # The rows at or below `since` of every other transaction that could still
        # have been running when row `since` was written. The client holds row
        # `since`, hence every earlier row of its own transaction (a transaction is
        # delivered whole, in id order).
        late = (
            None
            if anchor is None
            else (
                "txid >= $9::text::xid8 AND txid <> $10::text::xid8",
                anchor["xmin"],
                anchor["txid"],
            )
        )
    if late is not None:
        async for page in read.pages(0, head, late):
            yield page
    async for page in read.pages(head, now.head, None):
        yield page


class _PageReader:
    """Pages of one replay: each its own statement, bounded to what its horizon saw."""

    def __init__(
        self,
        acquire: Acquire,
        schema: str,
        table: str,
        events: Sequence[str],
        horizon: Horizon,
        pruned: int,
        timeout: float | None,
        page_size: int,
    ) -> None:
        self.acquire = acquire
        self.params = (
            schema,
            table,
            list(events),
            [str(x) for x in horizon.pending],
            str(horizon.xmax),
        )
        self.pruned = pruned
        self.timeout = timeout
        self.page_size = page_size

    async def pages(
        self, after: int, through: int, extra: tuple[str, Any, Any] | None
    ) -> AsyncIterator[list[ChangeEvent] | Replay]:
        """Changes with ``after`` < id <= ``through`` (and ``extra``'s condition), in id order."""
        condition, params = ("", ()) if extra is None else (f" AND {extra[0]}", extra[1:])
        query = f"""
WITH snap AS MATERIALIZED (
    SELECT (SELECT value::bigint FROM pgcast.state WHERE key = 'pruned_through') AS pruned
), found AS (
    {_SELECT} WHERE schema_name = $1 AND table_name = $2 AND op = ANY($3::text[])
      AND NOT (txid = ANY($4::text[]::xid8[]) OR txid >= $5::text::xid8)
      AND id > $6 AND id <= $7{condition}
    ORDER BY id LIMIT $8
)
SELECT snap.pruned, found.* FROM snap LEFT JOIN found ON true ORDER BY found.id
"""
        last = after
        # Rows per page follow the rows' size, so a page holds about PAGE_BYTES
        # whatever the rows are (at most page_size rows; a first page of few rows).
        limit = min(self.page_size, 64)
        while last < through:
            async with self.acquire() as conn:
                rows = await conn.fetch(
                    query, *self.params, last, through, limit, *params, timeout=self.timeout
                )
            pruned = rows[0]["pruned"] or 0
            if pruned > self.pruned and pruned > last:
                # Pruning ran meanwhile and took rows this replay had still to send.
                yield Replay(
                    resync=True,
                    reason=f"the change log was pruned through id {pruned} during the replay",
                )
                return
            changes = [change_from_row(row) for row in rows if row["id"] is not None]
            if len(changes) < limit:
                if changes:
                    yield changes
                return
            last = changes[-1].id
            size = sum(len(c.record_json or "") + len(c.old_record_json or "") for c in changes)
            limit = max(1, min(self.page_size, PAGE_BYTES * len(changes) // max(size, 1)))
            yield changes


@dataclass
class TableRows:
    """A chunk of a table snapshot: rows as JSON text, and the log head it is consistent with."""

    rows: list[str]
    done: bool
    horizon: Horizon


async def snapshot(
    acquire: Acquire,
    *,
    schema: str,
    table: str,
    events: Sequence[str],
    timeout: float | None,
    chunk_size: int = 500,
    page_size: int = PAGE_SIZE,
    rls: tuple[str, str] | None = None,
    idle_timeout: float | None = None,
) -> AsyncGenerator[TableRows | list[ChangeEvent] | Replay | Horizon, None]:
    """Yield the table's rows in chunks, then every change committed after them.

    With ``rls`` = (role, claims as JSON), the rows are read as that role with the
    claims in ``request.jwt.claims``, so row-level-security policies filter them.

    The rows are read in one REPEATABLE READ snapshot S, together with the log head
    and the transactions in progress in S. "After the snapshot" is then exactly: log
    rows above that head, and rows of those in-progress transactions (which commit
    after S, whatever their ids). Nothing before S is replayed, nothing after is
    missed.

    The rows need S, so its transaction stays open (on one connection) while the
    caller sends the chunks: the caller bounds how long each chunk may take, and
    ``idle_timeout`` has PostgreSQL end the transaction should the caller not.
    """
    relation = f"{quote_ident(schema)}.{quote_ident(table)}"
    async with acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if idle_timeout is not None:
            await conn.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
                f"{max(1, int(idle_timeout * 1000))}ms",
            )
        horizon = horizon_from_row(await conn.fetchrow(_HEAD, timeout=timeout))
        if rls is not None:
            # Row-level security decides the rows: read them as `role`, with the
            # token's claims where policies look for them (PostgREST's convention).
            role, claims_json = rls
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims_json)
            await conn.execute(f"SET LOCAL ROLE {quote_ident(role)}")
        chunk: list[str] = []
        async for row in conn.cursor(
            f"SELECT to_jsonb(t.*)::text AS row FROM {relation} t",
            prefetch=chunk_size,
            timeout=timeout,
        ):
            chunk.append(row["row"])
            if len(chunk) >= chunk_size:
                yield TableRows(chunk, False, horizon)
                chunk = []
        yield TableRows(chunk, True, horizon)
    # Then exactly the changes after the snapshot: a replay from its horizon (which
    # first yields its own, later Horizon: the point from which live changes are owed).
    async for item in replay(
        acquire,
        since=horizon,
        schema=schema,
        table=table,
        events=events,
        timeout=timeout,
        page_size=page_size,
    ):
        yield item
