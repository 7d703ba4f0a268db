"""Helpers for integration tests: a real gateway on a free port, and a raw WS client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from pgcast.auth import AuthConfig
from pgcast.config import Settings
from pgcast.server import Gateway

TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def running_gateway(
    dsn: str, *, auth: AuthConfig | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """A started gateway; ``overrides`` go to Settings, ``auth`` to the Gateway (None: open)."""
    settings = Settings(**{"port": 0, "poll_interval": 0.5, "probe_interval": 2.0, **overrides})
    gateway = Gateway(settings, dsn, auth=auth)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


class WsClient:
    """A minimal protocol-level client for asserting exactly what the server sends."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            await self.ws.send(orjson.dumps(message).decode())
        else:
            await self.ws.send(message)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = orjson.loads(raw)
        return message

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Receive until a message of type ``kind`` arrives (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv(timeout)
                if message["type"] == kind:
                    return message

    async def subscribe(self, sub_id: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "subscribe", "id": sub_id, **fields})
        return await self.recv()

    async def changes(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(received) < count:
                message = await self.recv(timeout)
                if message["type"] == "change":
                    received.append(message)
        return received


@contextlib.asynccontextmanager
async def ws_client(gateway: Gateway, **kwargs: Any) -> AsyncIterator[WsClient]:
    async with connect(f"ws://127.0.0.1:{gateway.port}/ws", max_size=None, **kwargs) as ws:
        client = WsClient(ws)
        welcome = await client.recv()
        assert welcome["type"] == "welcome"
        yield client


async def stalled_subscriber(
    port: int, table: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket client that subscribes to ``table`` and then reads nothing.

    Returns once the `subscribed` ack was read, with the stream at a frame boundary;
    the caller decides when (if ever) to read again.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    payload = orjson.dumps({"type": "subscribe", "id": "slow", "table": table})
    mask = b"\x01\x02\x03\x04"  # client frames are masked
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    await writer.drain()
    # the ack ends with the table name: the stream is then at a frame boundary
    await asyncio.wait_for(reader.readuntil(f'"table":"{table}"}}'.encode()), TIMEOUT)
    return reader, writer
