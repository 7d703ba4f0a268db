"""The native WebSocket + HTTP transport: asyncio protocol over websockets' sans-I/O core.

The websockets library parses the opening handshake and incoming frames and
answers pings and close frames; this module only moves bytes. Outgoing change
frames are pre-encoded by the gateway and written straight to the socket, all of a
connection's pending frames in one ``write`` (one system call), which is what makes
fan-out cheap (see bench/RESULTS.md, "Stack choice").

Backpressure: the asyncio transport tells us when its buffer passes the high-water
mark (``pause_writing``). While paused, frames wait in the outbox; an outbox that
grows past its limit closes the connection with 4001 (reconnect and resume), so a
client that stops reading costs the gateway bounded memory and nobody else waits.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from typing import Protocol

import orjson
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol

from ..protocol import CloseCode
from .frames import text_frame, text_frame_header
from .http import HttpError, HttpRequest, head_complete, parse_head
from .outbox import Outbox

logger = logging.getLogger("pgcast.transport")

WRITE_HIGH_WATER = 256 * 1024


CLOSE_TIMEOUT = 5.0


class Application(Protocol):
    """What the transport needs from the gateway."""

    async def http(self, request: HttpRequest) -> Response:
        """The response to a plain HTTP request (anything but a WebSocket or SSE stream)."""

    def admit(self, conn: WebSocketConnection, request: Request) -> Response | None:
        """Vet an upgrade (origin, token, limits): None admits it, a Response refuses it."""

    def opened(self, conn: WebSocketConnection) -> None: ...

    def received(self, conn: WebSocketConnection, data: str | bytes) -> None:
        """A text (str) or binary (bytes) message from the client."""

    def closed(self, conn: WebSocketConnection) -> None: ...

    def overflowed(self, conn: WebSocketConnection) -> None:
        """``conn``'s outbox overflowed; it is being closed with 4001."""


def http_response(status: int, reason: str, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status, reason, headers, body)


class WebSocketConnection(asyncio.Protocol):
    """One client connection: HTTP request, then (usually) a WebSocket."""

    stream_paths: frozenset[str] = frozenset({"/ws"})  # GET paths handled as streams

    def __init__(self, app: Application, *, max_frame_bytes: int, outbox_limit: int) -> None:
        self.app = app
        self.ws = ServerProtocol(max_size=max_frame_bytes)
        self.outbox_limit = outbox_limit
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.peer: str = "?"
        self.session: object = None  # set by the gateway
        self.outbox = Outbox(outbox_limit)
        self._upgraded = False
        self._close_timer: asyncio.TimerHandle | None = None
        # The request head (and a plain request's body) until we know what it is.
        self._pending: bytearray | None = bytearray()
        self._plain: HttpRequest | None = None
        self._body_length = 0
        self._http_task: asyncio.Task[None] | None = None

    # asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending += data
            self._read_request()
            return
        if self._plain is not None:
            return  # a plain request's connection: nothing more is read
        self.ws.receive_data(data)
        self._process_events()

    def eof_received(self) -> bool | None:
        if self._pending is not None or self._plain is not None:
            return None  # let the response (if any) go out; the transport closes after it
        self.ws.receive_eof()
        self._process_events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._http_task is not None:
            self._http_task.cancel()
        self.outbox.clear()
        self.outbox.release()
        if self._upgraded:
            self._upgraded = False
            self.app.closed(self)

    def pause_writing(self) -> None:
        self.outbox.paused = True

    def resume_writing(self) -> None:
        self.outbox.paused = False
        self.flush()
        self.outbox.release()

    # outgoing ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._upgraded and self.ws.state is OPEN

    @property
    def writable(self) -> bool:
        """False while the socket's buffer is over its high-water mark."""
        return not self.outbox.paused

    async def drained(self) -> None:
        """Return once the socket accepts writes again (immediately if it does now)."""
        if self.transport is not None and not self.transport.is_closing():
            await self.outbox.drained()

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None:
        """Queue one change message, ``prefix + body``; call flush() after a batch."""
        self.outbox.add(text_frame_header(len(prefix) + len(body)), prefix, body)

    def queue_message(self, prefix: bytes, body: bytes) -> None:
        """Queue one channel message, ``prefix + body``; call flush() after a batch."""
        self.outbox.add(text_frame_header(len(prefix) + len(body)), prefix, body)

    def queue_frame(self, frame: bytes) -> None:
        self.outbox.add(frame)

    def flush(self) -> None:
        """Write every queued frame in one call, or enforce the outbox limit while paused."""
        outbox = self.outbox
        if not outbox.frames or self.transport is None:
            return
        if not self.is_open:
            outbox.clear()
            return
        if outbox.overflowing:
            outbox.clear()
            self.app.overflowed(self)
            self.close(CloseCode.SLOW_CONSUMER, "outbox overflow: reconnect and resume")
        elif not outbox.paused:
            self.transport.write(outbox.take())

    def send(self, payload: bytes) -> None:
        """Queue and flush one message (control messages: welcome, errors, acks)."""
        self.queue_frame(text_frame(payload))
        self.flush()

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; abort the TCP connection if the peer stalls."""
        if self.ws.state is OPEN:
            self.ws.send_close(code, reason)
            self._write_protocol_data()
        elif self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # plain HTTP ---------------------------------------------------------------------

    def _read_request(self) -> None:
        """Buffer the request head; route it to WebSocket/SSE or answer it as plain HTTP."""
        assert self._pending is not None and self.transport is not None
        try:
            if self._plain is None:
                end = head_complete(self._pending)
                if not end:
                    return
                request, self._body_length = parse_head(self._pending[:end])
                if request.method == "GET" and request.path in self.stream_paths:
                    # WebSocket handshake (or SSE): websockets' parser takes it from here.
                    buffered, self._pending = bytes(self._pending), None
                    self.ws.receive_data(buffered)
                    self._process_events()
                    return
                self._plain = request
                del self._pending[:end]
            if len(self._pending) < self._body_length:
                return
        except HttpError as exc:
            self._pending = None
            self._plain = HttpRequest("GET", "/", [])
            body = orjson.dumps({"error": exc.message})
            self._write_response(http_response(exc.status, "Error", body, "application/json"))
            return
        self._plain.body = bytes(self._pending[: self._body_length])
        self._pending = None
        self._http_task = asyncio.create_task(self._answer(self._plain))

    async def _answer(self, request: HttpRequest) -> None:
        try:
            response = await self.app.http(request)
        except Exception:
            logger.exception("HTTP %s %s failed", request.method, request.path)
            body = b'{"error":"internal error"}'
            response = http_response(500, "Internal Server Error", body, "application/json")
        if request.method == "HEAD":
            response = Response(response.status_code, response.reason_phrase, response.headers)
        self._write_response(response)

    def _write_response(self, response: Response) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.serialize())
            self.transport.close()

    # internals --------------------------------------------------------------------

    def _process_events(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._write_protocol_data()

    def _on_request(self, request: Request) -> None:
        self.request = request
        refusal = self.app.admit(self, request)
        if refusal is not None:
            self.ws.send_response(refusal)
            return
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code == 101:
            self._write_protocol_data()
            self._upgraded = True
            self.app.opened(self)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT:
            try:
                text = bytes(frame.data).decode()
            except UnicodeDecodeError:  # websockets validates UTF-8; defensive only
                return
            self.app.received(self, text)
        elif frame.opcode is Opcode.BINARY:
            self.app.received(self, bytes(frame.data))

    def _write_protocol_data(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                # Control frames must not overtake queued change frames.
                if self.outbox.frames and self.ws.state is not State.CONNECTING:
                    self.flush()
                self.transport.write(data)
            else:
                self.transport.close()
        if self.ws.close_expected() and self._close_timer is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT, self.abort)


__all__ = ["Application", "WebSocketConnection", "http_response", "text_frame_header"]
