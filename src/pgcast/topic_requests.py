"""A native connection's presence and broadcast messages, carried out on its node.

The session (pure) hands over each ``join`` / ``leave`` / ``track`` / ``untrack`` /
``broadcast`` of an authenticated client as a ``TopicRequest``; this module checks
the token's topic rights (``Grants.topic_rights``), calls the node's
:class:`pgcast.realtime.Realtime`, and answers in the native protocol. What happens on
the topics later reaches the connection through its :class:`NativeSink`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from . import topic_protocol as wire
from .broadcast import Broadcast
from .exceptions import ProtocolError
from .protocol import ErrorCode
from .session_actions import Action, Send
from .topic_protocol import BroadcastRequest, Join, Leave, TopicMessage, Track, Untrack
from .topics import Member, MemberOptions

if TYPE_CHECKING:
    from .realtime import Realtime
    from .session import Session
    from .transports import Connection

__all__ = ["NativeSink", "carry_out", "rebind"]


class NativeSink:
    """Presence and broadcast frames of the native protocol, sent on ``conn``.

    ``conn.send`` queues on the connection's bounded outbox: a member that does not
    read is closed as a slow consumer (4001) like any other."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def presence_state(self, topic: str, state: dict[str, Any]) -> None:
        self.conn.send(wire.presence_state(topic, state))

    def presence_diff(
        self, topic: str, joins: dict[str, Any], leaves: dict[str, Any], frames: dict[str, bytes]
    ) -> None:
        frame = frames.get("native")
        if frame is None:  # the same frame for every native member: encoded once
            frame = frames["native"] = wire.presence_diff(topic, joins, leaves)
        self.conn.send(frame)

    def broadcast(self, message: Broadcast) -> None:
        frame = message.frames.get("native")
        if frame is None:  # the same frame for every native member: encoded once
            frame = wire.broadcast_frame(wire.broadcast_prefix(message), message)
            message.frames["native"] = frame
        self.conn.send(frame)


def default_key(session: Session) -> str:
    """The presence key of a ``track`` without one: the token's subject, else an id
    made for this connection."""
    identity = session.identity
    if identity is not None and identity.subject:
        return identity.subject
    if session.presence_key is None:
        session.presence_key = uuid.uuid4().hex
    return session.presence_key


async def carry_out(realtime: Realtime, session: Session, message: TopicMessage) -> list[Action]:
    """Do what ``message`` asks; the frames to answer with (an ``error`` if refused)."""
    conn = session.owner
    ref = message.ref if isinstance(message, BroadcastRequest) else None
    try:
        if isinstance(message, Join):
            return _join(realtime, session, message)
        if isinstance(message, Leave):
            realtime.leave(conn, message.topic)
            return [Send(wire.left(message.topic))]
        if isinstance(message, Track):
            key = message.key if message.key is not None else default_key(session)
            realtime.track(conn, message.topic, key, message.state)
            return []
        if isinstance(message, Untrack):
            realtime.untrack(conn, message.topic)
            return []
        await realtime.broadcast(message.topic, message.event, message.payload, sender=conn)
        member = realtime.topics.get(conn, message.topic)
        if member is not None and member.options.ack:
            return [Send(wire.ack(message.topic, ref))]
        return []
    except ProtocolError as exc:
        return [Send(wire.topic_error(exc.code, str(exc), message.topic, ref))]


def rebind(realtime: Realtime, session: Session) -> None:
    """The session has a fresh token: re-apply its topic rights to its memberships
    (a topic it may no longer read is left, with an ``error`` ``forbidden``)."""
    grants = session.grants
    assert grants is not None
    for member in realtime.topics.of(session.owner):
        rights = grants.topic_rights(member.topic)
        if not rights.read:
            realtime.leave(session.owner, member.topic)
            message = "the refreshed token may not join this topic"
            session.owner.send(wire.topic_error(ErrorCode.FORBIDDEN, message, member.topic))
        else:
            member.can_track, member.can_broadcast = rights.presence, rights.broadcast
            if not rights.presence and realtime.presence.tracked(session.owner, member.topic):
                realtime.presence_left(session.owner, member.topic)


def _join(realtime: Realtime, session: Session, message: Join) -> list[Action]:
    grants = session.grants
    assert grants is not None
    rights = grants.topic_rights(message.topic)
    if not rights.read:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not join topic {message.topic!r}")
    options = MemberOptions(
        receive_own=message.receive_own, ack=message.ack, presence=message.presence
    )
    member = Member(
        session.owner,
        message.topic,
        NativeSink(session.owner),
        options,
        can_track=rights.presence,
        can_broadcast=rights.broadcast,
    )
    joined = wire.joined(
        message.topic, presence=message.presence, track=rights.presence, broadcast=rights.broadcast
    )
    # `joined` first, then the presence state.
    realtime.join(member, announce=lambda: session.owner.send(joined))
    return []
