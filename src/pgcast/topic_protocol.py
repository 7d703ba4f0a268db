"""The native wire messages of presence and broadcast: decoded, validated, encoded.

Pure. Client to server: ``join``, ``leave``, ``track``, ``untrack``, ``broadcast``.
Server to client: ``joined``, ``left``, ``presence_state``, ``presence_diff``,
``broadcast``, ``ack``, and ``error`` with the ``topic`` (and ``ref``) it answers.
Documented in docs/protocol.md ("Presence and broadcast").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from .broadcast import Broadcast, check_event
from .exceptions import ProtocolError
from .topics import check_topic

__all__ = [
    "TOPIC_TYPES",
    "BroadcastRequest",
    "Join",
    "Leave",
    "TopicMessage",
    "Track",
    "Untrack",
    "decode_topic_message",
]

TOPIC_TYPES: Final = frozenset({"join", "leave", "track", "untrack", "broadcast"})
MAX_REF_LENGTH: Final = 128


@dataclass(frozen=True, slots=True)
class Join:
    """Join ``topic``: receive its broadcasts and (``presence``) its presence."""

    topic: str
    presence: bool = True
    receive_own: bool = False  # "self": receive this connection's own broadcasts
    ack: bool = False  # acknowledge each broadcast this connection sends


@dataclass(frozen=True, slots=True)
class Leave:
    topic: str


@dataclass(frozen=True, slots=True)
class Track:
    """Track ``state`` under ``key`` (None: the token's subject, else a per-connection id)."""

    topic: str
    key: str | None
    state: Any


@dataclass(frozen=True, slots=True)
class Untrack:
    topic: str


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    topic: str
    event: str
    payload: Any
    ref: str | None = None


TopicMessage = Join | Leave | Track | Untrack | BroadcastRequest


def decode_topic_message(message: dict[str, Any]) -> TopicMessage:
    """A decoded JSON object whose ``type`` is in TOPIC_TYPES; ProtocolError if bad."""
    kind = message.get("type")
    topic = check_topic(message.get("topic"))
    if kind == "join":
        return Join(
            topic,
            presence=_flag(message, "presence", True),
            receive_own=_flag(message, "self", False),
            ack=_flag(message, "ack", False),
        )
    if kind == "leave":
        return Leave(topic)
    if kind == "untrack":
        return Untrack(topic)
    if kind == "track":
        key = message.get("key")
        if key is not None and not isinstance(key, str):
            raise ProtocolError("bad_request", "'key' must be a string")
        if "state" not in message:
            raise ProtocolError("bad_request", "track needs a 'state' (a JSON object)")
        return Track(topic, key, message["state"])
    if kind == "broadcast":
        ref = message.get("ref")
        if ref is not None and (not isinstance(ref, str) or not 0 < len(ref) <= MAX_REF_LENGTH):
            raise ProtocolError(
                "bad_request", f"'ref' must be a string of 1 to {MAX_REF_LENGTH} characters"
            )
        if "payload" not in message:
            raise ProtocolError("bad_request", "broadcast needs a 'payload' (any JSON value)")
        return BroadcastRequest(topic, check_event(message.get("event")), message["payload"], ref)
    raise ProtocolError("unknown_type", f"unknown message type {kind!r}")


def _flag(message: dict[str, Any], key: str, default: bool) -> bool:
    value = message.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError("bad_request", f"{key!r} must be true or false")
    return value


# --- server messages -------------------------------------------------------------------


def joined(topic: str, *, presence: bool, track: bool, broadcast: bool) -> bytes:
    """``track`` / ``broadcast``: what the token may do on the topic."""
    return orjson.dumps(
        {
            "type": "joined",
            "topic": topic,
            "presence": presence,
            "track": track,
            "broadcast": broadcast,
        }
    )


def left(topic: str) -> bytes:
    return orjson.dumps({"type": "left", "topic": topic})


def presence_state(topic: str, state: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "presence_state", "topic": topic, "state": state})


def presence_diff(topic: str, joins: dict[str, Any], leaves: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "presence_diff", "topic": topic, "joins": joins, "leaves": leaves})


def broadcast_prefix(message: Broadcast) -> bytes:
    """A ``broadcast`` frame without its payload (the same for every member)."""
    return orjson.dumps({"type": "broadcast", "topic": message.topic, "event": message.event})[:-1]


def broadcast_frame(prefix: bytes, message: Broadcast) -> bytes:
    return prefix + b',"payload":' + message.payload_json + b"}"


def ack(topic: str, ref: str | None) -> bytes:
    return orjson.dumps({"type": "ack", "topic": topic, "ref": ref})


def topic_error(code: str, message: str, topic: str | None, ref: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "id": None, "topic": topic, "code": code}
    if ref is not None:
        body["ref"] = ref
    body["message"] = message
    return orjson.dumps(body)
