"""Plain HTTP requests, read by h11: hostile heads get the right status, good ones
are read whole, a connection is kept alive, and conflicting lengths are refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcast.transports.http import (
    MAX_HEADER_BYTES,
    HttpError,
    HttpRequest,
    RequestReader,
    StreamRequest,
)
from pgcast.transports.pending import PendingRequests

STREAMS = frozenset({"/ws", "/sse"})


def read(data: bytes) -> HttpRequest | StreamRequest | None:
    reader = RequestReader(STREAMS)
    reader.feed(data)
    return reader.next()


def test_parses_request_line_headers_query_and_body() -> None:
    head = (
        b"POST /api/orders?x=1&y=a%20b HTTP/1.1\r\nHost: h\r\n"
        b"Content-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    )
    reader = RequestReader(STREAMS)
    reader.feed(head + b'{"a": ')
    assert reader.next() is None and reader.in_body
    reader.feed(b'"bc"}')
    request = reader.next()
    assert isinstance(request, HttpRequest) and not reader.in_body
    assert (request.method, request.path, request.body) == ("POST", "/api/orders", b'{"a": "bc"}')
    assert request.query == {"x": "1", "y": "a b"}
    assert request.header("content-type") == "application/json"
    assert not request.is_websocket_upgrade


def test_a_stream_path_is_handed_over_with_its_head_and_the_bytes_after_it() -> None:
    head = (
        b"GET /ws?token=t HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n"
    )
    stream = read(head + b"\x81\x00")
    assert isinstance(stream, StreamRequest)
    assert stream.request.is_websocket_upgrade
    assert stream.head == head and stream.rest == b"\x81\x00"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/2\r\nHost: h\r\n\r\n", 400),
        (b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", 405),
        (b"GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
        # Two lengths that disagree: refused, never one of them taken (request smuggling).
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ],
)
def test_hostile_heads_get_their_status(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        read(head)
    assert caught.value.status == status


def test_endless_head_is_refused() -> None:
    reader = RequestReader(STREAMS)
    reader.feed(b"GET / HTTP/1.1\r\n")
    assert reader.next() is None
    reader.feed(b"X" * (MAX_HEADER_BYTES + 10))
    with pytest.raises(HttpError) as caught:
        reader.next()
    assert caught.value.status == 431


@pytest.mark.parametrize(
    "head",
    [
        b"POST /a?x=1 HTTP/1.1\nHost: h\nContent-Length: 2\n\n",
        b"POST /a?x=1 HTTP/1.1\r\nHost: h\nContent-Length: 2\r\n\n",
        b"POST /a?x=1 HTTP/1.1\nHost: h\r\nContent-Length: 2\n\r\n",
    ],
)
def test_bare_lf_line_endings_are_accepted(head: bytes) -> None:
    request = read(head + b"{}")
    assert isinstance(request, HttpRequest)
    assert (request.method, request.path, request.query, request.body) == (
        "POST",
        "/a",
        {"x": "1"},
        b"{}",
    )
    assert request.headers == [("Host", "h"), ("Content-Length", "2")]


def test_a_connection_is_kept_alive_and_head_gets_no_body() -> None:
    reader = RequestReader(STREAMS)
    reader.feed(b"HEAD /health HTTP/1.1\r\nHost: h\r\n\r\nGET /health HTTP/1.1\r\nHost: h\r\n\r\n")
    first = reader.next()
    assert isinstance(first, HttpRequest) and first.method == "HEAD"
    headers = [("Content-Type", "application/json"), ("Content-Length", "2")]
    answer = reader.response(200, "OK", [*headers, ("Connection", "close")], b"{}")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")
    assert b"connection: close" not in answer.lower()
    assert reader.keep_alive()
    second = reader.next()
    assert isinstance(second, HttpRequest) and second.method == "GET"
    assert reader.response(200, "OK", headers, b"{}").endswith(b"\r\n\r\n{}")
    assert reader.keep_alive()


def test_a_client_that_asks_to_close_is_not_kept() -> None:
    reader = RequestReader(STREAMS)
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert isinstance(reader.next(), HttpRequest)
    reader.response(200, "OK", [("Content-Length", "0")], b"")
    assert not reader.keep_alive()


def test_unfinished_requests_are_counted_per_ip_up_to_the_limit() -> None:
    pending = PendingRequests(max_per_ip=2, head_timeout=1.0, body_timeout=2.0)
    assert pending.enter("a") and pending.enter("a") and pending.enter("b")
    assert not pending.enter("a")
    assert (len(pending), pending.from_ip("a"), pending.refused) == (3, 2, 1)
    pending.leave("a")
    assert pending.enter("a")
    for ip in ("a", "a", "b"):
        pending.leave(ip)
    assert (len(pending), pending.from_ip("a"), pending.from_ip("b")) == (0, 0, 0)


@given(st.binary(max_size=400))
def test_parser_raises_only_http_errors(data: bytes) -> None:
    with contextlib.suppress(HttpError):
        read(data)
