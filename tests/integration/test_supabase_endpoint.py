"""The Supabase endpoint at the Phoenix-frame level, on a live gateway and PostgreSQL:
tokens (role, exp, refresh), row rules, and hostile input (malformed frames, unknown
topics and events, oversized frames, join floods) answered with clear errors while
the gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pgcast.auth import AuthConfig, load_auth_config
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway
from pgcast.supabase.channel import MAX_BAD_FRAMES

from .gateway_helpers import TIMEOUT, running_gateway

pytestmark = pytest.mark.timeout(60)

SECRET = "supabase-endpoint-secret-" + "k" * 40
RULES = """
[rules.tables.orders]
read = "merchant_id = claims.merchant_id"
"""
ORDERS = {"event": "*", "schema": "public", "table": "orders"}


def make_auth(tmp_path: Path, **flags: object) -> AuthConfig:
    config = tmp_path / "pgcast.toml"
    config.write_text(RULES)
    return load_auth_config({"jwt_secret": SECRET, **flags}, env={}, config_file=config)


def token(merchant: int = 1, *, ttl: float = 600, **claims: Any) -> str:
    body: dict[str, Any] = {"sub": f"user-{merchant}", "role": "authenticated"}
    body |= {"exp": int(time.time() + ttl), "merchant_id": merchant, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


class Phoenix:
    """A raw Phoenix (vsn 2.0.0) client: frames as lists."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ref = 0
        self.skipped: list[list[Any]] = []  # read while waiting for something else

    async def push(self, topic: str, event: str, payload: Any, join_ref: str | None = "1") -> str:
        self.ref += 1
        await self.ws.send(orjson.dumps([join_ref, str(self.ref), topic, event, payload]).decode())
        return str(self.ref)

    async def recv(self, timeout: float = TIMEOUT) -> list[Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message: list[Any] = orjson.loads(raw)
        return message

    async def until(self, event: str, topic: str | None = None) -> list[Any]:
        for message in self.skipped:
            if message[3] == event and (topic is None or message[2] == topic):
                self.skipped.remove(message)
                return message
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self.recv()
                if message[3] == event and (topic is None or message[2] == topic):
                    return message

    async def reply(self, ref: str) -> dict[str, Any]:
        for message in self.skipped:  # replies may come out of order (broadcast acks)
            if message[3] == "phx_reply" and message[1] == ref:
                self.skipped.remove(message)
                found: dict[str, Any] = message[4]
                return found
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self.recv()
                if message[3] == "phx_reply" and message[1] == ref:
                    payload: dict[str, Any] = message[4]
                    return payload
                self.skipped.append(message)

    async def join(self, topic: str, bindings: list[Any], **payload: Any) -> dict[str, Any]:
        config = {"postgres_changes": bindings}
        return await self.reply(await self.push(topic, "phx_join", {"config": config, **payload}))


@contextlib.asynccontextmanager
async def phoenix(gateway: Gateway, query: str = "vsn=2.0.0") -> AsyncIterator[Phoenix]:
    url = f"ws://127.0.0.1:{gateway.port}/realtime/v1/websocket?{query}"
    async with connect(url, max_size=None) as ws:
        yield Phoenix(ws)


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, merchant_id int, note text)")
    await track(conn, parse_table_name("orders"))
    return conn


@pytest.mark.parametrize("anonymous", [False, True], ids=["token", "anonymous-mode"])
async def test_row_rules_apply_to_the_token_of_the_join(
    database_url: str, orders: asyncpg.Connection, tmp_path: Path, anonymous: bool
) -> None:
    """Also where anonymous clients are let in: the join's token still counts."""
    auth = make_auth(tmp_path, anonymous=anonymous)
    async with (
        running_gateway(database_url, auth=auth) as gateway,
        phoenix(gateway, "apikey=opaque&vsn=2.0.0") as client,
    ):
        reply = await client.join("realtime:mine", [ORDERS], access_token=token(1))
        assert reply["status"] == "ok", reply
        [binding] = reply["response"]["postgres_changes"]
        system = await client.until("system")
        assert system[4]["message"] == "Subscribed to PostgreSQL"
        await orders.execute("INSERT INTO orders (merchant_id, note) VALUES (2, 'theirs')")
        await orders.execute("INSERT INTO orders (merchant_id, note) VALUES (1, 'mine')")
        change = await client.until("postgres_changes")
        assert change[4]["ids"] == [binding["id"]]
        assert change[4]["data"]["record"]["note"] == "mine"
        assert change[1].startswith("pgcast:")


async def test_tokens_without_role_or_exp_or_expired_are_refused_at_join(
    database_url: str, orders: asyncpg.Connection, tmp_path: Path
) -> None:
    async with running_gateway(database_url, auth=make_auth(tmp_path)) as gateway:
        cases = {
            "no token": ({}, "InvalidJWTToken: this gateway requires a token"),
            "no role": ({"access_token": token(1, role=None)}, "`role` and `exp`"),
            "expired": ({"access_token": token(1, ttl=-3600)}, "InvalidJWTToken"),
            "forged": ({"access_token": token(1)[:-4] + "AAAA"}, "InvalidJWTToken"),
        }
        for name, (payload, reason) in cases.items():
            async with phoenix(gateway) as client:
                reply = await client.join("realtime:x", [ORDERS], **payload)
                assert reply["status"] == "error", name
                assert reason in reply["response"]["reason"], (name, reply)


async def test_access_token_refresh_keeps_the_subject_and_a_new_subject_closes(
    database_url: str, orders: asyncpg.Connection, tmp_path: Path
) -> None:
    async with (
        running_gateway(database_url, auth=make_auth(tmp_path)) as gateway,
        phoenix(gateway) as client,
    ):
        assert (await client.join("realtime:a", [ORDERS], access_token=token(1)))["status"] == "ok"
        await client.until("system")
        await client.push("realtime:a", "access_token", {"access_token": token(1, ttl=900)})
        await orders.execute("INSERT INTO orders (merchant_id, note) VALUES (1, 'still')")
        change = await client.until("postgres_changes")
        assert change[4]["data"]["record"]["note"] == "still"
        await client.push("realtime:a", "access_token", {"access_token": token(2)})
        with pytest.raises(ConnectionClosed) as closed:
            await client.until("never")
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4501


async def test_hostile_frames_get_clear_errors_and_the_gateway_keeps_serving(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url, max_frame_bytes=64 * 1024) as gateway,
        phoenix(gateway) as bystander,
    ):
        assert (await bystander.join("realtime:watch", [ORDERS]))["status"] == "ok"
        async with phoenix(gateway) as client:
            await client.ws.send("{not json")
            error = await client.until("phx_error")
            assert "not valid JSON" in error[4]["reason"]
            await client.ws.send(b"\x03\x00")
            assert "7-byte header" in (await client.until("phx_error"))[4]["reason"]
            reply = await client.reply(await client.push("realtime:nope", "broadcast", {}))
            assert reply == {"status": "error", "response": {"reason": "unmatched topic"}}
            reply = await client.reply(await client.push("other", "phx_join", {}))
            assert reply["response"]["reason"] == "unmatched topic"
            reply = await client.join(
                "realtime:t", [{"event": "*", "schema": "public", "table": "nope"}]
            )
            assert reply["status"] == "error" and "not tracked" in reply["response"]["reason"]
            reply = await client.join(
                "realtime:t",
                [{"event": "*", "schema": "public", "table": "orders", "filter": "nope=eq.1"}],
            )
            assert reply["status"] == "error" and "nope" in reply["response"]["reason"]
            reply = await client.join("realtime:t", ["x"])
            assert reply["response"]["reason"].startswith("InvalidJoinPayload")
            assert (await client.join("realtime:ok", []))["status"] == "ok"
            reply = await client.reply(await client.push("realtime:ok", "bogus", {}))
            assert reply["response"]["reason"] == "unknown event 'bogus'"
        # A flood of joins meets the join rate limit with an error reply each.
        async with phoenix(gateway) as flood:
            refs = [await flood.push(f"realtime:f{i}", "phx_join", {}) for i in range(60)]
            replies = [await flood.reply(ref) for ref in refs]
            refused = [r["response"]["reason"] for r in replies if r["status"] == "error"]
            # 20 per second with bursts of 20: 60 joins sent at once (read by the gateway
            # within 2 s, even on a loaded machine) cannot all pass.
            assert refused, replies
            assert all(r.startswith("ClientJoinRateLimitReached") for r in refused), refused
        # Too many malformed frames close the connection (4500).
        async with phoenix(gateway) as spammer:
            for _ in range(MAX_BAD_FRAMES + 1):
                await spammer.ws.send("[")
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await spammer.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500
        # An oversized frame is closed with 1009 by the transport.
        async with phoenix(gateway) as big:
            await big.ws.send(
                orjson.dumps([None, "1", "phoenix", "heartbeat", "x" * 70_000]).decode()
            )
            with pytest.raises(ConnectionClosed) as closed:
                await big.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # The bystander was never disturbed.
        await orders.execute("INSERT INTO orders (merchant_id, note) VALUES (5, 'after')")
        change = await bystander.until("postgres_changes")
        assert change[4]["data"]["record"]["note"] == "after"
        heartbeat = await bystander.reply(await bystander.push("phoenix", "heartbeat", {}, None))
        assert heartbeat == {"status": "ok", "response": {}}


async def test_unsupported_serializer_is_refused_at_the_upgrade(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            async with phoenix(gateway, "vsn=9.9.9"):
                pass
        assert refused.value.response.status_code == 400
        # vsn 1.0.0 (JSON objects), at Phoenix's own path too.
        url = f"ws://127.0.0.1:{gateway.port}/socket/websocket?vsn=1.0.0"
        async with connect(url) as ws:
            await ws.send(
                orjson.dumps(
                    {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"}
                ).decode()
            )
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert reply == {
                "topic": "phoenix",
                "event": "phx_reply",
                "payload": {"status": "ok", "response": {}},
                "ref": "1",
                "join_ref": None,
            }


async def test_the_asgi_app_serves_the_endpoint_too(
    database_url: str, orders: asyncpg.Connection
) -> None:
    from .test_asgi import make_app, serving

    async with serving(make_app(database_url)) as server:
        url = server.url("/realtime/v1/websocket?vsn=2.0.0&apikey=anon", "ws")
        async with connect(url) as ws:
            client = Phoenix(ws)
            reply = await client.join("realtime:asgi", [ORDERS])
            assert reply["status"] == "ok", reply
            await orders.execute("INSERT INTO orders (merchant_id, note) VALUES (1, 'asgi')")
            change = await client.until("postgres_changes")
            assert change[4]["data"]["record"]["note"] == "asgi"
            assert change[4]["data"]["columns"] == [
                {"name": "id", "type": "int4"},
                {"name": "merchant_id", "type": "int4"},
                {"name": "note", "type": "text"},
            ]


async def test_presence_and_broadcast_refusals_are_clear_and_bounded(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, phoenix(gateway) as client:
        config = {"presence": {"key": "k", "enabled": True}, "broadcast": {"ack": True}}
        ref = await client.push("realtime:room", "phx_join", {"config": config})
        assert (await client.reply(ref))["status"] == "ok"
        state = await client.until("presence_state")
        assert state[4] == {}

        async def push(event: str, payload: Any) -> dict[str, Any]:
            return await client.reply(await client.push("realtime:room", event, payload))

        big = {"type": "presence", "event": "track", "payload": {"blob": "x" * 10_000}}
        refused = await push("presence", big)
        assert refused["status"] == "error"
        assert refused["response"]["reason"].startswith("payload_too_large")
        not_a_map = await push("presence", {"type": "presence", "event": "track", "payload": [1]})
        assert "must be a JSON object" in not_a_map["response"]["reason"]
        odd = await push("presence", {"type": "presence", "event": "dance"})
        assert "track or untrack" in odd["response"]["reason"]
        tracked = await push(
            "presence", {"type": "presence", "event": "track", "payload": {"a": 1}}
        )
        assert tracked["status"] == "ok"
        diff = await client.until("presence_diff")
        assert list(diff[4]["joins"]) == ["k"] and diff[4]["leaves"] == {}
        # A flood of tracks meets presence_rate (5 per second) with error replies.
        # Sent at once, answered after: the bucket (5 per second) cannot refill meanwhile.
        refs = [
            await client.push(
                "realtime:room", "presence", {"type": "presence", "event": "track", "payload": {}}
            )
            for _ in range(20)
        ]
        floods = [await client.reply(ref) for ref in refs]
        assert any(r["response"].get("reason", "").startswith("rate_limited") for r in floods)
        huge = {"type": "broadcast", "event": "e", "payload": {"blob": "x" * 70_000}}
        assert (await push("broadcast", huge))["response"]["reason"].startswith("payload_too_large")
        no_event = await push("broadcast", {"type": "broadcast", "payload": {}})
        assert no_event["response"]["reason"].startswith("bad_request")
        cast = {"type": "broadcast", "event": "e", "payload": {}}
        refs = [await client.push("realtime:room", "broadcast", cast) for _ in range(80)]
        statuses = [(await client.reply(ref))["status"] for ref in refs]
        assert "ok" in statuses and "error" in statuses  # broadcast_rate: 50 per second
        # Still served: a heartbeat is answered.
        heartbeat = await client.reply(await client.push("phoenix", "heartbeat", {}, None))
        assert heartbeat["status"] == "ok"


async def test_broadcasts_reach_2_0_0_clients_as_binary_frames_and_1_0_0_as_text(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url) as gateway,
        phoenix(gateway) as sender,
        phoenix(gateway) as binary_reader,
    ):
        for client in (sender, binary_reader):
            assert (await client.join("realtime:room", []))["status"] == "ok"
        url = f"ws://127.0.0.1:{gateway.port}/realtime/v1/websocket?vsn=1.0.0"
        async with connect(url) as text_reader:
            join = {"topic": "realtime:room", "event": "phx_join", "payload": {}, "ref": "1"}
            await text_reader.send(orjson.dumps({**join, "join_ref": "1"}).decode())
            joined = orjson.loads(await asyncio.wait_for(text_reader.recv(), TIMEOUT))
            assert joined["payload"]["status"] == "ok"
            # A binary push, as supabase-js 2.0.0 sends it (kind 3, JSON payload).
            topic, event, body = b"realtime:room", b"cursor", b'{"x":1}'
            header = bytes((3, 1, 1, len(topic), len(event), 0, 1))
            await sender.ws.send(header + b"19" + topic + event + body)
            frame = await asyncio.wait_for(binary_reader.ws.recv(), TIMEOUT)
            assert isinstance(frame, bytes)
            assert frame == bytes((4, len(topic), len(event), 0, 1)) + topic + event + body
            text = orjson.loads(await asyncio.wait_for(text_reader.recv(), TIMEOUT))
            assert text["event"] == "broadcast"
            assert text["payload"] == {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}


@pytest.mark.parametrize("missing", ["exp", "role"])
async def test_access_token_refresh_without_role_or_exp_closes_like_a_join_refusal(
    database_url: str, orders: asyncpg.Connection, tmp_path: Path, missing: str
) -> None:
    """Attack: join with a token that expires, then refresh with a token of the same
    subject that has no ``exp`` (or no ``role``): the join's requirement must hold for
    refreshes too, else the connection outlives every expiry."""
    async with (
        running_gateway(database_url, auth=make_auth(tmp_path)) as gateway,
        phoenix(gateway) as client,
    ):
        assert (await client.join("realtime:a", [ORDERS], access_token=token(1)))["status"] == "ok"
        await client.until("system")
        bare = token(1, **{missing: None})
        await client.push("realtime:a", "access_token", {"access_token": bare})
        with pytest.raises(ConnectionClosed) as closed:
            await client.until("never")
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4501
        assert "`role` and `exp`" in closed.value.rcvd.reason


async def test_schema_wide_bindings_skip_tables_the_token_may_not_read_without_naming_them(
    database_url: str, orders: asyncpg.Connection, tmp_path: Path
) -> None:
    """Attack: a binding without a table (or with ``*``) expands to every tracked table;
    the refusal of a forbidden one named it, so a token learnt which tables are tracked
    (and the whole join failed). The forbidden tables are now left out silently."""
    await orders.execute("CREATE TABLE payroll (id serial PRIMARY KEY, salary int)")
    await track(orders, parse_table_name("payroll"))
    async with (
        running_gateway(database_url, auth=make_auth(tmp_path)) as gateway,
        phoenix(gateway) as client,
    ):
        bindings = [{"event": "*", "schema": "public"}, {"event": "*", "schema": "*"}]
        for topic, binding in zip(("realtime:a", "realtime:b"), bindings, strict=True):
            reply = await client.join(topic, [binding], access_token=token(1))
            assert reply["status"] == "ok", reply
            assert "payroll" not in orjson.dumps(reply).decode()
            await client.until("system", topic)
        await orders.execute("INSERT INTO payroll (salary) VALUES (100000)")
        await orders.execute("INSERT INTO orders (merchant_id, note) VALUES (2, 'theirs')")
        await orders.execute("INSERT INTO orders (merchant_id, note) VALUES (1, 'mine')")
        seen = [await client.until("postgres_changes") for _ in range(2)]
        assert sorted(m[2] for m in seen) == ["realtime:a", "realtime:b"]
        assert {m[4]["data"]["record"]["note"] for m in seen} == {"mine"}
        # A named forbidden table is still refused (without telling whether it is tracked).
        named = {"event": "*", "schema": "public", "table": "payroll"}
        assert (await client.join("realtime:c", [named]))["status"] == "error"


async def test_a_deeply_nested_jsonb_value_reaches_supabase_clients_and_stalls_no_one(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Attack: a row whose jsonb nests 3,000 levels (beyond Python's recursion limit)
    made every dispatch of its page raise while a Supabase client subscribed: no client,
    native or Supabase, received anything after it. It now arrives, as written."""
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, doc jsonb)")
    await track(conn, parse_table_name("docs"))
    deep = "[" * 3000 + "]" * 3000
    binding = {"event": "*", "schema": "public", "table": "docs"}
    async with (
        running_gateway(database_url) as gateway,
        phoenix(gateway) as client,
        connect(f"ws://127.0.0.1:{gateway.port}/ws", max_size=None) as native,
    ):
        assert (await client.join("realtime:d", [binding]))["status"] == "ok"
        await native.send(orjson.dumps({"type": "subscribe", "id": "s", "table": "docs"}).decode())
        async with asyncio.timeout(TIMEOUT):
            while orjson.loads(await native.recv())["type"] != "subscribed":
                pass
        await conn.execute("INSERT INTO docs VALUES (1, $1::text::jsonb)", deep)
        await conn.execute("INSERT INTO docs VALUES (2, '{\"n\": 1.50}')")
        async with asyncio.timeout(TIMEOUT):  # raw: too deep for the test's JSON parser
            raw = ""
            while '"postgres_changes",{"ids"' not in raw:
                raw = str(await client.ws.recv())
        assert '"pgcast:' in raw and f'"doc":{deep}' in raw.replace(" ", "")
        second = await client.until("postgres_changes")
        assert second[4]["data"]["record"] == {"id": 2, "doc": {"n": 1.50}}
        async with asyncio.timeout(TIMEOUT):  # the native client still gets both
            changes = 0
            while changes < 2:
                changes += '"type":"change"' in str(await native.recv())


async def test_a_join_covering_more_tables_than_a_connection_may_hold_is_refused_at_once(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Attack: 32 distinct schema-wide bindings made one join frame 32 subscribe messages
    per tracked table, refused one by one (300 tables: 40 such frames kept the gateway
    busy 20 s and grew it by 84 MB). Now refused before any subscribe."""
    for i in range(8):
        await conn.execute(f"CREATE TABLE t{i} (id serial PRIMARY KEY, v int)")
        await track(conn, parse_table_name(f"t{i}"))
    bindings = [{"event": "*", "schema": "public", "filter": f"v=eq.{i}"} for i in range(32)]
    async with running_gateway(database_url, max_subscriptions=5) as gateway:
        async with phoenix(gateway) as client:  # the catalog is loaded once this resolves
            named = {"event": "*", "schema": "public", "table": "t0"}
            assert (await client.join("realtime:warm", [named]))["status"] == "ok"
        async with phoenix(gateway) as client:
            reply = await client.join("realtime:x", bindings)
            assert reply["status"] == "error"
            assert "cover more tables than the 5 subscriptions" in reply["response"]["reason"]


def _rss_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


async def test_join_configs_are_not_kept_whole(database_url: str) -> None:
    """Attack: a channel kept its join's whole config (and each binding as sent) until it
    left; 20 joins of 0.95 MB configs (250,000 empty objects each) held 361 MB, and a
    connection may hold 100 channels. A channel now keeps only its options."""
    junk = [{}] * 250_000
    binding = {"event": "*", "schema": "public", "table": "orders", "junk": junk}
    async with running_gateway(database_url) as gateway, phoenix(gateway) as client:
        gc.collect()
        before = _rss_mb()
        for i in range(20):
            config = {"junk": junk, "presence": {"key": "k" * 200_000}}  # a frame: 0.95 MB
            ref = await client.push(f"realtime:r{i}", "phx_join", {"config": config})
            assert (await client.reply(ref))["status"] == "ok"
        reply = await client.join("realtime:b", [binding])
        assert reply["status"] == "error"  # orders is not tracked here
        gc.collect()
        assert _rss_mb() - before < 100, (before, _rss_mb())
        track_ = {"type": "presence", "event": "track", "payload": {}}
        refused = await client.reply(await client.push("realtime:r0", "presence", track_))
        assert "presence key must be 1 to 255" in refused["response"]["reason"]
