"""Broadcast: an event with a JSON payload sent to every member of a topic, on every node.

Pure. A :class:`Broadcast` is validated once where it enters (a client message, the
HTTP endpoint, the Python API) and encoded once: each transport splices
``payload_json`` into its own frame. Nothing is stored: a member that is not
connected when a broadcast is sent never sees it.

On the bus (subject ``broadcast``) it travels as
``{"node": ..., "topic": ..., "event": ..., "payload": ...}``; the sending node
delivers to its own members directly and skips its own message when the bus echoes it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

import orjson

from .exceptions import ProtocolError
from .topics import TOPIC_NAME

__all__ = ["EVENT_NAME", "MAX_EVENT_LENGTH", "SUBJECT", "Broadcast", "check_event"]

SUBJECT: Final = "broadcast"
MAX_EVENT_LENGTH: Final = 255
EVENT_NAME: Final = re.compile(r"[^\x00-\x1f\x7f]{1,255}")


def check_event(event: object) -> str:
    if not isinstance(event, str) or not EVENT_NAME.fullmatch(event):
        raise ProtocolError(
            "bad_request",
            f"event must be a string of 1 to {MAX_EVENT_LENGTH} characters without control "
            "characters",
        )
    return event


@dataclasses.dataclass(frozen=True, slots=True)
class Broadcast:
    """One broadcast. ``sender`` is the sending connection on this node (None: a server
    broadcast, or one from another node); ``payload_json`` its payload encoded."""

    topic: str
    event: str
    payload: Any
    payload_json: bytes
    sender: object = dataclasses.field(default=None, compare=False)
    # Each transport's frame, encoded for its first member and shared by the others.
    frames: dict[str, bytes] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls, topic: str, event: str, payload: Any, *, max_bytes: int, sender: object = None
    ) -> Broadcast:
        """Validate and encode; ProtocolError ``payload_too_large`` above ``max_bytes``."""
        check_event(event)
        try:
            encoded = orjson.dumps(payload)
        except TypeError as exc:
            raise ProtocolError("bad_request", f"payload is not JSON: {exc}") from None
        if len(encoded) > max_bytes:
            raise ProtocolError(
                "payload_too_large",
                f"broadcast payload is {len(encoded)} bytes; at most {max_bytes}",
            )
        return cls(topic, event, payload, encoded, sender)

    def to_bus(self, node: str) -> bytes:
        return b"".join(
            (
                orjson.dumps({"node": node, "topic": self.topic, "event": self.event})[:-1],
                b',"payload":',
                self.payload_json,
                b"}",
            )
        )

    @classmethod
    def from_bus(cls, data: bytes) -> tuple[str, Broadcast] | None:
        """(node, broadcast) of a bus message; None when it is malformed."""
        try:
            message = orjson.loads(data)
            node, topic, event = message["node"], message["topic"], message["event"]
            payload = message["payload"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(node, str) or not isinstance(topic, str):
            return None
        if not TOPIC_NAME.fullmatch(topic) or not isinstance(event, str):
            return None
        return node, cls(topic, event, payload, orjson.dumps(payload))
