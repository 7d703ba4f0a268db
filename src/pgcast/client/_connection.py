"""The asyncio pgcast client: one WebSocket, reconnects, resumable subscriptions.

A :class:`Client` owns one background task that connects, waits for ``welcome``,
resubscribes everything, then reads frames and sends heartbeats until the
connection ends; it then reconnects with :func:`pgcast.backoff.backoff` (reset
after every ``welcome``) unless the close code says not to. Every task it starts
is referenced and cancelled on close. This module is the public API; the loop, the
subscription registry and the frame routing are in :mod:`pgcast.client._core`.

A :class:`Subscription` (table or raw channel) is an async context manager and an
async iterator of the frames addressed to it. Table subscriptions remember the
last change id they delivered, resume from it after a reconnect, and drop the
replayed ids they already delivered (:class:`~pgcast.client._protocol.RecentIds`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

from pgcast.backoff import backoff
from pgcast.client._core import ClientCore, ClientStatus
from pgcast.client._subscription import Subscription, SubscriptionState
from pgcast.client._topic import Topic, TopicState
from pgcast.exceptions import (
    ClientClosed,
    ClientError,
    ConnectionRejected,
    FrameTooBig,
    SubscriptionRefused,
)

__all__ = [
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientStatus",
    "ConnectionRejected",
    "FrameTooBig",
    "Subscription",
    "SubscriptionRefused",
    "SubscriptionState",
    "connect",
]


class Client(ClientCore):
    """A pgcast gateway connection that reconnects and resumes by itself.

    Use :func:`connect`. Options (keyword-only):

    ``ping_interval`` / ``ping_timeout``: every ``ping_interval`` seconds send
    ``{"type":"ping"}``; if nothing (a ``pong`` or any other frame, which proves the
    link is alive just as well when the gateway is busy) arrives within
    ``ping_timeout`` the connection is dropped and re-established.
    ``queue_size``: frames buffered per subscription (see :class:`Subscription`).
    ``dedupe_window``: change ids remembered per subscription to drop replays.
    ``backoff_factory``: returns a fresh delay iterator; called after every
    ``welcome`` (reset) and at the first failure.
    ``max_size``: largest frame accepted (large row changes are delivered whole).
    """

    # -- public API

    @property
    def status(self) -> ClientStatus:
        """``connecting`` | ``live`` | ``offline`` | ``closed``."""
        return self._status

    @property
    def position(self) -> str | None:
        """The change-log position announced by the first ``welcome``."""
        return self._position

    async def wait_status(self, *statuses: ClientStatus | str) -> ClientStatus:
        """Wait until the status is one of ``statuses``; return it."""
        wanted = {ClientStatus(status) for status in statuses}
        while self._status not in wanted:
            self._status_changed.clear()
            await self._status_changed.wait()
        return self._status

    def subscribe(
        self,
        table: str,
        *,
        filter: str | None = None,
        events: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
        schema: str | None = None,
        since: str | int | None = None,
        snapshot: bool = False,
    ) -> Subscription:
        """A table subscription; ``async with`` it (waits until the gateway accepts
        it, raises :class:`SubscriptionRefused` if it refuses), then iterate.

        With ``snapshot=True`` the iteration starts with ``snapshot`` frames (the
        rows matching the filter, in chunks numbered by ``part``; the last has
        ``done: true``), then the changes committed after them. Resubscribes resume
        from the snapshot's position, never re-snapshot; if the connection drops
        before the last chunk, the snapshot starts over at ``part`` 0.
        """
        if snapshot and since is not None:
            raise ValueError("snapshot and since exclude each other")
        request: dict[str, Any] = {"table": table, "schema": schema, "filter": filter}
        request["snapshot"] = snapshot
        request["events"] = list(events) if events is not None else None
        request["columns"] = list(columns) if columns is not None else None
        return self._new_subscription("s", request, None if since is None else str(since))

    def channel(self, name: str) -> Subscription:
        """A raw NOTIFY channel subscription, yielding ``message`` frames."""
        return self._new_subscription("c", {"channel": name}, None)

    async def topic(
        self, name: str, *, presence: bool = True, receive_own: bool = False, ack: bool = False
    ) -> Topic:
        """Join presence and broadcast topic ``name`` (see :class:`Topic`); the same
        Topic for the same name until it is left."""
        topic = self._topics.get(name)
        if topic is None or topic.state is TopicState.CLOSED:
            topic = Topic(
                name, self._send_live, presence=presence, receive_own=receive_own, ack=ack
            )
            self._topics[name] = topic
            await topic._rejoin()  # sent now if live; else on connect
        return topic

    async def start(self) -> None:
        """Start connecting in the background (``async with`` does this)."""
        if self._started:
            return
        self._started = True
        self._run_task = asyncio.create_task(self._run(), name=f"pgcast-client {self.url}")

    async def close(self) -> None:
        """Close the connection, end every subscription and cancel every task."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            # Graceful close first; the reader then sees the end and the run loop,
            # seeing _closing, stops instead of reconnecting.
            with contextlib.suppress(Exception):
                await ws.close()
        task, self._run_task = self._run_task, None
        for retry in list(self._retries):
            retry.cancel()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_status(ClientStatus.CLOSED)
        for sub in list(self._subs.values()):
            sub._end(SubscriptionState.CLOSED)
        self._subs.clear()
        self._by_wire.clear()
        for topic in self._topics.values():
            topic._end()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def connect(
    url: str,
    token: str | None = None,
    *,
    ping_interval: float = 20.0,
    ping_timeout: float = 10.0,
    open_timeout: float = 10.0,
    close_timeout: float = 2.0,
    queue_size: int = 1000,
    dedupe_window: int = 10_000,
    max_size: int | None = 64 * 1024 * 1024,
    backoff_factory: Callable[[], Iterator[float]] = backoff,
) -> Client:
    """A :class:`Client` for the gateway at ``url``; use it with ``async with``.

    ``url`` may omit the ``/ws`` path. ``token`` is sent as ``Authorization:
    Bearer``. The other options are documented on :class:`Client`.
    Entering does not wait for the connection: subscribing does.
    """
    return Client(
        url,
        token=token,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        queue_size=queue_size,
        dedupe_window=dedupe_window,
        max_size=max_size,
        backoff_factory=backoff_factory,
    )
