"""Phoenix channel frames as Supabase Realtime clients send and read them. Pure.

Two serializers, chosen by the ``vsn`` query parameter of the WebSocket URL:

* ``1.0.0``: a JSON object ``{"join_ref", "ref", "topic", "event", "payload"}``;
* ``2.0.0``: a JSON array ``[join_ref, ref, topic, event, payload]``, plus binary
  frames for user broadcasts: a client pushes kind 3 (``userBroadcastPush``) and
  the server sends kind 4 (``userBroadcast``), laid out as realtime-js's
  ``lib/serializer.ts`` reads and writes them.

``decode`` raises :class:`pgcast.exceptions.ProtocolError` (code ``bad_frame``)
naming what is wrong; ``encode`` never fails on a message it built.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import orjson

from ..exceptions import ProtocolError
from ..protocol import ErrorCode

__all__ = [
    "MAX_REF_BYTES",
    "MAX_TOPIC_BYTES",
    "Encoding",
    "Message",
    "Vsn",
    "decode",
    "encode",
    "encode_user_broadcast",
    "reply",
    "vsn_from_query",
]

MAX_TOPIC_BYTES = 255  # the binary layout's length bytes; text frames get the same bound
MAX_REF_BYTES = 255
_KIND_PUSH = 3  # userBroadcastPush: client to server
_KIND_BROADCAST = 4  # userBroadcast: server to client


class Vsn(enum.StrEnum):
    V1 = "1.0.0"
    V2 = "2.0.0"


class Encoding(enum.IntEnum):
    """How a binary broadcast frame carries its user payload."""

    BINARY = 0
    JSON = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One Phoenix message. ``payload`` is decoded JSON; a binary user broadcast's
    is ``{"type": "broadcast", "event", "payload"}`` with ``payload`` bytes when
    its encoding is BINARY."""

    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


def vsn_from_query(query: str) -> Vsn | None:
    """The serializer a connection asked for (``vsn=``; absent is 1.0.0), None if unknown."""
    import urllib.parse

    values = [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k == "vsn"]
    if not values:
        return Vsn.V1
    if len(set(values)) != 1:
        return None
    try:
        return Vsn(values[0])
    except ValueError:
        return None


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def _ref(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _bad(f"{name} must be a string or null")
    text = str(value)
    if len(text.encode()) > MAX_REF_BYTES:
        raise _bad(f"{name} is longer than {MAX_REF_BYTES} bytes")
    return text


def _checked(topic: Any, event: Any, payload: Any, ref: Any, join_ref: Any) -> Message:
    if not isinstance(topic, str) or not topic:
        raise _bad("topic must be a non-empty string")
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise _bad(f"topic is longer than {MAX_TOPIC_BYTES} bytes")
    if not isinstance(event, str) or not event or len(event) > 255:
        raise _bad("event must be a non-empty string of at most 255 characters")
    return Message(topic, event, payload, _ref(ref, "ref"), _ref(join_ref, "join_ref"))


def decode(data: str | bytes, vsn: Vsn) -> Message:
    """One client frame (text: str, binary: bytes) in, a checked message out."""
    if isinstance(data, bytes):
        if vsn is not Vsn.V2:
            raise _bad("binary frames need the 2.0.0 serializer (connect with vsn=2.0.0)")
        return _decode_push(data)
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"frame is not valid JSON: {exc}") from None
    if vsn is Vsn.V2:
        if not isinstance(decoded, list) or len(decoded) != 5:
            raise _bad("a 2.0.0 frame is a JSON array [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = decoded
    else:
        if not isinstance(decoded, dict):
            raise _bad("a 1.0.0 frame is a JSON object with topic, event, payload and ref")
        topic, event, payload = decoded.get("topic"), decoded.get("event"), decoded.get("payload")
        ref, join_ref = decoded.get("ref"), decoded.get("join_ref")
    return _checked(topic, event, payload, ref, join_ref)


def _decode_push(data: bytes) -> Message:
    """A kind 3 frame: kind, five lengths and the encoding, then the fields and payload."""
    if len(data) < 7:
        raise _bad("binary frame is shorter than its 7-byte header")
    kind, join_ref_len, ref_len, topic_len, event_len, meta_len, encoding = data[:7]
    if kind != _KIND_PUSH:
        raise _bad(f"binary frame of kind {kind}: only user broadcast pushes (3) are accepted")
    if encoding not in (Encoding.BINARY, Encoding.JSON):
        raise _bad(f"binary frame with unknown payload encoding {encoding}")
    offset = 7
    fields: list[str] = []
    for size in (join_ref_len, ref_len, topic_len, event_len, meta_len):
        if offset + size > len(data):
            raise _bad("binary frame is shorter than its header says")
        try:
            fields.append(data[offset : offset + size].decode())
        except UnicodeDecodeError:
            raise _bad("binary frame header field is not UTF-8") from None
        offset += size
    join_ref, ref, topic, event, meta = fields
    body = data[offset:]
    user_payload: Any = body
    if encoding == Encoding.JSON:
        try:
            user_payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _bad(f"binary frame's JSON payload is not valid JSON: {exc}") from None
    payload: dict[str, Any] = {"type": "broadcast", "event": event, "payload": user_payload}
    if meta:
        try:
            metadata = orjson.loads(meta)
        except orjson.JSONDecodeError:
            raise _bad("binary frame's metadata is not valid JSON") from None
        if not isinstance(metadata, dict):
            raise _bad("binary frame's metadata must be a JSON object")
        payload.update({k: v for k, v in metadata.items() if k not in payload})
    return _checked(topic, "broadcast", payload, ref or None, join_ref or None)


def encode(message: Message, vsn: Vsn) -> bytes:
    """A text frame's bytes (UTF-8 JSON) for ``message``."""
    if vsn is Vsn.V2:
        return orjson.dumps(
            [message.join_ref, message.ref, message.topic, message.event, message.payload]
        )
    return orjson.dumps(
        {
            "topic": message.topic,
            "event": message.event,
            "payload": message.payload,
            "ref": message.ref,
            "join_ref": message.join_ref,
        }
    )


def reply(topic: str, ref: str | None, join_ref: str | None, status: str, response: Any) -> Message:
    """A ``phx_reply`` to the client's message ``ref`` (``status`` ok or error)."""
    return Message(topic, "phx_reply", {"status": status, "response": response}, ref, join_ref)


def encode_user_broadcast(
    topic: str, event: str, payload: bytes, encoding: Encoding, meta: bytes = b""
) -> bytes:
    """A kind 4 binary frame: what a 2.0.0 client decodes as a user broadcast."""
    topic_bytes, event_bytes = topic.encode(), event.encode()
    if len(topic_bytes) > 255 or len(event_bytes) > 255 or len(meta) > 255:
        raise ValueError("topic, event and metadata are at most 255 bytes each")
    header = bytes((_KIND_BROADCAST, len(topic_bytes), len(event_bytes), len(meta), int(encoding)))
    return header + topic_bytes + event_bytes + meta + payload
