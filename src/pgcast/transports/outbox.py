"""A connection's outgoing frames, and the slow-consumer rule every transport shares.

Frames of a batch are queued and written with one ``write`` (one system call). While
the socket is backed up (the asyncio transport paused writing) frames wait here;
past ``limit`` frames or ``max_bytes`` the connection is too slow and is closed
with 4001 (reconnect and resume), so a client that stops reading costs bounded
memory and delays no one else. Every frame the gateway sends on a WebSocket goes
through here, its answers to the client's pings included: a client that sends
pings and reads nothing meets the same limit.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

# Bytes a paused connection may hold besides the frame limit: a few hundred changes
# of large rows are already a lot of memory.
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
# Before it authenticates, a connection gets only welcome, pong and error messages:
# a few of those fit, and an unauthenticated client must not hold 32 MiB.
UNAUTHENTICATED_BUFFERED_BYTES = 256 * 1024
SLOW_CONSUMER = 4001  # pgcast.protocol.CloseCode.SLOW_CONSUMER: reconnect and resume


class Outbox:
    """Frames waiting for one socket."""

    __slots__ = ("_pieces", "_waiters", "frames", "limit", "max_bytes", "paused")

    def __init__(self, limit: int, max_bytes: int = MAX_BUFFERED_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.frames = 0
        self.paused = False  # the socket's buffer is over its high-water mark
        self._pieces: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []

    def add(self, *pieces: bytes) -> None:
        """Queue one frame made of ``pieces`` (header, prefix, shared body...)."""
        self._pieces += pieces
        self.frames += 1

    def take(self) -> bytes:
        """Everything queued, as one buffer to write; the outbox is then empty."""
        data = b"".join(self._pieces)
        self.clear()
        return data

    def take_frames(self) -> list[bytes]:
        """Everything queued, one item a frame (each frame queued as one piece)."""
        frames, self._pieces = self._pieces, []
        self.frames = 0
        return frames

    def clear(self) -> None:
        self._pieces.clear()
        self.frames = 0

    @property
    def overflowing(self) -> bool:
        """True when a paused connection holds more than it may: close it (4001)."""
        return self.paused and (
            self.frames > self.limit or sum(len(piece) for piece in self._pieces) > self.max_bytes
        )

    def release(self) -> None:
        """Wake everyone waiting in drained() (writable again, or connection gone)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drained(self) -> None:
        """Return once the socket accepts writes again (at once if it does now)."""
        if self.paused:
            await self.released()

    async def released(self) -> None:
        """Return at the next release() (the peer took a batch, or the connection ended)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


class Overflow(Protocol):
    def overflowed(self, conn: Any) -> None:
        """``conn``'s outbox overflowed; it is being closed with 4001."""


class OutboxConnection:
    """The outbox half every transport shares: queueing, the slow-consumer rule, drained().

    A subclass says how queued frames leave (``_write_out``), how a change or a channel
    message is framed (``queue_change`` / ``queue_message``), whether it is open, and how
    it closes. ``outbox.paused`` is True while the peer does not take more (the socket's
    buffer is over its high-water mark, or an ASGI send is blocked).
    """

    outbox: Outbox
    events: Overflow

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    def close(self, code: int, reason: str = "") -> None:
        raise NotImplementedError

    def _write_out(self) -> None:
        """Hand every queued frame to the peer (the outbox is not paused)."""
        raise NotImplementedError

    @property
    def writable(self) -> bool:
        """False while the peer's buffer is over its high-water mark."""
        return not self.outbox.paused

    @property
    def max_buffered_bytes(self) -> int:
        """Bytes that may wait for a backed-up peer before the client counts as slow."""
        return self.outbox.max_bytes

    @max_buffered_bytes.setter
    def max_buffered_bytes(self, value: int) -> None:
        self.outbox.max_bytes = value

    def flush(self) -> None:
        """Write every queued frame at once, or enforce the outbox limit while paused."""
        outbox = self.outbox
        if not outbox.frames:
            return
        if not self.is_open:
            outbox.clear()
            return
        if outbox.overflowing:
            outbox.clear()
            self.events.overflowed(self)
            self.close(SLOW_CONSUMER, "outbox overflow: reconnect and resume")
        elif not outbox.paused:
            self._write_out()

    def pause_writing(self) -> None:
        self.outbox.paused = True

    def resume_writing(self) -> None:
        self.outbox.paused = False
        self.flush()
        self.outbox.release()
