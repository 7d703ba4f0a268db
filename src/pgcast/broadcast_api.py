"""``POST /api/broadcast``: a server (any language) broadcasts on a topic over HTTP.

Body: ``{"topic": "room:1", "event": "notice", "payload": <any JSON>}`` with
``Content-Type: application/json``; the token as for connections (``Authorization:
Bearer``, or ``?token=``), checked against ``[rules.topics] broadcast``. Answers
``202 {"ok": true}`` once the bus took the message (every node's members get it), or
an error ``{"error": <code>, "message": ...}``: 400 malformed, 401 token, 403 not
allowed, 405 method, 413 payload above ``max_broadcast_bytes``, 415 not JSON, 429
over ``broadcast_rate`` for the token's subject (every request without a subject
shares one budget), 503 the other nodes unreachable. Python code in the gateway's
process calls ``Node.broadcast`` instead (no limits, no token).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Final

import orjson

from .auth import extract_token
from .exceptions import AuthError, ProtocolError
from .rate_limit import RateLimit
from .routes import Answer
from .topics import check_topic

if TYPE_CHECKING:
    from .node import Node

__all__ = ["PATH", "BroadcastEndpoint"]

PATH: Final = "/api/broadcast"
MAX_SUBJECTS: Final = 10_000  # rate buckets kept; the oldest is dropped past it
_STATUS = {
    "bad_request": 400,
    "bad_frame": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "payload_too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
}


def _error(status: int, code: str, message: str) -> Answer:
    return Answer(status, orjson.dumps({"error": code, "message": message}))


class BroadcastEndpoint:
    """The ``POST /api/broadcast`` route of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._rates: collections.OrderedDict[str, RateLimit] = collections.OrderedDict()

    async def answer(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Answer:
        if method != "POST":
            return _error(405, "method_not_allowed", "use POST with a JSON body")
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _error(415, "unsupported_media_type", "send Content-Type: application/json")
        auth = self.node.auth
        try:
            token = extract_token(target, headers)
            if token is None and auth.required:
                raise AuthError("this gateway requires a token")
            identity = auth.authenticate(token)
        except AuthError as exc:
            return _error(401, "unauthorized", exc.message)
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, "bad_request", f"body is not valid JSON: {exc}")
        if not isinstance(message, dict) or set(message) - {"topic", "event", "payload"}:
            return _error(
                400, "bad_request", "body must be an object with topic, event and payload"
            )
        if "payload" not in message:
            return _error(400, "bad_request", "'payload' is missing (any JSON value)")
        try:
            topic = check_topic(message.get("topic"))
            if not auth.rules.bind(identity).topic_rights(topic).broadcast:
                raise ProtocolError("forbidden", f"this token may not broadcast on {topic!r}")
            if not self._rate(identity.subject or "").allow():
                raise ProtocolError("rate_limited", "too many broadcasts; slow down")
            event = message.get("event")
            if not isinstance(event, str):
                raise ProtocolError("bad_request", "'event' must be a string")
            await self.node.realtime.broadcast(topic, event, message["payload"])
        except ProtocolError as exc:
            return _error(_STATUS.get(exc.code, 400), exc.code, exc.message)
        return Answer(202, b'{"ok":true}')

    def _rate(self, subject: str) -> RateLimit:
        rate = self._rates.get(subject)
        if rate is None:
            if len(self._rates) >= MAX_SUBJECTS:
                self._rates.popitem(last=False)
            rate = self._rates[subject] = RateLimit(self.node.auth.limits.broadcast_rate)
        else:
            self._rates.move_to_end(subject)
        return rate
