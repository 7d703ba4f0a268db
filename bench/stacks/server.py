"""One fan-out benchmark server process (one variant), driven by ``run.py``.

Every variant runs on the stdlib asyncio event loop (no uvloop) and exposes, besides
its WebSocket port, a line-based TCP control port:

``clients``      -> number of open WebSocket connections
``bcast M B``    -> broadcast M ~300-byte JSON messages, B at a time (a "batch" is what the
                   gateway would read from the log in one go); replies with the monotonic
                   time just before the first send, when the send loop returned, and the
                   process CPU time at the start
``cpu``          -> process CPU time (user + system) now

Variants:

``websockets``          websockets.asyncio.server.serve + websockets.broadcast(), one str
                        per message
``uvicorn-loop``        uvicorn (websockets-sansio impl) + Starlette; for each message,
                        ``for ws in clients: await ws.send_text(msg)``
``uvicorn-gather``      same server; for each batch,
                        ``asyncio.gather(*(send_all(ws, msgs) for ws in clients))``
``native-join``         asyncio.Protocol + websockets sans-I/O ServerProtocol for the
                        handshake and incoming frames; each message encoded once with
                        pgcast.transports.frames.text_frame; one
                        ``transport.write(b"".join(frames))`` per connection per batch
``native-writelines``   same, with ``transport.writelines(frames)``
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Awaitable, Callable

import orjson

Broadcast = Callable[[list[bytes], int], Awaitable[None]]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_payloads(count: int, start: int = 0, size: int = 300) -> list[bytes]:
    """``count`` distinct row-change JSON documents of exactly ``size`` bytes."""
    payloads = []
    for i in range(start, start + count):
        change = {
            "lsn": f"0/{0x16B3748 + i * 64:X}",
            "xid": 7000 + i,
            "op": "UPDATE",
            "table": "public.orders",
            "commit_time": "2025-01-01T12:00:00.123456+00:00",
            "row": {
                "id": i,
                "customer_id": 1000 + i % 97,
                "status": "shipped",
                "amount_cents": 12345 + i,
                "currency": "EUR",
                "updated_at": "2025-01-01T12:00:00.123456+00:00",
                "note": "",
            },
        }
        pad = size - len(orjson.dumps(change))
        change["row"]["note"] = "x" * max(pad, 0)  # type: ignore[index]
        payloads.append(orjson.dumps(change))
    return payloads


# --------------------------------------------------------------------------- control


async def serve_control(port: int, count: Callable[[], int], broadcast: Broadcast) -> None:
    seq = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seq
        while line := await reader.readline():
            cmd, *args = line.decode().split()
            if cmd == "clients":
                reply: object = count()
            elif cmd == "cpu":
                reply = {"cpu": cpu_seconds()}
            elif cmd == "bcast":
                messages, batch = int(args[0]), int(args[1])
                payloads = make_payloads(messages, seq)  # prepared before timing starts
                seq += messages
                cpu0 = cpu_seconds()
                t0 = time.monotonic()
                await broadcast(payloads, batch)
                t1 = time.monotonic()
                reply = {"t0": t0, "t_sent": t1, "cpu0": cpu0}
            else:
                reply = {"error": cmd}
            writer.write(orjson.dumps(reply) + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    await server.start_serving()


# ------------------------------------------------------------------ a. websockets


async def run_websockets(port: int, control_port: int) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    conns: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def broadcast(payloads: list[bytes], batch: int) -> None:
        texts = [p.decode() for p in payloads]  # websockets.broadcast gets one str per message
        for i in range(0, len(texts), batch):
            for text in texts[i : i + batch]:
                websockets.broadcast(conns, text)
            await asyncio.sleep(0)

    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=None,
        max_queue=None,
        backlog=4096,
    ):
        await serve_control(control_port, lambda: len(conns), broadcast)
        await asyncio.Future()


# ------------------------------------------------------------- b. uvicorn+Starlette


async def run_uvicorn(port: int, control_port: int, mode: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    clients: set[WebSocket] = set()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        clients.add(ws)
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            clients.discard(ws)

    async def broadcast_loop(payloads: list[bytes], batch: int) -> None:
        texts = [p.decode() for p in payloads]
        for i in range(0, len(texts), batch):
            for text in texts[i : i + batch]:
                for ws in list(clients):
                    await ws.send_text(text)
            await asyncio.sleep(0)

    async def send_all(ws: WebSocket, texts: list[str]) -> None:
        for text in texts:
            await ws.send_text(text)

    async def broadcast_gather(payloads: list[bytes], batch: int) -> None:
        texts = [p.decode() for p in payloads]
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            await asyncio.gather(*(send_all(ws, chunk) for ws in list(clients)))

    app = Starlette(routes=[WebSocketRoute("/", endpoint)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",  # we own the (stdlib asyncio) loop
        ws="websockets-sansio",  # what ws="auto" picks with websockets installed
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
        backlog=4096,
    )
    broadcast = broadcast_loop if mode == "loop" else broadcast_gather
    await serve_control(control_port, lambda: len(clients), broadcast)
    await uvicorn.Server(config).serve()


# ---------------------------------------------------------------------- c/d. native


class NativeConnection(asyncio.Protocol):
    """websockets sans-I/O for the handshake and incoming frames; raw frame writes out."""

    def __init__(self, registry: set[NativeConnection]) -> None:
        from websockets.server import ServerProtocol

        self.registry = registry
        self.ws = ServerProtocol()
        self.transport: asyncio.Transport | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        from websockets.http11 import Request
        from websockets.protocol import State

        ws, transport = self.ws, self.transport
        assert transport is not None
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                response = ws.accept(event)
                ws.send_response(response)
                if response.status_code == 101:
                    self.open = True
                    self.registry.add(self)
            # Frames from the client: ServerProtocol already queued pongs / close replies.
        for chunk in ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
        if ws.state is State.CLOSED or ws.close_expected():
            self.registry.discard(self)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)


async def run_native(port: int, control_port: int, mode: str) -> None:
    from pgcast.transports.frames import text_frame

    conns: set[NativeConnection] = set()

    async def broadcast_join(payloads: list[bytes], batch: int) -> None:
        for i in range(0, len(payloads), batch):
            frames = [text_frame(p) for p in payloads[i : i + batch]]  # encoded once
            for conn in conns:
                # joined per connection: with per-connection filters every
                # connection's pending list would differ, so don't share the join
                conn.transport.write(b"".join(frames))  # type: ignore[union-attr]
            await asyncio.sleep(0)

    async def broadcast_writelines(payloads: list[bytes], batch: int) -> None:
        for i in range(0, len(payloads), batch):
            frames = [text_frame(p) for p in payloads[i : i + batch]]
            for conn in conns:
                conn.transport.writelines(frames)  # type: ignore[union-attr]
            await asyncio.sleep(0)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: NativeConnection(conns), "127.0.0.1", port, backlog=4096
    )
    broadcast = broadcast_join if mode == "join" else broadcast_writelines
    async with server:
        await serve_control(control_port, lambda: len(conns), broadcast)
        await server.serve_forever()


VARIANTS: dict[str, Callable[[int, int], Awaitable[None]]] = {
    "websockets": run_websockets,
    "uvicorn-loop": lambda p, c: run_uvicorn(p, c, "loop"),
    "uvicorn-gather": lambda p, c: run_uvicorn(p, c, "gather"),
    "native-join": lambda p, c: run_native(p, c, "join"),
    "native-writelines": lambda p, c: run_native(p, c, "writelines"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(VARIANTS[args.variant](args.port, args.control_port))


if __name__ == "__main__":
    main()
