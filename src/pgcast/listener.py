"""The log reader's connection: read the change log when it may hold news, survive anything.

One dedicated asyncpg connection (never from a pool: a pooled connection is reset
and loses its LISTENs). A single worker task owns it and does everything on it in
turn: LISTEN/UNLISTEN of raw channels, reads of the log, liveness.

When to read is decided by :class:`pgcast.wakeup.PollPolicy`: again a few
milliseconds after a read that found changes (``fast_poll_interval``), backing off
to ``poll_interval`` while nothing comes, and, once idle, sleeping until the one
``pgcast`` notification that the armed wake-up lets a single capture send. The
capture trigger does not notify per transaction: PostgreSQL serializes the commits
of notifying transactions cluster-wide (wakeup.py explains, and why the idle sleep
misses nothing). Counts: ``log_reads`` (every query on the log) and
``notifications`` (wake-ups received), exported in /metrics.

Each read has a timeout, so a silently dead connection is noticed within
``poll_interval + probe_timeout`` seconds. On any failure the worker reconnects
with backoff and continues from its cursor, so nothing committed while it was away
is skipped (see changelog.py for why the cursor is gap-free).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

from .backoff import backoff
from .changelog import (
    DATABASE_ERRORS,
    PAGE_SIZE,
    LogCursor,
    prepare_reader_session,
    read_new,
    start_cursor,
)
from .events import ChangeEvent
from .wakeup import PollPolicy

logger = logging.getLogger("pgcast.listener")

CHANNEL = "pgcast"
PAGE_BYTES = 4 * 1024 * 1024  # target size of one page of changes read from the log
FIRST_PAGE_SIZE = 100


class ConnectionLost(Exception):
    """The LISTEN connection was terminated."""


_RETRYABLE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, ConnectionLost)


class ListenerState(enum.Enum):
    CONNECTING = "connecting"
    LISTENING = "listening"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class Listener:
    """Feeds committed changes and raw channel messages to callbacks."""

    def __init__(
        self,
        dsn: str,
        *,
        on_changes: Callable[[list[ChangeEvent]], None],
        on_message: Callable[[str, str], None],
        on_gap: Callable[[int], None] = lambda _: None,
        poll_interval: float = 1.0,
        fast_poll_interval: float = 0.001,
        probe_timeout: float = 5.0,
        backoff_factory: Callable[[], Iterator[float]] = backoff,
        read_log: bool = True,
    ) -> None:
        self.dsn = dsn
        # False with a broker: the stream brings the changes, this connection only
        # carries the raw channels' LISTENs (and is opened on the first of them).
        self.read_log = read_log
        self._on_changes = on_changes
        self._on_message = on_message
        self._on_gap = on_gap
        self.poll_interval = poll_interval
        self.fast_poll_interval = fast_poll_interval
        self.log_reads = 0
        self.notifications = 0
        self.probe_timeout = probe_timeout
        self._backoff_factory = backoff_factory
        self.cursor = LogCursor()
        # Small until the row size is known: a page of 5,000 one-megabyte rows would
        # be one 5 GB write to every subscriber.
        self._page_size = FIRST_PAGE_SIZE
        self.state = ListenerState.CONNECTING
        self.reconnects = 0
        self.last_error: str | None = None
        self.last_read_at: float | None = None
        self.backend_pid: int | None = None
        self._wake = asyncio.Event()
        self._channels: set[str] = set()
        self._active_channels: set[str] = set()
        self._channel_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._ready = asyncio.Event()
        self._policy: PollPolicy | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None

    # public API --------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"listener is {self.state.value}, expected not started")
        self._task = asyncio.create_task(self._run(), name="pgcast-listener")

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the listener has connected once; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a worker stuck in a driver call must not hang shutdown.
            await asyncio.wait({task}, timeout=5)
        await self._close_connection()
        self.state = ListenerState.STOPPED

    def wake(self) -> None:
        """Read the log now (used on NOTIFY, and by tests)."""
        self._wake.set()

    async def listen(self, channel: str, timeout: float) -> bool:
        """LISTEN on raw ``channel``; True once active, False if not active within timeout."""
        self._channels.add(channel)
        if channel in self._active_channels:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._channel_waiters.setdefault(channel, []).append(future)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
        except TimeoutError:
            return False
        finally:
            waiters = self._channel_waiters.get(channel)
            if waiters and future in waiters:
                waiters.remove(future)
        return True

    def unlisten(self, channel: str) -> None:
        self._channels.discard(channel)
        self._wake.set()

    @property
    def idle(self) -> bool:
        """True while the reader sleeps until the armed wake-up (or ``poll_interval``)."""
        return self._policy is not None and self._policy.asleep

    @property
    def lag_seconds(self) -> float | None:
        """Seconds since the last complete read of the log (None before the first)."""
        if self.last_read_at is None:
            return None
        return max(0.0, time.monotonic() - self.last_read_at)

    # worker --------------------------------------------------------------------

    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            try:
                await self._connect_and_serve()
            except asyncio.CancelledError:
                raise
            except _RETRYABLE as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("LISTEN connection lost (%s); reconnecting", self.last_error)
            except Exception:
                self.last_error = "internal error"
                logger.exception("listener failed; reconnecting")
            if delays is None or self.state is ListenerState.LISTENING:
                delays = self._backoff_factory()  # reset after every successful connection
            self.state = ListenerState.RECONNECTING
            self.reconnects += 1
            self._active_channels.clear()
            await self._close_connection()
            await asyncio.sleep(next(delays))

    async def _connect_and_serve(self) -> None:
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.probe_timeout,
            server_settings={
                "application_name": "pgcast-listener" if self.read_log else "pgcast-channels"
            },
        )
        self._conn = conn
        lost = asyncio.Event()

        def on_terminate(_: Any) -> None:
            lost.set()
            self._wake.set()

        conn.add_termination_listener(on_terminate)
        if not self.read_log:
            await self._serve_channels(conn, lost)
        await conn.add_listener(CHANNEL, self._on_notify)
        self.backend_pid = conn.get_server_pid()
        await prepare_reader_session(conn)
        if not self.cursor.initialized:
            await start_cursor(conn, self.cursor, timeout=self.probe_timeout)
        self.state = ListenerState.LISTENING
        logger.info(
            "listening (backend pid %s) from change id %s", self.backend_pid, self.cursor.last_id
        )
        self._ready.set()
        self._policy = policy = PollPolicy(fast=self.fast_poll_interval, idle=self.poll_interval)
        arm = True
        while True:
            if lost.is_set():
                raise ConnectionLost("connection terminated")
            await self._sync_channels(conn)
            more = True
            while more:
                read = await read_new(
                    conn,
                    self.cursor,
                    timeout=self.probe_timeout,
                    page_size=self._page_size,
                    arm=arm,
                )
                self.log_reads += 1
                step = policy.after(read, armed_read=arm)
                arm = step.arm
                self._adapt_page_size(read.changes)
                more = read.more
                if read.gap_through is not None:
                    logger.error(
                        "the change log was pruned through id %s before this gateway read it; "
                        "live subscribers are told to resync",
                        read.gap_through,
                    )
                    self._on_gap(read.gap_through)
                if read.changes:
                    self._dispatch(read.changes)
            self.last_read_at = time.monotonic()
            if lost.is_set():
                raise ConnectionLost("connection terminated")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancellation that stop() sends, leaving the worker running forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step.delay):
                    await self._wake.wait()
            self._wake.clear()

    async def _serve_channels(self, conn: Any, lost: asyncio.Event) -> None:
        self.state = ListenerState.LISTENING
        self._ready.set()
        while not lost.is_set():
            await self._sync_channels(conn)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval + self.probe_timeout):
                    await self._wake.wait()
            self._wake.clear()
            await conn.fetchval("SELECT 1", timeout=self.probe_timeout)  # liveness
        raise ConnectionLost("connection terminated")

    def _adapt_page_size(self, changes: list[ChangeEvent]) -> None:
        """Size the next page to about PAGE_BYTES of row images (big rows, small pages):
        a page is dispatched, and written to each subscriber, in one go."""
        if not changes:
            return
        size = sum(len(c.record_json or "") + len(c.old_record_json or "") for c in changes)
        average = max(1, size // len(changes))
        self._page_size = max(1, min(PAGE_SIZE, PAGE_BYTES // average))

    def _dispatch(self, page: list[ChangeEvent]) -> None:
        try:
            self._on_changes(page)
        except Exception:
            # A bug in delivery must not stall the log reader or lose its place.
            logger.exception("delivering %d changes failed", len(page))

    async def _sync_channels(self, conn: Any) -> None:
        for channel in self._channels - self._active_channels:
            await conn.add_listener(channel, self._on_channel)
            self._active_channels.add(channel)
            for future in self._channel_waiters.pop(channel, []):
                if not future.done():
                    future.set_result(None)
        for channel in self._active_channels - self._channels:
            await conn.remove_listener(channel, self._on_channel)
            self._active_channels.discard(channel)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self.notifications += 1
        self._wake.set()

    def _on_channel(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            self._on_message(channel, payload)
        except Exception:
            logger.exception("delivering a message on channel %r failed", channel)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
