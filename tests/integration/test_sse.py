"""Server-Sent Events (``GET /sse``) on real PostgreSQL, with a raw asyncio HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from pgcast import protocol
from pgcast.capture.installer import track
from pgcast.config import Settings
from pgcast.events import Horizon
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway
from pgcast.transports import sse

from ..conftest import ADMIN_DSN
from .gateway_helpers import TIMEOUT, running_gateway


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: str | None


@dataclass
class SseClient:
    """Reads an event stream line by line, as an EventSource does."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str | None = None

    async def event(self, timeout: float = TIMEOUT) -> Event:
        """The next event; EOFError when the server ends the stream."""
        kind, data, event_id = "message", "", None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.reader.readline()
                if not raw.endswith(b"\n"):
                    raise EOFError("the stream ended")
                line = raw[:-1].decode()
                if not line:
                    if data:
                        if event_id is not None:
                            self.last_event_id = event_id
                        return Event(kind, orjson.loads(data), event_id)
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(": ")
                if name == "event":
                    kind = value
                elif name == "data":
                    data = value if not data else data + "\n" + value
                elif name == "id":
                    event_id = value
                elif name == "retry":
                    self.retry = int(value)

    async def next_of(self, kind: str, timeout: float = TIMEOUT) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.event(timeout)
                if event.event == kind:
                    return event

    async def changes(self, count: int, timeout: float = TIMEOUT) -> list[Event]:
        got: list[Event] = []
        async with asyncio.timeout(timeout):
            while len(got) < count:
                event = await self.event(timeout)
                if event.event == "change":
                    got.append(event)
        return got

    async def closed(self, timeout: float = TIMEOUT) -> list[Event]:
        """Read until the server closes the stream; the events read on the way."""
        events: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    events.append(await self.event(timeout))
                except EOFError:
                    return events

    async def body(self) -> dict[str, Any]:
        length = int(self.headers["content-length"])
        decoded: dict[str, Any] = orjson.loads(await self.reader.readexactly(length))
        return decoded

    def close(self) -> None:
        self.writer.close()


async def open_sse(
    port: int, params: dict[str, str] | str, *, last_event_id: str | None = None
) -> SseClient:
    query = params if isinstance(params, str) else urlencode(params)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    request = f"GET /sse?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
    if last_event_id is not None:
        request += f"Last-Event-ID: {last_event_id}\r\n"
    writer.write((request + "\r\n").encode())
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return SseClient(reader, writer, int(status_line.split()[1]), headers)


@contextlib.asynccontextmanager
async def sse_client(
    gateway: Gateway, params: dict[str, str] | str, *, last_event_id: str | None = None
) -> AsyncIterator[SseClient]:
    client = await open_sse(gateway.port, params, last_event_id=last_event_id)
    try:
        yield client
    finally:
        client.close()


async def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll a condition on the gateway's state until it holds (TimeoutError otherwise)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (gateway state has no event to wait on)
            await asyncio.sleep(0.01)


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute(
        "CREATE TABLE orders (id serial PRIMARY KEY, status text, amount int, note text)"
    )
    await track(conn, parse_table_name("orders"))
    return conn


async def test_changes_arrive_as_events_with_ids(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url) as gateway,
        sse_client(gateway, {"table": "orders"}) as client,
    ):
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream"
        assert client.headers["cache-control"] == "no-store"
        assert client.headers["x-accel-buffering"] == "no"
        assert client.headers["connection"] == "keep-alive"
        subscribed = await client.event()
        assert client.retry == 1000
        assert subscribed.event == "subscribed"
        assert subscribed.data == {
            "type": "subscribed",
            "id": "sse",
            "schema": "public",
            "table": "orders",
        }
        # Resumable before the first change: the position a welcome would carry (the
        # gateway's, taken when it subscribed; its reader keeps polling meanwhile, and
        # other sessions of the server move xmax, so compare, do not equate).
        position, now = Horizon.parse(subscribed.id or ""), Horizon.parse(gateway.position() or "")
        assert position is not None and now is not None
        assert position.head == now.head == 0 and position.xmax <= now.xmax
        assert gateway.health()["clients"] == 1 and gateway.hub.subscription_count() == 1
        await orders.execute("INSERT INTO orders (status, amount) VALUES ('new', 1)")
        await orders.execute("UPDATE orders SET status = 'paid\nline two' WHERE id = 1")
        insert, update = await client.changes(2)
    assert insert.data["type"] == "change" and insert.data["sub"] == "sse"
    assert insert.data["op"] == "INSERT" and insert.data["record"]["amount"] == 1
    assert update.data["op"] == "UPDATE" and update.data["record"]["status"] == "paid\nline two"
    for event in (insert, update):
        assert event.id == event.data["id"]
    assert int(insert.id or 0) < int(update.id or 0)


async def test_filter_events_and_columns_from_query_parameters(
    database_url: str, orders: asyncpg.Connection
) -> None:
    params = {
        "table": "orders",
        "schema": "public",
        "filter": "status=eq.pending&amount=gt.10",
        "events": "insert,DELETE",
        "columns": "id,amount",
    }
    async with (
        running_gateway(database_url) as gateway,
        sse_client(gateway, params) as client,
    ):
        assert (await client.event()).event == "subscribed"
        await orders.execute(
            "INSERT INTO orders (status, amount) VALUES ('pending', 5), ('new', 50), "
            "('pending', 20)"
        )
        await orders.execute("UPDATE orders SET amount = 30 WHERE id = 3")  # not an event
        await orders.execute("DELETE FROM orders WHERE id IN (1, 3)")
        await orders.execute("INSERT INTO orders (status, amount) VALUES ('pending', 99)")
        got = await client.changes(3)  # the last one is a sentinel: nothing came between
    assert [(e.data["op"], e.data["record"] or e.data["old_record"]) for e in got] == [
        ("INSERT", {"id": 3, "amount": 20}),
        ("DELETE", {"id": 3, "amount": 30}),
        ("INSERT", {"id": 4, "amount": 99}),
    ]


async def test_last_event_id_replays_exactly_the_missed_changes(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway:
        async with sse_client(gateway, {"table": "orders"}) as client:
            await client.next_of("subscribed")
            await orders.execute("INSERT INTO orders (amount) VALUES (1)")
            (first,) = await client.changes(1)
        await wait_for(lambda: gateway.hub.subscription_count() == 0)
        await orders.execute("INSERT INTO orders (amount) VALUES (2)")
        await orders.execute("INSERT INTO orders (amount) VALUES (3)")
        # Last-Event-ID wins over the URL's since (which would replay everything).
        async with sse_client(
            gateway, {"table": "orders", "since": "0"}, last_event_id=first.id
        ) as client:
            replayed = await client.changes(2)
            subscribed = await client.next_of("subscribed")
            assert subscribed.data["replayed"] == 2
            assert subscribed.id is None  # keeps the last change's id
            await orders.execute("INSERT INTO orders (amount) VALUES (4)")
            (live,) = await client.changes(1)
    assert [e.data["record"]["amount"] for e in replayed] == [2, 3]
    assert live.data["record"]["amount"] == 4
    assert client.last_event_id == live.id


async def test_since_parameter_without_last_event_id(
    database_url: str, orders: asyncpg.Connection
) -> None:
    await orders.execute("INSERT INTO orders (amount) SELECT g FROM generate_series(1, 4) g")
    first_id = await orders.fetchval("SELECT min(id) FROM pgcast.changes")
    async with (
        running_gateway(database_url) as gateway,
        sse_client(gateway, {"table": "orders", "since": str(first_id + 1)}) as client,
    ):
        replayed = await client.changes(2)
        assert (await client.next_of("subscribed")).data["replayed"] == 2
    assert [e.data["record"]["amount"] for e in replayed] == [3, 4]


async def test_snapshot_then_changes_and_resume_from_the_snapshot_position(
    database_url: str, orders: asyncpg.Connection
) -> None:
    await orders.execute(
        "INSERT INTO orders (status, amount) VALUES ('pending', 1), ('new', 2), ('pending', 3)"
    )
    params = {"table": "orders", "filter": "status=eq.pending", "snapshot": "true"}
    async with running_gateway(database_url) as gateway:
        async with sse_client(gateway, params) as client:
            snapshot = await client.event()
            assert snapshot.event == "snapshot" and snapshot.data["sub"] == "sse"
            assert snapshot.data["done"] is True and snapshot.id == snapshot.data["position"]
            assert sorted(row["amount"] for row in snapshot.data["rows"]) == [1, 3]
            subscribed = await client.event()
            assert subscribed.event == "subscribed" and subscribed.data["snapshot_rows"] == 2
            assert subscribed.id == subscribed.data["position"]
            await orders.execute("INSERT INTO orders (status, amount) VALUES ('pending', 4)")
            (change,) = await client.changes(1)
            assert change.data["record"]["amount"] == 4
        await wait_for(lambda: gateway.hub.subscription_count() == 0)
        await orders.execute("INSERT INTO orders (status, amount) VALUES ('pending', 5)")
        # The EventSource reconnects to the same URL: resume, no second snapshot.
        async with sse_client(gateway, params, last_event_id=subscribed.id) as client:
            resumed = await client.changes(2)
            assert (await client.next_of("subscribed")).data["replayed"] == 2
    assert [e.data["record"]["amount"] for e in resumed] == [4, 5]


async def test_only_the_last_snapshot_chunk_carries_a_resume_id(
    database_url: str, orders: asyncpg.Connection
) -> None:
    await orders.execute("INSERT INTO orders (amount) SELECT g FROM generate_series(1, 600) g")
    async with (
        running_gateway(database_url) as gateway,
        sse_client(gateway, {"table": "orders", "snapshot": "true"}) as client,
    ):
        first, last = await client.event(), await client.event()
        subscribed = await client.event()
    assert (first.event, first.data["part"], first.data["done"], first.id) == (
        "snapshot",
        0,
        False,
        None,
    )
    assert (last.event, last.data["part"], last.data["done"]) == ("snapshot", 1, True)
    assert len(first.data["rows"]) + len(last.data["rows"]) == 600
    assert last.id == last.data["position"] == subscribed.id


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"table": "orders", "filter": "status=zz.1"}, 400, "bad_filter"),
        ({"table": "orders", "filter": "nope=eq.1"}, 400, "bad_filter"),
        ({"table": "orders", "events": "INSERT,EXPLODE"}, 400, "bad_request"),
        ({"table": "orders", "since": "x1"}, 400, "bad_request"),
        ({"table": "orders", "snapshot": "yes"}, 400, "bad_request"),
        ({"table": "orders", "columns": "id,nope"}, 400, "bad_request"),
        ("table=orders&table=other", 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"table": "missing"}, 404, "unknown_table"),
        ({"channel": "forbidden_one"}, 403, "forbidden_channel"),
        ({"channel": "system_notifications", "filter": "a=eq.1"}, 400, "bad_request"),
    ],
)
async def test_refused_subscriptions_get_an_http_error_with_a_json_body(
    database_url: str,
    orders: asyncpg.Connection,
    params: dict[str, str] | str,
    status: int,
    code: str,
) -> None:
    async with running_gateway(database_url) as gateway:
        async with sse_client(gateway, params) as client:
            assert client.status == status
            assert client.headers["content-type"] == "application/json"
            body = await client.body()
            assert set(body) == {"type", "code", "message"}
            assert body["type"] == "error" and body["code"] == code and body["message"]
            assert await client.reader.read() == b""  # and the connection is closed
        await wait_for(lambda: gateway.health()["clients"] == 0)
        assert gateway.hub.subscription_count() == 0


async def test_last_event_id_that_is_not_a_change_id_is_refused(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url) as gateway,
        sse_client(gateway, {"table": "orders"}, last_event_id="abc") as client,
    ):
        assert client.status == 400
        assert (await client.body())["code"] == "bad_request"


async def test_channel_subscription_receives_notify_messages(
    database_url: str, conn: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url) as gateway,
        # A channel has no replay: a Last-Event-ID is ignored.
        sse_client(gateway, {"channel": "system_notifications"}, last_event_id="7") as client,
    ):
        subscribed = await client.event()
        assert subscribed.data == {
            "type": "subscribed",
            "id": "sse",
            "channel": "system_notifications",
        }
        assert subscribed.id is None
        await conn.execute("SELECT pg_notify('system_notifications', $1)", '{"a":\n1}')
        message = await client.event()
    assert message.event == "message" and message.id is None
    assert message.data == {
        "type": "message",
        "sub": "sse",
        "channel": "system_notifications",
        "payload": '{"a":\n1}',
    }


async def test_client_disconnect_removes_the_subscription(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway:
        clients = [await open_sse(gateway.port, {"table": "orders"}) for _ in range(3)]
        for client in clients:
            await client.next_of("subscribed")
        assert gateway.health()["clients"] == 3 and gateway.hub.subscription_count() == 3
        for client in clients:
            client.close()
        await wait_for(
            lambda: gateway.hub.subscription_count() == 0 and gateway.health()["clients"] == 0
        )
        # and a write after that goes nowhere, without errors
        await orders.execute("INSERT INTO orders (amount) VALUES (1)")
        await wait_for(lambda: gateway.changes_in == 1)
        assert gateway.deliveries_out == 0


async def test_gateway_stop_closes_the_stream(
    database_url: str, orders: asyncpg.Connection
) -> None:
    gateway = Gateway(Settings(port=0, poll_interval=0.5, probe_interval=2.0), database_url)
    await gateway.start()
    try:
        client = await open_sse(gateway.port, {"table": "orders"})
        await client.next_of("subscribed")
        await asyncio.wait_for(gateway.stop(), TIMEOUT)
        assert await client.closed() == []
        assert any(c.startswith("close 4000") for c in client.comments)
        client.close()
    finally:
        await gateway.stop()


async def test_heartbeat_comments_keep_an_idle_stream_alive(
    database_url: str, orders: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "HEARTBEAT_INTERVAL", 0.05)
    async with (
        running_gateway(database_url) as gateway,
        sse_client(gateway, {"table": "orders"}) as client,
    ):
        await client.next_of("subscribed")
        with pytest.raises(TimeoutError):  # comments are not events
            await client.event(timeout=0.3)
        assert client.comments.count("ping") >= 2


async def test_slow_reader_is_closed_and_resumes_with_last_event_id(
    database_url: str, orders: asyncpg.Connection
) -> None:
    """A stream that is not read fills the socket, then its outbox overflows: the
    gateway ends the stream, and a reconnect with Last-Event-ID gets the rest.

    The resume's replay window reaches back to the oldest transaction open anywhere
    in the cluster when the last change was written (its ``tx_xmin``), so on a busy
    server it re-sends changes the client has: allowed by the protocol, and dropped
    by id as a client does. A transaction held open in another database makes that
    happen every time."""
    note = "x" * 2000
    holder = await asyncpg.connect(ADMIN_DSN)
    elsewhere = holder.transaction()
    await elsewhere.start()
    await holder.execute("SELECT pg_current_xact_id()")
    try:
        total, amounts, resent = await _read_overflow_and_resume(database_url, orders, note)
    finally:
        await elsewhere.rollback()
        await holder.close()
    assert amounts == list(range(total))
    assert resent > 0  # the window did re-send (else this test shows nothing about it)


async def _read_overflow_and_resume(
    database_url: str, orders: asyncpg.Connection, note: str
) -> tuple[int, list[int], int]:
    """Overflow an unread stream, resume it, drop re-sent ids: changes written,
    amounts received in order, changes re-sent."""
    async with running_gateway(database_url, outbox_limit=10) as gateway:
        client = await open_sse(gateway.port, {"table": "orders"})
        await client.next_of("subscribed")
        (stream,) = gateway.clients
        total = 0
        async with asyncio.timeout(60):
            while stream.is_open:  # one batch of 100 changes per listener read
                await orders.execute(
                    "INSERT INTO orders (amount, note) "
                    "SELECT g, $2 FROM generate_series($1, $1 + 99) g",
                    total,
                    note,
                )
                total += 100
                await wait_for(lambda: gateway.changes_in >= total)  # noqa: B023
        events = await client.closed()  # what was buffered, then the end of the stream
        client.close()
        changes = [e for e in events if e.event == "change"]
        assert 0 < len(changes) < total
        seen = {e.id for e in changes}
        amounts = [e.data["record"]["amount"] for e in changes]
        resent = 0
        await wait_for(lambda: gateway.health()["clients"] == 0)
        async with (
            sse_client(gateway, {"table": "orders"}, last_event_id=client.last_event_id) as resumed,
            asyncio.timeout(TIMEOUT * 3),
        ):
            while len(amounts) < total:
                event = await resumed.next_of("change")
                if event.id in seen:
                    resent += 1
                    continue
                seen.add(event.id)
                amounts.append(event.data["record"]["amount"])
    return total, amounts, resent


class _RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _NoApp:
    def opened_stream(self, conn: sse.SseConnection, subscribe: dict[str, Any]) -> int | None:
        return None

    def closed(self, conn: sse.SseConnection) -> None:
        pass


async def test_an_error_after_the_stream_started_ends_the_stream() -> None:
    """E.g. the log became unreadable in the middle of a replay: the client gets the
    error as an event, then the end of the stream, and its EventSource reconnects."""
    stream = sse.SseConnection(_NoApp(), Request("/sse?table=t", Headers()), outbox_limit=10)
    transport = _RecordingTransport()
    stream.connection_made(transport)
    stream.queue_change(b'{"type":"change","sub":"sse",', b'"id":"5"}', 5)
    stream.flush()
    stream.send(protocol.error("unavailable", "could not read the change log", "sse"))
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.written.endswith(
        b"\r\n\r\nretry: 1000\n\n"
        b'id: 5\nevent: change\ndata: {"type":"change","sub":"sse","id":"5"}\n\n'
        b'event: error\ndata: {"type":"error","id":"sse","code":"unavailable",'
        b'"message":"could not read the change log"}\n\n'
        b": close 1011 subscription failed: reconnect\n\n"
    )
    assert transport.closing and not stream.is_open
    stream.connection_lost(None)
