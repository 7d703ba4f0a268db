"""Topics: the names clients join for presence and broadcast, and who joined them.

A topic is a name (``room:42``, ``doc.7/cursors``) that lives only in the gateways:
nothing is stored, nothing goes through the change log. Any client of any node may
join one (if its token may); a broadcast on it reaches every member on every node;
its presence is the set of entries tracked on it.

Pure: :class:`Topics` is this node's index topic -> members; a :class:`Member` is one
connection's membership of one topic with its options and its :class:`Sink` (how the
connection's transport renders presence and broadcast messages: the native protocol
and the Phoenix/Supabase endpoint each have their own).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol

from .exceptions import ProtocolError

if TYPE_CHECKING:
    from .broadcast import Broadcast

__all__ = [
    "MAX_TOPIC_LENGTH",
    "TOPIC_NAME",
    "Member",
    "MemberOptions",
    "Sink",
    "Topics",
    "check_topic",
    "topic_matches",
]

MAX_TOPIC_LENGTH: Final = 255
# Printable, no whitespace and no '*' (the one metacharacter of topic patterns).
TOPIC_NAME: Final = re.compile(r"[!-)+-~]{1,255}")
_PATTERN_PART = re.compile(r"[!-~]{1,255}")


def check_topic(topic: object) -> str:
    """``topic`` if it is a valid topic name; else ProtocolError ``bad_request``."""
    if not isinstance(topic, str) or not TOPIC_NAME.fullmatch(topic):
        raise ProtocolError(
            "bad_request",
            f"topic must be 1 to {MAX_TOPIC_LENGTH} printable ASCII characters "
            "without spaces or '*'",
        )
    return topic


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern``; ``*`` is any run of characters."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == topic
    if not topic.startswith(parts[0]) or not topic.endswith(parts[-1]):
        return False
    position = len(parts[0])
    end = len(topic) - len(parts[-1])
    if end < position:
        return False
    for part in parts[1:-1]:
        found = topic.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def valid_pattern(pattern: object) -> bool:
    return isinstance(pattern, str) and _PATTERN_PART.fullmatch(pattern) is not None


class Sink(Protocol):
    """How one connection receives what happens on its topics (each transport has one).

    Called on the event loop, synchronously; each must only queue bytes (never block).
    ``presence_state`` is the full state (``{key: {"metas": [...]}}``, Phoenix's shape)
    once after joining; ``presence_diff`` the joins and leaves after it; ``broadcast``
    each broadcast (its ``payload_json`` is encoded once for every member). A frame
    that is the same for every member of a transport is encoded by the first one and
    kept for the others: in ``frames`` (one dict per diff) or ``Broadcast.frames``.
    """

    def presence_state(self, topic: str, state: dict[str, Any]) -> None: ...

    def presence_diff(
        self, topic: str, joins: dict[str, Any], leaves: dict[str, Any], frames: dict[str, bytes]
    ) -> None: ...

    def broadcast(self, message: Broadcast) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class MemberOptions:
    """A membership's options. ``receive_own``: this connection's own broadcasts come
    back to it (Supabase ``self``); ``ack``: each broadcast it sends is acknowledged
    once every node has it; ``presence``: it receives presence state and diffs."""

    receive_own: bool = False
    ack: bool = False
    presence: bool = True


class Member:
    """One connection's membership of one topic. ``owner`` identifies the connection
    (any hashable value: the transport connection object, usually)."""

    __slots__ = ("can_broadcast", "can_track", "options", "owner", "sink", "topic")

    def __init__(
        self,
        owner: object,
        topic: str,
        sink: Sink,
        options: MemberOptions = MemberOptions(),
        *,
        can_track: bool = True,
        can_broadcast: bool = True,
    ) -> None:
        self.owner = owner
        self.topic = topic
        self.sink = sink
        self.options = options
        self.can_track = can_track
        self.can_broadcast = can_broadcast

    def __repr__(self) -> str:
        return f"Member({self.topic!r}, owner={self.owner!r})"


class Topics:
    """This node's members, by topic and by owner."""

    def __init__(self) -> None:
        self._by_topic: dict[str, dict[object, Member]] = {}
        self._by_owner: dict[object, dict[str, Member]] = {}

    def add(self, member: Member) -> None:
        """Add ``member``; ProtocolError ``duplicate_id`` if its owner already joined."""
        joined = self._by_owner.setdefault(member.owner, {})
        if member.topic in joined:
            raise ProtocolError("duplicate_id", f"already joined topic {member.topic!r}")
        joined[member.topic] = member
        self._by_topic.setdefault(member.topic, {})[member.owner] = member

    def remove(self, owner: object, topic: str) -> Member | None:
        """Remove ``owner``'s membership of ``topic``; return it (None: there was none)."""
        joined = self._by_owner.get(owner)
        member = joined.pop(topic, None) if joined is not None else None
        if member is None:
            return None
        if not joined:
            del self._by_owner[owner]
        members = self._by_topic[topic]
        del members[owner]
        if not members:
            del self._by_topic[topic]
        return member

    def remove_owner(self, owner: object) -> list[Member]:
        """Remove every membership of ``owner`` (its connection closed)."""
        return [
            member
            for topic in list(self._by_owner.get(owner, ()))
            if (member := self.remove(owner, topic)) is not None
        ]

    def get(self, owner: object, topic: str) -> Member | None:
        return self._by_owner.get(owner, {}).get(topic)

    def of(self, owner: object) -> list[Member]:
        """Every membership of ``owner``."""
        return list(self._by_owner.get(owner, {}).values())

    def joined(self, owner: object) -> int:
        """How many topics ``owner`` has joined."""
        return len(self._by_owner.get(owner, ()))

    def members(self, topic: str) -> Iterator[Member]:
        return iter(list(self._by_topic.get(topic, {}).values()))

    def __contains__(self, topic: object) -> bool:
        return topic in self._by_topic

    def __len__(self) -> int:
        return len(self._by_topic)
