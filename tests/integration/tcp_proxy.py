"""A TCP proxy the tests control, to cut or silently freeze connections to PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; existing links can be frozen or cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def dsn(self, dsn: str) -> str:
        """``dsn`` rewritten to go through this proxy."""
        parts = urlsplit(dsn)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
        )

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def freeze(self) -> None:
        """Stop forwarding on every existing link without closing it (a silent death)."""
        for _, _, frozen in self.links:
            frozen.set()

    def cut(self) -> None:
        """Close every existing link abruptly."""
        for client, upstream, _ in self.links:
            for writer in (client, upstream):
                transport = writer.transport
                if not transport.is_closing():
                    transport.abort()
        self.links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        frozen = asyncio.Event()
        self.links.append((writer, up_writer, frozen))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, frozen))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, frozen: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while not frozen.is_set():
                data = await source.read(65536)
                if not data or frozen.is_set():
                    break
                sink.write(data)
                await sink.drain()
        if not frozen.is_set():
            sink.transport.abort()
        else:
            await asyncio.Event().wait()  # frozen: hold the socket open, forward nothing


@contextlib.asynccontextmanager
async def tcp_proxy(dsn: str):  # type: ignore[no-untyped-def]
    parts = urlsplit(dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
