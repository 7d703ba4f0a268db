"""The plain HTTP request parser refuses hostile heads with the right status."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcast.transports.http import (
    MAX_HEADER_BYTES,
    HttpError,
    canonical_head,
    head_complete,
    parse_head,
)
from pgcast.transports.pending import PendingRequests


def test_parses_request_line_headers_query_and_body_length() -> None:
    head = (
        b"POST /api/orders?x=1&y=a%20b HTTP/1.1\r\nHost: h\r\n"
        b"Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"
    )
    assert head_complete(head + b"{}") == len(head)
    request, length = parse_head(head)
    assert (request.method, request.path, length) == ("POST", "/api/orders", 12)
    assert request.query == {"x": "1", "y": "a b"}
    assert request.header("content-type") == "application/json"
    assert not request.is_websocket_upgrade


def test_websocket_upgrade_is_recognised() -> None:
    request, _ = parse_head(
        b"GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert request.is_websocket_upgrade


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/2\r\n\r\n", 400),
        (b"BREW /pot HTTP/1.1\r\n\r\n", 405),
        (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
    ],
)
def test_hostile_heads_get_their_status(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse_head(head)
    assert caught.value.status == status


def test_endless_head_is_refused() -> None:
    with pytest.raises(HttpError) as caught:
        head_complete(b"GET / HTTP/1.1\r\n" + b"X" * (MAX_HEADER_BYTES + 10))
    assert caught.value.status == 431
    assert head_complete(b"GET / HTTP/1.1\r\n") == 0


@pytest.mark.parametrize(
    "head",
    [
        b"POST /a?x=1 HTTP/1.1\nHost: h\nContent-Length: 2\n\n",
        b"POST /a?x=1 HTTP/1.1\r\nHost: h\nContent-Length: 2\r\n\n",
        b"POST /a?x=1 HTTP/1.1\nHost: h\r\nContent-Length: 2\n\r\n",
    ],
)
def test_bare_lf_line_endings_are_accepted(head: bytes) -> None:
    assert head_complete(head + b"{}") == len(head)
    request, length = parse_head(head)
    assert (request.method, request.path, request.query, length) == ("POST", "/a", {"x": "1"}, 2)
    assert request.headers == [("Host", "h"), ("Content-Length", "2")]
    assert canonical_head(head) == (b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n")


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
        end = head_complete(data)
        if end:
            parse_head(data[:end])
