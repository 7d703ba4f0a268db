"""Catch-up floods: a gateway in a subprocess keeps its memory bounded and keeps serving.

Each test floods a real gateway (its own process, so its RSS can be read from
/proc/<pid>/status) with clients that ask for a snapshot or replay and then do not
read, or with crafted resume positions, and proves two things: the peak RSS stays
within a stated bound above the idle gateway's, and another tenant's small
snapshot, replay and publish complete promptly meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from websockets.asyncio.client import connect

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import WsClient

PAD = 1000  # bytes of padding per row: floods of real size without many rows
PROMPT = 10.0  # seconds another tenant may wait for its snapshot/replay/publish

_GATEWAY = """
import asyncio, json, sys
from pgcast.config import Settings
from pgcast.server import serve

def ready(gateway):
    print(gateway.port, flush=True)

asyncio.run(serve(Settings(**json.loads(sys.argv[2])), sys.argv[1], on_ready=ready))
"""


class GatewayProcess:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    def memory_kb(self, field: str) -> int:
        """VmRSS (now) or VmHWM (peak) of the gateway process, in kB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    async def get(self, path: str) -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        body = data.partition(b"\r\n\r\n")[2]
        return orjson.loads(body) if path == "/health" else body.decode()

    async def wait_for(self, what: str, check: Callable[[Any], bool], timeout: float) -> Any:
        """Poll /health until ``check`` holds (a condition, not a fixed sleep)."""
        async with asyncio.timeout(timeout):
            while True:
                health = await self.get("/health")
                if check(health):
                    return health
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def gateway_process(dsn: str, **settings: Any) -> AsyncIterator[GatewayProcess]:
    config = orjson.dumps({"port": 0, "poll_interval": 0.2, **settings}).decode()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _GATEWAY, dsn, config, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        yield GatewayProcess(process, int(line))
    finally:
        process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def client(port: int, *, reading: bool = True) -> AsyncIterator[WsClient]:
    """A WebSocket client; ``reading=False``: a tiny receive window and frame queue,
    so once the caller stops calling recv() the gateway's socket backs up at once."""
    sock = socket.socket()
    if not reading:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    async with connect(
        "ws://127.0.0.1/ws", sock=sock, max_size=None, max_queue=1 if not reading else 16
    ) as ws:
        ws_client = WsClient(ws)
        assert (await ws_client.recv())["type"] == "welcome"
        yield ws_client


async def close_code(reader: asyncio.StreamReader, timeout: float) -> int | None:
    """Read (and drop) frames until the gateway's close frame; its code (None: no close)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                head = await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return None
            length = head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2))
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if head[0] & 0x0F == 0x8:
                return int.from_bytes(payload[:2])


async def serves_another_tenant(port: int, snapshot_table: str, replay_table: str) -> float:
    """Another tenant's small snapshot, replay and publish; seconds they took."""
    started = time.monotonic()
    async with asyncio.timeout(PROMPT), client(port) as good:
        await good.send({"type": "subscribe", "id": "s", "table": snapshot_table, "snapshot": True})
        await good.recv_type("subscribed")
        await good.send({"type": "subscribe", "id": "r", "table": replay_table, "since": "0"})
        await good.recv_type("subscribed")
        await good.send({"type": "subscribe", "id": "n", "channel": "system_notifications"})
        await good.recv_type("subscribed")
        await good.send(
            {"type": "publish", "id": "p", "channel": "system_notifications", "payload": "hi"}
        )
        message = await good.recv_type("message")
        assert message["payload"] == "hi"
    return time.monotonic() - started


Stalled = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def flood(port: int, count: int, subscribe: dict[str, Any]) -> AsyncIterator[list[Stalled]]:
    """``count`` raw clients with a tiny receive window that send ``subscribe`` and then
    read nothing (the caller may read their frames later)."""
    stalled: list[Stalled] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            stalled.append((reader, writer))
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            payload = orjson.dumps({"type": "subscribe", "id": "x", **subscribe})
            mask = b"\x01\x02\x03\x04"  # client frames are masked
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        yield stalled
    finally:
        for _, writer in stalled:
            writer.close()


async def make_table(conn: asyncpg.Connection, name: str, rows: int, *, log: bool) -> None:
    """A tracked table of ``rows`` padded rows; ``log``: written after tracking (logged)."""
    await conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, pad text)")
    insert = (
        f"INSERT INTO {name} SELECT g, repeat('x', {PAD}) FROM generate_series($1::int, $2::int) g"
    )
    if not log:
        await conn.execute(insert, 1, rows)
    await track(conn, parse_table_name(name))
    if log:
        for start in range(1, rows + 1, 5000):
            await conn.execute(insert, start, min(rows, start + 4999))


async def idle_in_transaction(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state LIKE 'idle in transaction%'"
    )
    return count


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll a database condition (no event tells when a session ends) with a timeout."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def test_snapshot_clients_that_never_read_cost_only_themselves(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Four non-reading `snapshot: true` clients of a 20 MB table (the pool has 4)."""
    await make_table(conn, "big", 20_000, log=False)
    await make_table(conn, "small", 5, log=True)
    async with gateway_process(database_url, catch_up_drain_timeout=2.0) as gateway:
        idle_kb = gateway.memory_kb("VmRSS")
        async with flood(gateway.port, 4, {"table": "big", "snapshot": True}) as hostile:
            # The flood is on once the snapshots' transactions are (three or four of them).
            await eventually(lambda: _transactions_at_least(conn, 3), 10)
            took = await serves_another_tenant(gateway.port, "small", "small")
            health = await gateway.get("/health")
            assert health["catch_up"]["limit"] == 3  # one pool connection stays free
            # Each stalled snapshot is closed 4001 (resume works) and its transaction ends.
            await gateway.wait_for(
                "the slow closes", lambda h: h["catch_up"]["slow_closes"] == 4, 10
            )
            codes = await asyncio.gather(*(close_code(reader, 5) for reader, _ in hostile))
            assert codes == [4001] * 4
            await eventually(lambda: _no_idle_transactions(conn), 10)
            health = await gateway.get("/health")
            assert health["catch_up"]["slow_closes"] == 4
            assert health["catch_up"]["running"] == 0 and health["catch_up"]["waiting"] == 0
        growth_mb = (gateway.memory_kb("VmHWM") - idle_kb) / 1024
    print(f"another tenant served in {took:.2f}s; peak RSS growth {growth_mb:.1f} MB")
    assert growth_mb < 40, f"peak RSS grew {growth_mb:.1f} MB under the snapshot flood"


async def _no_idle_transactions(conn: asyncpg.Connection) -> bool:
    return await idle_in_transaction(conn) == 0


async def _transactions_at_least(conn: asyncpg.Connection, count: int) -> bool:
    found: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
    )
    return found >= count


async def test_crafted_positions_are_refused_before_any_read(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await make_table(conn, "events", 20_000, log=True)
    head = await conn.fetchval("SELECT max(id) FROM pgcast.changes")
    async with gateway_process(database_url) as gateway, client(gateway.port) as probe:
        # Beyond the log (another database, a restored backup, or crafted): resync.
        for n, since in enumerate([str(2**63 - 1), f"{2**63 - 1}:5:", f"{head}:{2**40}:"]):
            await probe.send(
                {"type": "subscribe", "id": f"a{n}", "table": "events", "since": since}
            )
            first = await probe.recv()
            assert first["type"] == "resync" and "ahead" in first["reason"], first
            assert (await probe.recv())["type"] == "subscribed"
        # Not a position any snapshot has: a clear error, nothing read.
        for n, since in enumerate([f"{2**63 - 1}:0:", f"{head}:10:10,11"]):
            await probe.send(
                {"type": "subscribe", "id": f"b{n}", "table": "events", "since": since}
            )
            refused = await probe.recv()
            assert refused["type"] == "error" and refused["code"] == "bad_request", refused


async def test_parallel_big_replays_and_wide_positions_stay_bounded(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Eight non-reading `since=0` replays and four with the widest valid position, over
    a 20 MB log: pages are read one at a time, so memory does not follow the log."""
    await make_table(conn, "events", 20_000, log=True)
    await make_table(conn, "small", 5, log=True)
    head = await conn.fetchval("SELECT max(id) FROM pgcast.changes")
    async with gateway_process(database_url, catch_up_drain_timeout=30.0) as gateway:
        idle_kb = gateway.memory_kb("VmRSS")
        async with (
            flood(gateway.port, 8, {"table": "events", "since": "0"}) as replays,
            flood(gateway.port, 4, {"table": "events", "since": f"{head}:3:"}),
        ):
            # The flood is on once its first replay page arrives.
            await asyncio.wait_for(replays[0][0].readuntil(b'"type":"change"'), 10)
            took = await serves_another_tenant(gateway.port, "small", "small")
            health = await gateway.get("/health")
            assert health["catch_up"]["subscriptions"] == 12  # all still stalled
            growth_mb = (gateway.memory_kb("VmHWM") - idle_kb) / 1024
            assert await idle_in_transaction(conn) == 0  # replays hold no transaction
    print(f"another tenant served in {took:.2f}s; peak RSS growth {growth_mb:.1f} MB")
    assert growth_mb < 60, f"peak RSS grew {growth_mb:.1f} MB under the replay flood"


async def test_live_changes_during_a_stalled_replay_are_bounded_and_all_delivered(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """A replay whose client stalls while 20 MB of live changes arrive: the buffer holds
    at most catch_up_buffer_limit of them, the rest is read from the log again, and the
    client still gets every change exactly once, in order."""
    await make_table(conn, "events", 8_000, log=True)
    async with gateway_process(
        database_url, catch_up_drain_timeout=60.0, catch_up_buffer_limit=100
    ) as gateway:
        idle_kb = gateway.memory_kb("VmRSS")
        async with client(gateway.port, reading=False) as slow:
            await slow.send({"type": "subscribe", "id": "e", "table": "events", "since": "0"})
            await gateway.wait_for("the replay to start", lambda h: h["subscriptions"] == 1, 10)
            insert = (
                "INSERT INTO events SELECT g, repeat('y', $3::int)"
                " FROM generate_series($1::int, $2::int) g"
            )
            for start in range(8_001, 28_001, 2000):
                await conn.execute(insert, start, start + 1999, PAD)
            last = await conn.fetchval("SELECT max(id) FROM pgcast.changes")
            await gateway.wait_for(
                "the listener to dispatch every change",
                lambda h: int(h["listener"]["position"]) >= last,
                30,
            )
            growth_mb = (gateway.memory_kb("VmHWM") - idle_kb) / 1024
            ids: list[int] = []
            rows: list[int] = []
            async with asyncio.timeout(60):
                while len(rows) < 28_000:
                    message = await slow.recv()
                    if message["type"] == "change":
                        ids.append(int(message["id"]))
                        rows.append(message["record"]["id"])
                    else:
                        assert message["type"] == "subscribed", message
            assert rows == list(range(1, 28_001))  # all, once, in commit order
            assert ids == sorted(ids)
        print(f"peak RSS growth while the replay stalled: {growth_mb:.1f} MB")
        assert growth_mb < 30, f"peak RSS grew {growth_mb:.1f} MB while the replay stalled"
        metrics = await gateway.get("/metrics")
    assert "pgcast_catch_up_buffer_overflows_total 1" in metrics  # it read the log again


async def test_messages_sent_while_a_catch_up_blocks_their_connection_are_bounded(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """A client whose snapshot stalls (it reads nothing) keeps sending 900 KB messages:
    its connection's messages wait for the catch-up, and the gateway stops reading
    that socket after about 1 MiB of them (not after 64 messages, up to 64 MiB)."""
    await make_table(conn, "big", 20_000, log=False)
    await make_table(conn, "small", 5, log=True)
    async with gateway_process(database_url, catch_up_drain_timeout=3.0) as gateway:
        idle_kb = gateway.memory_kb("VmRSS")
        async with flood(gateway.port, 1, {"table": "big", "snapshot": True}) as hostile:
            await eventually(lambda: _transactions_at_least(conn, 1), 10)
            _, writer = hostile[0]
            message = orjson.dumps({"type": "ping", "pad": "x" * 900_000})
            # A zero mask leaves the payload as is (clients must mask; any key is valid).
            frame = bytes([0x81, 0x80 | 127]) + len(message).to_bytes(8) + bytes(4) + message
            for _ in range(60):
                writer.write(frame)
            await gateway.wait_for(
                "the stalled snapshot's close", lambda h: h["catch_up"]["slow_closes"] == 1, 15
            )
            growth_mb = (gateway.memory_kb("VmHWM") - idle_kb) / 1024
        took = await serves_another_tenant(gateway.port, "small", "small")
    print(f"peak RSS growth {growth_mb:.1f} MB; another tenant served in {took:.2f}s")
    assert growth_mb < 30, f"peak RSS grew {growth_mb:.1f} MB from 54 MB of queued messages"
