"""ASGI connections: a WebSocket and an event stream carried by an ASGI server.

Both are :class:`pgcast.transports.Connection` objects like the native ones, with the
same :class:`~pgcast.transports.outbox.Outbox`: the gateway's calls are synchronous
and ASGI sends are not, so frames wait in the outbox while one writer task per
connection hands them to ``await send``. The outbox is ``paused`` while that send is
blocked (the server's socket buffer is full: a slow client); past the gateway's
``outbox_limit`` frames (or 32 MiB) the connection is closed with 4001, exactly as
natively. Reading pauses the same way: the gateway's ``pause_reading()`` stops the
reader from calling ``receive``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..protocol import CloseCode
from . import RequestHead
from .outbox import Outbox, OutboxConnection
from .sse import SseConnection
from .websocket import CLOSE_TIMEOUT, Application

logger = logging.getLogger("pgcast.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

__all__ = ["AsgiStreamSink", "AsgiWebSocket", "Message", "Receive", "Scope", "Send"]


class AsgiWebSocket(OutboxConnection):
    """One ASGI WebSocket, as a :class:`pgcast.transports.Connection` of the gateway.

    Its outbox is the native transports' (:class:`pgcast.transports.outbox.Outbox`):
    ``paused`` while the writer task is blocked in ``await send``, which is when the
    slow-consumer rule applies."""

    def __init__(
        self,
        gateway: Application,
        send: Send,
        *,
        head: RequestHead,
        peer: str,
        outbox_limit: int,
        max_frame_bytes: int,
    ) -> None:
        self.gateway = gateway
        self.events = gateway
        self.peer = peer
        self.head = head
        self.max_frame_bytes = max_frame_bytes
        self.outbox = Outbox(outbox_limit)
        self._send = send
        self._readable = asyncio.Event()  # cleared while the gateway pauses reading
        self._readable.set()
        self._wake = asyncio.Event()  # the writer has something to do
        self._open = False
        self._closing: tuple[int, str] | None = None
        self._close_sent = False
        self._writer: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # Connection -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open and self._closing is None

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None:
        self.outbox.add(prefix + body)  # one piece: one ASGI message

    def queue_message(self, prefix: bytes, body: bytes) -> None:
        self.outbox.add(prefix + body)

    def send(self, payload: bytes) -> None:
        self.outbox.add(payload)
        self.flush()

    def _write_out(self) -> None:
        self._wake.set()

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then the close frame (the writer does it)."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        self._wake.set()
        # A client that does not read keeps our send blocked: give up on it in time.
        self._deadline = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        """ASGI cannot cut a socket; drop the outbox and end the connection's tasks."""
        self._clear()
        self._open = False
        self._readable.set()
        if self._writer is not None:
            self._writer.cancel()

    async def drained(self) -> None:
        """Return once the writer has handed every queued frame to the server."""
        while (self.outbox.frames or self.outbox.paused) and self.is_open:
            await self.outbox.released()

    # the connection's life ------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Serve an accepted WebSocket until it closes (the gateway knows it meanwhile)."""
        self._open = True
        self.gateway.opened(self)
        writer = asyncio.create_task(self._write(), name=f"pgcast-asgi-writer-{self.peer}")
        self._writer = writer
        reader = asyncio.create_task(self._read(receive), name=f"pgcast-asgi-reader-{self.peer}")
        try:
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done and self._close_sent:
                # We sent the close frame: give the client time to answer it.
                await asyncio.wait({reader}, timeout=CLOSE_TIMEOUT)
        finally:
            self._open = False
            if self._deadline is not None:
                self._deadline.cancel()
            for task in (writer, reader):
                task.cancel()
            for result in await asyncio.gather(writer, reader, return_exceptions=True):
                if isinstance(result, Exception):
                    # The client left while we were writing: nothing to tell anyone.
                    logger.debug("WebSocket %s ended: %r", self.peer, result)
            self._clear()
            self.gateway.closed(self)

    async def _read(self, receive: Receive) -> None:
        while True:
            await self._readable.wait()
            if not self._open:
                return
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            data: str | bytes = text if text is not None else (message.get("bytes") or b"")
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > self.max_frame_bytes:
                self.close(CloseCode.MESSAGE_TOO_BIG, f"frame over {self.max_frame_bytes} bytes")
                continue
            if self.is_open:
                self.gateway.received(self, data)

    async def _write(self) -> None:
        outbox = self.outbox
        while True:
            await self._wake.wait()
            self._wake.clear()
            while outbox.frames:
                # While a send is blocked the outbox is paused: frames queued meanwhile
                # count against its limit (4001), as on a backed-up socket.
                outbox.paused = True
                try:
                    for data in outbox.take_frames():
                        await self._send({"type": "websocket.send", "text": data.decode()})
                finally:
                    outbox.paused = False
            outbox.release()
            if not self._open:
                return
            if self._closing is not None:
                code, reason = self._closing
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
                self._close_sent = True
                return

    def _clear(self) -> None:
        self.outbox.clear()
        self.outbox.release()


class AsgiStreamSink:
    """An event stream's bytes, sent as ASGI ``http.response.*`` messages by one writer.

    While a send is in flight the stream's outbox is paused, so what the gateway
    queues meanwhile meets the outbox limit (4001), as on a backed-up socket."""

    def __init__(self, stream: SseConnection, send: Send) -> None:
        self.stream = stream
        self._send = send
        self._messages: collections.deque[Message] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._ended = False  # the final message is queued
        self._writer: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self, headers: list[tuple[str, str]], first: bytes) -> None:
        raw = [(name.lower().encode(), value.encode()) for name, value in headers]
        self._queue({"type": "http.response.start", "status": 200, "headers": raw})
        self.write(first)

    def write(self, data: bytes) -> None:
        self._queue({"type": "http.response.body", "body": data, "more_body": True})

    def refuse(self, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        self._queue({"type": "http.response.start", "status": status, "headers": headers})
        self._queue({"type": "http.response.body", "body": body, "more_body": False})
        self._ended = self._closing = True

    def end(self) -> None:
        if not self._ended:
            self._queue({"type": "http.response.body", "body": b"", "more_body": False})
        self._ended = self._closing = True

    def abort(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()

    def _queue(self, message: Message) -> None:
        if self._ended:
            return
        self._messages.append(message)
        self.stream.pause_writing()
        self._wake.set()

    async def run(self, receive: Receive) -> None:
        """Send the stream until it ends or the client disconnects."""
        writer = asyncio.create_task(self._write(), name=f"pgcast-asgi-sse-{self.stream.peer}")
        self._writer = writer
        watcher = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._closing = True
            for task in (writer, watcher):
                task.cancel()
            for result in await asyncio.gather(writer, watcher, return_exceptions=True):
                if isinstance(result, Exception):
                    logger.debug("event stream %s ended: %r", self.stream.peer, result)

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._messages:
                message = self._messages.popleft()
                await self._send(message)
                if not message.get("more_body", True) and message["type"] == "http.response.body":
                    return
            self.stream.resume_writing()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
