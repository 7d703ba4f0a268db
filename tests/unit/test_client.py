"""The Python client against a fake gateway that speaks the wire protocol.

The fake (``FakeGateway``) is a real ``websockets`` server on 127.0.0.1 whose
connections the test drives by hand: it answers ``subscribe`` through a hook,
records every client frame, and can close with any code or cut the TCP link.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import pgcast.client
from pgcast.backoff import backoff
from pgcast.client import (
    ClientClosed,
    ConnectionRejected,
    FrameTooBig,
    Subscription,
    SubscriptionRefused,
    connect,
)
from pgcast.client._protocol import (
    CloseAction,
    RecentIds,
    close_action,
    normalize_url,
    parse_target,
    subscribe_frame,
)
from pgcast.client.listen import format_frame, listen
from pgcast.exceptions import IdentifierError, PgcastError

pytestmark = pytest.mark.timeout(20)

WAIT = 5.0  # generous upper bound for any awaited event; tests finish far sooner


def fast_backoff() -> Iterator[float]:
    return backoff(initial=0.01, maximum=0.05)


FAST: dict[str, Any] = {"backoff_factory": fast_backoff, "ping_interval": 30.0}


# -- fake gateway -------------------------------------------------------------------


class FakeConnection:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pings = 0
        self.ping_seen = asyncio.Event()
        self.closed = asyncio.Event()

    async def recv(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.inbox.get(), WAIT)

    async def expect(self, kind: str) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == kind, message
        return message

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)

    def cut(self) -> None:
        """Drop the TCP link without a close frame: the client sees 1006."""
        assert self.ws.transport is not None
        self.ws.transport.abort()

    async def wait_pings(self, count: int) -> None:
        while self.pings < count:
            self.ping_seen.clear()
            await asyncio.wait_for(self.ping_seen.wait(), WAIT)


SubscribeHook = Callable[[FakeConnection, dict[str, Any]], Awaitable[None]]


async def accept(conn: FakeConnection, message: dict[str, Any]) -> None:
    await conn.send({"type": "subscribed", "id": message["id"]})


class FakeGateway:
    def __init__(self) -> None:
        self.url = ""
        self.positions = ["1041"]  # welcome position per connection (last one repeats)
        self.answer_pings = True
        self.on_subscribe: SubscribeHook = accept
        self.count = 0
        self.requests: list[Request] = []
        self._connections: asyncio.Queue[FakeConnection] = asyncio.Queue()

    async def next_connection(self) -> FakeConnection:
        return await asyncio.wait_for(self._connections.get(), WAIT)

    async def handler(self, ws: ServerConnection) -> None:
        position = self.positions[min(self.count, len(self.positions) - 1)]
        self.count += 1
        assert ws.request is not None
        self.requests.append(ws.request)
        conn = FakeConnection(ws)
        await ws.send(
            json.dumps({"type": "welcome", "version": 1, "server": "fake/0", "position": position})
        )
        await self._connections.put(conn)
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "ping":
                    conn.pings += 1
                    conn.ping_seen.set()
                    if self.answer_pings:
                        await ws.send('{"type":"pong"}')
                    continue
                await conn.inbox.put(message)
                if message["type"] == "subscribe":
                    await self.on_subscribe(conn, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed.set()


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    fake = FakeGateway()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}"
        yield fake


def change(sub: str, change_id: str, **fields: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "change",
        "sub": sub,
        "id": change_id,
        "schema": "public",
        "table": "orders",
        "op": "INSERT",
        "record": {"id": int(change_id), "status": "pending"},
        "old_record": None,
        "changed": None,
        "txid": "88231",
        "committed_at": "2026-11-21T12:00:00.123Z",
    }
    frame.update(fields)
    return frame


async def next_frame(sub: Subscription) -> dict[str, Any]:
    return await asyncio.wait_for(anext(sub), WAIT)


# -- streaming ----------------------------------------------------------------------


async def test_subscribe_receives_changes_as_sent(gateway: FakeGateway) -> None:
    async with connect(gateway.url, token="t0k", **FAST) as client:
        assert client.status == "connecting"
        async with client.subscribe(
            "orders", filter="status=eq.pending", events=["insert", "UPDATE"], columns=["id"]
        ) as sub:
            assert client.status == "live"
            conn = await gateway.next_connection()
            request = await conn.expect("subscribe")
            assert request == {
                "type": "subscribe",
                "id": request["id"],
                "table": "orders",
                "filter": "status=eq.pending",
                "events": ["INSERT", "UPDATE"],
                "columns": ["id"],
            }
            sent = [change(request["id"], "1042"), change(request["id"], "1043", op="UPDATE")]
            for frame in sent:
                await conn.send(frame)
            assert [await next_frame(sub), await next_frame(sub)] == sent
        assert (await conn.expect("unsubscribe"))["id"] == request["id"]
    assert client.status == "closed"
    assert gateway.requests[0].path == "/ws"
    assert gateway.requests[0].headers["Authorization"] == "Bearer t0k"


@pytest.mark.parametrize("cut", [1006, 1000, 4000, 4001])
async def test_gateway_close_reconnects_and_resumes_from_last_delivered_id(
    gateway: FakeGateway, cut: int
) -> None:
    async with connect(gateway.url, **FAST) as client, client.subscribe("orders") as sub:
        conn = await gateway.next_connection()
        first = await conn.expect("subscribe")
        assert "since" not in first
        await conn.send(change(first["id"], "1042"))
        await conn.send(change(first["id"], "1043"))
        assert (await next_frame(sub))["id"] == "1042"
        assert (await next_frame(sub))["id"] == "1043"

        if cut == 1006:
            conn.cut()
        else:
            await conn.close(cut, "bye")

        conn2 = await gateway.next_connection()
        again = await conn2.expect("subscribe")
        assert again["table"] == "orders"
        assert again["since"] == "1043"
        # The resume window replays what the client already has: dropped.
        await conn2.send(change(again["id"], "1042"))
        await conn2.send(change(again["id"], "1043"))
        await conn2.send(change(again["id"], "1044"))
        assert (await next_frame(sub))["id"] == "1044"
        assert sub.duplicates == 2
        assert client.status == "live"


async def test_duplicate_ids_on_one_connection_are_delivered_once(
    gateway: FakeGateway,
) -> None:
    async with connect(gateway.url, **FAST) as client, client.subscribe("orders") as sub:
        conn = await gateway.next_connection()
        wire = (await conn.expect("subscribe"))["id"]
        for change_id in ["7", "7", "8", "7", "9"]:
            await conn.send(change(wire, change_id))
        assert [(await next_frame(sub))["id"] for _ in range(3)] == ["7", "8", "9"]
        assert sub.duplicates == 2


async def test_resubscribe_before_any_change_resumes_from_first_welcome_position(
    gateway: FakeGateway,
) -> None:
    gateway.positions = ["1041", "2000", "3000"]
    async with connect(gateway.url, **FAST) as client, client.subscribe("orders"):
        conn = await gateway.next_connection()
        await conn.expect("subscribe")
        await conn.close(4000, "shutting down")
        conn2 = await gateway.next_connection()
        assert (await conn2.expect("subscribe"))["since"] == "1041"
        conn2.cut()
        conn3 = await gateway.next_connection()
        assert (await conn3.expect("subscribe"))["since"] == "1041"
        assert client.position == "1041"


async def test_resumed_replay_drops_changes_the_starting_snapshot_holds(
    gateway: FakeGateway,
) -> None:
    # Snapshot at head 100, xmax 50, transaction 45 open: 90 (txid 40) is in it.
    async def snapshot_then_live(conn: FakeConnection, message: dict[str, Any]) -> None:
        wire = message["id"]
        if not message.get("snapshot"):
            await accept(conn, message)
            return
        await conn.send(
            {
                "type": "snapshot",
                "sub": wire,
                "part": 0,
                "done": True,
                "rows": [],
                "position": "100:50:45",
            }
        )
        await conn.send({"type": "subscribed", "id": wire})
        await conn.send(change(wire, "95", txid="45"))  # committed after the snapshot
        await conn.send(change(wire, "101", txid="48"))

    gateway.on_subscribe = snapshot_then_live
    async with (
        connect(gateway.url, **FAST) as client,
        client.subscribe("orders", snapshot=True) as sub,
    ):
        assert (await next_frame(sub))["type"] == "snapshot"
        assert [(await next_frame(sub))["id"] for _ in range(2)] == ["95", "101"]
        conn = await gateway.next_connection()
        conn.cut()
        conn2 = await gateway.next_connection()
        again = await conn2.expect("subscribe")
        assert again["since"] == "101"
        # The window before `since` reaches back before the snapshot (a long
        # transaction held tx_xmin low): 90 is in the snapshot's rows, 95 delivered.
        for change_id, txid in [("90", "40"), ("95", "45"), ("102", "52")]:
            await conn2.send(change(again["id"], change_id, txid=txid))
        assert (await next_frame(sub))["id"] == "102"
        assert sub.duplicates == 2


async def test_explicit_since_is_kept_until_a_change_is_delivered(
    gateway: FakeGateway,
) -> None:
    async with connect(gateway.url, **FAST) as client, client.subscribe("orders", since=500):
        conn = await gateway.next_connection()
        assert (await conn.expect("subscribe"))["since"] == "500"
        conn.cut()
        conn2 = await gateway.next_connection()
        assert (await conn2.expect("subscribe"))["since"] == "500"


async def test_replayed_changes_before_subscribed_and_resync_reach_the_caller(
    gateway: FakeGateway,
) -> None:
    async def replay(conn: FakeConnection, message: dict[str, Any]) -> None:
        assert message["since"] == "5"
        await conn.send({"type": "resync", "sub": message["id"], "reason": "log pruned"})
        await conn.send(change(message["id"], "6"))
        await conn.send({"type": "subscribed", "id": message["id"]})

    gateway.on_subscribe = replay
    async with connect(gateway.url, **FAST) as client, client.subscribe("orders", since="5") as sub:
        resync = await next_frame(sub)
        assert resync == {"type": "resync", "sub": "s1", "reason": "log pruned"}
        assert (await next_frame(sub))["id"] == "6"


async def test_after_a_resync_the_resubscribe_resumes_from_its_position(
    gateway: FakeGateway,
) -> None:
    async def replay(conn: FakeConnection, message: dict[str, Any]) -> None:
        if message["since"] == "5":
            await conn.send(
                {"type": "resync", "sub": message["id"], "reason": "pruned", "position": "9:20:"}
            )
        await conn.send({"type": "subscribed", "id": message["id"]})

    gateway.on_subscribe = replay
    async with connect(gateway.url, **FAST) as client, client.subscribe("orders", since="5") as sub:
        conn = await gateway.next_connection()
        assert (await next_frame(sub))["type"] == "resync"
        assert sub.resume_from == "9:20:" and sub.last_id is None
        conn.cut()
        conn2 = await gateway.next_connection()
        assert (await conn2.expect("subscribe"))["since"] == "9:20:"


async def test_backoff_is_reset_after_every_welcome(gateway: FakeGateway) -> None:
    made: list[int] = []

    def counting_backoff() -> Iterator[float]:
        made.append(1)
        return fast_backoff()

    async with (
        connect(gateway.url, backoff_factory=counting_backoff) as client,
        client.subscribe("orders"),
    ):
        for _ in range(3):
            conn = await gateway.next_connection()
            await conn.expect("subscribe")
            conn.cut()
        await (await gateway.next_connection()).expect("subscribe")
    assert len(made) == 3  # one fresh generator per drop: each drop followed a welcome


# -- refusals and terminal closes ---------------------------------------------------


async def test_subscribe_error_raises_and_is_not_retried(gateway: FakeGateway) -> None:
    async def refuse_orders(conn: FakeConnection, message: dict[str, Any]) -> None:
        if message["table"] == "orders":
            await conn.send(
                {
                    "type": "error",
                    "id": message["id"],
                    "code": "bad_filter",
                    "message": "unknown column nope",
                }
            )
        else:
            await accept(conn, message)

    gateway.on_subscribe = refuse_orders
    async with connect(gateway.url, **FAST) as client:
        with pytest.raises(SubscriptionRefused) as refused:
            async with client.subscribe("orders", filter="nope=eq.1"):
                pytest.fail("a refused subscription must not be entered")
        assert refused.value.code == "bad_filter"
        assert "unknown column nope" in str(refused.value)
        assert refused.value.hint is not None

        conn = await gateway.next_connection()
        await conn.expect("subscribe")
        async with client.subscribe("customers"):
            # The next frame after the refused subscribe is the new one: no retry.
            assert (await conn.expect("subscribe"))["table"] == "customers"
        assert client.status == "live"


async def test_unavailable_is_retried_with_the_same_since_until_accepted(
    gateway: FakeGateway,
) -> None:
    """`unavailable` means the gateway cannot reach PostgreSQL yet: not a refusal."""
    answers = ["unavailable", "unavailable", "accept"]

    async def flaky(conn: FakeConnection, message: dict[str, Any]) -> None:
        if answers.pop(0) == "unavailable":
            await conn.send(
                {"type": "error", "id": message["id"], "code": "unavailable", "message": "db down"}
            )
        else:
            await accept(conn, message)
            await conn.send(change(message["id"], "1050"))

    gateway.on_subscribe = flaky
    async with connect(gateway.url, **FAST) as client:
        async with client.subscribe("orders", since="1042") as sub:
            assert (await next_frame(sub))["id"] == "1050"
        conn = await gateway.next_connection()
        sinces = [(await conn.expect("subscribe")).get("since") for _ in range(3)]
        assert sinces == ["1042", "1042", "1042"]
        assert answers == []


@pytest.mark.parametrize("code", [4500, 4501, 4502, 4503])
async def test_do_not_reconnect_close_fails_subscriptions_and_stops(
    gateway: FakeGateway, code: int
) -> None:
    async with connect(gateway.url, **FAST) as client, client.subscribe("orders") as sub:
        conn = await gateway.next_connection()
        await conn.expect("subscribe")
        await conn.close(code, "token rejected")
        with pytest.raises(ConnectionRejected) as rejected:
            await next_frame(sub)
        assert rejected.value.code == code
        assert "token rejected" in str(rejected.value)
        assert client.status == "closed"
        assert client.error is rejected.value
        with pytest.raises(ConnectionRejected):
            async with client.subscribe("customers"):
                pass
    assert gateway.count == 1  # the run loop ended: no reconnect can follow


async def test_terminal_close_while_subscribing_raises_from_subscribe(
    gateway: FakeGateway,
) -> None:
    async def reject(conn: FakeConnection, message: dict[str, Any]) -> None:
        await conn.close(4501, "unauthorized")

    gateway.on_subscribe = reject
    async with connect(gateway.url, **FAST) as client:
        with pytest.raises(ConnectionRejected) as rejected:
            async with client.subscribe("orders"):
                pass
        assert rejected.value.code == 4501
        assert rejected.value.hint is not None
    assert gateway.count == 1


async def test_http_401_at_handshake_is_terminal() -> None:
    def unauthorized(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(HTTPStatus.UNAUTHORIZED, "bad token\n")

    async def never(ws: ServerConnection) -> None:
        raise AssertionError("handshake must fail")

    async with serve(never, "127.0.0.1", 0, process_request=unauthorized) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", **FAST) as client:
            with pytest.raises(ConnectionRejected) as rejected:
                async with client.subscribe("orders"):
                    pass
            assert rejected.value.http_status == 401
            assert rejected.value.code == 4501
            assert client.status == "closed"


async def test_close_1009_fails_the_unanswered_subscribe_and_keeps_the_client(
    gateway: FakeGateway,
) -> None:
    async def too_big(conn: FakeConnection, message: dict[str, Any]) -> None:
        if message["table"] == "huge":
            await conn.close(1009, "frame too big")
        else:
            await accept(conn, message)

    gateway.on_subscribe = too_big
    async with connect(gateway.url, **FAST) as client:
        with pytest.raises(FrameTooBig):
            async with client.subscribe("huge", filter="x=in.(" + "1," * 1000 + "1)"):
                pass
        async with client.subscribe("orders"):
            assert client.status == "live"
    assert gateway.count == 2  # reconnected, and did not resend the huge frame


async def test_subscribing_on_a_closed_client_raises(gateway: FakeGateway) -> None:
    client = connect(gateway.url, **FAST)
    async with client:
        pass
    with pytest.raises(ClientClosed):
        async with client.subscribe("orders"):
            pass


# -- heartbeat, backpressure, channels ----------------------------------------------


async def test_heartbeat_detects_gateway_that_stops_answering(gateway: FakeGateway) -> None:
    gateway.answer_pings = False
    async with (
        connect(
            gateway.url, backoff_factory=fast_backoff, ping_interval=0.05, ping_timeout=0.1
        ) as client,
        client.subscribe("orders"),
    ):
        conn = await gateway.next_connection()
        await conn.expect("subscribe")
        conn2 = await gateway.next_connection()  # the client gave up on conn and came back
        assert conn.pings >= 1
        await asyncio.wait_for(conn.closed.wait(), WAIT)
        assert (await conn2.expect("subscribe"))["table"] == "orders"


async def test_heartbeat_keeps_a_healthy_connection(gateway: FakeGateway) -> None:
    async with (
        connect(
            gateway.url, backoff_factory=fast_backoff, ping_interval=0.02, ping_timeout=0.5
        ) as client,
        client.subscribe("orders"),
    ):
        conn = await gateway.next_connection()
        await conn.wait_pings(5)
        assert client.status == "live"
        assert gateway.count == 1


async def test_slow_consumer_pauses_then_resumes_without_loss(gateway: FakeGateway) -> None:
    async with (
        connect(gateway.url, queue_size=2, **FAST) as client,
        client.subscribe("orders") as sub,
    ):
        conn = await gateway.next_connection()
        wire = (await conn.expect("subscribe"))["id"]
        for change_id in ["1", "2", "3", "4", "5"]:
            await conn.send(change(wire, change_id))
        # The buffer (2) overflowed at "3": the client paused the stream.
        assert (await conn.expect("unsubscribe"))["id"] == wire
        assert (await next_frame(sub))["id"] == "1"
        resumed = await conn.expect("subscribe")  # half drained: resume
        assert resumed["since"] == "2"
        assert resumed["id"] != wire
        await conn.send(change(wire, "99"))  # late frame of the old wire id: ignored
        # The replay starts at the resume point, which is still buffered: dropped.
        for change_id in ["2", "3"]:
            await conn.send(change(resumed["id"], change_id))
        assert [(await next_frame(sub))["id"] for _ in range(2)] == ["2", "3"]
        await conn.send(change(resumed["id"], "4"))
        assert (await next_frame(sub))["id"] == "4"
        assert sub.duplicates == 1


async def test_channel_delivers_messages_and_resubscribes_without_since(
    gateway: FakeGateway,
) -> None:
    async with connect(gateway.url, **FAST) as client, client.channel("system_notifications") as ch:
        conn = await gateway.next_connection()
        request = await conn.expect("subscribe")
        assert request == {
            "type": "subscribe",
            "id": request["id"],
            "channel": "system_notifications",
        }
        message = {
            "type": "message",
            "sub": request["id"],
            "channel": "system_notifications",
            "payload": "hello",
        }
        await conn.send(message)
        assert await next_frame(ch) == message
        conn.cut()
        conn2 = await gateway.next_connection()
        assert "since" not in await conn2.expect("subscribe")


async def test_subscribing_before_entering_the_client_raises(gateway: FakeGateway) -> None:
    client = connect(gateway.url, **FAST)
    with pytest.raises(pgcast.client.ClientError, match="not started"):
        async with client.subscribe("orders"):
            pass
    assert gateway.count == 0


async def test_subscription_iteration_ends_when_client_closes(gateway: FakeGateway) -> None:
    client = connect(gateway.url, **FAST)
    async with client:
        sub = client.subscribe("orders")
        await sub.__aenter__()
        waiting = asyncio.create_task(anext(sub))
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, WAIT)
    await sub.__aexit__(None, None, None)


# -- listen -------------------------------------------------------------------------


async def test_listen_json_lines_prints_one_compact_object_per_change(
    gateway: FakeGateway,
) -> None:
    sent: list[dict[str, Any]] = []

    async def stream(conn: FakeConnection, message: dict[str, Any]) -> None:
        assert message["schema"] == "audit"
        assert message["table"] == "Events"
        await accept(conn, message)
        for change_id in ["10", "11"]:
            frame = change(message["id"], change_id, schema="audit", table="Events")
            sent.append(frame)
            await conn.send(frame)

    gateway.on_subscribe = stream
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.wait_for(
        listen(
            gateway.url,
            'audit."Events"',
            filter=None,
            since=None,
            events=None,
            json_lines=True,
            token=None,
            max_events=2,
            out=out,
            err=err,
        ),
        WAIT,
    )
    assert code == 0
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == sent
    assert all(" " not in line for line in lines)  # compact
    assert "audit.Events" in err.getvalue()


async def test_listen_prints_readable_summaries_for_a_channel(gateway: FakeGateway) -> None:
    async def stream(conn: FakeConnection, message: dict[str, Any]) -> None:
        await accept(conn, message)
        await conn.send(
            {"type": "message", "sub": message["id"], "channel": "jobs", "payload": "done"}
        )

    gateway.on_subscribe = stream
    out = io.StringIO()
    code = await asyncio.wait_for(
        listen(
            gateway.url,
            "jobs",
            filter=None,
            since=None,
            events=None,
            json_lines=False,
            token=None,
            channel=True,
            max_events=1,
            out=out,
            err=io.StringIO(),
        ),
        WAIT,
    )
    assert code == 0
    assert out.getvalue() == "MESSAGE jobs done\n"


async def test_listen_refused_subscription_exits_1_with_message(gateway: FakeGateway) -> None:
    async def refuse(conn: FakeConnection, message: dict[str, Any]) -> None:
        await conn.send(
            {"type": "error", "id": message["id"], "code": "bad_filter", "message": "bad op"}
        )

    gateway.on_subscribe = refuse
    err = io.StringIO()
    code = await asyncio.wait_for(
        listen(
            gateway.url,
            "orders",
            filter="status=zz.1",
            since=None,
            events=None,
            json_lines=True,
            token=None,
            out=io.StringIO(),
            err=err,
        ),
        WAIT,
    )
    assert code == 1
    assert "bad_filter" in err.getvalue()


async def test_listen_rejected_connection_exits_2(gateway: FakeGateway) -> None:
    async def reject(conn: FakeConnection, message: dict[str, Any]) -> None:
        await conn.close(4502, "forbidden table")

    gateway.on_subscribe = reject
    err = io.StringIO()
    code = await asyncio.wait_for(
        listen(
            gateway.url,
            "orders",
            filter=None,
            since=None,
            events=None,
            json_lines=False,
            token="x",
            out=io.StringIO(),
            err=err,
        ),
        WAIT,
    )
    assert code == 2
    assert "forbidden table" in err.getvalue()


async def test_listen_bad_target_exits_2_without_hanging(gateway: FakeGateway) -> None:
    err = io.StringIO()
    code = await asyncio.wait_for(
        listen(
            gateway.url,
            'a.b.c"',
            filter=None,
            since=None,
            events=None,
            json_lines=False,
            token=None,
            out=io.StringIO(),
            err=err,
        ),
        WAIT,
    )
    assert code == 2
    assert err.getvalue().startswith("pgcast: ")


def test_format_frame_summaries() -> None:
    assert format_frame(change("s1", "1042")) == (
        'INSERT public.orders change=1042 {"id":1042,"status":"pending"}'
    )
    update = change("s1", "7", op="UPDATE", changed=["status"])
    assert format_frame(update).endswith(" changed=status")
    delete = change("s1", "8", op="DELETE", record=None, old_record={"id": 8})
    assert format_frame(delete) == 'DELETE public.orders change=8 {"id":8}'
    truncate = change("s1", "9", op="TRUNCATE", record=None)
    assert format_frame(truncate) == "TRUNCATE public.orders change=9"
    assert format_frame({"type": "resync", "sub": "s1", "reason": "pruned"}).startswith("RESYNC")


# -- pure pieces --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (None, CloseAction.RECONNECT),
        (1000, CloseAction.RECONNECT),
        (1001, CloseAction.RECONNECT),
        (1006, CloseAction.RECONNECT),
        (1011, CloseAction.RECONNECT),
        (4000, CloseAction.RECONNECT),
        (4001, CloseAction.RECONNECT),
        (4499, CloseAction.RECONNECT),
        (4500, CloseAction.TERMINAL),
        (4503, CloseAction.TERMINAL),
        (4999, CloseAction.TERMINAL),
        (1009, CloseAction.FRAME_TOO_BIG),
    ],
)
def test_close_code_policy(code: int | None, action: CloseAction) -> None:
    assert close_action(code) is action


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://127.0.0.1:8000", "ws://127.0.0.1:8000/ws"),
        ("ws://127.0.0.1:8000/", "ws://127.0.0.1:8000/ws"),
        ("ws://h/ws", "ws://h/ws"),
        ("ws://h/ws/", "ws://h/ws"),
        ("wss://h/app", "wss://h/app/ws"),
        ("http://h:1/app/?x=1", "ws://h:1/app/ws?x=1"),
        ("https://h", "wss://h/ws"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://h", "ws://"])
def test_normalize_url_refuses_non_gateway_urls(url: str) -> None:
    with pytest.raises(PgcastError):
        normalize_url(url)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("orders", (None, "orders")),
        ("Orders", (None, "orders")),
        ("audit.events", ("audit", "events")),
        ("Audit.Events", ("audit", "events")),
        ('"Booking"', (None, "Booking")),
        ('"My Schema"."a.b"', ("My Schema", "a.b")),
        ('public."Say ""hi"""', ("public", 'Say "hi"')),
    ],
)
def test_parse_target(target: str, expected: tuple[str | None, str]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["", "a..b", "a.b.c", '"open', '"a"b', "a.", 'x"y'])
def test_parse_target_refuses_malformed_names(target: str) -> None:
    with pytest.raises(IdentifierError):
        parse_target(target)


def test_recent_ids_forget_the_oldest_beyond_capacity() -> None:
    seen = RecentIds(capacity=3)
    assert [seen.add(i) for i in ["1", "2", "3", "2"]] == [True, True, True, False]
    assert seen.add("4")  # evicts "1" (least recently seen), not the re-seen "2"
    assert "1" not in seen
    assert "2" in seen
    assert len(seen) == 3


def test_subscribe_frame_omits_unset_fields() -> None:
    assert subscribe_frame("s1", table="orders") == {
        "type": "subscribe",
        "id": "s1",
        "table": "orders",
    }
    with pytest.raises(ValueError):
        subscribe_frame("s1", table="orders", channel="c")


def test_public_api_is_exported() -> None:
    for name in pgcast.client.__all__:
        assert hasattr(pgcast.client, name), name
    assert {"connect", "Client", "Subscription", "SubscriptionRefused"} <= set(
        pgcast.client.__all__
    )


def test_client_imports_no_gateway_module() -> None:
    code = (
        "import sys, pgcast.client, pgcast.client.listen;"
        "print(sorted(m for m in sys.modules if m.startswith('pgcast')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    allowed = {
        "pgcast",
        "pgcast.backoff",
        "pgcast.exceptions",
        "pgcast.client",
        "pgcast.client._connection",
        "pgcast.client._core",
        "pgcast.client._link",
        "pgcast.client._protocol",
        "pgcast.client._subscription",
        "pgcast.client._topic",
        "pgcast.client.listen",
    }
    assert set(eval(loaded)) <= allowed
