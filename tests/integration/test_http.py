"""Plain HTTP on the gateway's port (h11): keep-alive, HEAD, pipelining."""

from __future__ import annotations

import asyncio

import orjson

from .gateway_helpers import TIMEOUT, running_gateway


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *lines = head.rstrip(b"\r\n").split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
    length = int(headers.get(b"content-length", b"0"))
    body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT) if length else b""
    return status_line, headers, body


async def test_one_connection_answers_several_requests_and_head_has_no_body(
    database_url: str,
) -> None:
    async with running_gateway(database_url) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = await _response(reader)
            assert status.startswith(b"HTTP/1.1 200") and b"connection" not in headers
            assert orjson.loads(body)["status"] == "ok"
            # Same connection: a HEAD (length, no body), then two pipelined GETs.
            writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head
            writer.write(
                b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n"
            )
            status, _, _ = await _response(reader)
            assert status.startswith(b"HTTP/1.1 404")  # the HEAD sent no body before it
            status, _, body = await _response(reader)
            assert status.startswith(b"HTTP/1.1 200") and orjson.loads(body)["sse"] == "/sse"
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed as asked
        finally:
            writer.close()
        assert len(gateway.pending_requests) == 0
