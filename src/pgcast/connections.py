"""The node's client connections: each one's session, inbox, worker and timers.

Transports report connections opening, sending messages and closing; this module
keeps a bounded inbox per connection, hands each message in order to the connection's
:class:`pgcast.session.Session` (by a short-lived worker task: none exists while a
client is idle) and carries out the actions the session returns, calling it back with
the results of the ones that wait for I/O. Protocol decisions are the session's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from . import __version__, protocol, topic_requests
from . import session_actions as act
from .changelog import DATABASE_ERRORS
from .client_address import peer_address
from .exceptions import CatchUpAborted, ProtocolError
from .hub import Subscription
from .protocol import CloseCode, ErrorCode
from .session import Session, SessionPolicy
from .transports import Connection, Refusal
from .transports.outbox import MAX_BUFFERED_BYTES, UNAUTHENTICATED_BUFFERED_BYTES
from .transports.sse import SUB_ID as SSE_SUB_ID

if TYPE_CHECKING:
    from .auth import Identity
    from .catalog import Gone
    from .node import Node

logger = logging.getLogger("pgcast.server")

SERVER_NAME = f"pgcast/{__version__}"
INBOX_LIMIT = 64  # unprocessed client messages before we stop reading that socket
INBOX_BYTES = 1024 * 1024  # ... or unprocessed bytes: 64 frames of max_frame_bytes would be 64 MiB
AUTH_TIMEOUT = 10.0  # seconds a connection without a token has to send `auth`


class Client:
    """Node-side state of one client (WebSocket connection or SSE stream)."""

    __slots__ = ("conn", "inbox", "inbox_bytes", "ip", "session", "subject", "timer", "worker")

    def __init__(self, conn: Connection, session: Session, ip: str) -> None:
        self.conn = conn
        self.session = session
        self.ip = ip
        self.subject: str | None = None  # counted against the per-subject limit
        self.inbox: deque[str | bytes] = deque()
        self.inbox_bytes = 0
        self.worker: asyncio.Task[None] | None = None
        # Closes the connection when its token expires (or if it never authenticates).
        self.timer: asyncio.TimerHandle | None = None

    def who(self) -> str:
        """The client for the logs: its address, and the proxy's when one forwarded it."""
        if self.ip == peer_address(self.conn.peer):
            return self.conn.peer
        return f"{self.ip} (via {self.conn.peer})"


class Connections:
    """Every open client connection of a node, and what their sessions ask for."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.admission = node.admission
        self.clients: dict[Connection, Client] = {}
        self.all_closed = asyncio.Event()
        self.policy = SessionPolicy(
            node.auth,
            allows_channel=node.settings.allows_channel,
            channel_patterns=node.settings.channels,
            catch_up_buffer_limit=node.settings.catch_up_buffer_limit,
            subject_fits=self.admission.subject_fits,
        )

    # transport callbacks ------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        """A WebSocket opened (after ``admit``): start its session, say welcome."""
        self._new_client(conn, self.admission.take(conn), self.node.settings.max_subscriptions)
        conn.send(protocol.welcome(SERVER_NAME, self.node.position()))

    def opened_stream(self, conn: Connection, subscribe: dict[str, Any]) -> str | None:
        """An SSE stream: no welcome, one subscription (``subscribe``, handled like a
        WebSocket message). Returns the position a welcome would carry."""
        refusal = self.admission.admit(conn)
        identity = self.admission.take(conn)
        if refusal is None and identity is None:
            refusal = Refusal(401, "unauthorized", "this gateway requires a token (?token=...)")
        client = self._new_client(conn, identity if refusal is None else None, 1)
        if refusal is not None:
            conn.send(protocol.error(refusal.code, refusal.message, SSE_SUB_ID))
            return self.node.position()
        self.received(client.conn, orjson.dumps(subscribe).decode())
        return self.node.position()

    def received(self, conn: Connection, data: str | bytes) -> None:
        client = self.clients.get(conn)
        if client is None:
            return
        client.inbox.append(data)
        client.inbox_bytes += len(data)
        if len(client.inbox) >= INBOX_LIMIT or client.inbox_bytes >= INBOX_BYTES:
            conn.pause_reading()  # the client sends faster than we answer
        if client.worker is None:
            client.worker = asyncio.create_task(
                self._work(client), name=f"pgcast-client-{conn.peer}"
            )

    def closed(self, conn: Connection) -> None:
        self.admission.take(conn)
        client = self.clients.pop(conn, None)
        if client is None:
            return
        if client.timer is not None:
            client.timer.cancel()
        self.admission.leave(self.admission.per_ip, client.ip)
        if client.subject is not None:
            self.admission.leave(self.admission.per_subject, client.subject)
        if not self.clients:
            self.all_closed.set()
        if client.worker is not None:
            client.worker.cancel()
        self.node.realtime.closed(conn)
        for sub in client.session.close():
            self.node.forget(sub)

    # sessions -----------------------------------------------------------------------

    def _new_client(self, conn: Connection, identity: Identity | None, subs: int) -> Client:
        session = Session(conn, self.policy, max_subscriptions=subs)
        client = Client(conn, session, self.admission.address(conn))
        self.clients[conn] = client
        self.admission.enter(self.admission.per_ip, client.ip)
        if identity is None:
            # Authenticate with a first `auth` message, or be closed; until then the
            # client may not make us hold much for it (pongs it does not read).
            conn.max_buffered_bytes = UNAUTHENTICATED_BUFFERED_BYTES
            client.timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT, self._close_unauthenticated, client
            )
        else:
            for action in session.authenticate(identity):
                self._authenticated(client, action)
        return client

    def authenticate(self, conn: Connection, identity: Identity) -> str | None:
        """Authenticate ``conn``, opened without a token, as ``identity`` (the token the
        Supabase endpoint found in a first join); None, or why it may not."""
        client = self.clients.get(conn)
        if client is None:
            return "the connection is closed"
        if client.session.authenticated:
            return None
        if not self.admission.subject_fits(identity):
            return "ConnectionRateLimitReached: too many connections for this subject"
        for action in client.session.authenticate(identity):
            self._authenticated(client, action)
        return None

    def _authenticated(self, client: Client, action: act.Action) -> None:
        """Count the subject of a newly authenticated client; arm its expiry timer."""
        assert isinstance(action, act.Authenticated)
        identity = action.identity
        client.conn.max_buffered_bytes = MAX_BUFFERED_BYTES
        if client.subject is None and identity.subject:
            client.subject = identity.subject
            self.admission.enter(self.admission.per_subject, identity.subject)
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        if identity.expires_at is not None:
            delay = identity.expires_at + self.node.auth.leeway - time.time()
            client.timer = asyncio.get_running_loop().call_later(
                max(0.0, delay), self._token_expired, client
            )
        topic_requests.rebind(self.node.realtime, client.session)

    def _close_unauthenticated(self, client: Client) -> None:
        if not client.session.authenticated:
            client.conn.close(CloseCode.UNAUTHORIZED, "no token: send an auth message first")

    def _token_expired(self, client: Client) -> None:
        client.conn.close(
            CloseCode.TOKEN_EXPIRED, "token expired: get a new token, then reconnect and resume"
        )

    async def _work(self, client: Client) -> None:
        try:
            while client.inbox:
                data = client.inbox.popleft()
                client.inbox_bytes -= len(data)
                await self._carry_out(client, client.session.receive(data))
                if len(client.inbox) < INBOX_LIMIT // 2 and client.inbox_bytes < INBOX_BYTES // 2:
                    client.conn.resume_reading()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handling a message from %s failed", client.who())
            client.conn.close(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
        finally:
            client.worker = None

    async def _carry_out(self, client: Client, actions: list[act.Action]) -> None:
        """Do what the session asked, in order; feed the results of I/O back to it."""
        conn, session, node = client.conn, client.session, self.node
        for action in actions:
            follow: list[act.Action] = []
            if isinstance(action, act.Send):
                conn.send(action.payload)
            elif isinstance(action, act.Close):
                conn.close(action.code, action.reason)
            elif isinstance(action, act.Authenticated):
                self._authenticated(client, action)
            elif isinstance(action, act.Watch):
                node.watch(action.sub)
            elif isinstance(action, act.Forget):
                node.forget(action.sub)
            elif isinstance(action, act.Refilter):
                node.refilter(action.sub, action.rule, action.filter)
            elif isinstance(action, act.ResolveTable):
                follow = await self._resolve(session, action)
            elif isinstance(action, act.CatchUp):
                follow = await self._catch_up(client, action)
            elif isinstance(action, act.Publish):
                follow = await self._publish(session, action)
            elif isinstance(action, act.Listen):
                follow = session.listened(action.sub, await node.listen(action.sub))
            elif isinstance(action, act.TopicRequest):
                follow = await topic_requests.carry_out(node.realtime, session, action.message)
            if follow:
                await self._carry_out(client, follow)

    async def _resolve(self, session: Session, action: act.ResolveTable) -> list[act.Action]:
        request = action.request
        assert request.table is not None
        try:
            named = request.filter.columns | (request.columns or frozenset())
            info = await self.node.catalog.resolve(request.schema, request.table, named)
        except ProtocolError as exc:
            return session.refused(request.id, exc)
        except DATABASE_ERRORS as exc:
            error = ProtocolError(ErrorCode.UNAVAILABLE, f"database unavailable: {exc}")
            return session.refused(request.id, error)
        return session.table_resolved(request, info)

    async def table_gone(self, gone: Gone) -> int:
        """Tell the subscribers of a dropped or renamed table; return how many there were."""
        ended = 0
        for client in list(self.clients.values()):
            actions = client.session.table_gone(gone.schema, gone.name, gone.reason())
            ended += len(actions) // 2
            await self._carry_out(client, actions)
        return ended

    async def _catch_up(self, client: Client, action: act.CatchUp) -> list[act.Action]:
        sub: Subscription = action.sub
        info = self.node.catalog.tables.get((sub.schema, sub.table))
        try:
            fields = await self.node.catch_ups.run(
                client.conn,
                sub,
                key=client.subject or client,  # a tenant's catch-ups take turns
                table_snapshot=action.snapshot,
                since=action.since,
                keep=action.keep,
                rls=action.rls,
                type_names=None if info is None else dict(info.type_names),
            )
        except ProtocolError as exc:
            return client.session.catch_up_failed(sub, exc)
        except CatchUpAborted:  # the client was closed (4001) or left: nothing to answer
            return client.session.catch_up_failed(sub, None)
        return client.session.caught_up(action, fields)

    async def _publish(self, session: Session, action: act.Publish) -> list[act.Action]:
        message = action.message
        try:
            await self.node.notify(message.channel, message.payload)
        except DATABASE_ERRORS as exc:
            # The payload was vetted by the session, so this is the database's state,
            # not the client's input: the details go to the log, not to the client.
            logger.warning("publish to %r failed: %s", message.channel, exc)
            error = ProtocolError(
                ErrorCode.UNAVAILABLE, "could not publish: the database is unavailable; retry later"
            )
            return session.refused(message.id, error)
        return []
