"""The native transport against hostile clients, frame by frame (real gateway, raw sockets).

Refused upgrades leave nothing behind; fragmented messages are reassembled (and
bounded); invalid UTF-8 closes with 1007; a head with bare LF line endings is
answered; unfinished requests are timed out (408) and capped per IP (429).
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import orjson
import pytest

from pgcast.transports.websocket import WebSocketConnection

from .gateway_helpers import TIMEOUT, running_gateway
from .test_authorization import make_auth
from .test_flood_bounds_transport import REFUSED_UPGRADES, closed_by_server, raw_upgrade

pytestmark = pytest.mark.timeout(60)


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame."""
    mask = b"\x05\x06\x07\x08"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return bytes([first, 0x80 | len(payload)]) + mask + body
    if len(payload) < 65536:
        return bytes([first, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + body
    return bytes([first, 0x80 | 127]) + len(payload).to_bytes(8, "big") + mask + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next server frame (unmasked): opcode and payload."""
    first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


async def close_code(reader: asyncio.StreamReader) -> int:
    """Skip frames until the server's close frame; its code."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big")


def live_connections() -> int:
    gc.collect()
    return sum(isinstance(o, WebSocketConnection) for o in gc.get_objects())


@pytest.mark.parametrize("mode", ["open", "tokens"])
async def test_refused_upgrades_leave_no_connection_behind(
    mode: str, database_url: str, tmp_path: Path
) -> None:
    auth = make_auth(tmp_path) if mode == "tokens" else None
    async with running_gateway(database_url, auth=auth) as gateway:
        before = live_connections()
        for i in range(60):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(REFUSED_UPGRADES[i % 3])
            response = await closed_by_server(reader, TIMEOUT)
            writer.close()
            assert response.startswith((b"HTTP/1.1 400", b"HTTP/1.1 426")), response[:60]
        # The protocol objects of closed connections must be collectable: nothing
        # (the admission table above all) may keep them.
        assert live_connections() <= before
        assert not gateway._admitted
        assert not gateway.clients
        assert len(gateway.pending_requests) == 0


async def test_fragmented_messages_are_reassembled_and_bounded(database_url: str) -> None:
    async with running_gateway(database_url, max_frame_bytes=4096) as gateway:
        reader, writer = await raw_upgrade(gateway.port)
        assert orjson.loads((await read_frame(reader))[1])["type"] == "welcome"
        # A ping split in three text fragments, a control frame between them, and an
        # "é" cut in half across a fragment boundary: one message.
        message = '{"type": "ping", "data": "café"}'.encode()
        cut = message.index("é".encode()) + 1
        writer.write(
            frame(0x1, message[:10], fin=False)
            + frame(0x9, b"between")
            + frame(0x0, message[10:cut], fin=False)
            + frame(0x0, message[cut:])
        )
        assert await read_frame(reader) == (0xA, b"between")
        assert orjson.loads((await read_frame(reader))[1]) == {"type": "pong", "data": "café"}
        # Fragments over max_frame_bytes in total: 1009, nothing buffered past the limit.
        writer.write(frame(0x1, b" " * 3000, fin=False) + frame(0x0, b" " * 3000))
        assert await close_code(reader) == 1009
        writer.close()


async def test_invalid_utf8_closes_with_1007(database_url: str) -> None:
    async with running_gateway(database_url) as gateway:
        for frames in (
            frame(0x1, b'{"type": "ping", "data": "\xff"}'),
            frame(0x1, b'{"type": "ping", ', fin=False) + frame(0x0, b'"data": "\xc3"}'),
        ):
            reader, writer = await raw_upgrade(gateway.port)
            assert orjson.loads((await read_frame(reader))[1])["type"] == "welcome"
            writer.write(frames)
            assert await close_code(reader) == 1007
            await closed_by_server(reader, TIMEOUT)
            writer.close()


async def test_a_head_with_bare_lf_line_endings_is_answered(database_url: str) -> None:
    async with running_gateway(database_url) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /health HTTP/1.1\nHost: x\nConnection: close\n\n")
        response = await closed_by_server(reader, TIMEOUT)
        writer.close()
        assert response.startswith(b"HTTP/1.1 200"), response[:60]
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"GET /ws HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert orjson.loads((await read_frame(reader))[1])["type"] == "welcome"
        writer.close()


async def test_unfinished_requests_time_out_and_are_capped_per_ip(database_url: str) -> None:
    async with running_gateway(
        database_url, head_timeout=0.5, body_timeout=0.5, max_pending_per_ip=2
    ) as gateway:
        port = gateway.port
        slow_head = await asyncio.open_connection("127.0.0.1", port)
        slow_head[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow_body = await asyncio.open_connection("127.0.0.1", port)
        slow_body[1].write(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"b" * 50
        )
        # The gateway counts them when it accepts them; a counter has no event to await.
        async with asyncio.timeout(TIMEOUT):
            while len(gateway.pending_requests) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # A third unfinished request from this IP is refused at once.
        third, third_writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await closed_by_server(third, 1.0)
        third_writer.close()
        assert refused.startswith(b"HTTP/1.1 429"), refused[:60]
        assert orjson.loads(refused.partition(b"\r\n\r\n")[2])["code"] == "rate_limited"
        # The two unfinished ones are answered 408 once their deadline passes.
        for (reader, writer), part in ((slow_head, b"head"), (slow_body, b"body")):
            answer = await closed_by_server(reader, TIMEOUT)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
            assert b"the request " + part + b" did not arrive within 0.5 s" in answer
        assert len(gateway.pending_requests) == 0
        assert gateway.pending_requests.timed_out == 2
