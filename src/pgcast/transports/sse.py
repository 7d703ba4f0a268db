"""Server-Sent Events transport: ``GET /sse``, one subscription per stream.

For networks that block WebSockets. The request is parsed by the WebSocket
transport's HTTP parser (:class:`HttpConnection`); a ``GET /sse`` then switches the
TCP connection to an :class:`SseConnection`, which turns the query string (and the
``Last-Event-ID`` header an ``EventSource`` sends when it reconnects) into the
equivalent ``subscribe`` message and hands it to the gateway, exactly as if it had
arrived over a WebSocket. The gateway then talks to the stream through the same
methods as to a WebSocket connection (:class:`pgcast.transports.ClientTransport`).

Every server message becomes ``event: <type>\\ndata: <the WebSocket JSON>\\n\\n``;
change events also carry ``id: <change id>`` so that a browser's ``EventSource``
resumes by itself. The response headers are written lazily, with the first event:
a subscription the gateway refuses is answered with an HTTP error status and a JSON
``error`` body instead of a stream (``EventSource`` does not retry those).

Backpressure is the WebSocket transport's: frames wait in a bounded outbox while the
socket is backed up; on overflow the stream is closed and the ``EventSource``
reconnects with ``Last-Event-ID`` (reconnect and resume).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl

import orjson
from websockets.http11 import Request

from ..exceptions import ProtocolError
from ..protocol import CloseCode, ErrorCode
from ..routes import STREAMS
from . import Connection, RequestHead
from .outbox import Outbox, OutboxConnection
from .pending import PendingRequests
from .websocket import (
    CLOSE_TIMEOUT,
    WRITE_HIGH_WATER,
    Application,
    WebSocketConnection,
    http_response,
    request_head,
)

logger = logging.getLogger("pgcast.transport")

SSE_PATH = "/sse"
SUB_ID = "sse"  # the id of a stream's one subscription (``sub`` in its events)
HEARTBEAT_INTERVAL = 15.0  # seconds between ``: ping`` comments, for proxies' idle timeouts
RETRY_MS = 1000  # the reconnection delay the stream asks the EventSource for

_TEXT_PARAMS = frozenset({"table", "schema", "channel", "filter", "since"})
_LIST_PARAMS = frozenset({"events", "columns"})
_SUBSCRIBE_PARAMS = _TEXT_PARAMS | _LIST_PARAMS | {"snapshot"}
_ERROR_STATUS: dict[str, tuple[int, str]] = {
    ErrorCode.UNKNOWN_TABLE: (404, "Not Found"),
    ErrorCode.FORBIDDEN_CHANNEL: (403, "Forbidden"),
    ErrorCode.UNAVAILABLE: (503, "Service Unavailable"),
    ErrorCode.UNAUTHORIZED: (401, "Unauthorized"),
    ErrorCode.FORBIDDEN: (403, "Forbidden"),
    ErrorCode.RATE_LIMITED: (429, "Too Many Requests"),
}
_TYPE_PREFIX = b'{"type":"'
_END = b"\n\n"
_PING = b": ping\n\n"
_SNAPSHOT_DONE = b',"done":true,"position":"'


class StreamApplication(Protocol):
    """What an SSE stream needs from the gateway."""

    def opened_stream(self, conn: Connection, subscribe: dict[str, Any]) -> str | None:
        """Register ``conn`` and start its ``subscribe`` message; return the log position a
        ``welcome`` would carry (None until the gateway has read the log)."""

    def closed(self, conn: Connection) -> None: ...

    def overflowed(self, conn: Connection) -> None: ...


def subscribe_message(head: RequestHead) -> dict[str, Any]:
    """The ``subscribe`` message equivalent to an SSE request; validation is the gateway's.

    Query parameters (form-encoded, as ``URLSearchParams`` writes them): ``table``,
    ``schema``, ``channel``, ``filter``, ``since`` as strings; ``events`` and ``columns``
    comma-separated; ``snapshot=true|false``. Unknown parameters are ignored (like
    unknown fields of ``subscribe``). A ``Last-Event-ID`` header (an EventSource
    reconnecting) replaces ``since`` and cancels ``snapshot``: the client resumes.
    """
    query = head.query
    message: dict[str, Any] = {"type": "subscribe", "id": SUB_ID}
    seen: set[str] = set()
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _SUBSCRIBE_PARAMS:
            continue  # ``token`` is the admission's (several tokens: 401), the rest unknown
        if key in seen:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"query parameter {key!r} is given more than once"
            )
        seen.add(key)
        if key in _TEXT_PARAMS:
            message[key] = value
        elif key in _LIST_PARAMS:
            message[key] = value.split(",")
        elif key == "snapshot":
            message[key] = {"true": True, "false": False}.get(value, value)
    last_event_id = (head.header("Last-Event-ID") or "").strip()
    if last_event_id and "channel" not in message:  # a channel has no replay: ignored
        message["since"] = last_event_id
        message.pop("snapshot", None)
    return message


def _message_type(payload: bytes) -> bytes:
    """The ``type`` of an encoded server message (every encoder writes it first)."""
    if payload.startswith(_TYPE_PREFIX):
        end = payload.find(b'"', len(_TYPE_PREFIX))
        if end > 0:
            return payload[len(_TYPE_PREFIX) : end]
    return str(orjson.loads(payload).get("type")).encode()


def _snapshot_done_position(payload: bytes) -> bytes | None:
    """The ``position`` of a snapshot's last chunk (see protocol.snapshot_chunk), else None.

    A client holding the whole snapshot resumes from there; one cut off earlier has no
    id and takes the snapshot again."""
    at = payload.rfind(_SNAPSHOT_DONE, max(0, len(payload) - 64))
    if at < 0:
        return None
    position = payload[at + len(_SNAPSHOT_DONE) : -2]
    return position if position and all(c in b"0123456789:," for c in position) else None


class StreamSink(Protocol):
    """Where an event stream's bytes go: a TCP transport, or an ASGI server's ``send``."""

    @property
    def closing(self) -> bool: ...

    def start(self, headers: list[tuple[str, str]], first: bytes) -> None:
        """Answer 200 with ``headers``; ``first`` opens the body."""

    def write(self, data: bytes) -> None: ...

    def refuse(self, status: int, body: bytes) -> None:
        """Answer ``status`` with a JSON ``body`` instead of a stream, and end."""

    def end(self) -> None: ...

    def abort(self) -> None: ...


STREAM_HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
]


class TransportSink:
    """An event stream over pgcast's own HTTP/1.1 server (an asyncio transport)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    @property
    def closing(self) -> bool:
        return self.transport.is_closing()

    def start(self, headers: list[tuple[str, str]], first: bytes) -> None:
        lines = ["HTTP/1.1 200 OK", f"Date: {email.utils.formatdate(usegmt=True)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("Connection: keep-alive")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + first)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def refuse(self, status: int, body: bytes) -> None:
        reason = _REASONS.get(status, "Bad Request")
        self.transport.write(http_response(status, reason, body, "application/json").serialize())
        self.transport.close()

    def end(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()


_REASONS = {status: reason for status, reason in _ERROR_STATUS.values()}


class SseConnection(OutboxConnection, asyncio.Protocol):
    """One ``GET /sse`` stream carrying one subscription (id ``"sse"``)."""

    def __init__(
        self,
        app: StreamApplication,
        head: RequestHead,
        *,
        outbox_limit: int,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``headers`` go with the stream's 200 answer (CORS: see :mod:`pgcast.cors`)."""
        self.app = app
        self.headers = [*STREAM_HEADERS, *headers]
        self.events = app
        self.head = head
        self.outbox_limit = outbox_limit
        self.heartbeat_interval = HEARTBEAT_INTERVAL
        self.transport: asyncio.Transport | None = None
        self.sink: StreamSink | None = None
        self.peer: str = "?"
        self.outbox = Outbox(outbox_limit)
        self._started = False  # the 200 response head is written
        self._closing = False
        self._registered = False  # known to the gateway: tell it when the stream ends
        self._position: bytes | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.attach(TransportSink(transport), f"{peer[0]}:{peer[1]}" if peer else "?")

    def attach(self, sink: StreamSink, peer: str) -> None:
        """Carry the stream over ``sink`` (before ``open``)."""
        self.sink = sink
        self.peer = peer

    def data_received(self, data: bytes) -> None:
        """An EventSource sends nothing after its request; anything else is ignored."""

    def eof_received(self) -> bool | None:
        return None  # the client is gone: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended()

    def ended(self) -> None:
        """The stream is over (the client left, or we ended it): tell the gateway once."""
        self._closing = True
        for timer in (self._heartbeat, self._close_timer):
            if timer is not None:
                timer.cancel()
        self.outbox.clear()
        self.outbox.release()
        if self._registered:
            self._registered = False
            self.app.closed(self)

    # opening -----------------------------------------------------------------------

    def open(self) -> None:
        """Start the stream's subscription (after ``connection_made``)."""
        try:
            message = subscribe_message(self.head)
        except ProtocolError as exc:
            self._refuse(exc.code, str(exc))
            return
        self._registered = True
        position = self.app.opened_stream(self, message)
        self._position = None if position is None else str(position).encode()

    def _start(self) -> None:
        """Write the response head: from here on the reply is an event stream."""
        assert self.sink is not None
        self._started = True
        self.sink.start(self.headers, f"retry: {RETRY_MS}\n\n".encode())
        self._heartbeat = asyncio.get_running_loop().call_later(self.heartbeat_interval, self._beat)

    def _beat(self) -> None:
        if self.sink is None or self._closing:
            return
        if not self.outbox.paused and not self.outbox.frames:
            self.sink.write(_PING)
        self._heartbeat = asyncio.get_running_loop().call_later(self.heartbeat_interval, self._beat)

    def _refuse(self, code: str, message: str) -> None:
        """Answer with an HTTP error and a JSON ``error`` body instead of a stream."""
        assert self.sink is not None and not self._started
        status, _ = _ERROR_STATUS.get(code, (400, "Bad Request"))
        body = orjson.dumps({"type": "error", "code": code, "message": message})
        self._closing = True
        self.sink.refuse(status, body)

    # outgoing (ClientTransport) -------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.sink is not None and not self._closing

    async def drained(self) -> None:
        """Return once the socket accepts writes again (immediately if it does now)."""
        if self.sink is not None and not self.sink.closing:
            await self.outbox.drained()

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None:
        """Queue one change event, data ``prefix + body``; call flush() after a batch."""
        head = b"id: " + str(change_id).encode() + b"\nevent: change\ndata: "
        self.outbox.add(head, prefix, body, _END)

    def queue_message(self, prefix: bytes, body: bytes) -> None:
        """Queue one channel message event, data ``prefix + body``; call flush() after a batch."""
        self.outbox.add(b"event: message\ndata: ", prefix, body, _END)

    def _write_out(self) -> None:
        assert self.sink is not None
        if not self._started:
            self._start()
        self.sink.write(self.outbox.take())

    def pause_reading(self) -> None:
        """An EventSource sends nothing after its request: nothing to pause."""

    def resume_reading(self) -> None:
        """See pause_reading."""

    def send(self, payload: bytes) -> None:
        """Send one control message (subscribed, snapshot, resync, error) as an event.

        An ``error`` is the refusal of the stream's subscription: before the stream
        started it becomes the HTTP response; after, the stream ends with it.
        """
        kind = _message_type(payload)
        if kind == b"error":
            if not self._started and not self._closing and self.sink is not None:
                refused = orjson.loads(payload)
                self._refuse(str(refused.get("code")), str(refused.get("message")))
                return
            self._queue_event(kind, payload)
            self.flush()
            self.close(CloseCode.INTERNAL_ERROR, "subscription failed: reconnect")
            return
        event_id = None
        if kind == b"subscribed":
            event_id = self._subscribed_id(payload)
        elif kind == b"snapshot":
            event_id = _snapshot_done_position(payload)
        self._queue_event(kind, payload, event_id)
        self.flush()

    def close(self, code: int, reason: str = "") -> None:
        """End the stream (the EventSource reconnects after ``retry``); abort if it stalls."""
        if self.sink is None or self._closing:
            return
        if not self.outbox.paused:
            self.flush()
            if not self._started:
                self._start()
            comment = f": close {code} {reason}".replace("\r", " ").replace("\n", " ")
            self.sink.write(comment.encode() + _END)
        self._closing = True
        self.outbox.clear()
        self.sink.end()
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()

    # internals ----------------------------------------------------------------------

    def _queue_event(self, kind: bytes, payload: bytes, event_id: bytes | None = None) -> None:
        head = b"event: " + kind + b"\ndata: "
        if event_id is not None:
            head = b"id: " + event_id + b"\n" + head
        self.outbox.add(head, payload, _END)

    def _subscribed_id(self, payload: bytes) -> bytes | None:
        """The resume id of a ``subscribed`` event, for a reconnect before any change.

        After a snapshot: its position. Without ``since``: the position a ``welcome``
        would have carried. After a replay (``since``): none, the EventSource keeps the
        id it had (a change's, or none and the URL's ``since`` applies again). A
        channel has no replay.
        """
        fields = orjson.loads(payload)
        if fields.get("position") is not None:
            return str(fields["position"]).encode()
        if "replayed" in fields or "channel" in fields:
            return None
        return self._position


class HttpConnection(WebSocketConnection):
    """The gateway's protocol for every TCP connection: HTTP and WebSocket as
    :class:`WebSocketConnection`, except that ``GET /sse`` becomes an
    :class:`SseConnection` on the same socket."""

    stream_paths = frozenset(STREAMS)

    def __init__(
        self,
        app: Application,
        streams: StreamApplication,
        *,
        max_frame_bytes: int,
        outbox_limit: int,
        pending_requests: PendingRequests,
        stream_headers: Callable[[RequestHead], Sequence[tuple[str, str]]] = lambda head: (),
    ) -> None:
        """``stream_headers``: the extra headers of a stream's answer to its request."""
        super().__init__(
            app,
            max_frame_bytes=max_frame_bytes,
            outbox_limit=outbox_limit,
            pending_requests=pending_requests,
        )
        self.streams = streams
        self.stream_headers = stream_headers

    def _on_request(self, request: Request) -> None:
        if request.path.partition("?")[0] != SSE_PATH or self.transport is None:
            super()._on_request(request)
            return
        self.head = request_head(request)
        stream = SseConnection(
            self.streams,
            self.head,
            outbox_limit=self.outbox_limit,
            headers=self.stream_headers(self.head),
        )
        self.transport.set_protocol(stream)
        stream.connection_made(self.transport)
        stream.open()


__all__ = [
    "HEARTBEAT_INTERVAL",
    "SSE_PATH",
    "SUB_ID",
    "HttpConnection",
    "SseConnection",
    "StreamApplication",
    "StreamSink",
    "subscribe_message",
]
