"""The native WebSocket + HTTP transport: asyncio protocol over websockets' sans-I/O core.

The websockets library parses the opening handshake and incoming frames and
answers pings and close frames; this module moves bytes, reassembles fragmented
messages and checks that text is UTF-8 (close 1007). Outgoing change frames are
pre-encoded by the gateway and written straight to the socket, all of a
connection's pending frames in one ``write`` (one system call), which is what makes
fan-out cheap (see bench/RESULTS.md, "Stack choice").

Backpressure: the asyncio transport tells us when its buffer passes the high-water
mark (``pause_writing``). While paused, frames wait in the outbox; an outbox that
grows past its limit closes the connection with 4001 (reconnect and resume), so a
client that stops reading costs the gateway bounded memory and nobody else waits.
The pongs websockets writes for the client's pings take the same way: a client that
sends pings and reads nothing is closed with 4001 like any other.

Until its request has arrived, a connection is counted per IP and timed out (see
:mod:`pgcast.transports.pending`); the gateway hears of it (``admit``) only once
websockets has accepted the handshake, so a refused upgrade leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from typing import Protocol, cast

import orjson
from websockets.datastructures import Headers
from websockets.frames import CloseCode as WebSocketCloseCode
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from . import Connection, Refusal, RequestHead
from .frames import binary_frame, text_frame, text_frame_header
from .http import HttpError, HttpRequest, RequestReader, StreamRequest
from .outbox import Outbox, OutboxConnection
from .pending import PendingRequests

logger = logging.getLogger("pgcast.transport")

WRITE_HIGH_WATER = 256 * 1024


CLOSE_TIMEOUT = 5.0
_PONG = 0x8A  # first byte of a pong frame as websockets writes it (FIN, opcode 0xA)


class Application(Protocol):
    """What the transport needs from the gateway."""

    async def http(self, request: HttpRequest) -> Response:
        """The response to a plain HTTP request (anything but a WebSocket or SSE stream)."""

    def admit(self, conn: Connection) -> Refusal | None:
        """Vet an upgrade (origin, token, limits) by ``conn.head``: None admits it."""

    def opened(self, conn: Connection) -> None: ...

    def received(self, conn: Connection, data: str | bytes) -> None:
        """A text (str) or binary (bytes) message from the client."""

    def closed(self, conn: Connection) -> None: ...

    def overflowed(self, conn: Connection) -> None:
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


_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}


def refusal_body(refusal: Refusal) -> bytes:
    """The JSON ``error`` body every transport answers a refused connection with."""
    return orjson.dumps({"type": "error", "code": refusal.code, "message": refusal.message})


def refusal_response(refusal: Refusal) -> Response:
    reason = _REASONS.get(refusal.status, "Bad Request")
    return http_response(refusal.status, reason, refusal_body(refusal), "application/json")


def request_head(request: Request) -> RequestHead:
    return RequestHead(request.path, tuple(request.headers.raw_items()))


class WebSocketConnection(OutboxConnection, asyncio.Protocol):
    """One client connection: HTTP request, then (usually) a WebSocket."""

    stream_paths: frozenset[str] = frozenset({"/ws"})  # GET paths handled as streams

    def __init__(
        self,
        app: Application,
        *,
        max_frame_bytes: int,
        outbox_limit: int,
        pending_requests: PendingRequests,
    ) -> None:
        self.app = app
        self.events = app
        # max_size bounds a whole message, fragments included (1009 past it).
        self.ws = ServerProtocol(max_size=max_frame_bytes)
        self.outbox_limit = outbox_limit
        self.transport: asyncio.Transport | None = None
        self.head = RequestHead("/")
        self.peer: str = "?"
        self.session: object = None  # set by the gateway
        self.outbox = Outbox(outbox_limit)
        self._upgraded = False
        self._close_timer: asyncio.TimerHandle | None = None
        # Plain HTTP requests until one is a stream (then None: websockets reads).
        self._reader: RequestReader | None = RequestReader(self.stream_paths)
        self._answering = False  # a plain request's answer is being made
        self._timing_body = False  # the request timer now times the body
        self._peer_done = False  # the client half-closed: close after the answer
        self._refused = False  # we answered an error: nothing more is read
        self._idle = False  # kept alive after an answer, and no byte of a new request yet
        self._http_task: asyncio.Task[None] | None = None
        self.pending_requests = pending_requests
        self._counted_ip: str | None = None  # counted in pending_requests until the request is in
        self._request_timer: asyncio.TimerHandle | None = None
        # The frames so far of a fragmented message, and whether it is text.
        self._fragments: list[bytes] | None = None
        self._fragmented_text = False
        self._failed = False  # we closed for bad input: later frames are ignored

    # asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any event loop's stream transport (asyncio's or uvloop's) has these methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        self._await_request()

    def _await_request(self) -> None:
        """Count the connection as pending until a request has arrived, and time it."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        ip = str(peer[0]) if peer else "?"
        if not self.pending_requests.enter(ip):
            message = "too many unfinished requests from this address"
            body = {"type": "error", "code": "rate_limited", "message": message}
            self._refuse_request(429, "Too Many Requests", orjson.dumps(body))
            return
        self._counted_ip = ip
        self._timing_body = False
        self._start_request_timer(self.pending_requests.head_timeout)

    def data_received(self, data: bytes) -> None:
        if self._reader is not None:
            self._idle = False
            self._reader.feed(data)
            if not self._answering:
                self._read_request()
            return
        if self._refused:
            return
        self.ws.receive_data(data)
        self._process_events()

    def eof_received(self) -> bool | None:
        if self._answering:
            self._peer_done = True
            return True  # keep the socket until the answer is written, then close
        if self._reader is not None or self._refused:
            return None
        self.ws.receive_eof()
        self._process_events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_in()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._http_task is not None:
            self._http_task.cancel()
        self.outbox.clear()
        self.outbox.release()
        if self._upgraded:
            self._upgraded = False
            self.app.closed(self)

    # outgoing ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._upgraded and self.ws.state is OPEN

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

    def _write_out(self) -> None:
        assert self.transport is not None
        self.transport.write(self.outbox.take())

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def send(self, payload: bytes) -> None:
        """Queue and flush one message (control messages: welcome, errors, acks)."""
        self.queue_frame(text_frame(payload))
        self.flush()

    def send_binary(self, payload: bytes) -> None:
        """Queue and flush one binary message (not part of the Connection contract: the
        Supabase endpoint uses it where the transport has it)."""
        self.queue_frame(binary_frame(payload))
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
        """Read the next request: hand a stream to websockets/SSE, answer a plain one."""
        reader = self._reader
        assert reader is not None and self.transport is not None
        try:
            item = reader.next()
        except HttpError as exc:
            self._refuse_request(exc.status, "Error", orjson.dumps({"error": exc.message}))
            return
        if item is None:
            if reader.in_body and not self._timing_body:
                self._timing_body = True
                self._start_request_timer(self.pending_requests.body_timeout)
            return
        self._request_in()
        if isinstance(item, StreamRequest):
            # WebSocket handshake (or SSE): websockets' parser takes it from here.
            self._reader = None
            self.ws.receive_data(item.head + item.rest)
            self._process_events()
            return
        self._answering = True
        self._http_task = asyncio.create_task(self._answer(item))

    def _refuse_request(self, status: int, reason: str, body: bytes) -> None:
        """Answer an unfinished or bad request with an error and close; read nothing more."""
        self._request_in()
        self._reader = None
        self._refused = True
        if self.transport is not None and not self.transport.is_closing():
            response = http_response(status, reason, body, "application/json")
            self.transport.write(response.serialize())
            self.transport.close()

    def _start_request_timer(self, timeout: float) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
        loop = asyncio.get_running_loop()
        self._request_timer = loop.call_later(timeout, self._request_timed_out)

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self._idle and self.transport is not None:
            # A kept-alive connection that sent no new request: close it quietly.
            self._request_in()
            self.transport.close()
            return
        self.pending_requests.timed_out += 1
        part, timeout = (
            ("head", self.pending_requests.head_timeout)
            if not self._timing_body
            else ("body", self.pending_requests.body_timeout)
        )
        message = f"the request {part} did not arrive within {timeout:g} s"
        self._refuse_request(408, "Request Timeout", orjson.dumps({"error": message}))

    def _request_in(self) -> None:
        """The request has arrived (or the connection ended): it no longer counts as pending."""
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        if self._counted_ip is not None:
            self.pending_requests.leave(self._counted_ip)
            self._counted_ip = None

    async def _answer(self, request: HttpRequest) -> None:
        try:
            response = await self.app.http(request)
        except Exception:
            logger.exception("HTTP %s %s failed", request.method, request.path)
            body = b'{"error":"internal error"}'
            response = http_response(500, "Internal Server Error", body, "application/json")
        reader, transport = self._reader, self.transport
        self._answering = False
        if reader is None or transport is None or transport.is_closing():
            return
        headers = list(response.headers.raw_items())
        transport.write(
            reader.response(
                response.status_code, response.reason_phrase, headers, bytes(response.body)
            )
        )
        if self._peer_done or not reader.keep_alive():
            transport.close()
            return
        # Keep-alive: the next request is counted and timed like the first.
        self._await_request()
        self._idle = True
        if not self._refused:
            self._read_request()

    # internals --------------------------------------------------------------------

    def _process_events(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame) and not self._failed:
                self._on_frame(event)
        self._write_protocol_data()

    def _on_request(self, request: Request) -> None:
        self.head = request_head(request)
        # websockets vets the handshake first: the gateway only sees (and records)
        # upgrades that will open, so a refused one leaves nothing behind.
        response = self.ws.accept(request)
        if response.status_code == 101:
            refusal = self.app.admit(self)
            if refusal is not None:
                response = refusal_response(refusal)
        self.ws.send_response(response)
        if response.status_code == 101:
            self._write_protocol_data()
            self._upgraded = True
            self.app.opened(self)

    def _on_frame(self, frame: Frame) -> None:
        """Reassemble a message from its frames; hand it to the gateway once complete.

        websockets checks the framing (a stray continuation is 1002) and the size of
        the whole message (1009); UTF-8 is checked here, on the whole message (1007).
        """
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(opcode is Opcode.TEXT, bytes(frame.data))
            else:
                self._fragments, self._fragmented_text = [bytes(frame.data)], opcode is Opcode.TEXT
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._deliver(self._fragmented_text, data)
        # ping, pong, close: websockets answers them

    def _deliver(self, text: bool, data: bytes) -> None:
        if not text:
            self.app.received(self, data)
            return
        try:
            message = data.decode()
        except UnicodeDecodeError:
            self._fail(WebSocketCloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
            return
        self.app.received(self, message)

    def _fail(self, code: int, reason: str) -> None:
        """Close for bad input: send the close frame, drop the TCP connection, read no more."""
        self._failed = True
        self._fragments = None
        self.ws.fail(code, reason)

    def _write_protocol_data(self) -> None:
        assert self.transport is not None
        pongs = False
        for data in self.ws.data_to_send():
            if not data:
                self.transport.close()
            elif data[0] == _PONG and self._upgraded:
                # A pong is a frame like any other: it waits behind queued frames and
                # counts against the outbox limit (4001), or the peer could grow our
                # buffer without bound by sending pings and never reading.
                if self.ws.state is OPEN:
                    self.outbox.add(data)
                    pongs = True
                # Closing: the peer has no use for a pong any more.
            else:
                # The handshake response, or a close frame: after the queued frames
                # if the socket takes them now (a close while backed up drops them).
                if self.outbox.frames and self._upgraded:
                    self.flush()
                self.transport.write(data)
        if pongs:
            self.flush()
        if self.ws.close_expected() and self._close_timer is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT, self.abort)


__all__ = [
    "Application",
    "WebSocketConnection",
    "http_response",
    "refusal_body",
    "refusal_response",
    "request_head",
    "text_frame_header",
]
