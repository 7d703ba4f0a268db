"""Shared pieces of the benchmarks: scratch databases, gateway processes, raw clients.

The raw client is an asyncio Protocol that does the WebSocket upgrade by hand and
parses unmasked server frames in place, so the load generator costs far less than
the server it measures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DSN = os.environ.get("PGCAST_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(admin_dsn: str, database: str) -> str:
    return admin_dsn.rsplit("/", 1)[0] + "/" + database


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database, dropped afterwards."""
    name = f"pgcast_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield dsn_for(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def gateway_process(
    kind: str, dsn: str, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the pgcast gateway or the hand-written baseline as a separate process.

    ``env`` adds environment variables (e.g. ``PGCAST_OUTBOX_LIMIT``).
    """
    if kind == "pgcast":
        args = [
            sys.executable,
            "-m",
            "pgcast.cli",
            "--log-level",
            "warning",
            "serve",
            "--database-url",
            dsn,
            "--port",
            str(port),
        ]
    else:
        args = [
            sys.executable,
            str(ROOT / "bench" / "baseline" / "gateway.py"),
            "--dsn",
            dsn,
            "--port",
            str(port),
        ]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, 30)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a port that is coming up
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    header = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return header + mask + masked


class RawClient(asyncio.Protocol):
    """Counts text frames; hands payloads to ``on_payload`` when one is set.

    Records the code of a close frame from the server (``close_code``) and when the
    connection ended (``lost``: a future set to the time, ``lost_error`` the cause).
    """

    def __init__(self, on_payload: Callable[[bytes], None] | None = None) -> None:
        self.on_payload = on_payload
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.upgraded = False
        self.frames = 0
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.close_code: int | None = None
        self.lost: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.lost_error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del buf[: end + 4]
            self.upgraded = True
            self.opened.set_result(None)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if n - start < length:
                break
            if buf[pos] & 0x0F == 1:
                self.frames += 1
                if self.on_payload is not None:
                    self.on_payload(bytes(buf[start : start + length]))
            elif buf[pos] & 0x0F == 8 and length >= 2:
                self.close_code = int.from_bytes(buf[start : start + 2], "big")
            pos = start + length
        del buf[:pos]
        if self.waiters:
            still = []
            for count, future in self.waiters:
                if self.frames >= count and not future.done():
                    future.set_result(None)
                elif not future.done():
                    still.append((count, future))
            self.waiters = still

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_error = exc
        if not self.lost.done():
            self.lost.set_result(time.monotonic())

    async def wait_frames(self, count: int, timeout: float) -> None:
        if self.frames >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((count, future))
        await asyncio.wait_for(future, timeout)

    def send(self, message: dict[str, object]) -> None:
        assert self.transport is not None
        self.transport.write(masked_text_frame(orjson.dumps(message)))


async def open_clients(
    port: int, count: int, factory: Callable[[int], RawClient]
) -> list[RawClient]:
    loop = asyncio.get_running_loop()
    clients = []
    for i in range(count):
        _, client = await loop.create_connection(lambda i=i: factory(i), "127.0.0.1", port)
        clients.append(client)
    await asyncio.gather(*(c.opened for c in clients))
    return clients


def fetch_health(port: int) -> dict[str, object]:
    """The gateway's /health document (blocking; use asyncio.to_thread in async code)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        health: dict[str, object] = orjson.loads(response.read())
        return health


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
