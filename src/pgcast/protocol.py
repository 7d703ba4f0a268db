"""The wire protocol: client messages decoded and validated, server messages encoded.

Pure: text in, typed messages out; typed values in, bytes out. Every refusal is a
ProtocolError whose ``code`` goes on the wire in an ``error`` message. The
protocol is documented in docs/protocol.md; close codes in docs/close-codes.md.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .channels import CHANNEL_NAME
from .events import OPS, Horizon
from .exceptions import ProtocolError
from .filters import MATCH_ALL, Filter, parse_filter
from .topic_protocol import TOPIC_TYPES, TopicMessage, decode_topic_message
from .topics import TOPIC_NAME

PROTOCOL_VERSION = 1
MAX_ID_LENGTH = 128
_NAME = re.compile(r"[^\x00-\x1f]{1,63}")


class CloseCode(enum.IntEnum):
    """WebSocket close codes: 4000-4499 reconnect and resume, 4500-4999 do not reconnect."""

    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SHUTTING_DOWN = 4000
    SLOW_CONSUMER = 4001
    PROTOCOL_VIOLATION = 4500
    UNAUTHORIZED = 4501
    FORBIDDEN = 4502
    TOKEN_EXPIRED = 4503


class ErrorCode(enum.StrEnum):
    """Codes of ``error`` messages; the connection stays open after each."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    BAD_FILTER = "bad_filter"
    UNKNOWN_TABLE = "unknown_table"
    FORBIDDEN_CHANNEL = "forbidden_channel"
    DUPLICATE_ID = "duplicate_id"
    UNKNOWN_SUBSCRIPTION = "unknown_subscription"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    NOT_SUPPORTED = "not_supported"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TABLE_GONE = "table_gone"
    UNKNOWN_TOPIC = "unknown_topic"
    TOO_MANY_TOPICS = "too_many_topics"
    TOPIC_FULL = "topic_full"


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to a table's changes or to a raw NOTIFY channel."""

    id: str
    table: str | None = None
    schema: str | None = None
    channel: str | None = None
    events: frozenset[str] = OPS
    filter: Filter = MATCH_ALL
    columns: frozenset[str] | None = None
    since: int | Horizon | None = None
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: str


@dataclass(frozen=True, slots=True)
class Ping:
    data: Any = None


@dataclass(frozen=True, slots=True)
class Publish:
    """NOTIFY ``payload`` on raw channel ``channel`` (if the token may)."""

    id: str
    channel: str
    payload: str


@dataclass(frozen=True, slots=True)
class Auth:
    """Authenticate (first message) or swap in a fresh token on a live connection."""

    token: str = field(repr=False)


ClientMessage = Subscribe | Unsubscribe | Ping | Publish | Auth | TopicMessage

# The one limit on a token, wherever it comes from (query, header, `auth` message).
MAX_TOKEN_LENGTH = 8192


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Decode one client frame; raise ProtocolError naming what is wrong."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must be a JSON object with a 'type'")
    try:
        return _decode(message)
    except ProtocolError as exc:
        raw_id = message.get("id")
        if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID_LENGTH:
            exc.sub_id = raw_id
        topic = message.get("topic")
        if message.get("type") in TOPIC_TYPES and isinstance(topic, str):
            exc.topic = topic if TOPIC_NAME.fullmatch(topic) else None
        raise


def _decode(message: dict[str, Any]) -> ClientMessage:
    kind = message.get("type")
    if kind == "subscribe":
        return _decode_subscribe(message)
    if kind == "unsubscribe":
        return Unsubscribe(_id(message))
    if kind == "ping":
        return Ping(message.get("data"))
    if kind == "publish":
        channel, payload = message.get("channel"), message.get("payload")
        if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "'channel' must be letters, digits and underscores (at most 63)",
            )
        if not isinstance(payload, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'payload' must be a string")
        if "\x00" in payload:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "'payload' must not contain NUL (\\u0000): PostgreSQL text cannot hold it",
                hint="encode binary data, for example as base64",
            )
        return Publish(_id(message), channel, payload)
    if kind in TOPIC_TYPES:
        return decode_topic_message(message)
    if kind == "auth":
        token = message.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED,
                f"'token' must be a non-empty string (a JWT) "
                f"of at most {MAX_TOKEN_LENGTH} characters",
            )
        return Auth(token)
    raise ProtocolError(
        ErrorCode.UNKNOWN_TYPE,
        f"unknown message type {kind!r}",
        hint="use subscribe, unsubscribe, publish, ping, auth, join, leave, track, untrack "
        "or broadcast",
    )


def _id(message: dict[str, Any]) -> str:
    value = message.get("id")
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'id' must be a non-empty string of at most {MAX_ID_LENGTH} characters",
        )
    return value


def _name(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"{key!r} must be a name of 1 to 63 printable characters"
        )
    return value


def _decode_subscribe(message: dict[str, Any]) -> Subscribe:
    sub_id = _id(message)
    table = _name(message, "table")
    channel = message.get("channel")
    if (table is None) == (channel is None):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "subscribe needs exactly one of 'table' or 'channel'"
        )
    if channel is not None:
        if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "'channel' must be letters, digits and underscores (at most 63)",
            )
        extra = {"filter", "since", "columns", "events", "schema", "snapshot"} & message.keys()
        if extra:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"channel subscriptions take no {', '.join(sorted(extra))}"
            )
        return Subscribe(id=sub_id, channel=channel)
    snapshot = message.get("snapshot", False)
    if not isinstance(snapshot, bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'snapshot' must be true or false")
    since = _since(message.get("since"))
    if snapshot and since is not None:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "'snapshot' and 'since' exclude each other",
            hint="snapshot on the first subscribe, since on every resubscribe",
        )
    return Subscribe(
        id=sub_id,
        table=table,
        schema=_name(message, "schema"),
        events=_events(message.get("events")),
        filter=parse_filter(_optional_str(message, "filter")),
        columns=_columns(message.get("columns")),
        since=since,
        snapshot=snapshot,
    )


def _optional_str(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{key!r} must be a string")
    return value


def _events(value: Any) -> frozenset[str]:
    if value is None:
        return OPS
    if not isinstance(value, list) or not value:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'events' must be a non-empty list")
    events = set()
    for item in value:
        if not isinstance(item, str) or item.upper() not in OPS:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"unknown event {item!r}",
                hint="events are INSERT, UPDATE, DELETE, TRUNCATE",
            )
        events.add(item.upper())
    return frozenset(events)


def _columns(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(c, str) and _NAME.fullmatch(c) for c in value)
    ):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'columns' must be a non-empty list of names")
    return frozenset(value)


def _since(value: Any) -> int | Horizon | None:
    """A change id (``"1042"``) or an exact position (``"1041:88233:88230"``)."""
    if value is None:
        return None
    message = "'since' must be a change id such as \"1042\" or a position from the gateway"
    if isinstance(value, bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, message)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
    elif isinstance(value, str) and (horizon := Horizon.parse(value)) is not None:
        if max(horizon.head, horizon.xmax) >= 2**63:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'since' is out of range")
        return horizon
    else:
        raise ProtocolError(ErrorCode.BAD_REQUEST, message)
    if not 0 <= number < 2**63:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'since' is out of range")
    return number


def encode(message: dict[str, Any]) -> bytes:
    """Encode any server message."""
    return orjson.dumps(message)


def welcome(server: str, position: str | None) -> bytes:
    """``position`` is the log head the gateway reads from; None until it first connected."""
    return encode(
        {
            "type": "welcome",
            "version": PROTOCOL_VERSION,
            "server": server,
            "position": position,
        }
    )


def subscribed(sub_id: str, **fields: Any) -> bytes:
    return encode({"type": "subscribed", "id": sub_id, **fields})


def unsubscribed(sub_id: str) -> bytes:
    return encode({"type": "unsubscribed", "id": sub_id})


def error(code: str, message: str, sub_id: str | None = None, topic: str | None = None) -> bytes:
    if topic is not None:
        return encode(
            {"type": "error", "id": sub_id, "topic": topic, "code": code, "message": message}
        )
    return encode({"type": "error", "id": sub_id, "code": code, "message": message})


def pong(data: Any = None) -> bytes:
    return encode({"type": "pong"} if data is None else {"type": "pong", "data": data})


def resync(sub_id: str, reason: str) -> bytes:
    return encode({"type": "resync", "sub": sub_id, "reason": reason})


def snapshot_chunk(
    sub_id: str, rows: list[bytes], *, part: int, done: bool, position: str
) -> bytes:
    """A ``snapshot`` message; ``rows`` are already-encoded JSON objects."""
    return b"".join(
        (
            b'{"type":"snapshot","sub":',
            orjson.dumps(sub_id),
            b',"part":',
            str(part).encode(),
            b',"rows":[',
            b",".join(rows),
            b'],"done":',
            b"true" if done else b"false",
            b',"position":"',
            position.encode(),
            b'"}',
        )
    )


def channel_message_prefix(sub_id: str) -> bytes:
    """Start of a ``message`` frame for a channel subscription; the body is shared."""
    return b'{"type":"message","sub":' + orjson.dumps(sub_id) + b","


def channel_message_body(channel: str, payload: str) -> bytes:
    return orjson.dumps({"channel": channel, "payload": payload})[1:]
