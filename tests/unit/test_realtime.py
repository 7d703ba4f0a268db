"""Realtime (topics, presence, broadcast, limits) on nodes joined by in-process buses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pgcast.auth import Identity, Limits, parse_rules
from pgcast.broadcast import Broadcast
from pgcast.bus import LocalBus, LocalNetwork
from pgcast.exceptions import BusError, ConfigError, ProtocolError
from pgcast.realtime import Realtime
from pgcast.topics import Member, MemberOptions, check_topic, topic_matches


class Sink:
    """Records what a connection would receive."""

    def __init__(self) -> None:
        self.states: list[tuple[str, dict[str, Any]]] = []
        self.diffs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.broadcasts: list[Broadcast] = []

    def presence_state(self, topic: str, state: dict[str, Any]) -> None:
        self.states.append((topic, state))

    def presence_diff(
        self, topic: str, joins: dict[str, Any], leaves: dict[str, Any], frames: dict[str, bytes]
    ) -> None:
        self.diffs.append((topic, joins, leaves))

    def broadcast(self, message: Broadcast) -> None:
        self.broadcasts.append(message)

    def joined_keys(self) -> list[str]:
        return [key for _, joins, _ in self.diffs for key in joins]

    def left_keys(self) -> list[str]:
        return [key for _, _, leaves in self.diffs for key in leaves]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


FAST = {"heartbeat_interval": 0.1, "node_timeout": 0.4, "sweep_interval": 0.05}


@pytest.fixture
async def cluster() -> AsyncIterator[Callable[..., Any]]:
    network = LocalNetwork()
    nodes: list[Realtime] = []

    async def start(limits: Limits | None = None, **kwargs: Any) -> Realtime:
        node = Realtime(LocalBus(network), limits, **(FAST | kwargs))
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop()


def join(node: Realtime, owner: str, topic: str = "room", **options: Any) -> Sink:
    sink = Sink()
    node.join(Member(owner, topic, sink, MemberOptions(**options)))
    return sink


async def test_presence_syncs_across_nodes_and_leaves_on_close(cluster: Any) -> None:
    n1, n2 = await cluster(), await cluster()
    alice = join(n1, "a")
    bob = join(n2, "b")
    assert alice.states == [("room", {})]
    n1.track("a", "room", "alice", {"status": "online"})
    await until(lambda: "alice" in bob.joined_keys())
    assert alice.joined_keys() == ["alice"]  # the tracker sees its own join too
    n1.closed("a")
    await until(lambda: "alice" in bob.left_keys())
    assert n2.state("room") == {}


async def test_a_new_node_receives_the_existing_state(cluster: Any) -> None:
    n1 = await cluster()
    join(n1, "a")
    n1.track("a", "room", "alice", {})
    n2 = await cluster()
    await until(lambda: "alice" in n2.state("room"))
    late = join(n2, "b")
    assert list(late.states[0][1]) == ["alice"]


async def test_dead_node_entries_leave_within_the_timeout(cluster: Any) -> None:
    n1, n2 = await cluster(), await cluster()
    join(n1, "a")
    bob = join(n2, "b")
    n1.track("a", "room", "alice", {})
    await until(lambda: "alice" in bob.joined_keys())
    assert isinstance(n1.bus, LocalBus)
    n1.bus.connected = False  # the node dies: no heartbeat, no goodbye
    died = time.monotonic()
    await until(lambda: "alice" in bob.left_keys(), timeout=5)
    assert time.monotonic() - died < 0.4 + 0.05 + 2.0  # timeout + sweep + slack (shared CPU)


async def test_broadcast_reaches_members_on_every_node_but_not_the_sender(cluster: Any) -> None:
    n1, n2 = await cluster(), await cluster()
    sender = join(n1, "a")
    local = join(n1, "c")
    remote = join(n2, "b")
    other_topic = join(n2, "d", "elsewhere")
    await n1.broadcast("room", "typing", {"who": "alice"}, sender="a")
    await until(lambda: len(remote.broadcasts) == 1)
    assert [m.payload for m in local.broadcasts] == [{"who": "alice"}]
    assert remote.broadcasts[0].event == "typing"
    assert sender.broadcasts == [] and other_topic.broadcasts == []


async def test_receive_own_broadcast_when_asked(cluster: Any) -> None:
    n1 = await cluster()
    sender = join(n1, "a", receive_own=True)
    await n1.broadcast("room", "e", [1, 2], sender="a")
    assert [m.payload for m in sender.broadcasts] == [[1, 2]]


async def test_server_broadcast_needs_no_membership(cluster: Any) -> None:
    n1, n2 = await cluster(), await cluster()
    remote = join(n2, "b")
    await n1.broadcast("room", "notice", {"text": "maintenance"})
    await until(lambda: len(remote.broadcasts) == 1)


async def test_broadcast_on_a_topic_not_joined_is_refused(cluster: Any) -> None:
    n1 = await cluster()
    with pytest.raises(ProtocolError) as refused:
        await n1.broadcast("room", "e", {}, sender="a")
    assert refused.value.code == "unknown_topic"
    with pytest.raises(ProtocolError) as untracked:
        n1.track("a", "room", "k", {})
    assert untracked.value.code == "unknown_topic"


async def test_rights_are_enforced(cluster: Any) -> None:
    n1 = await cluster()
    sink = Sink()
    n1.join(Member("a", "room", sink, can_track=False, can_broadcast=False))
    with pytest.raises(ProtocolError) as no_track:
        n1.track("a", "room", "k", {})
    with pytest.raises(ProtocolError) as no_broadcast:
        await n1.broadcast("room", "e", {}, sender="a")
    assert no_track.value.code == no_broadcast.value.code == "forbidden"


async def test_state_size_limit(cluster: Any) -> None:
    n1 = await cluster(Limits(max_presence_bytes=100))
    join(n1, "a")
    n1.track("a", "room", "k", {"pad": "x" * 80})
    with pytest.raises(ProtocolError) as refused:
        n1.track("a", "room", "k", {"pad": "x" * 100})
    assert refused.value.code == "payload_too_large"
    for bad in ("not an object", [1], None):
        with pytest.raises(ProtocolError) as wrong:
            n1.track("a", "room", "k", bad)
        assert wrong.value.code == "bad_request"
    with pytest.raises(ProtocolError):
        n1.track("a", "room", "", {})
    with pytest.raises(ProtocolError):
        n1.track("a", "room", "x" * 256, {})


async def test_members_per_topic_limit(cluster: Any) -> None:
    n1 = await cluster(Limits(max_topic_members=3, presence_rate=0))
    for owner in "abcd":
        join(n1, owner)
    for owner in "abc":
        n1.track(owner, "room", owner, {})
    n1.track("a", "room", "a", {"again": True})  # an update is not a new member
    with pytest.raises(ProtocolError) as refused:
        n1.track("d", "room", "d", {})
    assert refused.value.code == "topic_full"
    assert n1.presence.count("room") == 3


async def test_presence_rate_limit(cluster: Any) -> None:
    n1 = await cluster(Limits(presence_rate=5))
    join(n1, "a")
    accepted = 0
    with pytest.raises(ProtocolError) as refused:
        for _ in range(100):
            n1.track("a", "room", "k", {"n": accepted})
            accepted += 1
    assert refused.value.code == "rate_limited"
    assert accepted <= 6


async def test_broadcast_size_and_rate_limits(cluster: Any) -> None:
    n1 = await cluster(Limits(max_broadcast_bytes=50, broadcast_rate=10))
    join(n1, "a")
    with pytest.raises(ProtocolError) as big:
        await n1.broadcast("room", "e", "x" * 60, sender="a")
    assert big.value.code == "payload_too_large"
    sent = 0
    with pytest.raises(ProtocolError) as flood:
        for _ in range(1000):
            await n1.broadcast("room", "e", sent, sender="a")
            sent += 1
    assert flood.value.code == "rate_limited" and sent <= 11
    with pytest.raises(ProtocolError) as bad_event:
        await n1.broadcast("room", "bad\nevent", {})
    assert bad_event.value.code == "bad_request"


async def test_topics_per_connection_limit(cluster: Any) -> None:
    n1 = await cluster(Limits(max_topics=2))
    join(n1, "a", "t1")
    join(n1, "a", "t2")
    with pytest.raises(ProtocolError) as refused:
        join(n1, "a", "t3")
    assert refused.value.code == "too_many_topics"
    with pytest.raises(ProtocolError) as twice:
        join(n1, "a", "t1")
    assert twice.value.code == "duplicate_id"


async def test_leave_removes_membership_and_presence(cluster: Any) -> None:
    n1 = await cluster()
    join(n1, "a")
    watcher = join(n1, "b")
    n1.track("a", "room", "alice", {})
    n1.leave("a", "room")
    assert watcher.left_keys() == ["alice"]
    with pytest.raises(ProtocolError):
        n1.leave("a", "room")


async def test_broadcast_reports_an_unreachable_bus(cluster: Any) -> None:
    n1 = await cluster()
    local = join(n1, "b")
    assert isinstance(n1.bus, LocalBus)
    n1.bus.connected = False
    with pytest.raises(ProtocolError) as refused:
        await n1.broadcast("room", "e", {})
    assert refused.value.code == "unavailable"
    assert len(local.broadcasts) == 1  # this node's members still got it


async def test_local_bus_refuses_oversized_messages() -> None:
    bus = LocalBus(max_message_bytes=10)
    await bus.start()
    with pytest.raises(BusError):
        await bus.publish("presence", b"x" * 11)
    with pytest.raises(BusError):
        await bus.publish("Bad Subject", b"x")


def test_topic_names_and_patterns() -> None:
    assert check_topic("room:42/cursors") == "room:42/cursors"
    for bad in ("", "a b", "a*b", "x" * 256, "tab\t", 7, None):
        with pytest.raises(ProtocolError):
            check_topic(bad)
    assert topic_matches("room:*", "room:1") and not topic_matches("room:*", "rooms")
    assert topic_matches("*:cursors", "doc:cursors") and topic_matches("a*b*c", "aXbYc")
    assert not topic_matches("a*b*c", "acb") and topic_matches("exact", "exact")


def test_topic_rights_from_rules() -> None:
    rules = parse_rules(
        {
            "topics": {
                "read": ["room:*", "user:{claims.sub}"],
                "presence": ["room:*"],
                "broadcast": ["room:lobby", "user:{claims.sub}"],
            }
        }
    )
    grants = rules.bind(Identity(subject="u1", claims={"sub": "u1"}))
    lobby = grants.topic_rights("room:lobby")
    assert (lobby.read, lobby.presence, lobby.broadcast) == (True, True, True)
    other = grants.topic_rights("room:2")
    assert (other.read, other.presence, other.broadcast) == (True, True, False)
    own = grants.topic_rights("user:u1")
    assert (own.read, own.presence, own.broadcast) == (True, False, True)
    assert not grants.topic_rights("user:u2").read
    assert not grants.topic_rights("bad topic").read
    open_grants = parse_rules(None).bind(Identity(subject=None, claims={}))
    assert open_grants.topic_rights("anything").broadcast
    tables_only = parse_rules({"tables": {}}).bind(Identity(subject=None, claims={}))
    assert not tables_only.topic_rights("room:1").read  # rules configured: nothing granted


def test_bad_topic_rules_are_refused() -> None:
    with pytest.raises(ConfigError):
        parse_rules({"topics": {"read": ["has space"]}})
    with pytest.raises(ConfigError):
        parse_rules({"topics": {"write": ["x"]}})
    with pytest.raises(ConfigError):
        Limits(max_presence_bytes=0)
    with pytest.raises(ConfigError):
        Limits(broadcast_rate=-1)
