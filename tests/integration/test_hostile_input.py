"""Bad input over the wire gets a clear error or close code and harms no one else."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from websockets.exceptions import ConnectionClosed

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, running_gateway, stalled_subscriber, ws_client


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
    await track(conn, parse_table_name("orders"))
    return conn


HOSTILE_FRAMES = [
    ("not json at all", "bad_frame", None),
    ("[]", "bad_frame", None),
    ('{"type":"launch_missiles"}', "unknown_type", None),
    ('{"type":"subscribe","id":"a","table":"orders","filter":"status=like.x"}', "bad_filter", "a"),
    ('{"type":"subscribe","id":"b","table":"orders","filter":"nope=eq.1"}', "bad_filter", "b"),
    (
        '{"type":"subscribe","id":"c","table":"orders; DROP TABLE orders","filter":"status=eq.1"}',
        "unknown_table",
        "c",
    ),
    ('{"type":"subscribe","id":"d","table":"pg_authid"}', "unknown_table", "d"),
    ('{"type":"subscribe","id":"e","table":"orders","columns":["nope"]}', "bad_request", "e"),
    ('{"type":"subscribe","id":"f","channel":"pgcast"}', "forbidden_channel", "f"),
    ('{"type":"subscribe","id":"g","channel":"secret_stuff"}', "forbidden_channel", "g"),
    ('{"type":"unsubscribe","id":"never"}', "unknown_subscription", "never"),
    ('{"type":"publish","id":"p","channel":"x","payload":"y"}', "forbidden_channel", "p"),
]


async def test_each_bad_frame_gets_its_error_and_the_connection_keeps_working(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, ws_client(gateway) as client:
        for frame, code, sub_id in HOSTILE_FRAMES:
            await client.send(frame)
            reply = await client.recv()
            assert reply["type"] == "error", frame
            assert (reply["code"], reply["id"]) == (code, sub_id), frame
            assert reply["message"]
        await client.send(b"\x00\x01binary")
        reply = await client.recv()
        assert reply["code"] == "bad_frame"
        # still serving this client
        ack = await client.subscribe("ok", table="orders")
        assert ack["type"] == "subscribed"
        duplicate = await client.subscribe("ok", table="orders")
        assert duplicate["code"] == "duplicate_id"
        await orders.execute("INSERT INTO orders (status) VALUES ('x')")
        (change,) = await client.changes(1)
        assert change["sub"] == "ok"
    assert await orders.fetchval("SELECT count(*) FROM orders") == 1


async def test_oversized_frame_closes_with_1009_and_others_keep_receiving(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url, max_frame_bytes=4096) as gateway,
        ws_client(gateway) as bystander,
        ws_client(gateway) as attacker,
    ):
        await bystander.subscribe("s", table="orders")
        await attacker.send('{"type":"ping","data":"' + "x" * 10_000 + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            await attacker.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await orders.execute("INSERT INTO orders (status) VALUES ('after')")
        (change,) = await bystander.changes(1)
        assert change["record"]["status"] == "after"


async def test_subscription_flood_hits_the_limit_with_a_clear_error(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url, max_subscriptions=5) as gateway,
        ws_client(gateway) as client,
    ):
        for i in range(5):
            assert (await client.subscribe(f"s{i}", table="orders"))["type"] == "subscribed"
        refused = await client.subscribe("s5", table="orders")
        assert refused["code"] == "too_many_subscriptions"
        await client.send({"type": "unsubscribe", "id": "s0"})
        assert (await client.recv())["type"] == "unsubscribed"
        assert (await client.subscribe("s5", table="orders"))["type"] == "subscribed"


async def test_client_that_stops_reading_is_closed_with_4001_and_others_unaffected(
    database_url: str, orders: asyncpg.Connection
) -> None:
    """A stalled socket fills its bounded outbox and is told to reconnect and resume."""
    async with (
        running_gateway(database_url, outbox_limit=50) as gateway,
        ws_client(gateway) as healthy,
    ):
        await healthy.subscribe("s", table="orders")
        reader, writer = await stalled_subscriber(gateway.port, "orders")
        _, stalled_conn = gateway.clients  # in connection order
        note = "x" * 2000
        async with asyncio.timeout(60):
            while stalled_conn.is_open:
                await orders.execute(
                    "INSERT INTO orders (status) SELECT $1 FROM generate_series(1, 200)", note
                )
                await healthy.changes(200)
        # the stalled socket, read at last, ends with a close frame carrying 4001
        assert await asyncio.wait_for(_close_code(reader), TIMEOUT) == 4001
        writer.close()


async def _close_code(reader: asyncio.StreamReader) -> int:
    """Skip server frames until the close frame; return its code."""
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        if first & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


async def test_http_paths_other_than_ws_and_health(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway:
        for request, status in [
            # Answered requests keep the connection alive unless the client says close.
            (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
            (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", b"426"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"200"),
            (
                b"POST /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: 2\r\n\r\n{}",
                b"200",
            ),
            (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", b"413"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 300 + b"\r\n", b"431"),
            (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
            (
                b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Content-Length: 3\r\n\r\n{}",
                b"400",
            ),  # conflicting lengths: refused, never one of them taken
        ]:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(request)
            response = await asyncio.wait_for(reader.read(), TIMEOUT)
            writer.close()
            assert response.split(b" ")[1] == status, request
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert answer.startswith(b"HTTP/1.1 400")  # a clear refusal, then the socket closes
        writer.close()
        assert gateway.health()["status"] == "ok"


async def test_one_huge_batch_to_a_stalled_client_does_not_pile_up_in_memory(
    database_url: str, orders: asyncpg.Connection
) -> None:
    """The outbox limit holds even when a single batch is larger than the socket can take."""
    async with running_gateway(database_url) as gateway, ws_client(gateway) as healthy:
        await healthy.subscribe("s", table="orders")
        reader, writer = await stalled_subscriber(gateway.port, "orders")
        _, stalled = gateway.clients
        # one statement: ~40 MB of changes, read by the gateway in 5,000-row batches
        await orders.execute(
            "INSERT INTO orders (status) SELECT repeat('x', 20000) FROM generate_series(1, 2000)"
        )
        await healthy.changes(2000, timeout=60)
        # every batch has been dispatched: the stalled socket must have been cut, so
        # reading it now ends (EOF) instead of waiting forever
        async with asyncio.timeout(30):
            while await reader.read(1 << 20):
                pass
        assert gateway.overflows >= 1
        assert stalled not in gateway.clients
        writer.close()
