"""Connections still sending their HTTP request: counted per client IP, and timed out.

Until its request is complete, a connection gives the gateway nothing and costs it
a buffer (up to 16 KiB of head, up to 1 MiB of a plain request's body) and a socket.
A client that opens many connections and trickles their bytes, or never finishes
them, must not hold them for as long as it likes: a connection has
``head_timeout`` seconds from its accept to send the request head and
``body_timeout`` more for a plain request's body (else HTTP 408), and one IP
address (the TCP peer) may have at most ``max_per_ip`` such connections at once
(the next one is answered 429 at once). A trusted proxy (``trusted_proxies``) is not
capped here: every client behind it shares its address, and it enforces its own
timeouts; its clients are counted by their own address once the head names them.
A WebSocket or SSE request stops counting
here once its head is read; from then on it counts against
``max_connections_per_ip``.

This module only counts; the transport owns the timers (it is the asyncio layer).
"""

from __future__ import annotations

import collections
from collections.abc import Callable


class PendingRequests:
    """The connections of a gateway whose HTTP request has not fully arrived yet."""

    __slots__ = (
        "_per_ip",
        "body_timeout",
        "head_timeout",
        "max_per_ip",
        "refused",
        "timed_out",
        "uncapped",
    )

    def __init__(
        self,
        *,
        max_per_ip: int,
        head_timeout: float,
        body_timeout: float,
        uncapped: Callable[[str], bool] = lambda _ip: False,
    ) -> None:
        self.max_per_ip = max_per_ip
        self.uncapped = uncapped
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.refused = 0  # connections answered 429: their IP had max_per_ip pending
        self.timed_out = 0  # connections answered 408
        self._per_ip: collections.Counter[str] = collections.Counter()

    def enter(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False (and not counted) if ``ip`` is at the limit."""
        if self._per_ip[ip] >= self.max_per_ip and not self.uncapped(ip):
            self.refused += 1
            return False
        self._per_ip[ip] += 1
        return True

    def leave(self, ip: str) -> None:
        """A connection counted by enter() finished its request, or ended."""
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    def __len__(self) -> int:
        return sum(self._per_ip.values())

    def from_ip(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)
