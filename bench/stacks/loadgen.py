"""Load generator for the fan-out benchmark, driven by ``run.py`` over stdin/stdout.

Opens ``--clients`` WebSocket connections as raw asyncio Protocols (the HTTP upgrade is
written by hand) and counts received text frames by parsing the unmasked server frame
headers in place: no per-message objects, payloads are skipped, not copied.

stdin commands: ``expect K TIMEOUT`` resets the counters and arms the generator; it prints
``armed``, then one JSON line once every client has received K text frames (or TIMEOUT
seconds passed): frames received, the monotonic time the last client completed, and
this process's CPU time over the round.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import sys
import time

import orjson

_OP_TEXT = 1


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Round:
    __slots__ = ("done", "expect", "remaining", "t_last")

    def __init__(self, expect: int, clients: int) -> None:
        self.expect = expect
        self.remaining = clients
        self.t_last = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def client_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.t_last = time.monotonic()
            if not self.done.done():
                self.done.set_result(None)


class Client(asyncio.Protocol):
    __slots__ = (
        "count",
        "handshake",
        "hbuf",
        "host",
        "opened",
        "port",
        "round",
        "skip",
        "transport",
    )

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.opened = asyncio.get_running_loop().create_future()
        self.handshake = b""
        self.hbuf = b""  # partial frame header carried over between reads
        self.skip = 0  # payload bytes of the current frame still to skip
        self.count = 0
        self.round: Round | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.handshake.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(self.handshake[:200].decode()))
                return
            data = self.handshake[end + 4 :]
            self.handshake = b""
            self.opened.set_result(None)
            if not data:
                return
        n = len(data)
        pos = self.skip
        if pos >= n:
            self.skip = pos - n
            return
        self.skip = 0
        if self.hbuf:
            data = self.hbuf + data[pos:]
            self.hbuf = b""
            pos, n = 0, len(data)
        count = 0
        while pos < n:
            if n - pos < 2:
                self.hbuf = data[pos:]
                break
            length = data[pos + 1] & 0x7F
            if length < 126:
                head = 2
            elif length == 126:
                if n - pos < 4:
                    self.hbuf = data[pos:]
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            else:
                if n - pos < 10:
                    self.hbuf = data[pos:]
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            if data[pos] & 0x0F == _OP_TEXT:
                count += 1
            pos += head + length
        if pos > n:
            self.skip = pos - n
        if count:
            self.count += count
            rnd = self.round
            if rnd is not None and self.count >= rnd.expect and self.count - count < rnd.expect:
                rnd.client_done()


async def connect_all(host: str, port: int, n: int, parallel: int = 50) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []

    async def one() -> None:
        client = Client(host, port)
        await loop.create_connection(lambda: client, host, port)
        await client.opened
        clients.append(client)

    for i in range(0, n, parallel):
        await asyncio.gather(*(one() for _ in range(min(parallel, n - i))))
    return clients


async def main_async(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    clients = await connect_all(args.host, args.port, args.clients)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(line: bytes) -> None:
        sys.stdout.buffer.write(line + b"\n")
        sys.stdout.buffer.flush()

    say(b"ready")
    while line := await reader.readline():
        cmd, *rest = line.decode().split()
        if cmd != "expect":
            continue
        expect, timeout = int(rest[0]), float(rest[1])
        rnd = Round(expect, len(clients))
        for client in clients:
            client.count = 0
            client.round = rnd
        cpu0 = cpu_seconds()
        say(b"armed")
        complete = True
        try:
            await asyncio.wait_for(asyncio.shield(rnd.done), timeout)
        except TimeoutError:
            complete = False
            rnd.t_last = time.monotonic()
        cpu = cpu_seconds() - cpu0
        say(
            orjson.dumps(
                {
                    "frames": sum(c.count for c in clients),
                    "t_last": rnd.t_last,
                    "cpu": cpu,
                    "complete": complete,
                }
            )
        )
    for client in clients:
        if client.transport is not None:
            client.transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
