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
import signal
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
    profiler = None
    try:
        wait_for_port(port, 30)
        profiler = _start_profiler(kind, proc.pid)
        yield proc
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _start_profiler(kind: str, pid: int) -> subprocess.Popen[bytes] | None:
    """With ``PGCAST_BENCH_PROFILE=<dir>``, sample the gateway with py-spy (non-blocking,
    so the process is never paused) into ``<dir>/<kind>-<pid>.txt`` (collapsed stacks)."""
    directory = os.environ.get("PGCAST_BENCH_PROFILE")
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    output = Path(directory) / f"{kind}-{pid}.txt"
    command = [str(spy), "record", "--pid", str(pid), "--nonblocking", "--rate", "250"]
    command += ["--format", "raw", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


# --- process figures (the performance suite) -----------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    """/proc/loadavg's three load averages: recorded with every figure (shared machine)."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/<pid>/stat utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_kib(pid: int) -> int:
    """A process's resident set size in KiB (/proc/<pid>/status VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (capped by the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def prepare_table(
    dsn: str, table: str, ddl: str, target: str, capture: str = "trigger"
) -> None:
    """Create ``table`` with ``ddl`` (``{t}`` = the name) and make it deliver its changes:
    ``track`` it for pgcast (with ``capture``), or install the hand-written per-row
    NOTIFY trigger of bench/baseline/trigger.sql for the baseline."""
    from pgcast.capture.installer import track
    from pgcast.identifiers import parse_table_name

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(ddl.format(t=table))
        if target == "pgcast":
            await track(conn, parse_table_name(table), capture=capture)
        else:
            # trigger.sql is a psql script: drop its psql meta-commands, bind :"table".
            sql = (ROOT / "bench" / "baseline" / "trigger.sql").read_text()
            lines = [line for line in sql.splitlines() if not line.startswith("\\")]
            await conn.execute("\n".join(lines).replace(':"table"', f'"{table}"'))
    finally:
        await conn.close()


# Gateway settings the load tests need: one IP opens every connection, subscriptions
# arrive in bursts, and one connection may hold many subscriptions.
LOAD_ENV = {
    "PGCAST_MAX_CONNECTIONS_PER_IP": "0",
    "PGCAST_MAX_CONNECTIONS_PER_SUBJECT": "0",
    "PGCAST_SUBSCRIBE_RATE": "0",
    "PGCAST_MAX_SUBSCRIPTIONS": "10000",
}


class ClientProcess:
    """bench/clients.py in its own process: opens the WebSocket clients, subscribes,
    prints one JSON line when ready and one with its figures when done.

    ``await start()`` waits for the ready line; ``await finish()`` waits for the
    results (``stop()`` first to end a run that has no expected total).
    """

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, object] = {}

    async def start(self, timeout: float = 300) -> dict[str, object]:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bench" / "clients.py"),
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,
        )
        self.ready = await self._line(timeout)
        return self.ready

    async def _line(self, timeout: float) -> dict[str, object]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"bench/clients.py exited ({await self.proc.wait()})")
        result: dict[str, object] = orjson.loads(line)
        return result

    def stop(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")

    async def finish(self, timeout: float = 600) -> dict[str, object]:
        result = await self._line(timeout)
        assert self.proc is not None
        await self.proc.wait()
        return result

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


async def commit_rows(
    dsn: str,
    insert: str,
    count: int,
    *,
    connections: int = 1,
    synchronous_commit: str = "off",
    rate: float | None = None,
) -> dict[str, object]:
    """Commit ``count`` single-row statements, each its own transaction.

    ``insert`` takes ``$1`` (``time.time()`` just before it is sent) and returns the
    row id. ``connections`` writers share the work (row i goes to writer i % n);
    ``rate`` paces the whole at that many commits per second, else as fast as they
    can. Returns ``committed`` (row id -> ``time.time()`` when its commit was
    acknowledged), ``sent`` (row id -> stamp), ``started`` (``time.time()``) and
    ``elapsed`` seconds.
    """
    conns = [
        await asyncpg.connect(dsn, server_settings={"synchronous_commit": synchronous_commit})
        for _ in range(connections)
    ]
    committed: dict[int, float] = {}
    sent: dict[int, float] = {}
    start = time.monotonic()
    started = time.time()

    async def writer(k: int) -> None:
        conn = conns[k]
        for i in range(k, count, connections):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the writer to the target rate
            before = time.time()
            row_id = await conn.fetchval(insert, before)
            committed[row_id] = time.time()
            sent[row_id] = before

    try:
        await asyncio.gather(*(writer(k) for k in range(connections)))
    finally:
        elapsed = time.monotonic() - start
        for conn in conns:
            await conn.close()
    return {"committed": committed, "sent": sent, "started": started, "elapsed": elapsed}


# A WAL-mode benchmark's server: wal_level = logical, with fsync on as on a real
# server (the test cluster turns it off), and room for 64 pgbench clients.
BENCH_CLUSTER_SETTINGS = "fsync = on\nmax_connections = 200\n"


@contextlib.contextmanager
def logical_server(admin_dsn: str | None) -> Iterator[str]:
    """The admin DSN of a wal_level = logical server: ``admin_dsn`` if given, else a
    throwaway cluster (tests/integration/wal_cluster.py) for the run's duration."""
    if admin_dsn:
        yield admin_dsn
        return
    sys.path.insert(0, str(ROOT))
    from tests.integration.wal_cluster import wal_cluster

    with wal_cluster(BENCH_CLUSTER_SETTINGS) as cluster:
        yield cluster.admin_dsn
