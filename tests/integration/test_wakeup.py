"""The gateway sees commits within milliseconds although writers do not NOTIFY.

Counts come from the gateway itself (``pgcast_log_reads_total``) and from an
independent LISTEN connection on the ``pgcast`` channel.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from pgcast.capture.installer import track
from pgcast.capture.sql import CHANNEL
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway

from .gateway_helpers import running_gateway, ws_client

WAIT = 20.0


@pytest.fixture
async def items(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL DEFAULT 0)")
    await track(conn, parse_table_name("items"))
    return conn


async def wait_idle(gateway: Gateway) -> None:
    """Until the reader has armed the wake-up and sleeps (polled: it is a state)."""
    async with asyncio.timeout(WAIT):
        while True:
            if gateway.listener.idle:
                return
            await asyncio.sleep(0.01)


async def test_concurrent_writers_reach_the_subscriber_with_a_bounded_number_of_notifies(
    database_url: str, items: asyncpg.Connection
) -> None:
    writers, per_writer = 4, 60
    heard: list[str] = []
    marker = asyncio.Event()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        heard.append(payload)
        if payload == "marker":
            marker.set()

    spy = await asyncpg.connect(database_url)
    await spy.add_listener(CHANNEL, on_notify)
    pool = await asyncpg.create_pool(database_url, min_size=writers, max_size=writers)

    async def write(w: int) -> None:
        for i in range(per_writer):
            await pool.execute("INSERT INTO items (id) VALUES ($1)", w * 1000 + i)

    try:
        async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
            await client.subscribe("s", table="items")
            reads_before = gateway.listener.log_reads
            await asyncio.gather(*(write(w) for w in range(writers)))
            got = await client.changes(writers * per_writer, timeout=WAIT)
            reads = gateway.listener.log_reads - reads_before
            # Notifications arrive in commit order: once this marker is heard, every
            # notification a writer sent has been heard too.
            await spy.execute("SELECT pg_notify($1, 'marker')", CHANNEL)
            await asyncio.wait_for(marker.wait(), WAIT)
    finally:
        await pool.close()
        await spy.close()
    ids = sorted(c["record"]["id"] for c in got)
    assert ids == sorted(w * 1000 + i for w in range(writers) for i in range(per_writer))
    notifies = heard.count("")
    # At most one notifying writer per arming, an arming at most once per read: and
    # far fewer than one per transaction (the old trigger sent 240 here).
    assert notifies <= reads + 1
    assert notifies <= writers * per_writer // 10, (notifies, reads)


async def test_idle_reader_sends_about_one_query_per_poll_interval(
    database_url: str, items: asyncpg.Connection
) -> None:
    async with running_gateway(database_url, poll_interval=0.25) as gateway:
        async with ws_client(gateway) as client:
            await client.subscribe("s", table="items")
            await items.execute("INSERT INTO items (id) VALUES (1)")
            await client.changes(1)
        await wait_idle(gateway)
        before = metric(await gateway_metrics(gateway), "pgcast_log_reads_total")
        started = time.monotonic()
        await asyncio.sleep(2.0)  # a measurement window, not a wait for an event
        elapsed = time.monotonic() - started
        after = metric(await gateway_metrics(gateway), "pgcast_log_reads_total")
    # 8 polls in 2 s at 0.25 s; fast polling (2 ms) would be ~1,000.
    assert after - before <= elapsed / 0.25 + 2, after - before


async def test_a_change_after_a_long_idle_arrives_within_milliseconds(
    database_url: str, items: asyncpg.Connection
) -> None:
    # poll_interval 10 s: only the armed wake-up can deliver within the bound.
    async with (
        running_gateway(database_url, poll_interval=10.0) as gateway,
        ws_client(gateway) as client,
    ):
        await client.subscribe("s", table="items")
        for i in range(3):
            await wait_idle(gateway)
            started = time.monotonic()
            await items.execute("INSERT INTO items (id) VALUES ($1)", i)
            [change] = await client.changes(1, timeout=WAIT)
            latency = time.monotonic() - started
            assert change["record"]["id"] == i
            assert latency < 1.0, latency  # typically a few ms; 1 s for a loaded CI box


async def gateway_metrics(gateway: Gateway) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    return body.decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
