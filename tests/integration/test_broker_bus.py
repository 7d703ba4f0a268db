"""Presence and broadcast over NATS (the broker's bus) on a real nats-server: order,
size limit, surviving a NATS restart, and two gateway nodes that meet only through
NATS (no PostgreSQL bus connection)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from pgcast.broker.bus import NatsBus
from pgcast.broker.link import BrokerLink
from pgcast.exceptions import BusError

from .gateway_helpers import running_gateway, ws_client
from .nats_server import NatsServer, nats_server
from .test_presence import FAST, join, next_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with nats_server(tmp_path) as server:
        yield server


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)  # poll interval


@contextlib.asynccontextmanager
async def bus_on(nats: NatsServer, got: list[bytes] | None = None) -> AsyncIterator[NatsBus]:
    link = BrokerLink(nats.url, "B")
    await link.connect(retry=False)
    bus = NatsBus(link, max_message_bytes=50_000)
    if got is not None:
        bus.subscribe("presence", got.append)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()
        await link.close()


async def test_nats_bus_messages_arrive_whole_and_in_order(nats: NatsServer) -> None:
    got: list[bytes] = []
    async with bus_on(nats) as a, bus_on(nats, got):
        messages = [b'{"n":%d}' % i for i in range(200)] + [b"x" * 49_000]
        for message in messages:
            await a.publish("presence", message)
        await until(lambda: len(got) == len(messages))
        assert got == messages
        with pytest.raises(BusError, match="at most 50000"):
            await a.publish("presence", b"x" * 50_001)
        with pytest.raises(BusError, match="not a short lowercase word"):
            await a.publish("a.>", b"{}")


async def test_nats_bus_delivers_again_after_nats_restarts(nats: NatsServer) -> None:
    got: list[bytes] = []
    async with bus_on(nats) as a, bus_on(nats, got) as b:
        await nats.restart()
        await until(lambda: a.connected and b.connected)

        async def delivered() -> None:
            while not got:
                # A publish may race the resubscription; a lost one is retried here.
                with contextlib.suppress(BusError):
                    await a.publish("presence", b'{"after":true}')
                await asyncio.sleep(0.05)

        await asyncio.wait_for(delivered(), 10)
        assert got[0] == b'{"after":true}'


async def test_presence_and_broadcast_between_nodes_over_nats(
    database_url: str, conn: asyncpg.Connection, nats: NatsServer
) -> None:
    settings = {**FAST, "broker": nats.url, "broker_stream": "P"}
    async with (
        running_gateway(database_url, **settings) as g1,
        running_gateway(database_url, **settings) as g2,
        ws_client(g1) as alice,
        ws_client(g2) as bob,
    ):
        assert isinstance(g1.realtime.bus, NatsBus)
        await join(bob)
        await join(alice)
        await alice.send({"type": "track", "topic": "room:1", "key": "alice", "state": {}})
        diff = await next_of(bob, "presence_diff")
        assert list(diff["joins"]) == ["alice"]
        await bob.send({"type": "broadcast", "topic": "room:1", "event": "e", "payload": 1})
        assert (await next_of(alice, "broadcast"))["payload"] == 1
        on_postgres = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'pgcast-bus'"
        )
        assert on_postgres == 0  # the nodes meet through NATS only


async def test_bad_broker_configuration_gets_one_line_errors(tmp_path: Path) -> None:
    from pgcast.exceptions import BrokerError

    async with nats_server(tmp_path, user="pgcast:right") as server:
        wrong = BrokerLink(f"nats://pgcast:wrong@127.0.0.1:{server.port}", "S")
        with pytest.raises(BrokerError) as refused:
            await wrong.connect(retry=False)
        assert "refused the credentials" in str(refused.value)
        assert "wrong" not in str(refused.value) and "\n" not in str(refused.value)
        right = BrokerLink(f"nats://pgcast:right@127.0.0.1:{server.port}", "MISSING")
        await right.connect(retry=False)
        try:
            with pytest.raises(BrokerError, match="stream 'MISSING' not found") as missing:
                await right.stream_info()
            assert "\n" not in str(missing.value)
        finally:
            await right.close()
    unreachable = BrokerLink(f"nats://127.0.0.1:{server.port}", "S")
    with pytest.raises(BrokerError, match="cannot reach NATS") as down:
        await unreachable.connect(retry=False)
    assert "\n" not in str(down.value)
