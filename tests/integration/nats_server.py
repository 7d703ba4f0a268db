"""A real nats-server with JetStream for the broker tests: its own port and store
directory (never the machine's 4222 server), restartable on the same port with the
same store, as after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
INSTALLED = Path(NATS_SERVER).exists()
READY_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    def __init__(self, store: Path, port: int | None = None, *, user: str | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self.user = user  # "name:password": the server requires it
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        if self.user is not None:
            name, _, password = self.user.partition(":")
            args += ["--user", name, "--pass", password]
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        async with asyncio.timeout(READY_TIMEOUT):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError("nats-server exited:\n" + "".join(self.output))
                self.output.append(line)
                if "Server is ready" in line:
                    break
        self._drain = asyncio.ensure_future(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.output.append(line.decode())

    async def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), READY_TIMEOUT)
        with contextlib.suppress(Exception):
            await self._drain

    async def restart(self) -> None:
        await self.stop(kill=True)
        await self.start()


@contextlib.asynccontextmanager
async def nats_server(tmp: Path, **kwargs: object) -> AsyncIterator[NatsServer]:
    # Not a skip: a broker test that cannot run must not pass (.ci/run installs it).
    assert INSTALLED, "nats-server is not installed (apt-get install nats-server)"
    server = NatsServer(tmp / "nats-store", **kwargs)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
