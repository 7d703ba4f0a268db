"""The elected reader: the one connection of the fleet that reads the change log, and
publishes every change, in the order it read them, to the database's stream.

Election: a session advisory lock (:data:`READER_LOCK_KEY`) held by the reader's own
connection (``application_name`` ``pgcast-reader``), so it passes to another node
when the reader's session ends, however it ends. Candidates hold no connection while
they wait: every ``retry_interval`` they ask, through their pool, whether the lock
is free (``pg_locks``), and only then connect and try to take it. In WAL capture mode
only the node that consumes the slot stands, so the reader is that process.

Nothing skipped, nothing doubled (see codec.py for the headers):

* The reader reads with the gap-free cursor (changelog.read_new) and publishes each
  read's changes in order, the last with the cursor after the read.
* A new reader continues from the stream's last message: its exact position, or,
  if the previous reader died in the middle of a read, from where that read began;
  the changes it then publishes again carry the same ``Nats-Msg-Id`` and JetStream
  drops them (they are published one by one, so no chain header is needed).
* Later reads are published pipelined, each message naming the one before it
  (``Nats-Expected-Last-Msg-Id``): if a publish is lost while later ones reach the
  server (a reconnect in between), the server refuses the later ones, and the reader
  starts over from the stream's last message instead of leaving a hole. Any failure
  (PostgreSQL, NATS, an unacknowledged publish) ends the term: the lock is released
  with the connection and the next term, here or on another node, starts over from
  the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import nats.js.errors

from pgcast.backoff import backoff
from pgcast.changelog import (
    DATABASE_ERRORS,
    LogCursor,
    LogRead,
    prepare_reader_session,
    read_new,
    start_cursor,
)
from pgcast.election import lock_is_free
from pgcast.events import Horizon
from pgcast.exceptions import BrokerError
from pgcast.listener import CHANNEL
from pgcast.startup import one_line
from pgcast.wakeup import PollPolicy

from . import codec
from .link import NATS_ERRORS, BrokerLink

__all__ = ["READER_LOCK_KEY", "StreamReader"]

logger = logging.getLogger("pgcast.broker")

READER_LOCK_KEY = 0x70676361_7374_03
"""Session advisory lock electing the database's one stream reader ('pgcast' + 3)."""

APPLICATION_NAME = "pgcast-reader"
PAGE_SIZE = 2000
ACK_TIMEOUT = 10.0

_HEAD = "SELECT coalesce(max(id), 0) FROM pgcast.changes"


class StreamReader:
    """Stands for election and, while elected, publishes the log to the stream."""

    def __init__(
        self,
        dsn: str,
        link: BrokerLink,
        *,
        pool: Callable[[], Any],
        eligible: Callable[[], bool] = lambda: True,
        max_age: float = 7 * 86400.0,
        fast_poll_interval: float = 0.001,
        poll_interval: float = 1.0,
        probe_timeout: float = 5.0,
        retry_interval: float = 0.5,
    ) -> None:
        self.dsn = dsn
        self.link = link
        self._pool = pool
        self._eligible = eligible
        self.max_age = max_age
        self.fast_poll_interval = fast_poll_interval
        self.poll_interval = poll_interval
        self.probe_timeout = probe_timeout
        self.retry_interval = retry_interval
        self.leader = False
        self.terms = 0  # times this node became the reader
        self.published = 0  # messages the stream accepted from this node
        self.duplicates = 0  # publishes the stream dropped as already held
        self.log_reads = 0
        self.last_error: str | None = None
        self.last_publish_at: float | None = None
        self.backend_pid: int | None = None
        self._last_msg_id: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pgcast-stream-reader")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        self.leader = False

    def wake(self) -> None:
        self._wake.set()

    # election -----------------------------------------------------------------------

    async def _run(self) -> None:
        delays = backoff(initial=self.retry_interval, maximum=10.0)
        while True:
            try:
                await self._wait_turn()
                if await self._serve_term():
                    delays = backoff(initial=self.retry_interval, maximum=10.0)
            except asyncio.CancelledError:
                raise
            except (*DATABASE_ERRORS, *NATS_ERRORS) as exc:
                self.last_error = one_line(exc)
                logger.warning("stream reader: %s; standing again", self.last_error)
            except Exception:
                self.last_error = "internal error"
                logger.exception("stream reader failed; standing again")
            await asyncio.sleep(next(delays))

    async def _wait_turn(self) -> None:
        """Return once this node may stand and the lock looks free."""
        while True:
            if self._eligible() and self.link.connected:
                async with self._pool().acquire() as conn:
                    if await lock_is_free(conn, READER_LOCK_KEY, timeout=self.probe_timeout):
                        return
            await asyncio.sleep(self.retry_interval)

    async def _serve_term(self) -> bool:
        """Take the lock and publish until something fails; False if another node won."""
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.probe_timeout,
            server_settings={"application_name": APPLICATION_NAME},
        )
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", READER_LOCK_KEY):
                return False
            self.leader = True
            self.terms += 1
            self.backend_pid = conn.get_server_pid()
            await self._publish_log(conn)
            return True  # not reached: _publish_log runs until it fails
        finally:
            self.leader = False
            conn.terminate()  # ends the session, so the lock is free at once

    # publishing ---------------------------------------------------------------------

    async def _publish_log(self, conn: Any) -> None:
        lost = asyncio.Event()

        def on_terminate(_: Any) -> None:
            lost.set()
            self._wake.set()

        conn.add_termination_listener(on_terminate)
        await prepare_reader_session(conn)
        await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        await self.link.ensure_stream(max_age=self.max_age)
        cursor, exact = await self._resume(conn)
        logger.info(
            "elected stream reader (backend pid %s): publishing from change id %s to %r",
            self.backend_pid,
            cursor.last_id,
            self.link.stream,
        )
        # After a read cut short, publish one by one (its changes may be held already).
        chained = exact
        policy = PollPolicy(fast=self.fast_poll_interval, idle=self.poll_interval)
        arm = False
        while True:
            if lost.is_set():
                raise BrokerError("the reader's PostgreSQL connection was terminated")
            before = _horizon(cursor)
            read = await read_new(
                conn, cursor, timeout=self.probe_timeout, page_size=PAGE_SIZE, arm=arm
            )
            self.log_reads += 1
            await self._publish(read, before, _horizon(cursor), chained=chained)
            chained = True
            step = policy.after(read, armed_read=arm)
            arm = step.arm
            if read.more:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step.delay):
                    await self._wake.wait()
            self._wake.clear()

    async def _resume(self, conn: Any) -> tuple[LogCursor, bool]:
        """The cursor to continue from: the stream's last position, else the log head."""
        cursor = LogCursor()
        try:
            last = await self.link.js.get_last_msg(self.link.stream, self.link.subject)
        except nats.js.errors.NotFoundError:
            await start_cursor(conn, cursor, timeout=self.probe_timeout)
            self._last_msg_id = None
            return cursor, True
        entry = codec.decode(last.data or b"", last.headers)
        if entry.position is None:
            raise BrokerError(
                f"the last message of stream {self.link.stream!r} carries no position",
                hint="the stream's subject is written by something other than pgcast",
            )
        head = await conn.fetchval(_HEAD, timeout=self.probe_timeout)
        if entry.position.head > head:
            raise BrokerError(
                f"stream {self.link.stream!r} is ahead of this database's change log "
                f"(id {entry.position.head} > {head}): another database, or a reset log",
                hint="give each database its own PGCAST_BROKER_STREAM, or purge the stream",
            )
        cursor.last_id = entry.position.head
        cursor.pending = sorted(entry.position.pending)
        cursor.xmax = entry.position.xmax
        cursor.initialized = True
        self._last_msg_id = (last.headers or {}).get(codec.MSG_ID)
        return cursor, entry.exact

    async def _publish(
        self, read: LogRead, before: Horizon, after: Horizon, *, chained: bool
    ) -> None:
        messages: list[tuple[bytes, dict[str, str]]] = []
        count = len(read.changes) + (read.gap_through is not None)
        if read.gap_through is not None:
            logger.error(
                "the change log was pruned through id %s before the reader read it; "
                "nodes tell their subscribers to resync",
                read.gap_through,
            )
            headers = codec.headers(
                codec.gap_id(read.gap_through),
                position=after if count == 1 else before,
                last=count == 1,
                gap_through=read.gap_through,
            )
            messages.append((b"", headers))
        for change in read.changes:
            last = len(messages) == count - 1
            headers = codec.headers(str(change.id), position=after if last else before, last=last)
            messages.append((codec.encode_change(change), headers))
        if not messages:
            return
        js, subject = self.link.js, self.link.subject
        if not chained:
            for payload, headers in messages:
                ack = await js.publish(subject, payload, headers=headers, timeout=ACK_TIMEOUT)
                self._count(ack, headers)
            return
        futures = []
        for payload, headers in messages:
            if self._last_msg_id is not None:
                headers[codec.EXPECTED_LAST_ID] = self._last_msg_id
            self._last_msg_id = headers[codec.MSG_ID]
            futures.append(await js.publish_async(subject, payload, headers=headers))
        try:
            async with asyncio.timeout(ACK_TIMEOUT):
                acks = await asyncio.gather(*futures)
        except TimeoutError:
            raise BrokerError(f"JetStream did not acknowledge {len(futures)} publishes") from None
        finally:
            for future in futures:
                future.cancel()
        for ack, (_, headers) in zip(acks, messages, strict=True):
            if ack.duplicate:  # the chain is broken: start over from the stream
                raise BrokerError(f"change {headers[codec.MSG_ID]} was already in the stream")
            self._count(ack, headers)

    def _count(self, ack: Any, headers: dict[str, str]) -> None:
        if ack.duplicate:
            self.duplicates += 1
        else:
            self.published += 1
            self._last_msg_id = headers[codec.MSG_ID]
        self.last_publish_at = time.monotonic()


def _horizon(cursor: LogCursor) -> Horizon:
    return Horizon(cursor.last_id, frozenset(cursor.pending), cursor.xmax)
