"""Presence and broadcast over real sockets on real PostgreSQL, across gateway nodes.

Two gateways on one database are two nodes: clients on different nodes see each
other's presence and broadcasts through the PostgreSQL bus. A node killed with
SIGKILL (a real ``pgcast serve`` process) has its presence entries removed within
``presence_timeout`` (+ one sweep) on the surviving node. No fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from pgcast.auth import AuthConfig, Limits, VerificationKey, parse_rules
from pgcast.auth.tokens import TokenVerifier
from pgcast.server import Gateway

from .gateway_helpers import WsClient, running_gateway, ws_client
from .test_cli import Cli, free_port, wait_healthy

pytestmark = pytest.mark.timeout(90)

FAST = {"presence_heartbeat": 0.3, "presence_timeout": 1.0}


async def next_of(client: WsClient, kind: str, **fields: Any) -> dict[str, Any]:
    """The next message of type ``kind`` whose fields equal ``fields`` (others skipped)."""
    async with asyncio.timeout(10):
        while True:
            message = await client.recv()
            if message["type"] == kind and all(message.get(k) == v for k, v in fields.items()):
                return message


async def join(client: WsClient, topic: str = "room:1", **options: Any) -> dict[str, Any]:
    await client.send({"type": "join", "topic": topic, **options})
    joined = await client.recv()
    assert joined["type"] == "joined", joined
    if options.get("presence", True):
        state = await client.recv()
        assert state["type"] == "presence_state" and state["topic"] == topic
        return dict(state["state"])
    return {}


@contextlib.asynccontextmanager
async def two_nodes(dsn: str, **overrides: Any) -> AsyncIterator[tuple[Gateway, Gateway]]:
    async with (
        running_gateway(dsn, **(FAST | overrides)) as one,
        running_gateway(dsn, **(FAST | overrides)) as two,
    ):
        yield one, two


async def test_presence_syncs_across_two_nodes_and_leaves_on_disconnect(database_url: str) -> None:
    async with two_nodes(database_url) as (g1, g2), ws_client(g2) as bob:
        assert await join(bob) == {}
        async with ws_client(g1) as alice:
            await join(alice)
            await alice.send(
                {"type": "track", "topic": "room:1", "key": "alice", "state": {"typing": False}}
            )
            own = await next_of(alice, "presence_diff")
            assert list(own["joins"]) == ["alice"] and own["leaves"] == {}
            diff = await next_of(bob, "presence_diff")
            (meta,) = diff["joins"]["alice"]["metas"]
            assert meta["typing"] is False and "phx_ref" in meta
            # A third client joining on bob's node gets alice in its initial state.
            async with ws_client(g2) as carol:
                assert list(await join(carol)) == ["alice"]
        left = await next_of(bob, "presence_diff")  # alice's socket closed
        assert list(left["leaves"]) == ["alice"] and left["joins"] == {}


async def test_untrack_and_retrack(database_url: str) -> None:
    async with two_nodes(database_url) as (g1, g2), ws_client(g1) as a, ws_client(g2) as b:
        await join(a)
        await join(b)
        await a.send({"type": "track", "topic": "room:1", "key": "a", "state": {"v": 1}})
        await next_of(b, "presence_diff")
        await a.send({"type": "track", "topic": "room:1", "key": "a", "state": {"v": 2}})
        update = await next_of(b, "presence_diff")
        assert update["joins"]["a"]["metas"][0]["v"] == 2
        assert update["leaves"]["a"]["metas"][0]["v"] == 1
        await a.send({"type": "untrack", "topic": "room:1"})
        gone = await next_of(b, "presence_diff")
        assert list(gone["leaves"]) == ["a"]


async def test_broadcast_across_two_nodes_with_self_and_ack(database_url: str) -> None:
    async with (
        two_nodes(database_url) as (g1, g2),
        ws_client(g1) as a,
        ws_client(g2) as b,
        ws_client(g2) as outsider,
    ):
        await join(a, presence=False, self=True, ack=True)
        await join(b, presence=False)
        await join(outsider, "room:2", presence=False)
        payload = {"x": 1, "big": 12345678901234567890, "text": "héllo"}
        await a.send(
            {
                "type": "broadcast",
                "topic": "room:1",
                "event": "cursor",
                "payload": payload,
                "ref": "r1",
            }
        )
        got = await next_of(b, "broadcast")
        assert got == {
            "type": "broadcast",
            "topic": "room:1",
            "event": "cursor",
            "payload": payload,
        }
        assert await next_of(a, "broadcast") == got  # self: true
        assert await next_of(a, "ack") == {"type": "ack", "topic": "room:1", "ref": "r1"}
        # b did not ask for self: its broadcast reaches a only.
        await b.send({"type": "broadcast", "topic": "room:1", "event": "e", "payload": None})
        assert (await next_of(a, "broadcast"))["event"] == "e"
        await outsider.send({"type": "ping"})
        assert (await outsider.recv())["type"] == "pong"  # nothing from room:1 came first


async def test_server_side_broadcast_reaches_clients_on_every_node(database_url: str) -> None:
    async with two_nodes(database_url) as (g1, g2), ws_client(g1) as a, ws_client(g2) as b:
        await join(a, presence=False)
        await join(b, presence=False)
        await g1.broadcast("room:1", "notice", {"text": "deploy at 5"})
        for client in (a, b):
            got = await next_of(client, "broadcast")
            assert got["payload"] == {"text": "deploy at 5"}


async def test_a_killed_node_leaves_within_the_timeout(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "pgcast.toml").write_text(
        "[pgcast]\npresence_heartbeat = 0.3\npresence_timeout = 1.0\n"
    )
    cli = Cli(tmp_path, database_url)
    port = free_port()
    async with (
        running_gateway(database_url, **FAST) as survivor,
        cli.start("serve", "--host", "127.0.0.1", "--port", str(port)) as doomed,
    ):
        await wait_healthy(port)
        async with ws_client(survivor) as watcher:
            await join(watcher)
            ws = await connect(f"ws://127.0.0.1:{port}/ws")
            victim = WsClient(ws)
            assert (await victim.recv())["type"] == "welcome"
            await join(victim)
            await victim.send({"type": "track", "topic": "room:1", "key": "v", "state": {}})
            assert list((await next_of(watcher, "presence_diff"))["joins"]) == ["v"]
            doomed.proc.send_signal(signal.SIGKILL)  # no goodbye, no socket close frame
            await doomed.proc.wait()
            loop = asyncio.get_running_loop()
            died = loop.time()
            left = await next_of(watcher, "presence_diff")
            assert list(left["leaves"]) == ["v"]
            # presence_timeout (1.0) + sweep (1.0) + the last heartbeat's age (<= 0.3)
            # + scheduling slack on a shared machine.
            assert loop.time() - died < 1.0 + 1.0 + 0.3 + 2.0
            with contextlib.suppress(Exception):
                await ws.close()


# --- hostile input ---------------------------------------------------------------------


async def test_hostile_topic_messages_get_clear_errors(database_url: str) -> None:
    async with (
        running_gateway(database_url, channels=["*"]) as gateway,
        ws_client(gateway) as c,
    ):
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "join"}, "bad_request"),
            ({"type": "join", "topic": "has space"}, "bad_request"),
            ({"type": "join", "topic": "x" * 256}, "bad_request"),
            ({"type": "join", "topic": "t", "presence": "yes"}, "bad_request"),
            ({"type": "track", "topic": "never-joined", "state": {}}, "unknown_topic"),
            ({"type": "leave", "topic": "never-joined"}, "unknown_topic"),
            (
                {"type": "broadcast", "topic": "never-joined", "event": "e", "payload": 1},
                "unknown_topic",
            ),
            ({"type": "broadcast", "topic": "t", "event": "", "payload": 1}, "bad_request"),
            ({"type": "broadcast", "topic": "t", "event": "e"}, "bad_request"),
            ({"type": "track", "topic": "t"}, "bad_request"),
            ({"type": "track", "topic": "t", "key": 5, "state": {}}, "bad_request"),
        ]
        for message, code in cases:
            await c.send(message)
            error = await c.recv()
            assert error["type"] == "error" and error["code"] == code, (message, error)
        # The gateway's bus channel is never relayed nor published to, even with "*".
        refused = await c.subscribe("bus", channel="pgcast_bus")
        assert refused["code"] == "forbidden_channel"
        await c.send({"type": "publish", "id": "p", "channel": "pgcast_bus", "payload": "{}"})
        assert (await c.recv())["code"] == "forbidden_channel"
        await join(c, "t")
        await c.send({"type": "join", "topic": "t"})
        assert (await c.recv())["code"] == "duplicate_id"
        for bad_state in ("text", [1], None):
            await c.send({"type": "track", "topic": "t", "state": bad_state})
            assert (await c.recv())["code"] == "bad_request"


async def test_oversized_state_and_floods_are_bounded(database_url: str) -> None:
    limits = Limits(
        max_presence_bytes=200,
        presence_rate=5,
        max_broadcast_bytes=300,
        broadcast_rate=10,
        max_topic_members=2,
        max_topics=3,
    )
    async with (
        running_gateway(database_url, auth=AuthConfig(limits=limits)) as gateway,
        ws_client(gateway) as c,
        ws_client(gateway) as d,
        ws_client(gateway) as e,
    ):
        await join(c)
        await c.send({"type": "track", "topic": "room:1", "state": {"pad": "x" * 300}})
        assert (await next_of(c, "error"))["code"] == "payload_too_large"
        await c.send({"type": "broadcast", "topic": "room:1", "event": "e", "payload": "x" * 400})
        too_big = await next_of(c, "error")
        assert too_big["code"] == "payload_too_large" and too_big["topic"] == "room:1"
        # Presence flood: 40 tracks at once, at most a burst of 5 (+ refill) accepted.
        for i in range(40):
            await c.send({"type": "track", "topic": "room:1", "state": {"i": i}})
        await c.send({"type": "ping"})
        answers = []
        while (message := await c.recv())["type"] != "pong":
            answers.append(message)
        limited = [m for m in answers if m["type"] == "error" and m["code"] == "rate_limited"]
        accepted = [m for m in answers if m["type"] == "presence_diff"]
        assert len(limited) >= 30 and len(accepted) <= 8
        # Broadcast flood: same bound.
        for i in range(60):
            await c.send({"type": "broadcast", "topic": "room:1", "event": "e", "payload": i})
        await c.send({"type": "ping"})
        answers = []
        while (message := await c.recv())["type"] != "pong":
            answers.append(message)
        assert sum(m.get("code") == "rate_limited" for m in answers) >= 45
        # Members per topic: c tracks; d tracks; e is refused.
        await join(d)
        await join(e)
        await d.send({"type": "track", "topic": "room:1", "state": {}})
        await next_of(d, "presence_diff")
        await e.send({"type": "track", "topic": "room:1", "state": {}})
        assert (await next_of(e, "error"))["code"] == "topic_full"
        # Topics per connection.
        await join(e, "t2", presence=False)
        await join(e, "t3", presence=False)
        await e.send({"type": "join", "topic": "t4"})
        assert (await next_of(e, "error"))["code"] == "too_many_topics"


SECRET = "presence-test-secret-that-is-long-enough"


async def test_topic_grants_from_rules(database_url: str) -> None:
    import jwt

    rules = parse_rules(
        {
            "topics": {
                "read": ["room:*", "user:{claims.sub}"],
                "presence": ["room:*"],
                "broadcast": ["user:{claims.sub}"],
            }
        }
    )
    auth = AuthConfig(
        required=True,
        verifier=TokenVerifier([VerificationKey.from_secret(SECRET)]),
        rules=rules,
        mode="token",
    )
    token = jwt.encode({"sub": "u1"}, SECRET, algorithm="HS256")
    async with (
        running_gateway(database_url, auth=auth) as gateway,
        ws_client(gateway, additional_headers={"Authorization": f"Bearer {token}"}) as c,
    ):
        await c.send({"type": "join", "topic": "user:u2"})
        assert (await c.recv())["code"] == "forbidden"
        await c.send({"type": "join", "topic": "room:1"})
        joined = await c.recv()
        assert joined == {
            "type": "joined",
            "topic": "room:1",
            "presence": True,
            "track": True,
            "broadcast": False,
        }
        await next_of(c, "presence_state")
        await c.send({"type": "broadcast", "topic": "room:1", "event": "e", "payload": 1})
        assert (await next_of(c, "error"))["code"] == "forbidden"
        await c.send({"type": "track", "topic": "room:1", "state": {}})
        own = await next_of(c, "presence_diff")
        assert list(own["joins"]) == ["u1"]  # the default key is the token's subject
        await join(c, "user:u1")
        await c.send({"type": "track", "topic": "user:u1", "state": {}})
        assert (await next_of(c, "error"))["code"] == "forbidden"
