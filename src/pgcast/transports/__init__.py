"""Transports move frames between the pure session core and the network."""

from __future__ import annotations

import asyncio
from typing import Protocol

from websockets.http11 import Request


class ClientTransport(Protocol):
    """What the gateway calls on a client connection, whatever carries it (WebSocket, SSE).

    Messages are pre-encoded JSON; the transport frames them. ``queue_*`` only
    buffer, ``flush`` writes everything queued at once (or enforces the outbox limit
    while the socket is backed up), ``send`` is queue + flush for one control message.
    """

    peer: str
    transport: asyncio.Transport | None
    # Bytes that may wait while the socket is backed up before the client counts as
    # slow (4001); the gateway lowers it until the connection authenticates.
    max_buffered_bytes: int

    @property
    def request(self) -> Request | None:
        """The HTTP request that opened the connection (headers, path with query)."""

    @property
    def is_open(self) -> bool: ...

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None: ...

    def queue_message(self, prefix: bytes, body: bytes) -> None: ...

    def flush(self) -> None: ...

    def send(self, payload: bytes) -> None: ...

    def close(self, code: int, reason: str = "") -> None: ...

    def abort(self) -> None: ...

    async def drained(self) -> None: ...
