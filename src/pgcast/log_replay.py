"""Catch-up reads of the change log: replay from a position, and table snapshots.

A client that resumes (``since``) or asks for a snapshot is brought up to date by
these reads before it joins the live stream (orchestrated by :mod:`pgcast.catch_up`).
A replay takes its horizon H (head, xip, xmax) in one statement and then reads each
page in a statement of its own, bounded to what H saw as committed, so it holds no
transaction and no connection while its client drains a page. Every page is sized by
its rows' bytes, and a position only decides where the pages start; one that is
ahead of the log, or behind what was pruned, is refused (``resync_reason``). The
live reader and the gap-free reasoning both readers share are in
:mod:`pgcast.changelog`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import asyncpg

from .changelog import (
    _HEAD,
    _SELECT,
    _SNAPSHOT_COLUMNS,
    PAGE_SIZE,
    Connection,
    change_from_row,
    horizon_from_row,
)
from .events import ChangeEvent, Horizon
from .identifiers import quote_ident
from .snapshot_filter import Pushdown

logger = logging.getLogger("pgcast.log_replay")

PAGE_BYTES = 1 << 20  # row-image bytes a replay page aims at (see _PageReader)

# The "late" rows of a replay: rows at or below the position that belong to
# transactions that were still open there, so the client may lack them. Only their
# transactions are known, so they are found through the txid index, never by walking
# the ids from the start of the log: each page's statement is planned once for any
# parameters (asyncpg prepares it), and with PostgreSQL's guesses for unknown values
# a plain `txid >= $9 AND id <= $7 ORDER BY id` walked the id index through the whole
# log (~300 ms per resume on a 1,000,000-row log, against ~5 ms now;
# bench/RESULTS.md). The xid range is closed above by the replay horizon's xmax ($5;
# later transactions are excluded by the page query anyway), listed xids are looked
# up one at a time, and the page query keeps the id index out with `id + 0`.
# Of a Horizon (a snapshot's or welcome's position): its open xids ($9) and every xid
# from its xmax ($10) on.
_LATE_OF_HORIZON = """
    SELECT c.* FROM unnest($9::text[]::xid8[]) AS open_tx(txid)
      JOIN LATERAL (SELECT * FROM pgcast.changes
                     WHERE txid = open_tx.txid OFFSET 0) AS c ON true
     WHERE open_tx.txid < $10::text::xid8  -- disjoint from the range below
    UNION ALL
    SELECT * FROM pgcast.changes WHERE txid >= $10::text::xid8 AND txid < $5::text::xid8
"""
# Of a change id: every transaction from the tx_xmin of that row ($9) on, but the
# row's own ($10), which the client holds whole.
_LATE_OF_ID = """
    SELECT * FROM pgcast.changes
     WHERE txid >= $9::text::xid8 AND txid < $5::text::xid8 AND txid <> $10::text::xid8
"""


@dataclass
class Replay:
    """Outcome of a replay request: the position cannot be resumed from (``resync``)."""

    resync: bool = False
    reason: str = ""


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
            _LATE_OF_HORIZON,
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
                _LATE_OF_ID,
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
        self, after: int, through: int, late: tuple[str, Any, Any] | None
    ) -> AsyncIterator[list[ChangeEvent] | Replay]:
        """Changes with ``after`` < id <= ``through`` in id order: from the whole log,
        or with ``late`` only from the rows its source (``_LATE_OF_*``) yields."""
        params: tuple[Any, ...] = ()
        if late is None:
            source, bounds = _SELECT, "id > $6 AND id <= $7"
        else:
            source = _SELECT.replace("FROM pgcast.changes", f"FROM ({late[0]}) AS changes")
            bounds, params = "id + 0 > $6 AND id + 0 <= $7", late[1:]
        query = f"""
WITH snap AS MATERIALIZED (
    SELECT (SELECT value::bigint FROM pgcast.state WHERE key = 'pruned_through') AS pruned
), found AS (
    {source} WHERE schema_name = $1 AND table_name = $2 AND op = ANY($3::text[])
      AND NOT (txid = ANY($4::text[]::xid8[]) OR txid >= $5::text::xid8)
      AND {bounds}
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
    where: Pushdown | None = None,
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

    ``where`` (:func:`pgcast.snapshot_filter.pushdown`) leaves out rows the caller's
    filter would drop, so PostgreSQL can use an index; the caller still filters. If
    the table changed since the clause was made (a column dropped or retyped), the
    clause is dropped and every row read, as without it.
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
        query = f"SELECT to_jsonb(t.*)::text AS row FROM {relation} t"
        rows = conn.cursor(query, prefetch=chunk_size, timeout=timeout)
        if where is not None and where.where:
            try:
                async with conn.transaction():  # a savepoint: a failure leaves S usable
                    narrowed = await conn.prepare(f"{query} WHERE {where.where}", timeout=timeout)
                rows = narrowed.cursor(*where.params, prefetch=chunk_size, timeout=timeout)
            except asyncpg.PostgresError as exc:
                logger.info("snapshot of %s reads every row: %s", relation, exc)
        chunk: list[str] = []
        async for row in rows:
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
