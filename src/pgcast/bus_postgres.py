"""The PostgreSQL bus: gateway nodes talk through LISTEN/NOTIFY on their database.

The nodes already share a database, so this bus needs nothing else. It uses one
dedicated connection (its own, not the change reader's: a bus outage and a log
outage stay separate) that LISTENs on the internal channel ``pgcast_bus`` and sends
every message with ``pg_notify`` on that channel, one message at a time, so one
node's messages arrive in the order it sent them.

NOTIFY takes PostgreSQL's notification lock at commit; only these gateway messages
do: the application's commits never NOTIFY (see pgcast.wakeup), so they are not
serialized by it. A NOTIFY payload holds at most 7999 bytes: a larger message is
cut into chunks (on UTF-8 character boundaries) sent in one transaction, which
PostgreSQL delivers together and in order; each chunk carries
``<subject> <bus id>:<message number> <index>/<count> `` before its text. A message
above ``max_message_bytes`` is refused with BusError. Reassembly holds at most
``MAX_PENDING`` partial messages.

Messages are UTF-8 text without NUL (JSON, as pgcast's users of the bus send).
Clients cannot reach this channel: the gateway refuses to relay or publish to it.
When a NATS URL is configured the NATS bus replaces this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import asyncpg

from .backoff import backoff
from .bus import BusCallback, check_subject
from .changelog import DATABASE_ERRORS
from .exceptions import BusError

__all__ = ["BUS_CHANNEL", "CHUNK_BYTES", "PostgresBus", "split_utf8"]

logger = logging.getLogger("pgcast.bus")

BUS_CHANNEL: Final = "pgcast_bus"
CHUNK_BYTES: Final = 7800  # text per NOTIFY, leaving room for the chunk header (< 8000)
MAX_PENDING: Final = 64
PROBE_EVERY: Final = 5.0


_RETRYABLE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, TimeoutError)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _: event.set()


def split_utf8(data: bytes, size: int) -> list[str]:
    """``data`` (UTF-8) as text pieces of at most ``size`` bytes each, never cutting a
    character in two."""
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and end > start and (data[end] & 0xC0) == 0x80:
            end -= 1  # a continuation byte: back off to the character's start
        pieces.append(data[start:end].decode())
        start = end
    return pieces or [""]


class PostgresBus:
    """A :class:`pgcast.bus.Bus` over LISTEN/NOTIFY on the nodes' database."""

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = BUS_CHANNEL,
        max_message_bytes: int = 1 << 20,
        connect_timeout: float = 5.0,
        backoff_factory: Callable[[], Iterator[float]] = backoff,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.max_message_bytes = max_message_bytes
        self.connect_timeout = connect_timeout
        self._backoff_factory = backoff_factory
        self.id = uuid.uuid4().hex[:12]
        self._numbers = 0
        self._callbacks: dict[str, list[BusCallback]] = {}
        self._pending: dict[str, list[str | None]] = {}
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def subscribe(self, subject: str, callback: BusCallback) -> None:
        self._callbacks.setdefault(check_subject(subject), []).append(callback)

    async def start(self, *, timeout: float = 10.0) -> None:
        """Connect (retrying in the background); wait up to ``timeout`` for the first."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pgcast-bus")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
        self._callbacks.clear()

    async def publish(self, subject: str, data: bytes) -> None:
        check_subject(subject)
        if len(data) > self.max_message_bytes:
            raise BusError(f"bus message is {len(data)} bytes; at most {self.max_message_bytes}")
        if b"\x00" in data:
            raise BusError("a bus message over PostgreSQL cannot contain NUL bytes")
        try:
            pieces = split_utf8(data, CHUNK_BYTES)
        except UnicodeDecodeError:
            raise BusError("a bus message over PostgreSQL must be UTF-8 text") from None
        self._numbers += 1
        head = f"{subject} {self.id}:{self._numbers}"
        payloads = [f"{head} {index}/{len(pieces)} {piece}" for index, piece in enumerate(pieces)]
        async with self._lock:  # one at a time: a node's messages stay in order
            conn = self._conn
            if conn is None or conn.is_closed():
                raise BusError("the PostgreSQL bus is not connected")
            try:
                if len(payloads) == 1:
                    await conn.execute("SELECT pg_notify($1, $2)", self.channel, payloads[0])
                else:
                    async with conn.transaction():
                        for payload in payloads:
                            await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)
            except DATABASE_ERRORS as exc:
                raise BusError(f"could not publish on the PostgreSQL bus: {exc}") from None

    # the connection ---------------------------------------------------------------------

    async def _run(self) -> None:
        delays: Iterator[float] = self._backoff_factory()
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=self.connect_timeout,
                    server_settings={"application_name": "pgcast-bus"},
                )
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(self.channel, self._on_notify)
                self._conn = conn
                self._ready.set()
                delays = self._backoff_factory()  # connected: start over next time
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PROBE_EVERY):
                            await lost.wait()
                    if not lost.is_set():
                        async with self._lock:
                            await conn.fetchval("SELECT 1", timeout=self.connect_timeout)
            except asyncio.CancelledError:
                raise
            except _RETRYABLE as exc:
                logger.warning("PostgreSQL bus connection lost (%s); reconnecting", exc)
            except Exception:
                logger.exception("PostgreSQL bus failed; reconnecting")
            conn, self._conn = self._conn, None
            self._pending.clear()
            if conn is not None and not conn.is_closed():
                conn.terminate()
            self.reconnects += 1
            await asyncio.sleep(next(delays))

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            subject, message, position, text = payload.split(" ", 3)
            index_text, count_text = position.split("/")
            index, count = int(index_text), int(count_text)
        except ValueError:
            logger.warning("ignoring a malformed message on the bus channel %r", self.channel)
            return
        if count == 1:
            self._deliver(subject, text)
            return
        if not 0 <= index < count or count * CHUNK_BYTES > self.max_message_bytes + CHUNK_BYTES:
            return
        parts = self._pending.get(message)
        if parts is None or len(parts) != count:
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))
            parts = self._pending[message] = [None] * count
        parts[index] = text
        if all(part is not None for part in parts):
            del self._pending[message]
            self._deliver(subject, "".join(part or "" for part in parts))

    def _deliver(self, subject: str, text: str) -> None:
        data = text.encode()
        for callback in self._callbacks.get(subject, ()):
            try:
                callback(data)
            except Exception:
                logger.exception("a bus subscriber of %r failed", subject)
