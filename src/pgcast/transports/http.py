"""Plain HTTP/1.1 for the gateway's own routes, parsed by h11 (sans-I/O).

:class:`RequestReader` turns the bytes of one TCP connection into requests: a
``GET`` of a stream path (``/ws``, ``/sse``) is handed over, with its head and the
bytes after it, to the WebSocket or SSE transport (:class:`StreamRequest`); any other
request is read whole (head and ``Content-Length`` body) and answered, and the
connection is kept alive for the next one unless the client asked to close it.
h11 refuses malformed heads, conflicting ``Content-Length`` headers and bodies that
do not match their framing; the limits on size and count below are pgcast's.
Chunked request bodies are refused (411): no client of these routes needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "HttpError",
    "HttpRequest",
    "RequestReader",
    "StreamRequest",
]

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 1024 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpError(Exception):
    """A request that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    path: str = field(init=False)
    query: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = unquote(parts.path)
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @property
    def is_websocket_upgrade(self) -> bool:
        upgrade = self.header("upgrade") or ""
        return self.method == "GET" and upgrade.lower() == "websocket"


@dataclass(frozen=True)
class StreamRequest:
    """A ``GET`` of a stream path: its head as sent (CRLF lines) and the bytes after it."""

    request: HttpRequest
    head: bytes
    rest: bytes


class RequestReader:
    """The requests of one connection, one at a time: bytes in, requests out."""

    def __init__(self, stream_paths: frozenset[str]) -> None:
        self.stream_paths = stream_paths
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._request: HttpRequest | None = None  # its head is read, its body not yet
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._method = ""

    @property
    def in_body(self) -> bool:
        """True between a request's head and the end of its body."""
        return self._request is not None

    def feed(self, data: bytes) -> None:
        self._h11.receive_data(data)

    def next(self) -> HttpRequest | StreamRequest | None:
        """The next complete request, or None until more bytes arrive.

        Raises HttpError for a request that is refused (the connection then closes).
        """
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                raise HttpError(431 if "too large" in str(exc) else status, str(exc)) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                request = _vetted(event)
                if request.method == "GET" and request.path in self.stream_paths:
                    rest, _ = self._h11.trailing_data
                    return StreamRequest(request, _head(event), rest)
                self._request, self._body, self._body_bytes = request, [], 0
                self._method = request.method
            elif isinstance(event, h11.Data):
                self._body_bytes += len(event.data)
                if self._body_bytes > MAX_BODY_BYTES:
                    raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                complete, self._request = self._request, None
                assert complete is not None
                complete.body = b"".join(self._body)
                return complete
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def response(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> bytes:
        """The bytes answering the current request (a HEAD answer has no body)."""
        kept = [(name, value) for name, value in headers if name.lower() != "connection"]
        out = self._h11.send(h11.Response(status_code=status, reason=reason, headers=kept)) or b""
        if body and self._method != "HEAD":
            out += self._h11.send(h11.Data(data=body)) or b""
        out += self._h11.send(h11.EndOfMessage()) or b""
        return out

    def keep_alive(self) -> bool:
        """After a response: start reading the next request, or False to close."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False


def _vetted(event: h11.Request) -> HttpRequest:
    """The request of ``event``, or HttpError for what pgcast refuses that h11 accepts."""
    method = event.method.decode("ascii", "replace")
    if method not in METHODS:
        raise HttpError(405, f"method {method[:16]!r} not allowed")
    target = event.target.decode("ascii", "replace")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be an absolute path")
    raw = event.headers.raw_items()
    if len(raw) > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    request = HttpRequest(method, target, headers)
    if request.header("transfer-encoding") is not None:
        raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
    length = int(request.header("content-length") or "0")  # h11 checked it is one number
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
    return request


def _head(event: h11.Request) -> bytes:
    """``event``'s head as the client sent it, in CRLF lines (for websockets' parser)."""
    lines = [b"%s %s HTTP/%s" % (event.method, event.target, event.http_version)]
    lines += [name + b": " + value for name, value in event.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"
