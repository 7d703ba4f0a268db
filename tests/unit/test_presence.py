"""Presence (pure): the replicated table and the replication protocol between nodes."""

from __future__ import annotations

import orjson
import pytest

from pgcast.presence import Presence
from pgcast.tracker import Tracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_track_then_state_is_phoenix_shaped() -> None:
    presence = Presence("n1")
    diff = presence.track("conn-a", "room", "alice", {"typing": False})
    assert [e.key for e in diff.joins] == ["alice"] and not diff.leaves
    state = presence.state("room")
    assert list(state) == ["alice"]
    (meta,) = state["alice"]["metas"]
    assert meta["typing"] is False and meta["phx_ref"].startswith("n1.")


def test_retrack_replaces_the_entry_leave_then_join() -> None:
    presence = Presence("n1")
    first = presence.track("a", "room", "alice", {"v": 1}).joins[0]
    diff = presence.track("a", "room", "alice", {"v": 2})
    assert diff.leaves == (first,)
    assert diff.joins[0].state == {"v": 2} and diff.joins[0].ref != first.ref
    assert presence.count("room") == 1


def test_two_connections_with_one_key_have_two_metas() -> None:
    presence = Presence("n1")
    presence.track("tab1", "room", "alice", {})
    presence.track("tab2", "room", "alice", {})
    assert len(presence.state("room")["alice"]["metas"]) == 2
    presence.untrack("tab1", "room")
    assert len(presence.state("room")["alice"]["metas"]) == 1


def test_untrack_owner_leaves_every_topic() -> None:
    presence = Presence("n1")
    presence.track("a", "room1", "alice", {})
    presence.track("a", "room2", "alice", {})
    presence.track("b", "room1", "bob", {})
    diffs = presence.untrack_owner("a")
    assert sorted(d.topic for d in diffs) == ["room1", "room2"]
    assert list(presence.state("room1")) == ["bob"] and presence.state("room2") == {}


def test_untrack_of_nothing_is_an_empty_diff() -> None:
    assert not Presence("n1").untrack("a", "room")


def _pair(clock: Clock) -> tuple[Tracker, Tracker]:
    return (
        Tracker(Presence("n1"), heartbeat_interval=1, node_timeout=3, clock=clock),
        Tracker(Presence("n2"), heartbeat_interval=1, node_timeout=3, clock=clock),
    )


def _exchange(source: Tracker, target: Tracker, messages: list[bytes]) -> list[object]:
    """Deliver ``messages`` from source to target, and target's replies back, until quiet."""
    diffs: list[object] = []
    queue = [(target, m) for m in messages]
    while queue:
        receiver, message = queue.pop(0)
        got, replies = receiver.receive(message)
        diffs += got
        other = source if receiver is target else target
        queue += [(other, reply) for reply in replies]
    return diffs


def test_new_node_gets_every_peer_state_on_hello() -> None:
    clock = Clock()
    n1, n2 = _pair(clock)
    n1.presence.track("a", "room", "alice", {"x": 1})
    n1.publish_diff(n1.presence.untrack("nobody", "room"))  # nothing: no message
    diffs = _exchange(n2, n1, [n2.hello()])
    assert [e.key for d in diffs for e in d.joins] == ["alice"]  # n2's diff from n1's state
    assert n2.presence.state("room")["alice"]["metas"][0]["x"] == 1


def test_diffs_replicate_in_order() -> None:
    clock = Clock()
    n1, n2 = _pair(clock)
    _exchange(n2, n1, [n2.hello()])
    message = n1.publish_diff(n1.presence.track("a", "room", "alice", {}))
    assert message is not None
    diffs, replies = n2.receive(message)
    assert replies == [] and [d.topic for d in diffs] == ["room"]
    leave = n1.publish_diff(n1.presence.untrack("a", "room"))
    assert leave is not None
    diffs, _ = n2.receive(leave)
    assert [e.key for d in diffs for e in d.leaves] == ["alice"]
    assert n2.presence.state("room") == {}


def test_a_missed_diff_is_repaired_by_a_sync() -> None:
    clock = Clock()
    n1, n2 = _pair(clock)
    _exchange(n2, n1, [n2.hello()])
    n1.publish_diff(n1.presence.track("a", "room", "alice", {}))  # lost on the way
    second = n1.publish_diff(n1.presence.track("b", "room", "bob", {}))
    assert second is not None
    diffs, replies = n2.receive(second)
    assert diffs == [] and [orjson.loads(r)["t"] for r in replies] == ["sync"]
    _exchange(n2, n1, replies)
    assert sorted(n2.presence.state("room")) == ["alice", "bob"]


def test_a_heartbeat_with_a_newer_sequence_triggers_a_sync() -> None:
    clock = Clock()
    n1, n2 = _pair(clock)
    _exchange(n2, n1, [n2.hello()])
    n1.publish_diff(n1.presence.track("a", "room", "alice", {}))  # lost
    _, replies = n2.receive(n1.heartbeat())
    assert [orjson.loads(r)["t"] for r in replies] == ["sync"]
    _exchange(n2, n1, replies)
    assert list(n2.presence.state("room")) == ["alice"]
    assert n2.receive(n1.heartbeat()) == ([], [])  # in step now


def test_silent_node_entries_leave_after_the_timeout_and_not_before() -> None:
    clock = Clock()
    n1, n2 = _pair(clock)
    n1.presence.track("a", "room", "alice", {})
    _exchange(n2, n1, [n2.hello()])
    clock.now += 2.9
    assert n2.expire() == [] and list(n2.presence.state("room")) == ["alice"]
    n2.receive(n1.heartbeat())
    clock.now += 2.9
    assert n2.expire() == []
    clock.now += 0.2  # 3.1 s after the last heartbeat
    (diff,) = n2.expire()
    assert [e.key for e in diff.leaves] == ["alice"] and n2.presence.state("room") == {}


def test_goodbye_drops_the_node_at_once() -> None:
    clock = Clock()
    n1, n2 = _pair(clock)
    n1.presence.track("a", "room", "alice", {})
    _exchange(n2, n1, [n2.hello()])
    diffs, _ = n2.receive(n1.goodbye())
    assert [e.key for d in diffs for e in d.leaves] == ["alice"]


def test_a_dropped_node_that_speaks_again_is_resynced() -> None:
    clock = Clock()
    n1, n2 = _pair(clock)
    n1.presence.track("a", "room", "alice", {})
    _exchange(n2, n1, [n2.hello()])
    clock.now += 10
    n2.expire()
    assert n2.presence.state("room") == {}
    _exchange(n1, n2, [n1.heartbeat()])
    assert list(n2.presence.state("room")) == ["alice"]


def test_full_state_is_sent_in_bounded_parts() -> None:
    clock = Clock()
    n1 = Tracker(Presence("n1"), heartbeat_interval=1, node_timeout=3, clock=clock, part_bytes=500)
    n2 = Tracker(Presence("n2"), heartbeat_interval=1, node_timeout=3, clock=clock)
    for i in range(50):
        n1.presence.track(f"c{i}", "room", f"user{i}", {"pad": "x" * 50})
    parts = n1.state_messages("n2")
    assert len(parts) > 5 and all(len(p) < 700 for p in parts)
    for part in parts[:-1]:
        assert n2.receive(part)[0] == []  # nothing until the last part
    diffs, _ = n2.receive(parts[-1])
    assert n2.presence.count("room") == 50 and len(diffs[0].joins) == 50


def test_own_echo_and_garbage_are_ignored() -> None:
    clock = Clock()
    n1, _ = _pair(clock)
    assert n1.receive(n1.heartbeat()) == ([], [])
    for junk in (b"", b"[]", b"{}", b'{"t":"diff","node":"x","seq":"a"}', b"\xff", b"null"):
        assert n1.receive(junk) == ([], [])
    bad_entry = b'{"t":"state","node":"x","to":null,"seq":1,"part":0,"parts":1,"entries":[[1]]}'
    assert n1.receive(bad_entry) == ([], [])


def test_node_timeout_must_exceed_heartbeat() -> None:
    with pytest.raises(ValueError):
        Tracker(Presence("n"), heartbeat_interval=5, node_timeout=5)
