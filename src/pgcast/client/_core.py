"""The machinery of :class:`pgcast.client.Client`: one connection loop, the
subscription registry and the routing of incoming frames.

:class:`ClientCore` owns the state: the subscriptions (by their own id, and by the
wire id they have on the current connection), the topics, the connection and its
status. Its loop connects, waits for ``welcome``, resubscribes everything, then
reads frames and sends heartbeats until the connection ends, and reconnects with
:func:`pgcast.backoff.backoff` (reset after every ``welcome``) unless the close code
says not to. The public API is :class:`pgcast.client.Client`, a subclass.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Iterator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pgcast.backoff import backoff
from pgcast.client._link import decode, keep_alive, open_link, server_close
from pgcast.client._protocol import CloseAction, close_action, encode, normalize_url
from pgcast.client._subscription import Subscription, SubscriptionState
from pgcast.client._topic import TOPIC_FRAMES, Topic
from pgcast.exceptions import (
    ClientClosed,
    ClientError,
    ConnectionRejected,
    FrameTooBig,
    SubscriptionRefused,
)

__all__ = ["ClientCore", "ClientStatus"]

logger = logging.getLogger("pgcast.client")


# -- states -------------------------------------------------------------------------


class ClientStatus(enum.StrEnum):
    """Connection status; compares equal to its string value."""

    CONNECTING = "connecting"
    """Opening the WebSocket or waiting for ``welcome``."""
    LIVE = "live"
    """``welcome`` received; subscriptions are (re)sent and served."""
    OFFLINE = "offline"
    """Disconnected, waiting for the next reconnect attempt."""
    CLOSED = "closed"
    """Closed by the caller or by a do-not-reconnect close code. Final."""


# -- client -------------------------------------------------------------------------


class ClientCore:
    """State and machinery of a client; see :class:`pgcast.client.Client`."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ping_interval: float = 20.0,
        ping_timeout: float = 10.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        queue_size: int = 1000,
        dedupe_window: int = 10_000,
        max_size: int | None = 64 * 1024 * 1024,
        backoff_factory: Callable[[], Iterator[float]] = backoff,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        self.url = normalize_url(url)
        self._token = token
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._queue_size = queue_size
        self._dedupe_window = dedupe_window
        self._max_size = max_size
        self._backoff_factory = backoff_factory
        self._delays: Iterator[float] | None = None
        self._status = ClientStatus.CONNECTING
        self._status_changed = asyncio.Event()
        self._started = False
        self._closing = False
        self._run_task: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()  # subscribes answered `unavailable`
        self._ws: ClientConnection | None = None
        self._activity = asyncio.Event()
        self._subs: dict[str, Subscription] = {}
        self._topics: dict[str, Topic] = {}
        self._by_wire: dict[str, Subscription] = {}
        self._counter = 0
        self._position: str | None = None
        self._connection_position: str | None = None
        self.error: ClientError | None = None
        """Why the client closed by itself (a do-not-reconnect close), else None."""

    async def _send_live(self, frame: dict[str, Any]) -> bool:
        if self._status is not ClientStatus.LIVE or self._ws is None:
            return False
        await self._send_quietly(self._ws, frame)
        return True

    # -- subscriptions

    def _new_subscription(
        self, prefix: str, request: dict[str, Any], since: str | None
    ) -> Subscription:
        self._counter += 1
        return Subscription(
            self,
            f"{prefix}{self._counter}",
            request,
            since=since,
            queue_size=self._queue_size,
            dedupe_window=self._dedupe_window,
        )

    async def _register(self, sub: Subscription) -> None:
        if self._status is ClientStatus.CLOSED or self._closing:
            sub._fail(self.error or ClientClosed("the client is closed"))
            return
        if not self._started:
            sub._fail(
                ClientError(
                    "the client is not started; expected started",
                    hint="use `async with pgcast.client.connect(url) as client:`",
                )
            )
            return
        self._subs[sub.id] = sub
        if self._status is ClientStatus.LIVE and self._ws is not None:
            await self._send_subscribe(sub, self._ws)
        # Otherwise the next welcome sends it.

    async def _unregister(self, sub: Subscription) -> None:
        self._subs.pop(sub.id, None)
        wire_id = sub.wire_id
        if wire_id is None or self._by_wire.get(wire_id) is not sub:
            return  # never sent on this connection, or already unsubscribed
        del self._by_wire[wire_id]
        ws = self._ws
        if ws is not None and self._status is ClientStatus.LIVE:
            await self._send_quietly(ws, {"type": "unsubscribe", "id": wire_id})

    async def _resubscribe(self, sub: Subscription) -> None:
        if sub.id in self._subs and self._status is ClientStatus.LIVE and self._ws is not None:
            await self._send_subscribe(sub, self._ws)

    async def _send_subscribe(self, sub: Subscription, ws: ClientConnection) -> None:
        wire_id = sub._next_wire_id()
        frame = sub._subscribe_frame(wire_id)
        if (
            not sub.is_channel
            and sub.resume_from is None
            and sub.last_id is None
            and not sub._request.get("snapshot")
        ):
            # Sent live (no since); if we reconnect before its first change, resume
            # from here so nothing committed while disconnected is skipped.
            sub.resume_from = self._connection_position
        self._by_wire[wire_id] = sub
        await self._send_quietly(ws, frame)

    async def _send_quietly(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        # A failed send means the connection is going away; the reader reports the
        # close and the reconnect resends whatever is still needed.
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(self._close_timeout):
                await ws.send(encode(message))

    # -- connection loop

    def _set_status(self, status: ClientStatus) -> None:
        if self._status is ClientStatus.CLOSED:
            return  # final
        self._status = status
        self._status_changed.set()

    async def _run(self) -> None:
        try:
            while not self._closing:
                self._set_status(ClientStatus.CONNECTING)
                rejected = await self._connect_once()
                if self._closing:
                    return
                if rejected is not None:
                    self._terminate(rejected)
                    return
                self._set_status(ClientStatus.OFFLINE)
                for topic in self._topics.values():
                    topic._disconnected()
                if self._delays is None:
                    self._delays = self._backoff_factory()
                delay = next(self._delays)
                logger.info("reconnecting to %s in %.2fs", self.url, delay)
                await asyncio.sleep(delay)
        except Exception as exc:  # a bug: surface it rather than loop on it
            logger.exception("pgcast client crashed")
            error = ClientError(f"pgcast client crashed: {exc!r}")
            error.__cause__ = exc
            self._terminate(error)

    def _terminate(self, error: ClientError) -> None:
        # Debug only: every waiting caller receives `error` and reports it itself.
        logger.debug("%s", error)
        self.error = error
        self._set_status(ClientStatus.CLOSED)
        for sub in list(self._subs.values()):
            sub._fail(error)
        self._subs.clear()
        self._by_wire.clear()

    async def _connect_once(self) -> ConnectionRejected | None:
        """One connection, start to end. A rejection, or None to reconnect."""
        opened = await open_link(
            self.url,
            self._token,
            open_timeout=self._open_timeout,
            close_timeout=self._close_timeout,
            max_size=self._max_size,
        )
        if not isinstance(opened, ClientConnection):
            return opened
        ws = opened
        try:
            return await self._serve(ws)
        finally:
            self._ws = None
            self._by_wire.clear()
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()

    async def _serve(self, ws: ClientConnection) -> ConnectionRejected | None:
        try:
            async with asyncio.timeout(self._open_timeout):
                raw = await ws.recv()
        except TimeoutError:
            logger.warning("no welcome from %s within %ss", self.url, self._open_timeout)
            return None
        except ConnectionClosed as exc:
            return self._after_close(ws, *server_close(exc))
        welcome = decode(raw)
        if welcome is None or welcome.get("type") != "welcome":
            logger.warning("expected welcome from %s, got %r", self.url, raw)
            return None
        position = welcome.get("position")
        position = None if position is None else str(position)
        if self._position is None:
            self._position = position
        self._connection_position = position
        self._delays = None  # reset the backoff after a successful welcome
        self._ws = ws
        # Snapshot in the same step as going live: a subscription registered from
        # now on sees LIVE and sends itself; one registered before is in the list.
        self._set_status(ClientStatus.LIVE)
        resend = [s for s in self._subs.values() if s.state is not SubscriptionState.SUSPENDED]
        reader = asyncio.create_task(self._read(ws, resend), name="pgcast-client reader")
        heartbeat = asyncio.create_task(
            keep_alive(ws, self._ping_interval, self._ping_timeout, self._activity, self.url),
            name="pgcast-client heartbeat",
        )
        tasks = {reader, heartbeat}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # The reader's close code wins if both finished.
            finished = reader if reader in done else heartbeat
            code, reason = finished.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self._after_close(ws, code, reason)

    def _after_close(
        self, ws: ClientConnection, code: int | None, reason: str
    ) -> ConnectionRejected | None:
        action = close_action(code)
        if action is CloseAction.TERMINAL:
            assert code is not None
            return ConnectionRejected(code, reason)
        if action is CloseAction.FRAME_TOO_BIG:
            for sub in list(self._subs.values()):
                sent_here = sub.wire_id is not None and self._by_wire.get(sub.wire_id) is sub
                if sent_here and not sub._accepted.is_set():
                    self._subs.pop(sub.id, None)
                    sub._fail(
                        FrameTooBig(
                            f"subscription to {sub.target}: the gateway refused the "
                            "subscribe frame as too big (close 1009)",
                            hint="use a shorter filter or fewer columns",
                        )
                    )
        if not self._closing:
            logger.info("connection to %s closed (code %s %s)", self.url, code, reason)
        return None

    async def _read(
        self, ws: ClientConnection, resend: list[Subscription]
    ) -> tuple[int | None, str]:
        try:
            for sub in resend:
                await self._send_subscribe(sub, ws)
            for topic in list(self._topics.values()):
                await topic._rejoin()
            while True:
                raw = await ws.recv()
                self._activity.set()
                frame = decode(raw)
                if frame is None:
                    logger.warning("ignoring malformed frame from gateway: %r", raw[:200])
                    continue
                await self._dispatch(frame, ws)
        except ConnectionClosed as exc:
            return server_close(exc)

    async def _dispatch(self, frame: dict[str, Any], ws: ClientConnection) -> None:
        kind = frame.get("type")
        topic = self._topics.get(str(frame.get("topic"))) if kind in TOPIC_FRAMES else None
        if topic is not None:
            topic._receive(frame)
        elif kind in ("change", "message", "resync", "snapshot"):
            sub = self._by_wire.get(str(frame.get("sub")))
            if sub is None:
                return  # for a subscription already unsubscribed: ignore
            if kind == "change":
                if sub._on_change(frame) and sub.wire_id is not None:
                    # Overflow: stop the stream; the consumer resubscribes from
                    # the last buffered id once it has caught up.
                    self._by_wire.pop(sub.wire_id, None)
                    logger.warning("%s: consumer too slow, pausing until it catches up", sub.target)
                    await self._send_quietly(ws, {"type": "unsubscribe", "id": sub.wire_id})
            elif kind == "message":
                sub._on_message(frame)
            elif kind == "snapshot":
                sub._on_snapshot(frame)
            else:
                sub._on_resync(frame)
        elif kind == "subscribed":
            sub = self._by_wire.get(str(frame.get("id")))
            if sub is not None:
                sub._accept()
        elif kind == "error":
            self._on_error(frame)
        # pong, unsubscribed, welcome (again) and unknown types: nothing to do.

    def _on_error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code") or "error")
        message = str(frame.get("message") or "")
        wire_id = frame.get("id")
        sub = self._by_wire.pop(str(wire_id), None) if wire_id is not None else None
        if sub is None:
            logger.warning("gateway error %s: %s", code, message)
            return
        if code == "unavailable" and not self._closing:
            # The gateway cannot reach PostgreSQL right now: not a refusal. Retry the
            # subscribe (same since) with backoff; it is live again once accepted.
            if sub._retry_delays is None:
                sub._retry_delays = self._backoff_factory()
            delay = next(sub._retry_delays)
            logger.warning("%s: %s; retrying in %.1fs", sub.target, message, delay)
            task = asyncio.create_task(self._retry_subscribe(sub, delay))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return
        self._subs.pop(sub.id, None)
        sub._fail(SubscriptionRefused(code, message, target=sub.target))

    async def _retry_subscribe(self, sub: Subscription, delay: float) -> None:
        await asyncio.sleep(delay)  # backoff before asking a recovering gateway again
        await self._resubscribe(sub)
