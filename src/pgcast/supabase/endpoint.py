"""The Supabase Realtime endpoint of a node: Phoenix connections in front of pgcast sessions.

A WebSocket opened on ``/realtime/v1/websocket`` or ``/socket/websocket`` (by the
native server or the ASGI app, whichever carries it) is wrapped in a
:class:`PhoenixConnection`: to the node's :class:`pgcast.connections.Connections`
it is an ordinary connection with an ordinary pgcast session (authentication,
grants, row rules, rate limits, catch-ups, slow-consumer closes); the
:class:`pgcast.supabase.channel.PhoenixSession` beside it translates the frames both
ways. This module only carries out the actions the session returns.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson

from ..auth import extract_token
from ..exceptions import AuthError
from ..routes import PHOENIX_PATHS
from ..transports import Connection, Refusal, RequestHead
from . import frames
from .channel import Authenticate, Close, Extension, Forward, PhoenixSession, Reply
from .frames import Vsn

if TYPE_CHECKING:
    from ..auth import Identity
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


def _query_value(query: str, key: str) -> str | None:
    values = [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k == key]
    return values[0] if values else None


class PhoenixEndpoint:
    """The node's Supabase-compatible connections (see module doc)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.links: dict[Connection, PhoenixConnection] = {}
        self._columns: dict[tuple[str, str], tuple[TableInfo, bytes]] = {}

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
        self.node.connections.closed(link)
        return True

    # actions ------------------------------------------------------------------------

    def carry_out(self, link: PhoenixConnection, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                link.conn.send(action.frame)
            elif isinstance(action, Forward):
                self.node.connections.received(link, orjson.dumps(action.message).decode())
            elif isinstance(action, Authenticate):
                self._authenticate(link, action)
            elif isinstance(action, Close):
                link.conn.close(action.code, action.reason)
            elif isinstance(action, Extension):
                self.extension(link, action)

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

    def extension(self, link: PhoenixConnection, action: Extension) -> None:
        """Broadcast and presence: not served by this gateway yet."""
        message = action.message
        event = message.event
        answer = frames.reply(
            message.topic,
            message.ref,
            message.join_ref,
            "error",
            {"reason": f"{event} is not available on this pgcast gateway"},
        )
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
