"""The PostgreSQL bus on a real database: order, chunking, limits, reconnect, and presence
and broadcast between two Realtime nodes joined only by it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import orjson
import pytest

from pgcast.bus_postgres import CHUNK_BYTES, PostgresBus, split_utf8
from pgcast.exceptions import BusError
from pgcast.realtime import Realtime
from pgcast.topics import Member

from ..unit.test_realtime import Sink

pytestmark = pytest.mark.timeout(60)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def fast_backoff() -> object:
    while True:
        yield 0.05


def test_split_utf8_never_cuts_a_character() -> None:
    text = ("é" * 10 + "€" + "a") * 700
    pieces = split_utf8(text.encode(), 101)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 101 for p in pieces)


async def test_messages_arrive_whole_and_in_order_chunked_or_not(database_url: str) -> None:
    a, b = PostgresBus(database_url), PostgresBus(database_url)
    got: list[bytes] = []
    b.subscribe("presence", got.append)
    other: list[bytes] = []
    b.subscribe("broadcast", other.append)
    await a.start()
    await b.start()
    try:
        big = orjson.dumps({"text": "ü€" * 20_000})  # ~100 kB: many NOTIFYs
        assert len(big) > 10 * CHUNK_BYTES
        messages = [b'{"n":1}', big, b'{"n":3}']
        for message in messages:
            await a.publish("presence", message)
        await until(lambda: len(got) == 3)
        assert got == messages
        assert other == []
    finally:
        await a.close()
        await b.close()


async def test_oversized_and_non_text_messages_are_refused(database_url: str) -> None:
    bus = PostgresBus(database_url, max_message_bytes=20_000)
    await bus.start()
    try:
        with pytest.raises(BusError, match="at most 20000"):
            await bus.publish("presence", b"x" * 20_001)
        with pytest.raises(BusError, match="UTF-8"):
            await bus.publish("presence", b"\xff\xfe")
        with pytest.raises(BusError, match="NUL"):
            await bus.publish("presence", b"a\x00b")
    finally:
        await bus.close()


async def test_bus_reconnects_after_its_connection_is_killed(database_url: str) -> None:
    a = PostgresBus(database_url, backoff_factory=fast_backoff)  # type: ignore[arg-type]
    b = PostgresBus(database_url, backoff_factory=fast_backoff)  # type: ignore[arg-type]
    got: list[bytes] = []
    b.subscribe("presence", got.append)
    await a.start()
    await b.start()
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pgcast-bus' AND datname = current_database()"
        )
        await until(lambda: a.reconnects >= 1 and b.reconnects >= 1 and a.connected and b.connected)

        async def delivered() -> None:
            while not got:
                # A publish may race the reconnect; the caller sees BusError and retries.
                with contextlib.suppress(BusError):
                    await a.publish("presence", b'{"after":true}')
                await asyncio.sleep(0.05)

        await asyncio.wait_for(delivered(), 10)
        assert got[0] == b'{"after":true}'
    finally:
        await admin.close()
        await a.close()
        await b.close()


async def test_presence_and_broadcast_between_two_nodes_over_postgres(database_url: str) -> None:
    fast = {"heartbeat_interval": 0.3, "node_timeout": 1.0, "sweep_interval": 0.05}
    n1 = Realtime(PostgresBus(database_url), **fast)  # type: ignore[arg-type]
    n2 = Realtime(PostgresBus(database_url), **fast)  # type: ignore[arg-type]
    await n1.start()
    await n2.start()
    try:
        alice, bob = Sink(), Sink()
        n1.join(Member("a", "room", alice))
        n2.join(Member("b", "room", bob))
        n1.track("a", "room", "alice", {"online_at": 1})
        await until(lambda: "alice" in bob.joined_keys())
        await n2.broadcast("room", "hello", {"from": "bob"}, sender="b")
        await until(lambda: len(alice.broadcasts) == 1)
        assert alice.broadcasts[0].payload == {"from": "bob"} and bob.broadcasts == []
        # n1 dies without a goodbye: its bus connection is cut and it sends nothing more.
        for task in n1._tasks:
            task.cancel()
        await n1.bus.close()
        died = time.monotonic()
        await until(lambda: "alice" in bob.left_keys(), timeout=10)
        assert time.monotonic() - died < 1.0 + 0.05 + 2.0  # timeout + sweep + slack
    finally:
        await n1.stop()
        await n2.stop()
