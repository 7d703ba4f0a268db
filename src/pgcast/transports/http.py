"""A small, strict HTTP/1.1 request parser (sans-I/O) for the gateway's plain routes.

WebSocket upgrades go to websockets' own handshake parser; everything else (health,
metrics, the demo's REST API) is parsed here: request line, headers and a
``Content-Length`` body, with limits on every part. Chunked request bodies are
refused (411): no client of these routes needs them. Lines may end with a bare LF
(RFC 9112 section 2.2 allows a recipient to accept it, as h11 does): such a request is
answered, never left waiting for a CRLF that will not come.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 1024 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The empty line that ends a head: CRLF CRLF, or with bare LFs.
_HEAD_END = re.compile(rb"\n\r?\n")


class HttpError(Exception):
    """A request the parser refuses; ``status`` is the HTTP status to answer with."""

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


def head_complete(buffer: bytes | bytearray) -> int:
    """The length of the request head in ``buffer`` (through its empty line), or 0 if incomplete.

    Raises HttpError 431 when the head grows past the limit without ending.
    """
    end = _HEAD_END.search(buffer, 0, MAX_HEADER_BYTES + 4)
    if end is not None:
        return end.end()
    if len(buffer) > MAX_HEADER_BYTES:
        raise HttpError(431, "request header fields too large")
    return 0


def parse_head(head: bytes | bytearray) -> tuple[HttpRequest, int]:
    """Parse a complete request head; return the request (no body yet) and its body length."""
    try:
        text = bytes(head).decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    lines = [line.removesuffix("\r") for line in text.rstrip("\r\n").split("\n")]
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, _ = parts
    if method not in METHODS:
        raise HttpError(405, f"method {method[:16]!r} not allowed")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be an absolute path")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HttpError(400, "malformed header field")
        headers.append((name, value.strip()))
    request = HttpRequest(method, target, headers)
    if request.header("transfer-encoding") is not None:
        raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
    raw_length = request.header("content-length") or "0"
    if not raw_length.isascii() or not raw_length.isdigit():
        raise HttpError(400, "bad Content-Length")
    length = int(raw_length)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
    return request, length


def canonical_head(head: bytes | bytearray) -> bytes:
    """``head`` with every line ending as CRLF, for parsers that accept nothing else."""
    lines = bytes(head).rstrip(b"\r\n").split(b"\n")
    return b"".join(line.removesuffix(b"\r") + b"\r\n" for line in lines) + b"\r\n"
