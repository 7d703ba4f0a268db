"""The Supabase Realtime endpoint of a node: Phoenix connections in front of pgcast sessions.

A WebSocket opened on ``/realtime/v1/websocket`` or ``/socket/websocket`` (by the
native server or the ASGI app, whichever carries it) is wrapped in a
:class:`PhoenixConnection`: to the node's :class:`pgcast.connections.Connections`
it is an ordinary connection with an ordinary pgcast session (authentication,
grants, row rules, rate limits, catch-ups, slow-consumer closes); the
:class:`pgcast.supabase.channel.PhoenixSession` beside it translates the frames both
ways. This module only carries out the actions the session returns, and makes each
joined channel a member of its topic in :mod:`pgcast.realtime` (presence and
broadcast, shared with pgcast's own clients and every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from ..auth import extract_token
from ..exceptions import AuthError, ProtocolError
from ..protocol import CloseCode
from ..routes import PHOENIX_PATHS
from ..topics import TOPIC_NAME, Member, MemberOptions
from ..transports import Connection, Refusal, RequestHead
from . import frames
from .channel import (
    TOPIC_PREFIX,
    Authenticate,
    Close,
    Extension,
    Forward,
    Joined,
    Left,
    PhoenixSession,
    Reply,
)
from .frames import Message, Vsn

if TYPE_CHECKING:
    from ..auth import Identity
    from ..broadcast import Broadcast
    from ..catalog import TableInfo
    from ..node import Node

__all__ = ["PhoenixConnection", "PhoenixEndpoint"]

logger = logging.getLogger("pgcast.supabase")

MISSING_CLAIMS = "InvalidJWTToken: Fields `role` and `exp` are required in JWT"


class PhoenixConnection:
    """A client connection as the node's sessions see it; frames go through the
    Phoenix session to the real connection ``conn``."""

    def __init__(
        self, conn: Connection, session: PhoenixSession, endpoint: PhoenixEndpoint
    ) -> None:
        self.conn = conn
        self.session = session
        self.endpoint = endpoint
        self.peer: str = conn.peer
        self.head: RequestHead = conn.head

    @property
    def max_buffered_bytes(self) -> int:
        return self.conn.max_buffered_bytes

    @max_buffered_bytes.setter
    def max_buffered_bytes(self, value: int) -> None:
        self.conn.max_buffered_bytes = value

    @property
    def is_open(self) -> bool:
        return self.conn.is_open

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None:
        for action in self.session.change(prefix, body):
            if isinstance(action, Reply):
                self.conn.queue_message(b"", action.frame)
            else:  # the join answered just before a resume's first change: its Joined
                self.endpoint.carry_out(self, [action])

    def queue_message(self, prefix: bytes, body: bytes) -> None:
        """Raw NOTIFY channels have no Supabase counterpart: nothing subscribes to them."""

    def flush(self) -> None:
        self.conn.flush()

    def send(self, payload: bytes) -> None:
        self.endpoint.carry_out(self, self.session.from_gateway(payload))

    def close(self, code: int, reason: str = "") -> None:
        self.conn.close(code, reason)

    def abort(self) -> None:
        self.conn.abort()

    async def drained(self) -> None:
        await self.conn.drained()

    def pause_reading(self) -> None:
        self.conn.pause_reading()

    def resume_reading(self) -> None:
        self.conn.resume_reading()

    def __repr__(self) -> str:
        return f"<PhoenixConnection {self.peer} {self.session.vsn.value}>"


class PhoenixSink:
    """How one joined channel receives presence and broadcasts (a ``topics.Sink``):
    ``presence_state``, ``presence_diff`` and ``broadcast`` messages on its topic."""

    def __init__(self, link: PhoenixConnection, topic: str, join_ref: str | None) -> None:
        self.link = link
        self.topic = topic  # the Phoenix topic, realtime:<name>
        self.join_ref = join_ref

    def _send(self, event: str, payload: Any, join_ref: str | None) -> None:
        message = Message(self.topic, event, payload, None, join_ref)
        self.link.conn.send(frames.encode(message, self.link.session.vsn))

    def presence_state(self, topic: str, state: dict[str, Any]) -> None:
        self._send("presence_state", state, self.join_ref)

    def presence_diff(
        self, topic: str, joins: dict[str, Any], leaves: dict[str, Any], frames: dict[str, bytes]
    ) -> None:
        # Not shared through ``frames``: each member's frame carries its own join_ref.
        self._send("presence_diff", {"joins": joins, "leaves": leaves}, self.join_ref)

    def broadcast(self, message: Broadcast) -> None:
        conn = self.link.conn
        send_binary = getattr(conn, "send_binary", None)
        if self.link.session.vsn is Vsn.V2 and send_binary is not None:
            # What the Supabase server sends 2.0.0 clients: a user broadcast frame (an
            # event over 255 bytes does not fit one).
            with contextlib.suppress(ValueError):
                send_binary(
                    frames.encode_user_broadcast(
                        self.topic, message.event, message.payload_json, frames.Encoding.JSON
                    )
                )
                return
        # 1.0.0, or a transport without binary frames (ASGI): JSON text, which 2.0.0
        # clients read too.
        payload = {
            "type": "broadcast",
            "event": message.event,
            "payload": orjson.Fragment(message.payload_json),
        }
        self._send("broadcast", payload, None)


def _query_value(query: str, key: str) -> str | None:
    values = [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k == key]
    return values[0] if values else None


class PhoenixEndpoint:
    """The node's Supabase-compatible connections (see module doc)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.links: dict[Connection, PhoenixConnection] = {}
        self._columns: dict[tuple[str, str], tuple[TableInfo, bytes]] = {}
        self._keys: dict[tuple[PhoenixConnection, str], str] = {}  # presence key per channel
        self._broadcasts: set[asyncio.Task[None]] = set()

    @staticmethod
    def serves(conn: Connection) -> bool:
        return conn.head.path in PHOENIX_PATHS

    def vet(self, conn: Connection) -> Refusal | None:
        """Refuse an upgrade asking for a serializer this endpoint does not speak."""
        if self.serves(conn) and frames.vsn_from_query(conn.head.query) is None:
            message = "unsupported vsn: connect with vsn=1.0.0 or vsn=2.0.0"
            return Refusal(400, "bad_request", message)
        return None

    # transport callbacks (through the node) ------------------------------------------------

    def opened(self, conn: Connection) -> None:
        node = self.node
        vsn = frames.vsn_from_query(conn.head.query) or Vsn.V1
        session = PhoenixSession(
            vsn,
            apikey=_query_value(conn.head.query, "apikey"),
            columns=self.columns,
            tables=self.tables,
            join_rate=node.auth.limits.subscribe_rate,
            max_subscriptions=node.settings.max_subscriptions,
        )
        link = PhoenixConnection(conn, session, self)
        self.links[conn] = link
        identity = node.admission.take(conn)
        if identity is not None and extract_token(conn.head.target, conn.head.headers):
            # A pgcast token (header or ?token=) came with the upgrade. Without one the
            # first join authenticates, anonymous or not (an anonymous identity taken
            # here could not be swapped for the join's token: a refresh keeps the subject).
            node.admission.admitted[link] = identity
            session.authenticated = True
        node.connections.opened(link)

    def received(self, link: PhoenixConnection, data: str | bytes) -> None:
        self.carry_out(link, link.session.receive(data))

    def closed(self, conn: Connection) -> bool:
        """``conn`` closed; False if it is not one of this endpoint's."""
        link = self.links.pop(conn, None)
        if link is None:
            return False
        link.session.closed()
        for key in [key for key in self._keys if key[0] is link]:
            del self._keys[key]
        self.node.connections.closed(link)  # its presences leave too, on every node
        return True

    # actions ------------------------------------------------------------------------

    def carry_out(self, link: PhoenixConnection, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                link.conn.send(action.frame)
            elif isinstance(action, Forward):
                if self._refresh_lacks_claims(link, action.message):
                    # As at the join: a refreshed token without them would also lift the
                    # connection's expiry (no `exp`, no expiry timer).
                    link.conn.close(CloseCode.UNAUTHORIZED, MISSING_CLAIMS)
                    return
                self.node.connections.received(link, orjson.dumps(action.message).decode())
            elif isinstance(action, Authenticate):
                self._authenticate(link, action)
            elif isinstance(action, Close):
                link.conn.close(action.code, action.reason)
            elif isinstance(action, Extension):
                self.extension(link, action)
            elif isinstance(action, Joined):
                self._joined(link, action)
            elif isinstance(action, Left):
                self._left(link, action.topic)

    def _refresh_lacks_claims(self, link: PhoenixConnection, message: dict[str, Any]) -> bool:
        """Whether ``message`` is an ``auth`` refresh whose (valid) token lacks ``role`` or
        ``exp`` that the connection's token has (a join's always has both); a token that
        does not verify is the session's to refuse."""
        client = self.node.connections.clients.get(link)
        current = client.session.identity if client is not None else None
        if message.get("type") != "auth" or current is None:
            return False
        try:
            identity = self.node.auth.authenticate(message.get("token"))
        except AuthError:
            return False
        required = {"role", "exp"} & current.claims.keys()
        return not identity.anonymous and not required <= identity.claims.keys()

    def _authenticate(self, link: PhoenixConnection, action: Authenticate) -> None:
        auth = self.node.auth
        try:
            identity: Identity = auth.authenticate(action.token)
        except AuthError as exc:
            reason = f"InvalidJWTToken: {exc.message}"
            self.carry_out(link, link.session.join_refused(action.topic, reason))
            return
        if not identity.anonymous and not {"role", "exp"} <= identity.claims.keys():
            self.carry_out(link, link.session.join_refused(action.topic, MISSING_CLAIMS))
            return
        refused = self.node.connections.authenticate(link, identity)
        if refused is not None:
            self.carry_out(link, link.session.join_refused(action.topic, refused))
            return
        link.session.authenticated = True
        self.carry_out(link, action.then)

    # presence and broadcast (pgcast.realtime) ------------------------------------------------

    def _joined(self, link: PhoenixConnection, action: Joined) -> None:
        """Make the joined channel a member of its topic (``realtime:room`` is topic
        ``room``, shared with pgcast's own clients), if the token may read it."""
        name = action.topic.removeprefix(TOPIC_PREFIX)
        client = self.node.connections.clients.get(link)
        grants = client.session.grants if client is not None else None
        if grants is None or not TOPIC_NAME.fullmatch(name):
            return
        rights = grants.topic_rights(name)
        if not rights.read:
            return
        config = action.config
        broadcast = config.get("broadcast") if isinstance(config.get("broadcast"), dict) else {}
        presence = config.get("presence") if isinstance(config.get("presence"), dict) else {}
        assert isinstance(broadcast, dict) and isinstance(presence, dict)
        key = presence.get("key")
        # Supabase's default key: one of its own per channel.
        self._keys[(link, name)] = key if isinstance(key, str) and key else str(uuid.uuid1())
        options = MemberOptions(
            receive_own=broadcast.get("self") is True,
            ack=broadcast.get("ack") is True,
            presence=presence.get("enabled") is True,
        )
        sink = PhoenixSink(link, action.topic, action.join_ref)
        member = Member(
            link,
            name,
            sink,
            options,
            can_track=rights.presence,
            can_broadcast=rights.broadcast,
        )
        try:
            self.node.realtime.join(member)
        except ProtocolError as exc:
            logger.info("%s: no presence or broadcast on %r: %s", link.peer, name, exc)
            self._keys.pop((link, name), None)

    def _left(self, link: PhoenixConnection, topic: str) -> None:
        name = topic.removeprefix(TOPIC_PREFIX)
        realtime = self.node.realtime
        # A refreshed token may have taken the topic away already (topic_requests.rebind).
        if self._keys.pop((link, name), None) is not None and realtime.topics.get(link, name):
            realtime.leave(link, name)

    def extension(self, link: PhoenixConnection, action: Extension) -> None:
        """A ``presence`` (track, untrack) or ``broadcast`` message on a joined channel."""
        message = action.message
        name = message.topic.removeprefix(TOPIC_PREFIX)
        key = self._keys.get((link, name))
        if key is None:
            reason = f"{message.event} is not allowed on this channel for this token"
            self._answer(link, message, "error", {"reason": reason})
            return
        payload: dict[str, Any] = message.payload
        if message.event == "broadcast":
            task = asyncio.ensure_future(self._broadcast(link, message, name, payload))
            self._broadcasts.add(task)
            task.add_done_callback(self._broadcast_done)
            return
        realtime = self.node.realtime
        try:
            if payload.get("event") == "track":
                realtime.track(link, name, key, payload.get("payload"))
            elif payload.get("event") == "untrack":
                realtime.untrack(link, name)
            else:
                raise ProtocolError("bad_request", "presence event must be track or untrack")
        except ProtocolError as exc:
            self._answer(link, message, "error", {"reason": f"{exc.code}: {exc.message}"})
            return
        self._answer(link, message, "ok", {})

    async def _broadcast(
        self, link: PhoenixConnection, message: Message, name: str, payload: dict[str, Any]
    ) -> None:
        member = self.node.realtime.topics.get(link, name)
        event = payload.get("event")
        try:
            await self.node.realtime.broadcast(
                name, event if isinstance(event, str) else "", payload.get("payload"), sender=link
            )
        except ProtocolError as exc:
            self._answer(link, message, "error", {"reason": f"{exc.code}: {exc.message}"})
            return
        if member is not None and member.options.ack:  # as Supabase: a reply only with ack
            self._answer(link, message, "ok", {})

    def _broadcast_done(self, task: asyncio.Task[None]) -> None:
        self._broadcasts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a Supabase broadcast failed", exc_info=task.exception())

    def _answer(self, link: PhoenixConnection, message: Message, status: str, body: Any) -> None:
        if not link.conn.is_open:
            return
        answer = frames.reply(message.topic, message.ref, message.join_ref, status, body)
        link.conn.send(frames.encode(answer, link.session.vsn))

    # what the Phoenix sessions read from the catalog -----------------------------------------

    def columns(self, schema: str, table: str) -> bytes:
        """``[{"name", "type"}...]`` of a tracked table, PostgreSQL type names, encoded."""
        info = self.node.catalog.tables.get((schema, table))
        if info is None:
            return b"[]"
        cached = self._columns.get((schema, table))
        if cached is not None and cached[0] is info:
            return cached[1]
        encoded = orjson.dumps([{"name": n, "type": t} for n, t in info.type_names])
        if len(self._columns) > 10_000:
            self._columns.clear()
        self._columns[(schema, table)] = (info, encoded)
        return encoded

    def tables(self, schema: str | None) -> list[tuple[str, str]]:
        """The tracked tables of ``schema`` (None: of every schema)."""
        return [key for key in self.node.catalog.tables if schema is None or key[0] == schema]
