"""Presence: who is on each topic, as a table of entries replicated on every node.

Pure. An :class:`Entry` is one connection's tracked JSON state under a key on a topic;
it belongs to the node that connection is on, which alone adds, replaces or removes it
(:mod:`pgcast.tracker` carries those changes to the other nodes). Several connections
may track the same key (one user, two tabs): the key then has several metas.

Every change returns :class:`Diff` values, one per touched topic, in Phoenix's shape
(``{key: {"metas": [{"phx_ref": ..., **state}]}}``) so each transport can pass them on
as they are: the native protocol and the Supabase endpoint both use it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["Diff", "Entry", "Presence", "metas"]


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One tracked state. ``ref`` is unique in the cluster (node id + counter)."""

    topic: str
    key: str
    ref: str
    node: str
    state: dict[str, Any]
    owner: object = dataclasses.field(default=None, compare=False)  # local entries only

    def meta(self) -> dict[str, Any]:
        return {**self.state, "phx_ref": self.ref}


def metas(entries: Iterable[Entry]) -> dict[str, Any]:
    """Entries in Phoenix's shape: ``{key: {"metas": [meta, ...]}}``."""
    grouped: dict[str, Any] = {}
    for entry in entries:
        grouped.setdefault(entry.key, {"metas": []})["metas"].append(entry.meta())
    return grouped


@dataclasses.dataclass(frozen=True, slots=True)
class Diff:
    """What changed on one topic."""

    topic: str
    joins: tuple[Entry, ...] = ()
    leaves: tuple[Entry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves)

    def joins_payload(self) -> dict[str, Any]:
        return metas(self.joins)

    def leaves_payload(self) -> dict[str, Any]:
        return metas(self.leaves)


class Presence:
    """Every node's entries, by topic, by node and (for this node's) by owner."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._refs = itertools.count(1)
        self._topics: dict[str, dict[str, Entry]] = {}  # topic -> ref -> entry
        self._nodes: dict[str, dict[str, Entry]] = {}  # node -> ref -> entry
        self._local: dict[tuple[object, str], Entry] = {}  # (owner, topic) -> entry

    # this node's entries ---------------------------------------------------------------

    def track(self, owner: object, topic: str, key: str, state: dict[str, Any]) -> Diff:
        """``owner`` tracks ``state`` under ``key`` on ``topic`` (replacing what it
        tracked there before: that leaves, the new one joins)."""
        old = self._local.pop((owner, topic), None)
        leaves: tuple[Entry, ...] = ()
        if old is not None:
            self._remove(old)
            leaves = (old,)
        entry = Entry(topic, key, f"{self.node}.{next(self._refs)}", self.node, state, owner)
        self._local[(owner, topic)] = entry
        self._add(entry)
        return Diff(topic, (entry,), leaves)

    def untrack(self, owner: object, topic: str) -> Diff:
        """``owner`` stops tracking on ``topic`` (an empty diff if it did not)."""
        entry = self._local.pop((owner, topic), None)
        if entry is None:
            return Diff(topic)
        self._remove(entry)
        return Diff(topic, leaves=(entry,))

    def untrack_owner(self, owner: object) -> list[Diff]:
        """``owner``'s connection closed: every entry of it leaves."""
        topics = [topic for (who, topic) in self._local if who == owner]
        return [self.untrack(owner, topic) for topic in topics]

    def tracked(self, owner: object, topic: str) -> Entry | None:
        return self._local.get((owner, topic))

    def local_entries(self) -> list[Entry]:
        return list(self._local.values())

    # other nodes' entries --------------------------------------------------------------

    def apply(self, node: str, joins: Iterable[Entry], leaves: Iterable[str]) -> list[Diff]:
        """Node ``node`` added ``joins`` and removed the entries whose refs are ``leaves``."""
        changed: dict[str, tuple[list[Entry], list[Entry]]] = {}
        known = self._nodes.get(node, {})
        for ref in leaves:
            entry = known.get(ref)
            if entry is not None:
                self._remove(entry)
                changed.setdefault(entry.topic, ([], []))[1].append(entry)
        for entry in joins:
            if entry.node != node or entry.ref in self._nodes.get(node, {}):
                continue
            self._add(entry)
            changed.setdefault(entry.topic, ([], []))[0].append(entry)
        return [Diff(topic, tuple(j), tuple(left)) for topic, (j, left) in changed.items()]

    def replace_node(self, node: str, entries: Iterable[Entry]) -> list[Diff]:
        """Node ``node``'s entries are exactly ``entries`` (its full state)."""
        wanted = {entry.ref: entry for entry in entries if entry.node == node}
        known = self._nodes.get(node, {})
        leaves = [ref for ref in known if ref not in wanted]
        joins = [entry for ref, entry in wanted.items() if ref not in known]
        return self.apply(node, joins, leaves)

    def drop_node(self, node: str) -> list[Diff]:
        """Node ``node`` is gone: each of its entries leaves."""
        return self.apply(node, (), list(self._nodes.get(node, {})))

    def nodes(self) -> list[str]:
        return [node for node in self._nodes if node != self.node]

    # reading -----------------------------------------------------------------------------

    def state(self, topic: str) -> dict[str, Any]:
        """The full presence of ``topic`` in Phoenix's shape."""
        return metas(self._topics.get(topic, {}).values())

    def entries(self, topic: str) -> Iterator[Entry]:
        return iter(list(self._topics.get(topic, {}).values()))

    def count(self, topic: str) -> int:
        """Entries on ``topic``, on every node."""
        return len(self._topics.get(topic, ()))

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._nodes.values())

    # ---------------------------------------------------------------------------------------

    def _add(self, entry: Entry) -> None:
        self._topics.setdefault(entry.topic, {})[entry.ref] = entry
        self._nodes.setdefault(entry.node, {})[entry.ref] = entry

    def _remove(self, entry: Entry) -> None:
        for index, name in ((self._topics, entry.topic), (self._nodes, entry.node)):
            refs = index.get(name)
            if refs is not None:
                refs.pop(entry.ref, None)
                if not refs:
                    del index[name]
