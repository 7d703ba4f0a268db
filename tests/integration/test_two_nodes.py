"""Two ``pgcast serve`` processes on one database; a client moves from node A to node B.

The client's URL is a small TCP proxy (the test's load balancer). The client reads
changes through it from node A; the proxy is then drained of A (new connections wait,
and will go to B) and A gets SIGTERM: it closes the client's WebSocket with 4000 and
exits 0. Changes committed while the client is between nodes, and live ones on B,
must reach the same subscription exactly once, equal to the change log, in per-row
commit order, so that a mirror built from the stream equals the table.

No fixed sleeps: processes, frames and states are awaited with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from pgcast.client import ClientStatus, connect

from .tcp_proxy import TcpProxy
from .test_cli import Background, Cli, assert_no_traceback, free_port, wait_healthy
from .test_restarts import (
    Collector,
    assert_exactly_once,
    assert_matches_log,
    assert_per_row_order,
    create_items,
    fast_backoff,
    fence,
    log_of,
    mirror,
    table_rows,
)

pytestmark = pytest.mark.timeout(120)


class LoadBalancer(TcpProxy):
    """A TcpProxy whose target can be switched, and which can hold new connections."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self.accepting = asyncio.Event()
        self.accepting.set()

    def retarget(self, port: int) -> None:
        self.target = ("127.0.0.1", port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.accepting.wait()  # a held connection waits (its handshake bytes queue up)
        try:
            await super()._accept(reader, writer)
        except OSError:
            writer.transport.abort()  # target down: the client sees a failed connect


@contextlib.asynccontextmanager
async def node(cli: Cli) -> AsyncIterator[tuple[Background, int]]:
    port = free_port()
    async with cli.start("serve", "--host", "127.0.0.1", "--port", str(port)) as proc:
        await proc.stderr.expect(lambda line: f"serving ws://127.0.0.1:{port}/ws" in line)
        await wait_healthy(port)
        yield proc, port
        if proc.proc.returncode is None:
            proc.proc.send_signal(signal.SIGTERM)
            await proc.exit_code()


async def listeners(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcast-listener' "
        "AND datname = current_database()"
    )
    return count


async def test_client_moves_from_a_stopped_node_to_another_without_loss(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgcast.client")
    await create_items(conn)
    cli = Cli(tmp_path, database_url)
    async with node(cli) as (node_a, port_a), node(cli) as (node_b, port_b):
        assert await listeners(conn) == 2  # each node holds its own LISTEN connection
        balancer = LoadBalancer(port_a)
        await balancer.start()
        try:
            async with (
                connect(f"ws://127.0.0.1:{balancer.port}", backoff_factory=fast_backoff) as client,
                client.subscribe("items") as sub,
            ):
                collector = Collector(sub)
                for i in range(1, 6):
                    await conn.execute("INSERT INTO items (id, v) VALUES ($1, 0)", i)
                await collector.wait(lambda c: len(c.ids) == 5, "5 changes from node A")
                on_a = len(collector.changes)

                # Drain A from the balancer, then stop it as a process manager would.
                balancer.accepting.clear()
                balancer.retarget(port_b)
                node_a.proc.send_signal(signal.SIGTERM)
                await client.wait_status(ClientStatus.OFFLINE, ClientStatus.CONNECTING)
                assert await node_a.exit_code() == 0
                assert_no_traceback(node_a.stderr.text)
                assert any(
                    "closed (code 4000" in record.getMessage() for record in caplog.records
                ), "node A did not close the client with 4000"
                assert await listeners(conn) == 1

                # Committed while the client is between nodes.
                for k in range(1, 8):
                    await conn.execute("UPDATE items SET v = $1 WHERE id = $2", k, k % 5 + 1)
                await conn.execute(
                    "INSERT INTO items (id, v) SELECT g, g FROM generate_series(6, 9) g"
                )
                async with conn.transaction():
                    await conn.execute("DELETE FROM items WHERE id = 6")
                    await conn.execute("UPDATE items SET v = -5 WHERE id = 5")
                missed = set(await log_of(conn)) - set(collector.ids)
                assert len(missed) == 13

                balancer.accepting.set()  # the client's URL now leads to node B
                await client.wait_status(ClientStatus.LIVE)
                await collector.wait_ids(missed)
                await conn.execute("UPDATE items SET v = 77 WHERE id = 1")  # live on B
                await fence(conn, [collector], 21)
                _, health = await wait_healthy_clients(port_b)
                assert health == 1
                log = await log_of(conn)
                await collector.stop()
        finally:
            await balancer.stop()
        assert_no_traceback(node_b.stderr.text)

    stream = collector.changes
    assert on_a == 5 and len(stream) > on_a
    assert_exactly_once(stream, log)
    assert_matches_log(stream, log)
    assert_per_row_order(stream)
    assert mirror(stream) == await table_rows(conn)


async def wait_healthy_clients(port: int) -> tuple[dict[str, object], int]:
    body = await wait_healthy(port)
    clients = body["clients"]
    assert isinstance(clients, int)
    return body, clients
