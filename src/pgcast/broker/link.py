"""The node's connection to NATS: connect with backoff, say clearly what is wrong,
and find (or, for the reader, create) the database's stream.

A node that starts before NATS waits for it, one log line per attempt; so does one
whose credentials are refused or whose stream is missing (an operator may fix
either while it waits), with an error-level line that says which. Once connected,
nats-py reconnects by itself (without limit); ``state`` follows it for /health.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterator
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from pgcast.backoff import backoff
from pgcast.config import redact_url
from pgcast.exceptions import BrokerError
from pgcast.startup import one_line

from .codec import subject

__all__ = ["NATS_ERRORS", "BrokerLink", "LinkState"]

logger = logging.getLogger("pgcast.broker")

# Everything a NATS call raises when the server or the link to it fails.
NATS_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    nats.errors.Error,
    BrokerError,
)
# How long JetStream keeps a change id to drop a second publish of it: longer than a
# reader takeover (seconds) with a wide margin.
DUPLICATE_WINDOW = 600.0
_AUTH_ERRORS = (nats.errors.AuthorizationError, nats.errors.InvalidUserCredentialsError)


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, _AUTH_ERRORS) or "authorization" in str(exc).lower()


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class BrokerLink:
    """One NATS connection and its JetStream context, shared by a node's feed and reader."""

    def __init__(self, servers: str, stream: str, *, name: str = "pgcast") -> None:
        self.servers = [url.strip() for url in servers.split(",")]
        self.where = ", ".join(redact_url(url) for url in self.servers)
        self.stream = stream
        self.subject = subject(stream)
        self.name = name
        self.state = LinkState.CONNECTING
        self.reconnects = 0
        self.last_error: str | None = None
        self.nc: Any = None
        self.js: Any = None
        self._connect_error: BaseException | None = None

    async def connect(self, *, retry: bool = True, delays: Iterator[float] | None = None) -> None:
        """Connect, retrying with backoff (or raising ``BrokerError`` without ``retry``)."""
        delays = delays if delays is not None else backoff(initial=0.5, maximum=10.0)
        while True:
            self._connect_error = None
            try:
                self.nc = await nats.connect(
                    servers=self.servers,
                    name=self.name,
                    connect_timeout=2,
                    # nats-py retries a first connect forever when reconnects are on,
                    # silently: this loop retries instead, saying why, and turns
                    # reconnects on once connected.
                    allow_reconnect=True,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.5,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
            except NATS_ERRORS as exc:
                # nats-py reports why each attempt failed to error_cb only.
                cause = self._connect_error or exc
                if _refused(cause):
                    problem = f"NATS at {self.where} refused the credentials ({one_line(cause)})"
                    hint = "check the user:password or token in PGCAST_BROKER"
                    level = logging.ERROR
                else:
                    problem = f"cannot reach NATS at {self.where} ({one_line(cause)})"
                    hint = "is nats-server running with JetStream (-js)? check PGCAST_BROKER"
                    level = logging.WARNING
            else:
                self.nc.options["max_reconnect_attempts"] = -1
                self.js = self.nc.jetstream(timeout=5)
                self.state = LinkState.CONNECTED
                self.last_error = None
                logger.info("connected to NATS at %s", self.where)
                return
            self.last_error = problem
            if not retry:
                raise BrokerError(problem, hint=hint)
            delay = next(delays)
            logger.log(level, "%s; retrying in %.1f s (hint: %s)", problem, delay, hint)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        nc, self.nc = self.nc, None
        self.state = LinkState.CLOSED
        if nc is not None and not nc.is_closed:
            try:
                async with asyncio.timeout(2):
                    await nc.close()
            except NATS_ERRORS:
                pass

    @property
    def connected(self) -> bool:
        return self.nc is not None and bool(self.nc.is_connected)

    # the stream ---------------------------------------------------------------------

    async def stream_info(self) -> Any:
        """The stream's info; ``BrokerError`` that says what is missing."""
        try:
            return await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise BrokerError(
                f"stream {self.stream!r} not found on NATS at {self.where}",
                hint="the elected reader creates it; or check PGCAST_BROKER_STREAM",
            ) from None
        except nats.js.errors.ServiceUnavailableError:
            raise BrokerError(
                f"JetStream is not enabled on NATS at {self.where}",
                hint="start nats-server with -js (or jetstream {} in its config)",
            ) from None
        except nats.errors.NoRespondersError:
            raise BrokerError(
                f"JetStream does not answer on NATS at {self.where}",
                hint="start nats-server with -js (or jetstream {} in its config)",
            ) from None

    async def ensure_stream(self, *, max_age: float) -> None:
        """Create the stream if it is missing (the reader does this before publishing)."""
        try:
            info = await self.stream_info()
        except BrokerError as exc:
            if "not found" not in exc.message:
                raise
        else:
            if self.subject not in (info.config.subjects or []):
                raise BrokerError(
                    f"stream {self.stream!r} exists but does not hold subject {self.subject!r}",
                    hint="use another PGCAST_BROKER_STREAM, or delete that stream",
                )
            return
        await self.js.add_stream(
            api.StreamConfig(
                name=self.stream,
                subjects=[self.subject],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=max_age,
                duplicate_window=DUPLICATE_WINDOW,
            )
        )
        logger.info("created JetStream stream %r (subject %r)", self.stream, self.subject)

    # nats-py callbacks ------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        logger.debug("NATS: %s", one_line(exc))
        if self.state is LinkState.CONNECTING:  # connect() words its own errors
            self._connect_error = exc
        else:
            self.last_error = one_line(exc)

    async def _on_disconnected(self) -> None:
        if self.state is LinkState.CONNECTED:
            logger.warning("lost NATS at %s; reconnecting", self.where)
        self.state = LinkState.RECONNECTING

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.state = LinkState.CONNECTED
        logger.info("reconnected to NATS at %s", self.where)

    async def _on_closed(self) -> None:
        self.state = LinkState.CLOSED
