"""The presence replication protocol between gateway nodes (Phoenix.Tracker's model).

Pure: bus messages in, presence diffs and bus messages out; time is injected.

Each node owns its entries and alone changes them. It publishes each change as a
``diff`` numbered by a per-node sequence, a ``hb`` (heartbeat with its sequence)
every ``heartbeat_interval`` seconds, and ``bye`` when it stops. A node that starts
sends ``hello``: every peer answers with its full ``state``. A receiver that sees a
gap in a peer's sequence (a diff it missed while its bus connection was down, a
peer it did not know) asks that peer for its state (``sync``) and ignores the peer's
diffs until the state arrives (a node's messages arrive in the order it sent them,
so the state holds every diff sent before it). A peer silent for ``node_timeout``
seconds is dropped: its entries leave on every node that sees the silence, so a
dead node's entries are gone ``node_timeout`` (+ one sweep) after its last heartbeat.

Messages are JSON objects; entries travel as ``[topic, key, ref, state]``. A full
state is sent in parts of at most ``part_bytes`` so no single bus message grows with
the number of entries.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson

from .presence import Diff, Entry, Presence

__all__ = ["SUBJECT", "Peer", "Tracker"]

SUBJECT = "presence"
PART_BYTES = 32_768


@dataclasses.dataclass(slots=True)
class Peer:
    """What this node knows of another node."""

    seq: int = -1
    seen: float = 0.0
    syncing: bool = True  # waiting for its full state: its diffs are ignored
    asked: float = -1e18  # when a sync was last requested
    parts: dict[int, list[Entry]] = dataclasses.field(default_factory=dict)
    parts_seq: int = -1


class Tracker:
    """This node's side of presence replication."""

    def __init__(
        self,
        presence: Presence,
        *,
        heartbeat_interval: float = 4.0,
        node_timeout: float = 12.0,
        clock: Callable[[], float] = time.monotonic,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if node_timeout <= heartbeat_interval:
            raise ValueError("node_timeout must be longer than heartbeat_interval")
        self.presence = presence
        self.node = presence.node
        self.heartbeat_interval = heartbeat_interval
        self.node_timeout = node_timeout
        self.clock = clock
        self.part_bytes = part_bytes
        self.seq = 0
        self.peers: dict[str, Peer] = {}

    # what this node sends ------------------------------------------------------------------

    def hello(self) -> bytes:
        return _dump({"t": "hello", "node": self.node})

    def goodbye(self) -> bytes:
        return _dump({"t": "bye", "node": self.node})

    def heartbeat(self) -> bytes:
        return _dump({"t": "hb", "node": self.node, "seq": self.seq})

    def publish_diff(self, diff: Diff) -> bytes | None:
        """The bus message for a change of this node's entries (None: nothing changed)."""
        if not diff:
            return None
        self.seq += 1
        return _dump(
            {
                "t": "diff",
                "node": self.node,
                "seq": self.seq,
                "joins": [_wire(entry) for entry in diff.joins],
                "leaves": [entry.ref for entry in diff.leaves],
            }
        )

    def state_messages(self, to: str | None) -> list[bytes]:
        """This node's full state, in parts (``to``: the node that asked; None: all)."""
        parts: list[list[list[Any]]] = [[]]
        size = 0
        for entry in self.presence.local_entries():
            wire = _wire(entry)
            length = len(_dump(wire))
            if parts[-1] and size + length > self.part_bytes:
                parts.append([])
                size = 0
            parts[-1].append(wire)
            size += length
        return [
            _dump(
                {
                    "t": "state",
                    "node": self.node,
                    "to": to,
                    "seq": self.seq,
                    "part": index,
                    "parts": len(parts),
                    "entries": part,
                }
            )
            for index, part in enumerate(parts)
        ]

    # what this node receives ------------------------------------------------------------------

    def receive(self, data: bytes) -> tuple[list[Diff], list[bytes]]:
        """A bus message in: the presence diffs to deliver locally, the messages to send.

        A malformed message is ignored (peers are gateways; the bus is internal)."""
        try:
            message = orjson.loads(data)
            kind = message["t"]
            node = message["node"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return [], []
        if not isinstance(node, str) or node == self.node:
            return [], []  # our own message, echoed back by the bus
        now = self.clock()
        if kind == "bye":
            self.peers.pop(node, None)
            return self.presence.drop_node(node), []
        peer = self.peers.get(node)
        if peer is None:
            peer = self.peers[node] = Peer(seen=now)
        peer.seen = now
        try:
            if kind == "hello":
                return [], self.state_messages(node)
            if kind == "hb":
                return [], self._check_seq(node, peer, int(message["seq"]), now)
            if kind == "diff":
                return self._diff(node, peer, message, now)
            if kind == "state":
                return self._state(node, peer, message), []
            if kind == "sync":
                return [], self.state_messages(node) if message.get("to") == self.node else []
        except (KeyError, TypeError, ValueError, IndexError):
            pass
        return [], []

    def expire(self) -> list[Diff]:
        """Drop the peers silent for ``node_timeout`` seconds; their entries leave."""
        now = self.clock()
        diffs: list[Diff] = []
        for node, peer in list(self.peers.items()):
            if now - peer.seen > self.node_timeout:
                del self.peers[node]
                diffs += self.presence.drop_node(node)
        return diffs

    # ---------------------------------------------------------------------------------------

    def _check_seq(self, node: str, peer: Peer, seq: int, now: float) -> list[bytes]:
        if peer.syncing or seq != peer.seq:
            return self._ask(node, peer, now)
        return []

    def _ask(self, node: str, peer: Peer, now: float) -> list[bytes]:
        peer.syncing = True
        if now - peer.asked < self.heartbeat_interval:
            return []  # asked recently; its state is on the way
        peer.asked = now
        return [_dump({"t": "sync", "node": self.node, "to": node})]

    def _diff(
        self, node: str, peer: Peer, message: dict[str, Any], now: float
    ) -> tuple[list[Diff], list[bytes]]:
        seq = int(message["seq"])
        if peer.syncing:
            return [], self._ask(node, peer, now)
        if seq <= peer.seq:
            return [], []  # already in a state we applied
        if seq != peer.seq + 1:
            return [], self._ask(node, peer, now)
        peer.seq = seq
        joins = [_entry(item, node) for item in message["joins"]]
        return self.presence.apply(node, joins, [str(ref) for ref in message["leaves"]]), []

    def _state(self, node: str, peer: Peer, message: dict[str, Any]) -> list[Diff]:
        to = message.get("to")
        if to is not None and to != self.node:
            return []
        seq, part, parts = int(message["seq"]), int(message["part"]), int(message["parts"])
        if not 0 <= part < parts:
            return []
        if seq != peer.parts_seq:
            peer.parts, peer.parts_seq = {}, seq
        peer.parts[part] = [_entry(item, node) for item in message["entries"]]
        if len(peer.parts) < parts:
            return []
        entries = [entry for index in range(parts) for entry in peer.parts.get(index, ())]
        peer.parts, peer.parts_seq = {}, -1
        peer.seq, peer.syncing = seq, False
        return self.presence.replace_node(node, entries)


def _dump(value: object) -> bytes:
    return orjson.dumps(value)


def _wire(entry: Entry) -> list[Any]:
    return [entry.topic, entry.key, entry.ref, entry.state]


def _entry(item: list[Any], node: str) -> Entry:
    topic, key, ref, state = item
    if not (isinstance(topic, str) and isinstance(key, str) and isinstance(ref, str)):
        raise TypeError("bad entry")
    if not isinstance(state, dict):
        raise TypeError("bad entry state")
    return Entry(topic, key, ref, node, state)
