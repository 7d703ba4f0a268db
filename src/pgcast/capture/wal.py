"""The WAL consumer: reads the database's pgoutput slot and appends to ``pgcast.changes``.

One consumer per database does the work: each gateway runs a :class:`WalConsumer`,
which first takes a session-level advisory lock (:data:`WAL_LOCK_KEY`) on its own
connection; the others wait and retry, so when the holder dies (its session ends,
releasing the lock) another takes over within ``retry_interval``.

Client side, chosen by measurement (bench/RESULTS.md, "WAL capture"): the
streaming replication protocol through psycopg2's ``LogicalReplicationConnection``
(asyncpg speaks no replication protocol). Polling
``pg_logical_slot_get_binary_changes`` sets decoding up again on every call and
cost the writers about twice as much throughput. The psycopg2 socket is driven
from the event loop (``add_reader`` plus the non-blocking ``read_message``); only
connecting and START_REPLICATION, which block, run in a thread.

Why the log rows it writes are correct for the gap-free reader (changelog.py):
the consumer appends in its own transactions, one per batch, with ``txid`` =
``pg_current_xact_id()`` and ``tx_xmin`` = its snapshot's xmin, exactly as the
capture trigger does. To the readers a batch is one ordinary transaction that wrote
rows in id order; the cursor and replay reasoning ("a row at or below last_id
belongs to a transaction that was committed, aborted or in progress then") holds
for it unchanged. Using the *source* transaction's xid instead would break it: the
source committed long before the consumer's rows became visible, so no reader's
snapshot would list it as in progress. ``committed_at`` is the source commit time
(from the Commit message). Source transactions are appended in commit order (the
order the slot sends them), each change in statement order.

Exactly once into the log: each batch is one statement (one round trip, its own
transaction) that also records, in ``pgcast.state['wal_position']``, how far it got:
the source transaction's commit LSN and how many of its changes are applied (``-1``:
all). The session reads the position when it starts (it holds the advisory lock, so
no other consumer appends meanwhile); changes at or before it are skipped, so a batch
replayed after a crash, a restart or a takeover is not appended twice. The statement
moves the position by compare-and-set from the value this session last wrote and
appends only if that worked, so even two consumers at once (the lock failing) cannot
both append a batch. The slot's flush position is confirmed only after the batch
commits, and only up to the end of a complete transaction, so the slot never skips
what the log does not hold.

Bounded memory: a batch is written once it holds ``batch_rows`` changes, even in
the middle of a source transaction (the position then records the change count),
and nothing is read from the slot while a batch is being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgcast.backoff import backoff
from pgcast.capture import pgoutput, wal_setup
from pgcast.capture.pgoutput import Begin, Commit, Delete, Insert, Relation, Truncate, Update
from pgcast.capture.sql import CHANNEL, WAKE_CLAIM
from pgcast.capture.wal_batch import LogRow, build_insert, merge_unchanged
from pgcast.changelog import DATABASE_ERRORS
from pgcast.election import lock_is_free
from pgcast.exceptions import CaptureError
from pgcast.metrics import Registry

__all__ = ["WAL_LOCK_KEY", "WalConsumer", "WalPosition"]

logger = logging.getLogger("pgcast.wal")

WAL_LOCK_KEY = 0x70676361_7374_02
"""Session advisory lock electing the database's one slot consumer ('pgcast' + 2)."""

_STATE_KEY = "wal_position"
_COMPLETE = -1


@dataclass(frozen=True)
class WalPosition:
    """How far the log holds the slot's stream: ``rows`` changes of the transaction
    committed at ``lsn`` (``-1``: all of it, and everything before)."""

    lsn: int = 0
    rows: int = _COMPLETE

    @classmethod
    def parse(cls, text: str | None) -> WalPosition:
        if not text:
            return cls()
        lsn, _, rows = text.partition(":")
        return cls(int(lsn), int(rows))

    def __str__(self) -> str:
        return f"{self.lsn}:{self.rows}"

    def holds(self, lsn: int, index: int) -> bool:
        """Whether change number ``index`` of the transaction committed at ``lsn`` is applied."""
        if lsn != self.lsn:
            return lsn < self.lsn
        return self.rows == _COMPLETE or index < self.rows


@dataclass
class _Pending:
    """A change waiting to be appended, with where it sits in the source stream."""

    lsn: int  # commit LSN of its transaction
    index: int  # its number within the transaction
    row: LogRow


class WalConsumer:
    """Elects itself the database's slot consumer and appends decoded changes to the log."""

    def __init__(
        self,
        dsn: str,
        *,
        on_appended: Callable[[], None] = lambda: None,
        batch_rows: int = 5000,
        retry_interval: float = 1.0,
        status_interval: float = 1.0,
        pool: Callable[[], Any] | None = None,
        backoff_factory: Callable[[], Iterator[float]] | None = None,
    ) -> None:
        self.dsn = dsn
        # Given (a broker fleet), candidates wait through the pool instead of each
        # holding a connection (pgcast.election).
        self._pool = pool
        self.on_appended = on_appended
        self.batch_rows = batch_rows
        self.retry_interval = retry_interval
        self.status_interval = status_interval
        self._backoff_factory = backoff_factory or (
            lambda: backoff(initial=retry_interval, maximum=max(retry_interval, 10.0))
        )
        self._streamed = False  # the current session opened the stream
        self._position = WalPosition()  # how far the log holds the stream (per session)
        self._position_text = ""  # the position row's value as stored (compare-and-set)
        self.leader = False
        self.appended = 0  # log rows written by this consumer
        self.transactions = 0  # source transactions completed
        self.last_error: str | None = None
        self.slot: wal_setup.SlotStatus | None = None
        self._task: asyncio.Task[None] | None = None
        self._relations: dict[int, Relation] = {}
        self._types: dict[int, str] = {}

    def register_metrics(self, registry: Registry) -> None:
        def slot(attribute: str) -> Callable[[], float | None]:
            def read() -> float | None:
                value = getattr(self.slot, attribute, None)
                return None if value is None else float(value)

            return read

        registry.gauge(
            "pgcast_wal_slot_retained_bytes",
            "WAL the server keeps for pgcast's replication slot (absent without a slot).",
            slot("retained_bytes"),
        )
        registry.gauge(
            "pgcast_wal_slot_lag_bytes",
            "WAL not yet confirmed by the slot consumer.",
            slot("lag_bytes"),
        )
        registry.gauge(
            "pgcast_wal_slot_active", "1 while some process streams the slot.", slot("active")
        )
        registry.gauge(
            "pgcast_wal_consumer_leader",
            "1 while this gateway is the database's slot consumer.",
            lambda: float(self.leader),
        )
        registry.counter(
            "pgcast_wal_appended_total",
            "Changes this gateway decoded from the WAL into the log.",
            lambda: self.appended,
        )

    # lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pgcast-wal-consumer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a driver call stuck in a thread must not hang shutdown.
            await asyncio.wait({task}, timeout=10)
        self.leader = False

    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            self._streamed = False
            try:
                await self._elect_and_consume()
            except asyncio.CancelledError:
                raise
            except _RETRYABLE as exc:
                self.last_error = str(exc)
                logger.warning("WAL consumer: %s; retrying", exc)
            except Exception:
                logger.exception("WAL consumer failed; retrying")
            self.leader = False
            # Back off only across sessions that failed before streaming: after a
            # session that streamed (however it ended) start again from the shortest
            # delay, or a consumer that lost a few long sessions over days would wait
            # the maximum after every later blip.
            if delays is None or self._streamed:
                delays = self._backoff_factory()
            await asyncio.sleep(next(delays))

    async def _wait_until_free(self) -> None:
        assert self._pool is not None
        while True:
            async with self._pool().acquire() as conn:
                self.slot = await wal_setup.slot_status(conn)
                if await lock_is_free(conn, WAL_LOCK_KEY, timeout=10):
                    return
            await asyncio.sleep(self.retry_interval)

    async def _elect_and_consume(self) -> None:
        if self._pool is not None:
            await self._wait_until_free()
        conn = await asyncpg.connect(self.dsn, server_settings=_SESSION_SETTINGS)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", WAL_LOCK_KEY):
                if self._pool is not None:
                    return  # lost the race: wait through the pool again
                self.slot = await wal_setup.slot_status(conn)
                await asyncio.sleep(self.retry_interval)
            self.leader = True
            slot = await wal_setup.slot_name(conn)
            while (status := await wal_setup.slot_status(conn)) is None:
                self.slot = None
                await asyncio.sleep(self.retry_interval)  # nothing tracked in WAL mode yet
            self.slot = status
            # Only this session appends while it holds the lock, so the position it
            # last wrote is the log's (the append still checks, compare-and-set).
            self._position_text = await _load_position(conn)
            self._position = WalPosition.parse(self._position_text)
            await self._consume(conn, slot)
        finally:
            self.leader = False
            with contextlib.suppress(*DATABASE_ERRORS):
                await asyncio.wait_for(conn.close(), 5)
            if not conn.is_closed():
                conn.terminate()

    # streaming --------------------------------------------------------------------

    async def _consume(self, conn: Any, slot: str) -> None:
        # The stream opens in a thread, which a cancellation (stop) cannot interrupt:
        # a stream opened after we were cancelled must still be closed, or it keeps
        # the slot active and no other gateway can take over.
        opening = asyncio.ensure_future(
            asyncio.to_thread(_open_stream, self.dsn, slot, self.status_interval)
        )
        try:
            repl = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_late_stream)
            raise
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = repl.cursor.fileno()
        loop.add_reader(fd, readable.set)
        self.last_error = None
        self._streamed = True
        logger.info("WAL consumer streaming slot %s", slot)
        pending: list[_Pending] = []
        confirmable = 0  # end LSN of the last complete transaction read
        begin: Begin | None = None
        index = 0
        next_status = time.monotonic()
        try:
            while True:
                readable.clear()
                message = _read(repl.cursor)
                if message is None:
                    if pending or confirmable:
                        confirmable = await self._flush(conn, repl.cursor, pending, confirmable)
                        pending = []
                        continue
                    if time.monotonic() >= next_status:
                        self.slot = await wal_setup.slot_status(conn)
                        next_status = time.monotonic() + max(self.status_interval, 1.0)
                        if self.slot is None:
                            return  # the slot was dropped: untracked; wait for a new one
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(readable.wait(), self.status_interval)
                    continue
                decoded = pgoutput.decode(message.payload)
                if isinstance(decoded, Begin):
                    begin, index = decoded, 0
                elif isinstance(decoded, Commit):
                    begin = None
                    self.transactions += 1
                    confirmable = decoded.end_lsn
                elif isinstance(decoded, Relation):
                    if pending:
                        # Pending rows are encoded at flush with the relation they
                        # were decoded under; a new Relation (after ALTER TABLE) must
                        # not relabel their values with its columns.
                        confirmable = await self._flush(conn, repl.cursor, pending, confirmable)
                        pending = []
                    self._relations[decoded.oid] = decoded
                    await self._learn_types(conn, decoded)
                elif begin is not None:
                    rows = _rows(decoded, begin.commit_time_us)
                    pending += [_Pending(begin.final_lsn, index + i, r) for i, r in enumerate(rows)]
                    index += len(rows)
                    if len(pending) >= self.batch_rows:
                        confirmable = await self._flush(conn, repl.cursor, pending, confirmable)
                        pending = []
        finally:
            loop.remove_reader(fd)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(repl.close), 5)

    async def _learn_types(self, conn: Any, relation: Relation) -> None:
        unknown = [c.type_oid for c in relation.columns if c.type_oid not in self._types]
        if unknown:
            rows = await conn.fetch(
                "SELECT oid, format_type(oid, NULL) AS name FROM pg_type WHERE oid = ANY($1)",
                unknown,
            )
            self._types.update({r["oid"]: r["name"] for r in rows})

    async def _flush(self, conn: Any, cursor: Any, pending: list[_Pending], confirm: int) -> int:
        """Append ``pending`` in one statement; confirm the slot up to ``confirm``.

        Returns the end LSN still to confirm (0 once confirmed)."""
        position = self._position
        fresh = [p for p in pending if not position.holds(p.lsn, p.index)]
        if fresh:
            last = fresh[-1]
            # A transaction whose Commit was read ends before `confirm`; one cut by
            # batch_rows commits after it.
            complete = confirm > last.lsn
            reached = WalPosition(last.lsn, _COMPLETE if complete else last.index + 1)
            insert, params = build_insert(
                [p.row for p in fresh], self._relations, self._types, only_if="moved"
            )
            n = len(params)
            row = await conn.fetchrow(
                _APPEND.format(key=n + 1, new=n + 2, old=n + 3, insert=insert),
                *params,
                _STATE_KEY,
                str(reached),
                self._position_text,
            )
            if not row["moved"]:
                # Only with two consumers at once (the advisory lock should prevent
                # it): nothing was appended; start a new session from the log's position.
                raise CaptureError("the WAL position was moved by another consumer")
            self._position, self._position_text = reached, str(reached)
            self.appended += row["appended"]
            # Idle gateways of other nodes sleep until the one-shot wake-up (this
            # process's own reader is woken by on_appended).
            if row["claimed"]:
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
            self.on_appended()
        if confirm:
            # Feedback goes out with psycopg2's next status update (status_interval).
            cursor.send_feedback(flush_lsn=confirm)
        return 0


async def _load_position(conn: Any) -> str:
    """The stored position (created at the start if absent), as its text."""
    await conn.execute(
        "INSERT INTO pgcast.state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        _STATE_KEY,
        str(WalPosition()),
    )
    value: str = await conn.fetchval("SELECT value FROM pgcast.state WHERE key = $1", _STATE_KEY)
    return value


# One batch, one statement (one round trip, its own transaction): move the recorded
# position from the one this session last wrote (compare-and-set), append the rows
# only if that worked, and claim the armed wake-up (true: notify). The rows, the
# position and the claim commit together or not at all.
_APPEND = (
    "WITH moved AS (UPDATE pgcast.state SET value = ${new} "
    "WHERE key = ${key} AND value = ${old} RETURNING 1),\n"
    "ins AS ({insert} RETURNING 1)\n"
    "SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM ins) AS appended, "
    f"({WAKE_CLAIM.strip()}) AS claimed"
)


# The decoder relies on these for text values it can read back exactly.
_SESSION_SETTINGS = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "application_name": "pgcast-wal",
}


def _rows(message: pgoutput.Message, commit_time_us: int) -> list[LogRow]:
    if isinstance(message, Insert):
        return [LogRow(message.relation, "INSERT", message.new, None, commit_time_us)]
    if isinstance(message, Update):
        old = None if message.old_is_key else message.old
        new = merge_unchanged(message.new, old)
        return [LogRow(message.relation, "UPDATE", new, old, commit_time_us)]
    if isinstance(message, Delete):
        return [LogRow(message.relation, "DELETE", None, message.old, commit_time_us)]
    if isinstance(message, Truncate):
        return [LogRow(oid, "TRUNCATE", None, None, commit_time_us) for oid in message.relations]
    return []


class _ReplicationError(Exception):
    """The replication connection failed (psycopg2's errors, wrapped)."""


_RETRYABLE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, CaptureError, _ReplicationError)


@dataclass
class _Stream:
    connection: Any
    cursor: Any

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def _close_late_stream(opening: asyncio.Future[_Stream]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        with contextlib.suppress(Exception):
            opening.result().close()


def _open_stream(dsn: str, slot: str, status_interval: float) -> _Stream:
    import psycopg2  # type: ignore[import-untyped]
    import psycopg2.extras  # type: ignore[import-untyped]

    options = " ".join(
        f"-c {k}={v}" for k, v in _SESSION_SETTINGS.items() if k != "application_name"
    )
    try:
        connection = psycopg2.connect(
            dsn,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            application_name="pgcast-wal-stream",
            options=options,
        )
        cursor = connection.cursor()
        cursor.start_replication(
            slot_name=slot,
            decode=False,
            options={"proto_version": "1", "publication_names": wal_setup.PUBLICATION},
            status_interval=status_interval,
        )
    except psycopg2.Error as exc:
        raise _ReplicationError(f"cannot stream slot {slot}: {exc}".strip()) from None
    return _Stream(connection, cursor)


def _read(cursor: Any) -> Any:
    import psycopg2

    try:
        return cursor.read_message()
    except psycopg2.Error as exc:
        raise _ReplicationError(f"replication stream lost: {exc}".strip()) from None
