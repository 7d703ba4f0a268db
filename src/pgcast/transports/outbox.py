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

# Bytes a paused connection may hold besides the frame limit: a few hundred changes
# of large rows are already a lot of memory.
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
# Before it authenticates, a connection gets only welcome, pong and error messages:
# a few of those fit, and an unauthenticated client must not hold 32 MiB.
UNAUTHENTICATED_BUFFERED_BYTES = 256 * 1024


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
        if not self.paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter
