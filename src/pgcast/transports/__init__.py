"""Transports move frames between the gateway and the network: one connection contract.

Every client connection, whatever carries it (native WebSocket, native SSE, ASGI
WebSocket, ASGI SSE), is a :class:`Connection`; what a transport hands the gateway
about the request that opened it is a :class:`RequestHead`; what the gateway answers
an upgrade it refuses is a :class:`Refusal` (data: each transport renders it as an
HTTP response, an SSE error or a close). No asyncio transport and no websockets
type crosses this seam, so the session core's tests drive a fake connection.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

__all__ = ["Connection", "Refusal", "RequestHead"]


@dataclasses.dataclass(frozen=True, slots=True)
class RequestHead:
    """The HTTP request that opened a connection: its target (path with query) and headers."""

    target: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """A refused connection: the HTTP status and the wire error ``code`` and ``message``."""

    status: int
    code: str
    message: str


class Connection(Protocol):
    """What the gateway calls on a client connection, whatever carries it.

    Messages are pre-encoded JSON; the transport frames them. ``queue_*`` only
    buffer, ``flush`` writes everything queued at once (or enforces the outbox limit
    while the peer is backed up), ``send`` is queue + flush for one control message.
    ``pause_reading``/``resume_reading`` stop and restart the client's messages (the
    gateway's inbox is full).
    """

    peer: str
    head: RequestHead
    # Bytes that may wait while the peer is backed up before the client counts as
    # slow (4001); the gateway lowers it until the connection authenticates.
    max_buffered_bytes: int

    @property
    def is_open(self) -> bool: ...

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None: ...

    def queue_message(self, prefix: bytes, body: bytes) -> None: ...

    def flush(self) -> None: ...

    def send(self, payload: bytes) -> None: ...

    def close(self, code: int, reason: str = "") -> None: ...

    def abort(self) -> None: ...

    async def drained(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


# The name the gateway's modules have used for the contract.
ClientTransport = Connection
