"""The broker tier under kill -9: ``pgcast serve`` processes behind a load balancer,
a real nats-server, real PostgreSQL.

* Failover: kill -9 of the reader node; the next reader publishes within 5 s.
* Chaos: concurrent writers, client mirrors with filters (the mirror-convergence
  test's clients and writers), and a seeded schedule of kill -9 of the reader node,
  kill -9 of other nodes (each replaced by a new process), NATS kill -9 + restart
  on the same store, and client socket cuts. Once writes stop every mirror equals
  the table through its filter, no change id arrives twice, none owed is missing,
  per-row order holds. Bounded well under two minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from .nats_server import NatsServer, nats_server
from .test_cli import PGCAST, Background, cli_env, free_port, http_get, wait_healthy
from .test_mirror_convergence import (
    FILTERS,
    SENTINEL,
    WRITERS,
    Mirror,
    Proxy,
    Stats,
    make_items,
    wait_until,
    writer,
)

pytestmark = pytest.mark.timeout(170)

STREAM = "CHAOS"


class Fleet:
    """``pgcast serve`` processes sharing one database and one NATS server."""

    def __init__(self, dsn: str, nats: NatsServer) -> None:
        self.dsn = dsn
        self.nats = nats
        self.nodes: dict[int, Background] = {}
        self.killed = 0
        self.logs: list[str] = []  # stderr of the nodes that are gone

    async def add(self) -> int:
        port = free_port()
        env = {
            **cli_env(self.dsn),
            "PGCAST_BROKER": self.nats.url,
            "PGCAST_BROKER_STREAM": STREAM,
            "PGCAST_POLL_INTERVAL": "0.2",
            "PGCAST_PROBE_INTERVAL": "1",
        }
        proc = await asyncio.create_subprocess_exec(
            *PGCAST,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        node = Background(proc)
        self.nodes[port] = node
        await wait_healthy(port, timeout=30)
        return port

    async def role(self, port: int) -> str | None:
        try:
            _, body = await http_get(port, "/health")
        except OSError:
            return None
        broker = body.get("broker") or {}
        return broker.get("role")

    async def reader(self, timeout: float = 15.0) -> int:
        async with asyncio.timeout(timeout):
            while True:
                for port in list(self.nodes):
                    if await self.role(port) == "reader":
                        return port
                await asyncio.sleep(0.1)  # poll interval

    async def kill(self, port: int) -> None:
        node = self.nodes.pop(port)
        node.proc.send_signal(signal.SIGKILL)
        await node.exit_code()
        self.logs.append(node.stderr.text)
        self.killed += 1

    def ports(self) -> list[int]:
        return list(self.nodes)

    async def stop(self) -> None:
        for port in list(self.nodes):
            node = self.nodes.pop(port)
            if node.proc.returncode is None:
                node.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                await node.exit_code()
            with contextlib.suppress(Exception):
                await node.drained()
            self.logs.append(node.stderr.text)

    def problems(self) -> str:
        """The nodes' log lines that explain a failure (resyncs, stream trouble)."""
        keys = ("resync", "stream", "reader", "NATS", "Traceback")
        return "".join(
            line + "\n"
            for text in [*self.logs, *(n.stderr.text for n in self.nodes.values())]
            for line in text.splitlines()
            if any(k in line for k in keys)
        )[-6000:]


class Balancer(Proxy):
    """A client's proxy that sends each new connection to a live node, round robin."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__("127.0.0.1", 1)
        self.fleet = fleet
        self.turn = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports = self.fleet.ports()
        if not ports:
            writer.transport.abort()
            return
        self.turn += 1
        self.target = ("127.0.0.1", ports[self.turn % len(ports)])
        await super()._accept(reader, writer)


@contextlib.asynccontextmanager
async def fleet_of(dsn: str, nats: NatsServer, size: int) -> AsyncIterator[Fleet]:
    fleet = Fleet(dsn, nats)
    try:
        await asyncio.gather(*(fleet.add() for _ in range(size)))
        yield fleet
    finally:
        await fleet.stop()


@pytest.fixture
async def items(conn: asyncpg.Connection) -> asyncpg.Connection:
    return await make_items(conn, "trigger")


async def test_kill_9_of_the_reader_node_next_reader_publishes_within_5_s(
    database_url: str, items: asyncpg.Connection, tmp_path: Path
) -> None:
    async with nats_server(tmp_path) as nats, fleet_of(database_url, nats, 2) as fleet:
        reader = await fleet.reader()
        [follower] = [p for p in fleet.ports() if p != reader]
        from pgcast.client import connect

        async with (
            connect(f"ws://127.0.0.1:{follower}") as client,
            client.subscribe("items") as sub,
        ):
            frames = sub.__aiter__()
            await items.execute("UPDATE items SET v = v + 1 WHERE id = 1")
            first = await asyncio.wait_for(anext(frames), 10)
            assert first["type"] == "change"
            await fleet.kill(reader)
            killed_at = time.monotonic()
            await items.execute("UPDATE items SET v = v + 1 WHERE id = 2")
            change = await asyncio.wait_for(anext(frames), 10)
            took = time.monotonic() - killed_at
        assert change["record"]["id"] == 2
        assert took < 5.0, f"the next reader published {took:.1f} s after the kill"
        assert await fleet.role(follower) == "reader"
        count = await items.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name IN ('pgcast-reader', 'pgcast-listener')"
        )
        assert count == 1


def schedule(rng: random.Random) -> list[tuple[float, str]]:
    actions = (["kill_reader"] * 2 + ["kill_node"] * 2 + ["restart_nats"] * 2 + ["cut_one"] * 3) + [
        "cut_all"
    ]
    rng.shuffle(actions)
    return [(rng.uniform(0.5, 1.5), action) for action in actions]


async def test_mirrors_converge_through_nats_under_kill_9_and_nats_restarts(
    database_url: str, items: asyncpg.Connection, tmp_path: Path
) -> None:
    seed = 7
    rng = random.Random(seed)
    stats = Stats()
    started = time.monotonic()
    stop_writes = asyncio.Event()
    writers: list[asyncio.Task[None]] = []
    mirrors = [Mirror(i, f, seed, database_url) for i, f in enumerate(FILTERS)]
    nats_restarts = 0
    async with nats_server(tmp_path) as nats, fleet_of(database_url, nats, 3) as fleet:
        try:
            for mirror in mirrors:
                mirror.proxy = Balancer(fleet)
                await mirror.proxy.start()
                mirror.task = asyncio.create_task(mirror.run(f"ws://127.0.0.1:{mirror.proxy.port}"))
            writers = [
                asyncio.create_task(
                    writer(database_url, random.Random(f"{seed}-w{i}"), stop_writes, stats)
                )
                for i in range(WRITERS)
            ]
            for delay, action in schedule(rng):
                await asyncio.sleep(delay)  # the schedule's randomized spacing
                if action == "kill_reader":
                    await fleet.kill(await fleet.reader())
                    await fleet.add()
                elif action == "kill_node":
                    reader = await fleet.reader()
                    others = [p for p in fleet.ports() if p != reader]
                    await fleet.kill(rng.choice(others))
                    await fleet.add()
                elif action == "restart_nats":
                    await nats.restart()
                    nats_restarts += 1
                elif action == "cut_one":
                    proxy = rng.choice(mirrors).proxy
                    assert proxy is not None
                    proxy.cut()
                    stats.cuts += 1
                else:
                    for mirror in mirrors:
                        assert mirror.proxy is not None
                        mirror.proxy.cut()
                    stats.cuts += 1
            stop_writes.set()
            await asyncio.gather(*writers)
            await items.execute(
                "INSERT INTO items VALUES ($1, 1, 60, nextval('item_version'))", SENTINEL
            )
            table = [dict(r) for r in await items.fetch("SELECT * FROM items")]
            expected = [{r["id"]: r for r in table if m.filter.matches(r)} for m in mirrors]

            def converged() -> bool:
                return all(
                    m.error is not None or m.rows == want
                    for m, want in zip(mirrors, expected, strict=True)
                )

            ok = await wait_until(converged, 40.0)
            for mirror in mirrors:
                assert mirror.error is None, f"{mirror} failed: {mirror.error!r}"
            assert ok, (
                "mirrors did not converge: "
                + "; ".join(
                    f"{m}: missing {sorted(set(w) - set(m.rows))}, "
                    f"extra {sorted(set(m.rows) - set(w))}"
                    for m, w in zip(mirrors, expected, strict=True)
                    if m.rows != w
                )
                + "\nnodes said:\n"
                + fleet.problems()
            )
        finally:
            stop_writes.set()
            await asyncio.gather(*writers, return_exceptions=True)
            for mirror in mirrors:
                await mirror.close()

    log = await items.fetch(
        "SELECT id, op, record::text AS record, old_record::text AS old_record"
        " FROM pgcast.changes WHERE table_name = 'items' ORDER BY id"
    )
    changes = [(r["id"], r["op"], _json(r["record"]), _json(r["old_record"])) for r in log]
    lost_total = 0
    for mirror in mirrors:
        assert mirror.resyncs == 0, f"{mirror} got a resync; nodes said:\n{fleet.problems()}"
        doubled = {cid: n for cid, n in mirror.ids.items() if n > 1}
        assert not doubled, f"{mirror} received change ids twice: {doubled}"
        assert not mirror.violations, f"{mirror}: {mirror.violations[:10]}"
        assert mirror.position is not None
        owed = {
            cid
            for cid, op, record, old in changes
            if cid > mirror.position and mirror.wants(op, record, old)
        }
        lost = sorted(owed - set(mirror.ids))
        lost_total += len(lost)
        assert not lost, f"{mirror} never received {len(lost)} owed change(s): {lost[:20]}"
    print(
        "broker chaos round",
        json.dumps(
            {
                "seconds": round(time.monotonic() - started, 1),
                "changes": len(changes),
                "node_kills": fleet.killed,
                "nats_restarts": nats_restarts,
                "lost": lost_total,
                "duplicates_dropped_by_client": sum(m.duplicates_dropped for m in mirrors),
                **stats.__dict__,
            }
        ),
    )


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
