"""One Supabase Realtime (Phoenix channels) connection: frames in, actions out. Pure.

The session translates between Phoenix channels and pgcast's own protocol, so
authentication, grants, row rules, filters, rate limits and catch-ups are those of
:class:`pgcast.session.Session`, which the glue (:mod:`pgcast.supabase.endpoint`)
runs behind it:

* ``heartbeat`` on topic ``phoenix`` is answered here;
* ``phx_join`` on ``realtime:<name>`` authenticates the connection with the join's
  ``access_token`` (else the ``apikey`` of the URL) the first time, then becomes a
  pgcast ``subscribe`` per table of each ``postgres_changes`` binding; the join is
  answered once every subscription is live (or just before the first change of a
  resume's replay), with the binding ids, then a ``system`` message says
  "Subscribed to PostgreSQL";
* ``access_token`` becomes a pgcast ``auth`` (same subject; grants re-applied);
* ``phx_leave`` unsubscribes; ``broadcast`` and ``presence`` go to the glue
  (:class:`Extension`), which runs them through :mod:`pgcast.realtime` for the
  channels it made members of their topic (:class:`Joined`, :class:`Left`);
* pgcast's answers (``subscribed``, ``error``, ``resync``) and changes come back as
  ``phx_reply``, ``system`` and ``postgres_changes`` messages.

Bad input gets a ``phx_reply`` error (or, with no topic to answer on, a
``phx_error`` on topic ``phoenix``); past ``MAX_BAD_FRAMES`` the connection is
closed with 4500.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..events import subscription_prefix
from ..exceptions import ProtocolError
from ..protocol import CloseCode, ErrorCode
from ..rate_limit import RateLimit
from . import frames
from .changes import POSITION_PREFIX, Binding, Tables, encoded_change, parse_bindings
from .frames import Message, Vsn

__all__ = [
    "MAX_BAD_FRAMES",
    "MAX_CHANNELS",
    "Authenticate",
    "Close",
    "Extension",
    "Forward",
    "Joined",
    "Left",
    "PhoenixSession",
    "Reply",
]

MAX_CHANNELS = 100  # joined topics per connection
MAX_BAD_FRAMES = 20  # malformed frames a connection may send before it is closed
TOPIC_PREFIX = "realtime:"
_INVALID = "InvalidJoinPayload"


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """Send ``frame`` (a whole encoded message) to the client."""

    frame: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    """Hand ``message`` (a pgcast client message) to the connection's pgcast session."""

    message: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Authenticate:
    """Authenticate the connection with ``token`` (None: anonymous), then carry out
    ``then``; if that fails, carry out ``PhoenixSession.join_refused(topic, why)``."""

    token: str | None
    topic: str
    then: list[Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Joined:
    """The join of ``topic`` was answered ok: its presence and broadcast may start."""

    topic: str
    join_ref: str | None
    config: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Left:
    """The channel ``topic`` (which was joined) is gone: leave its presence and broadcast."""

    topic: str


@dataclasses.dataclass(frozen=True, slots=True)
class Extension:
    """A ``broadcast`` or ``presence`` message on a joined channel (the glue's)."""

    message: Message
    config: dict[str, Any]


Action = Reply | Forward | Authenticate | Close | Extension | Joined | Left


def _kept(config: dict[str, Any]) -> dict[str, Any]:
    """What a channel keeps of its join's config until it leaves: the broadcast and
    presence options (the rest, up to a frame's size, is dropped)."""
    kept: dict[str, Any] = {}
    broadcast, presence = config.get("broadcast"), config.get("presence")
    if isinstance(broadcast, dict):
        options = {k: broadcast.get(k) for k in ("self", "ack")}
        kept["broadcast"] = {k: v for k, v in options.items() if isinstance(v, bool)}
    if isinstance(presence, dict):
        kept["presence"] = {"enabled": True} if presence.get("enabled") is True else {}
        key = presence.get("key")
        if isinstance(key, str):  # one past pgcast.realtime.MAX_KEY_LENGTH: still refused
            kept["presence"]["key"] = key[:256]
    return kept


@dataclasses.dataclass(eq=False)
class _Channel:
    topic: str
    join_ref: str | None
    ref: str | None
    config: dict[str, Any]
    bindings: list[Binding]
    subs: dict[str, int] = dataclasses.field(default_factory=dict)  # sub id -> binding id
    pending: set[str] = dataclasses.field(default_factory=set)  # not yet `subscribed`
    wildcard: set[str] = dataclasses.field(default_factory=set)  # of bindings naming no table
    replied: bool = False
    announced: bool = False

    @property
    def name(self) -> str:
        return self.topic.removeprefix(TOPIC_PREFIX)


class PhoenixSession:
    """The Phoenix side of one connection (see module doc)."""

    def __init__(
        self,
        vsn: Vsn,
        *,
        apikey: str | None,
        columns: Callable[[str, str], bytes],
        tables: Tables,
        join_rate: float,
        max_subscriptions: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vsn = vsn
        self.apikey = apikey
        self.columns = columns
        self.tables = tables
        self.join_limit = RateLimit(join_rate, clock=clock)
        self.max_subscriptions = max_subscriptions  # of the connection (0: no bound)
        self.channels: dict[str, _Channel] = {}
        self.by_sub: dict[str, str] = {}  # sub id -> topic
        self.by_prefix: dict[bytes, str] = {}  # change prefix -> sub id
        self.authenticated = False
        self.token: str | None = None
        self.bad_frames = 0
        self._next_sub = 0

    # client frames -----------------------------------------------------------------

    def receive(self, data: str | bytes) -> list[Action]:
        try:
            message = frames.decode(data, self.vsn)
        except ProtocolError as exc:
            return self._bad_frame(str(exc))
        topic, event, payload = message.topic, message.event, message.payload
        if topic == "phoenix":
            if event == "heartbeat":
                return [self._reply(message, "ok", {})]
            return [self._reply(message, "error", {"reason": f"unknown event {event!r}"})]
        if event == "phx_join":
            return self._join(message)
        channel = self.channels.get(topic)
        if channel is None or (message.join_ref and message.join_ref != channel.join_ref):
            return [self._reply(message, "error", {"reason": "unmatched topic"})]
        if event == "phx_leave":
            return [*self._leave(channel), self._reply(message, "ok", {})]
        if event == "access_token":
            token = payload.get("access_token") if isinstance(payload, dict) else None
            return self._refresh(token if isinstance(token, str) else None)
        if event in ("broadcast", "presence"):
            if not isinstance(payload, dict):
                return [self._reply(message, "error", {"reason": f"{event} payload must be a map"})]
            return [Extension(message, channel.config)]
        return [self._reply(message, "error", {"reason": f"unknown event {event!r}"})]

    def _bad_frame(self, why: str) -> list[Action]:
        self.bad_frames += 1
        if self.bad_frames > MAX_BAD_FRAMES:
            return [Close(CloseCode.PROTOCOL_VIOLATION, "too many malformed frames")]
        error = Message("phoenix", "phx_error", {"reason": why})
        return [Reply(frames.encode(error, self.vsn))]

    def _reply(self, message: Message, status: str, response: Any) -> Reply:
        answer = frames.reply(message.topic, message.ref, message.join_ref, status, response)
        return Reply(frames.encode(answer, self.vsn))

    def _refresh(self, token: str | None) -> list[Action]:
        if token is None or token.startswith("sb_") or token == self.token:
            return []  # as Supabase: nothing new to verify
        self.token = token
        if not self.authenticated:
            return []  # the next join authenticates with it
        return [Forward({"type": "auth", "token": token})]

    def _join(self, message: Message) -> list[Action]:
        topic, payload = message.topic, message.payload
        if not topic.startswith(TOPIC_PREFIX):
            return [self._reply(message, "error", {"reason": "unmatched topic"})]
        if topic == TOPIC_PREFIX:
            reason = "TopicNameRequired: You must provide a topic name"
            return [self._reply(message, "error", {"reason": reason})]
        if not self.join_limit.allow():
            reason = "ClientJoinRateLimitReached: Too many joins per second"
            return [self._reply(message, "error", {"reason": reason})]
        actions: list[Action] = []
        old = self.channels.get(topic)
        if old is not None:  # a rejoin replaces the channel (Phoenix closes the old one)
            actions += self._leave(old)
        if len(self.channels) >= MAX_CHANNELS:
            reason = "ChannelRateLimitReached: Too many channels"
            return [*actions, self._reply(message, "error", {"reason": reason})]
        try:
            if not isinstance(payload, dict):
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"{_INVALID}: payload must be a map")
            config = payload.get("config") or {}
            if not isinstance(config, dict):
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"{_INVALID}: config must be a map")
            bindings = parse_bindings(config.get("postgres_changes"), self.tables)
        except ProtocolError as exc:
            return [*actions, self._reply(message, "error", {"reason": exc.message})]
        unique = {binding.id: len(binding.tables) for binding in bindings}
        needed, limit = sum(unique.values()), self.max_subscriptions
        if limit and len(self.by_sub) + needed > limit:
            # Refused before any subscribe: a join naming many tables is not thousands of
            # subscribe messages doomed to fail one by one.
            reason = "too_many_subscriptions: this join's bindings cover more tables than "
            reason += f"the {limit} subscriptions a connection may hold"
            return [*actions, self._reply(message, "error", {"reason": reason})]
        channel = _Channel(topic, message.join_ref, message.ref, _kept(config), bindings)
        self.channels[topic] = channel
        then: list[Action] = []
        seen: set[int] = set()
        for binding in bindings:
            if binding.id in seen:
                continue  # equal bindings share one id and one subscription
            seen.add(binding.id)
            for schema, table in binding.tables:
                sub_id = self._open_sub(channel, binding.id)
                if binding.wildcard:
                    channel.wildcard.add(sub_id)
                then.append(Forward(binding.subscribe(sub_id, schema, table)))
        if not channel.pending:
            then += self._answer_join(channel)
        token = payload.get("access_token") or payload.get("user_token")
        if not isinstance(token, str) or token.startswith("sb_"):
            token = self.token or self._apikey_token()
        if not self.authenticated:
            self.token = token
            return [*actions, Authenticate(token, topic, then)]
        return actions + self._refresh(token) + then

    def _apikey_token(self) -> str | None:
        key = self.apikey
        # A JWT (three dot-separated parts) stands in for a missing access_token, as the
        # Supabase server uses the project's key; an opaque key (sb_...) is no token.
        return key if key and key.count(".") == 2 else None

    def _open_sub(self, channel: _Channel, binding: int) -> str:
        self._next_sub += 1
        sub_id = f"sb{self._next_sub}"
        channel.subs[sub_id] = binding
        channel.pending.add(sub_id)
        self.by_sub[sub_id] = channel.topic
        self.by_prefix[subscription_prefix(sub_id)] = sub_id
        return sub_id

    def _leave(self, channel: _Channel) -> list[Action]:
        """Forget ``channel``; unsubscribe what pgcast still holds for it."""
        self.channels.pop(channel.topic, None)
        actions: list[Action] = [Left(channel.topic)] if channel.replied else []
        for sub_id in channel.subs:
            self.by_sub.pop(sub_id, None)
            self.by_prefix.pop(subscription_prefix(sub_id), None)
            actions.append(Forward({"type": "unsubscribe", "id": sub_id}))
        channel.subs.clear()
        return actions

    def join_refused(self, topic: str, reason: str) -> list[Action]:
        """The join of ``topic`` could not authenticate (``reason``): refuse it."""
        channel = self.channels.get(topic)
        if channel is None:
            return []
        self.channels.pop(topic)
        for sub_id in channel.subs:
            self.by_sub.pop(sub_id, None)
            self.by_prefix.pop(subscription_prefix(sub_id), None)
        return [self._join_reply(channel, "error", {"reason": reason})]

    def _join_reply(self, channel: _Channel, status: str, response: Any) -> Reply:
        answer = frames.reply(channel.topic, channel.ref, channel.join_ref, status, response)
        return Reply(frames.encode(answer, self.vsn))

    def _answer_join(self, channel: _Channel) -> list[Action]:
        channel.replied = True
        response = {"postgres_changes": [binding.echo for binding in channel.bindings]}
        reply = self._join_reply(channel, "ok", response)
        return [reply, Joined(channel.topic, channel.join_ref, channel.config)]

    def _system(self, channel: _Channel, extension: str, status: str, text: str) -> Reply:
        payload = {"extension": extension, "status": status, "message": text}
        payload["channel"] = channel.name
        message = Message(channel.topic, "system", payload, None, channel.join_ref)
        return Reply(frames.encode(message, self.vsn))

    # what pgcast answers ------------------------------------------------------------

    def from_gateway(self, payload: bytes) -> list[Action]:
        """A pgcast server message (control: subscribed, error, resync...) for the client."""
        message = orjson.loads(payload)
        kind = message.get("type")
        sub_id = message.get("sub") if kind == "resync" else message.get("id")
        topic = self.by_sub.get(sub_id) if isinstance(sub_id, str) else None
        channel = self.channels.get(topic) if topic is not None else None
        if channel is None or not isinstance(sub_id, str):
            return []  # welcome, pong, unsubscribed, or about a channel already left
        forbidden = kind == "error" and message.get("code") == ErrorCode.FORBIDDEN
        if forbidden and sub_id in channel.wildcard and sub_id in channel.pending:
            # A table the token may not read, named by no binding: left out unnamed (the
            # error would tell the client it is tracked), as if it were not tracked.
            self._drop_sub(channel, sub_id)
            return self._settled(channel)
        if kind == "subscribed":
            channel.pending.discard(sub_id)
            return self._settled(channel)
        if kind == "error":
            reason = f"{message.get('code')}: {message.get('message')}"
            self._drop_sub(channel, sub_id)
            if not channel.replied:
                refused = self._join_reply(channel, "error", {"reason": reason})
                return [*self._leave(channel), refused]
            return [self._system(channel, "postgres_changes", "error", reason)]
        if kind == "resync":
            text = f"ResyncRequired: {message.get('reason')}"
            return [self._system(channel, "postgres_changes", "error", text)]
        return []

    def _drop_sub(self, channel: _Channel, sub_id: str) -> None:
        self.by_sub.pop(sub_id, None)
        self.by_prefix.pop(subscription_prefix(sub_id), None)
        channel.subs.pop(sub_id, None)
        channel.pending.discard(sub_id)
        channel.wildcard.discard(sub_id)

    def _settled(self, channel: _Channel) -> list[Action]:
        """Answer the join (once) when none of its subscriptions is pending any more."""
        actions: list[Action] = []
        if not channel.pending:
            if not channel.replied:
                actions += self._answer_join(channel)
            if not channel.announced:
                channel.announced = True
                text = "Subscribed to PostgreSQL"
                actions.append(self._system(channel, "postgres_changes", "ok", text))
        return actions

    def change(self, prefix: bytes, body: bytes) -> list[Action]:
        """A change for the subscription whose message starts with ``prefix``."""
        sub_id = self.by_prefix.get(prefix)
        topic = self.by_sub.get(sub_id) if sub_id is not None else None
        channel = self.channels.get(topic) if topic is not None else None
        if channel is None or sub_id is None:
            return []
        change_id, data = encoded_change(body, self.columns)
        actions: list[Action] = [] if channel.replied else self._answer_join(channel)
        payload = {"ids": [channel.subs[sub_id]], "data": data}
        ref = POSITION_PREFIX + change_id
        message = Message(channel.topic, "postgres_changes", payload, ref, None)
        actions.append(Reply(frames.encode(message, self.vsn)))
        return actions

    def closed(self) -> None:
        self.channels.clear()  # the glue leaves every topic of the connection at once
        self.by_sub.clear()
        self.by_prefix.clear()
