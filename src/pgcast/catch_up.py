"""Catch-ups: the snapshot or replay a subscription gets before it goes live.

A catch-up reads the database for one client and is paced by that client's socket,
so a client that reads slowly (or not at all) must cost only itself. Four rules
hold that:

* **Replays hold nothing while the client drains.** A replay takes its horizon in
  one statement, then reads each page in a statement of its own, bounded to what
  that horizon saw as committed (log_replay.replay): no transaction stays open and
  the pool connection goes back between pages. Changes after the horizon come from
  the live stream, as before.
* **A table snapshot holds one REPEATABLE READ transaction**, because its rows must
  come from one snapshot (reading them in separate statements would mix versions
  of a row, and mirrors would see rows move back). The transaction is bounded: each
  chunk must be taken by the client within ``catch_up_drain_timeout``, else the
  client is closed with 4001 (reconnect and resume) and the transaction ends;
  ``idle_in_transaction_session_timeout`` ends it on the server should the gateway
  not. (Spooling the rows to disk and ending the transaction at once was the other
  way; it trades a bounded wait for unbounded disk per stalled client.)
* **Fair share of the pool.** Every statement of a catch-up runs under a slot of the
  ``CatchUpGate``: at most ``pool_size - 1`` at once (one connection stays for
  publishes and catalog reads), at most one per tenant (the token's subject, else
  the connection), granted first come first served among the tenants that may run,
  and a bounded wait: past ``catch_up_queue_timeout`` the subscribe is answered
  ``unavailable`` (the client retries). Replays take a slot per page, so big ones
  interleave with everyone else's; a snapshot keeps its slot for its transaction.
  /health and /metrics show the slots in use and the queue.
* **Bounded live buffer.** Live changes arriving for a catching-up subscription are
  held in a ``CatchUpBuffer`` of ``catch_up_buffer_limit`` changes. When it overflows,
  the held changes are dropped and, once the current pass ends, the catch-up reads
  them from the log in another pass from the horizon it reached (every dropped
  change was committed before the next horizon is taken, so that pass holds it).
  After ``MAX_PASSES`` passes the client is too slow for the write rate: it is
  closed with 4001 and resumes from what it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Mapping,
)
from typing import Any

from . import protocol
from .changelog import DATABASE_ERRORS
from .config import Settings
from .events import ChangeEvent, Horizon
from .exceptions import BrokerError, CatchUpAborted, ProtocolError
from .hub import Subscription
from .log_replay import (
    Acquire,
    Replay,
    TableRows,
    malformed_position,
    replay,
    snapshot,
)
from .metrics import Registry
from .protocol import CloseCode, ErrorCode
from .snapshot_filter import pushdown
from .transports import ClientTransport
from .unreadable import UnreadableRows, body_for, select_rows

logger = logging.getLogger("pgcast.catch_up")


# Passes over the log a catch-up may make because its live buffer overflowed.
MAX_PASSES = 4
CHUNK_ROWS = 500  # snapshot rows per `snapshot` message
PAGE_ROWS = 1000  # changes per replay page (one statement, one drain)

# What a catch-up's reads raise when the database (or, for a replay from the stream,
# NATS) fails: the subscribe is answered `unavailable` and the client retries.
_CATCH_UP_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, BrokerError)

CatchUpItem = TableRows | list[ChangeEvent] | Replay | Horizon
StreamSource = Callable[
    [Acquire, int | Horizon, str, str, list[str]],
    Awaitable[AsyncGenerator[list[ChangeEvent] | Horizon, None] | None],
]


class _Waiter:
    __slots__ = ("future", "key", "since")

    def __init__(self, key: Hashable, future: asyncio.Future[None]) -> None:
        self.key = key
        self.future = future
        self.since = time.monotonic()


class CatchUpGate:
    """Slots for catch-up statements: ``limit`` at once, one per key, FIFO, bounded wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.rejected = 0  # waits that timed out
        self._busy: Counter[Hashable] = Counter()
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def oldest_wait(self) -> float:
        """Seconds the longest waiter has waited (0 without waiters)."""
        return time.monotonic() - self._waiters[0].since if self._waiters else 0.0

    @contextlib.asynccontextmanager
    async def slot(self, key: Hashable, timeout: float) -> AsyncIterator[None]:
        """Hold a slot for ``key``; ``unavailable`` after ``timeout`` s in the queue."""
        if not await self._enter(key, timeout):
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "too many snapshots and replays in progress",
                hint="retry the subscription in a moment",
            )
        try:
            yield
        finally:
            self._leave(key)

    def _free(self, key: Hashable) -> bool:
        return self.running < self.limit and not self._busy[key]

    def _take(self, key: Hashable) -> None:
        self.running += 1
        self._busy[key] += 1

    async def _enter(self, key: Hashable, timeout: float) -> bool:
        # Whenever a slot is free, _grant has already woken every waiter that may
        # take it: a free slot here is not owed to anyone queued.
        if self._free(key):
            self._take(key)
            return True
        waiter = _Waiter(key, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
        except TimeoutError:
            # The timeout cancels the future too, unless it was granted first.
            if waiter.future.done() and not waiter.future.cancelled():
                return True  # granted just as the wait ended: keep it
            self._waiters.remove(waiter)
            self.rejected += 1
            return False
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled():
                self._leave(key)  # granted, but the caller is gone: give it back
            else:
                self._waiters.remove(waiter)
            raise
        return True

    def _leave(self, key: Hashable) -> None:
        self.running -= 1
        self._busy[key] -= 1
        if self._busy[key] <= 0:
            del self._busy[key]
        self._grant()

    def _grant(self) -> None:
        """Wake the oldest waiters that may run (a busy key does not block the others)."""
        for waiter in list(self._waiters):
            if self.running >= self.limit:
                return
            if not self._busy[waiter.key] and not waiter.future.done():
                self._waiters.remove(waiter)
                self._take(waiter.key)
                waiter.future.set_result(None)


class _Progress:
    __slots__ = ("part", "position", "replayed", "rows")

    def __init__(self) -> None:
        self.rows = 0
        self.part = 0
        self.replayed = 0
        self.position: Horizon | None = None  # the snapshot's


class CatchUps:
    """Runs the snapshots and replays of a gateway's subscriptions (see module doc)."""

    def __init__(self, settings: Settings, unreadable: UnreadableRows) -> None:
        self.settings = settings
        self.unreadable = unreadable
        self.pool: Any = None  # set once the gateway connected
        # With a broker: serves `since` from the stream when it holds the position
        # (pgcast.broker.replay); None from it means "replay from the log".
        self.stream_source: StreamSource | None = None
        self.stream_replays = 0
        self.gate = CatchUpGate(max(1, settings.pool_size - 1))
        self.active = 0  # subscriptions catching up (running or waiting)
        self.slow_closes = 0
        self.buffer_overflows = 0
        self.deliveries = 0
        # Query timeout, as for the gateway's other reads.
        self.timeout = settings.probe_interval * 4

    def register_metrics(self, registry: Registry) -> None:
        gate = self.gate
        registry.gauge(
            "pgcast_catch_up_running",
            "Catch-up statements holding a pool slot.",
            lambda: gate.running,
        )
        registry.gauge(
            "pgcast_catch_up_waiting", "Catch-ups queued for a pool slot.", lambda: gate.waiting
        )
        registry.gauge(
            "pgcast_catch_up_oldest_wait_seconds",
            "How long the oldest queued catch-up has waited.",
            gate.oldest_wait,
        )
        registry.gauge(
            "pgcast_catch_up_subscriptions",
            "Subscriptions in a snapshot or replay.",
            lambda: self.active,
        )
        registry.counter(
            "pgcast_catch_up_rejected_total",
            "Catch-ups answered `unavailable` after waiting too long for a slot.",
            lambda: gate.rejected,
        )
        registry.counter(
            "pgcast_catch_up_slow_closes_total",
            "Clients closed (4001) for not taking a snapshot chunk or replay page in time.",
            lambda: self.slow_closes,
        )
        registry.counter(
            "pgcast_catch_up_buffer_overflows_total",
            "Catch-ups whose live buffer overflowed (they read the log again).",
            lambda: self.buffer_overflows,
        )

    def health(self) -> dict[str, Any]:
        gate = self.gate
        return {
            "limit": gate.limit,
            "running": gate.running,
            "waiting": gate.waiting,
            "oldest_wait_seconds": round(gate.oldest_wait(), 3),
            "subscriptions": self.active,
            "rejected": gate.rejected,
            "slow_closes": self.slow_closes,
        }

    def _acquire(self, key: Hashable) -> Acquire:
        @contextlib.asynccontextmanager
        async def acquire() -> AsyncIterator[Any]:
            async with (
                self.gate.slot(key, self.settings.catch_up_queue_timeout),
                self.pool.acquire() as db,
            ):
                yield db

        return acquire

    async def run(
        self,
        conn: ClientTransport,
        sub: Subscription,
        *,
        key: Hashable,
        table_snapshot: bool,
        since: int | Horizon | None,
        keep: frozenset[str] | None,
        rls: tuple[str, str] | None,
        type_names: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send ``sub``'s snapshot or replay, then make it live; fields for `subscribed`.

        ``type_names`` (column -> ``pg_type.typname``, from the catalog) lets a
        snapshot leave the rows ``sub``'s filter drops (its row rule's conditions
        included) to PostgreSQL (:mod:`pgcast.snapshot_filter`).

        ``sub`` is in the hub, catching up. Raises ``ProtocolError`` (bad position,
        unavailable) or ``CatchUpAborted`` (the client was closed or left); the
        caller then drops the subscription.
        """
        if since is not None and (problem := malformed_position(since)) is not None:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"'since' is not a position this gateway hands out: {problem}",
                hint="resume from a change id or position the gateway sent",
            )
        acquire = self._acquire(key)
        events = sorted(sub.events)
        items: AsyncGenerator[CatchUpItem, None]
        if table_snapshot:
            items = snapshot(
                acquire,
                schema=sub.schema,
                table=sub.table,
                events=events,
                timeout=self.timeout,
                chunk_size=CHUNK_ROWS,
                page_size=PAGE_ROWS,
                rls=rls,
                # A backstop: the gateway itself closes a client slower than this.
                idle_timeout=self.settings.catch_up_drain_timeout + 5.0,
                where=pushdown(sub.filter.conditions, type_names or {}),
            )
        else:
            assert since is not None
            from_stream = None
            if self.stream_source is not None:
                from_stream = await self.stream_source(
                    acquire, since, sub.schema, sub.table, events
                )
            if from_stream is not None:
                self.stream_replays += 1
                items = from_stream
            else:
                items = replay(
                    acquire,
                    since=since,
                    schema=sub.schema,
                    table=sub.table,
                    events=events,
                    timeout=self.timeout,
                    page_size=PAGE_ROWS,
                )
        progress = _Progress()
        self.active += 1
        try:
            horizon = await self._passes(conn, sub, items, keep, progress, acquire)
        except _CATCH_UP_ERRORS as exc:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, f"could not read the change log: {exc}"
            ) from None
        finally:
            self.active -= 1
        # Everything up to the horizon was sent by the snapshot or the replay;
        # buffered changes and late ones from a lagging listener count only after it.
        owed = sub.finish_catch_up(set(), horizon.is_after if horizon else None)
        for change in owed:
            body = body_for(sub, change, self.unreadable)
            if body is not None:
                conn.queue_change(sub.prefix, body, change.id)
        conn.flush()
        sub.horizon = horizon
        self.deliveries += progress.replayed + len(owed)
        if progress.position is not None:
            return {"snapshot_rows": progress.rows, "position": progress.position.encode()}
        return {"replayed": progress.replayed}

    async def _passes(
        self,
        conn: ClientTransport,
        sub: Subscription,
        items: AsyncGenerator[CatchUpItem, None],
        keep: frozenset[str] | None,
        progress: _Progress,
        acquire: Acquire,
    ) -> Horizon | None:
        """Send ``items``, then, while the live buffer overflowed, the log after them."""
        buffer = sub.buffer
        assert buffer is not None
        for _ in range(MAX_PASSES):
            horizon = await self._send(conn, sub, items, keep, progress)
            if not buffer.overflowed or horizon is None:
                return horizon
            self.buffer_overflows += 1
            # The dropped changes were dispatched, hence committed: the next pass's
            # horizon (taken after this restart) sees them, and it replays from here.
            buffer.restart()
            items = replay(
                acquire,
                since=horizon,
                schema=sub.schema,
                table=sub.table,
                events=sorted(sub.events),
                timeout=self.timeout,
                page_size=PAGE_ROWS,
            )
        self._close_slow(conn, "changes arrive faster than the catch-up is taken")
        raise CatchUpAborted("the live buffer kept overflowing")

    async def _send(
        self,
        conn: ClientTransport,
        sub: Subscription,
        items: AsyncGenerator[CatchUpItem, None],
        keep: frozenset[str] | None,
        progress: _Progress,
    ) -> Horizon | None:
        """Send one pass; return its horizon (the replay's, else the snapshot's)."""
        horizon: Horizon | None = None
        snapshot_at: Horizon | None = None
        # aclosing: a pass that stops early (slow client) ends its transaction now.
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, Horizon):
                    horizon = item
                    continue
                if isinstance(item, Replay):
                    position = None if horizon is None else horizon.encode()
                    conn.send(protocol.resync(sub.id, item.reason, position))
                    continue
                if isinstance(item, TableRows):
                    snapshot_at = progress.position = item.horizon
                    rows = select_rows(item.rows, sub, keep, self.unreadable)
                    progress.rows += len(rows)
                    conn.send(
                        protocol.snapshot_chunk(
                            sub.id,
                            rows,
                            part=progress.part,
                            done=item.done,
                            position=item.horizon.encode(),
                        )
                    )
                    progress.part += 1
                else:
                    for change in item:
                        body = body_for(sub, change, self.unreadable)
                        if body is not None:
                            conn.queue_change(sub.prefix, body, change.id)
                            progress.replayed += 1
                    conn.flush()
                await self._drained(conn)
        return horizon or snapshot_at

    async def _drained(self, conn: ClientTransport) -> None:
        limit = self.settings.catch_up_drain_timeout
        try:
            async with asyncio.timeout(limit):
                await conn.drained()
        except TimeoutError:
            self._close_slow(conn, f"catch-up not taken within {limit:g}s")
            raise CatchUpAborted("the client did not take its catch-up in time") from None
        if not conn.is_open:  # gone: read no more of the log for it
            raise CatchUpAborted("the client left during its catch-up")

    def _close_slow(self, conn: ClientTransport, why: str) -> None:
        self.slow_closes += 1
        logger.info("closing slow client %s: %s (it resumes on reconnect)", conn.peer, why)
        conn.close(CloseCode.SLOW_CONSUMER, f"{why}: reconnect and resume")
