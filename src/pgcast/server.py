"""The gateway: composes listener, hub, sessions and the WebSocket transport.

Data path: the listener reads committed changes from the log and calls
``Gateway.dispatch``; the hub says which subscriptions want each change; the change
is encoded once per projection and queued on each subscriber's connection; every
touched connection is flushed once per batch. Client messages are handled in order,
per connection, by a short-lived worker task (none exists while a client is idle).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from websockets.http11 import Request, Response

from . import __version__, exactjson, protocol
from .auth import ANONYMOUS, AuthConfig, AuthError, Identity, RowRule, extract_token
from .browser_client import js_response
from .capture.installer import prune
from .capture.wal import WalConsumer
from .catch_up import CatchUps
from .changelog import DATABASE_ERRORS
from .client_address import client_address, is_trusted_proxy, peer_address
from .config import Settings
from .events import ChangeEvent, Horizon
from .exceptions import CatchUpAborted, ProtocolError, RowImageError
from .filters import MATCH_ALL, Filter
from .hooks import ChangeHooks, HookFunction
from .hub import Hub, Subscription
from .listener import Listener, ListenerState
from .metrics import Registry
from .protocol import CloseCode, ErrorCode, Subscribe, Unsubscribe
from .session import Session
from .startup import connect_with_retry, wait_unless_stopped
from .transports import ClientTransport
from .transports.http import HttpRequest
from .transports.outbox import MAX_BUFFERED_BYTES, UNAUTHENTICATED_BUFFERED_BYTES
from .transports.pending import PendingRequests
from .transports.sse import SUB_ID as SSE_SUB_ID
from .transports.sse import HttpConnection
from .transports.websocket import WebSocketConnection, http_response
from .unreadable import UnreadableRows, describe

logger = logging.getLogger("pgcast.server")

SERVER_NAME = f"pgcast/{__version__}"
INBOX_LIMIT = 64  # unprocessed client messages before we stop reading that socket
INBOX_BYTES = 1024 * 1024  # ... or unprocessed bytes: 64 frames of max_frame_bytes would be 64 MiB
AUTH_TIMEOUT = 10.0  # seconds a connection without a token has to send `auth`
PRUNE_EVERY = 600.0
STATS_EVERY = 15.0
# Estimates, not count(*): cheap on a log of any size.
_STATS_QUERY = """
SELECT (SELECT greatest(reltuples, 0) FROM pg_class
         WHERE oid = to_regclass('pgcast.changes')) AS rows,
       pg_total_relation_size(to_regclass('pgcast.changes')) AS bytes,
       pg_notification_queue_usage() AS queue_usage
"""
CATALOG_REFRESH_MIN = 1.0


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: frozenset[str]


_CATALOG_QUERY = """
SELECT n.nspname AS schema, c.relname AS name,
       coalesce(t.columns, ARRAY(
           SELECT a.attname::text FROM pg_attribute a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)) AS columns
FROM pgcast.tracked t
JOIN pg_class c ON c.oid = t.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
"""


class Catalog:
    """Tracked tables and their columns, cached; refreshed on a miss (rate-limited)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._tables: dict[tuple[str, str], TableInfo] = {}
        self._loaded_at = -1e9
        self._lock = asyncio.Lock()

    async def _reload(self) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded_at < CATALOG_REFRESH_MIN:
                return
            async with self._pool.acquire() as conn:
                if await conn.fetchval("SELECT to_regclass('pgcast.tracked') IS NULL"):
                    rows = []
                else:
                    rows = await conn.fetch(_CATALOG_QUERY)
            self._tables = {
                (r["schema"], r["name"]): TableInfo(r["schema"], r["name"], frozenset(r["columns"]))
                for r in rows
            }
            self._loaded_at = time.monotonic()

    def _find(self, schema: str | None, name: str) -> list[TableInfo]:
        if schema is not None:
            found = self._tables.get((schema, name))
            return [found] if found else []
        return [info for (s, n), info in self._tables.items() if n == name]

    async def resolve(self, schema: str | None, name: str) -> TableInfo:
        found = self._find(schema, name)
        if not found:
            await self._reload()
            found = self._find(schema, name)
        shown = f"{schema}.{name}" if schema else name
        if not found:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TABLE,
                f"table {shown!r} is not tracked",
                hint=f"run: pgcast track {shown}",
            )
        if len(found) > 1:
            schemas = ", ".join(sorted(info.schema for info in found))
            raise ProtocolError(
                ErrorCode.UNKNOWN_TABLE,
                f"table {name!r} is tracked in several schemas ({schemas})",
                hint="add 'schema' to the subscribe message",
            )
        return found[0]


class Client:
    """Gateway-side state of one client (WebSocket connection or SSE stream)."""

    __slots__ = (
        "conn",
        "filters",
        "inbox",
        "inbox_bytes",
        "ip",
        "session",
        "subject",
        "timer",
        "worker",
    )

    def __init__(self, conn: ClientTransport, session: Session, ip: str) -> None:
        self.conn = conn
        self.session = session
        self.ip = ip
        self.subject: str | None = None  # counted against the per-subject limit
        self.filters: dict[str, Filter] = {}  # each subscription's filter as the client sent it
        self.inbox: deque[str | bytes] = deque()
        self.inbox_bytes = 0
        self.worker: asyncio.Task[None] | None = None
        # Closes the connection when its token expires (or if it never authenticates).
        self.timer: asyncio.TimerHandle | None = None


class Gateway:
    """A pgcast gateway bound to one database."""

    def __init__(
        self,
        settings: Settings,
        dsn: str,
        *,
        routes: Callable[[HttpRequest], Awaitable[Response | None]] | None = None,
        auth: AuthConfig | None = None,
    ) -> None:
        """``routes`` answers plain HTTP requests the gateway does not (an embedding app's
        own pages and API); it returns None for paths it does not serve."""
        self.settings = settings
        self.dsn = dsn
        self.routes = routes
        self.auth = auth if auth is not None else AuthConfig()
        self._admitted: dict[ClientTransport, Identity | None] = {}
        self._per_subject: collections.Counter[str] = collections.Counter()
        self._per_ip: collections.Counter[str] = collections.Counter()
        self.pending_requests = PendingRequests(
            max_per_ip=settings.max_pending_per_ip,
            head_timeout=settings.head_timeout,
            body_timeout=settings.body_timeout,
            uncapped=lambda ip: is_trusted_proxy(ip, settings.trusted_proxies),
        )
        self.hub = Hub()
        self.clients: dict[ClientTransport, Client] = {}
        self.listener = Listener(
            dsn,
            on_changes=self.dispatch,
            on_message=self.deliver_message,
            on_gap=self.resync_all,
            poll_interval=settings.poll_interval,
            fast_poll_interval=settings.fast_poll_interval,
            probe_timeout=settings.probe_interval,
        )
        self.changes_in = 0
        self.deliveries_out = 0
        self.overflows = 0
        self.unreadable = UnreadableRows()
        self._pool: Any = None
        self._catalog: Catalog | None = None
        self._server: asyncio.Server | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._all_closed = asyncio.Event()
        self.started_at = time.time()
        self.log_stats: dict[str, float] = {}  # refreshed by the housekeeping task
        self.catch_ups = CatchUps(settings, self.unreadable)
        self.metrics_registry = self._build_metrics()
        self.catch_ups.register_metrics(self.metrics_registry)
        self.hooks = ChangeHooks()  # server-side callbacks (on_change), run off the hot path
        self.hooks.register_metrics(self.metrics_registry)
        # WAL capture: one gateway per database (elected) appends decoded changes to
        # the log and wakes its reader; the others' readers find the rows by polling.
        self.wal = WalConsumer(dsn, on_appended=self.listener.wake)
        self.wal.register_metrics(self.metrics_registry)

    # lifecycle -----------------------------------------------------------------

    async def start(
        self, *, ready_timeout: float = 10.0, serve_tcp: bool = True, retry: bool = False
    ) -> None:
        """Connect to PostgreSQL, start the listener and bind the HTTP/WebSocket port.

        ``serve_tcp=False`` binds nothing: an embedding server (pgcast.asgi) carries the
        connections and calls the transport callbacks itself. ``retry`` waits for an
        unreachable database (with backoff, logging each attempt) instead of failing."""
        self._pool = await connect_with_retry(
            lambda: asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.settings.pool_size, command_timeout=60
            ),
            self.dsn,
            retry=retry,
        )
        self._catalog = Catalog(self._pool)
        self.catch_ups.pool = self._pool
        self.hooks.start()  # before the listener: no change may pass unseen
        self.listener.start()
        self.wal.start()
        if not await self.listener.wait_ready(ready_timeout):
            logger.warning(
                "PostgreSQL LISTEN not ready yet (%s); serving anyway", self.listener.last_error
            )
        self._spawn(self._housekeeping(), "pgcast-housekeeping")
        if not serve_tcp:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection,
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            backlog=4096,
        )
        logger.info(
            "serving on http://%s:%s (ws: /ws, sse: /sse, health: /health)",
            self.settings.host,
            self.port,
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "gateway is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Tell every client to reconnect elsewhere (4000), then release everything."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.clients):
            conn.close(CloseCode.SHUTTING_DOWN, "gateway shutting down: reconnect and resume")
        if self.clients:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._all_closed.wait()
        for conn in list(self.clients):
            conn.abort()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.wal.stop()
        await self.listener.stop()
        await self.hooks.stop(timeout=timeout)
        if self._pool is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._pool.close()
            except TimeoutError:  # a connection to a dead server never answers
                self._pool.terminate()
        if self._server is not None:
            await self._server.wait_closed()

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def _housekeeping(self) -> None:
        """Refresh the log statistics for /metrics, and prune the log by retention."""
        next_prune = time.monotonic()
        while True:
            try:
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(_STATS_QUERY)
                    self.log_stats = {k: float(v) for k, v in row.items() if v is not None}
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + PRUNE_EVERY
                        removed = await prune(conn, older_than=self.settings.retention)
                        if removed:
                            logger.info(
                                "pruned %d change log rows older than %s",
                                removed,
                                self.settings.retention,
                            )
            except DATABASE_ERRORS as exc:
                logger.warning("change log housekeeping failed: %s", exc)
            await asyncio.sleep(STATS_EVERY)

    def _new_connection(self) -> WebSocketConnection:
        return HttpConnection(
            self,
            self,
            max_frame_bytes=self.settings.max_frame_bytes,
            outbox_limit=self.settings.outbox_limit,
            pending_requests=self.pending_requests,
        )

    # delivery (hot path) ----------------------------------------------------------

    def _build_metrics(self) -> Registry:
        registry = Registry()
        registry.gauge(
            "pgcast_connections", "Connected WebSocket and SSE clients.", lambda: len(self.clients)
        )
        registry.gauge("pgcast_subscriptions", "Open subscriptions.", self.hub.subscription_count)
        registry.gauge(
            "pgcast_pending_requests",
            "Connections whose HTTP request has not fully arrived yet.",
            lambda: len(self.pending_requests),
        )
        registry.counter(
            "pgcast_request_timeouts_total",
            "Connections answered 408: request head or body too slow.",
            lambda: self.pending_requests.timed_out,
        )
        registry.counter(
            "pgcast_pending_refusals_total",
            "Connections answered 429: too many unfinished requests from their IP.",
            lambda: self.pending_requests.refused,
        )
        registry.counter(
            "pgcast_changes_total", "Changes read from the log.", lambda: self.changes_in
        )
        registry.counter(
            "pgcast_deliveries_total",
            "Messages delivered to subscribers.",
            lambda: self.deliveries_out + self.catch_ups.deliveries,
        )
        registry.counter(
            "pgcast_slow_consumer_closes_total",
            "Clients closed because their outbox overflowed.",
            lambda: self.overflows,
        )
        registry.counter(
            "pgcast_unreadable_rows_total",
            "Changes and snapshot rows withheld because a row image could not be read.",
            lambda: self.unreadable.count,
        )
        registry.counter(
            "pgcast_log_reads_total",
            "Queries the log reader sent to read the change log.",
            lambda: self.listener.log_reads,
        )
        registry.counter(
            "pgcast_listener_wakeups_total",
            "Wake-up notifications received on the pgcast channel.",
            lambda: self.listener.notifications,
        )
        registry.counter(
            "pgcast_listener_reconnects_total",
            "LISTEN connection reconnects.",
            lambda: self.listener.reconnects,
        )
        registry.gauge(
            "pgcast_listener_up",
            "1 while the LISTEN connection is listening.",
            lambda: float(self.listener.state is ListenerState.LISTENING),
        )
        registry.gauge(
            "pgcast_listener_lag_seconds",
            "Seconds since the last complete log read.",
            lambda: self.listener.lag_seconds,
        )
        registry.gauge(
            "pgcast_log_rows", "Rows in the change log.", lambda: self.log_stats.get("rows")
        )
        registry.gauge(
            "pgcast_log_bytes",
            "On-disk size of the change log.",
            lambda: self.log_stats.get("bytes"),
        )
        registry.gauge(
            "pgcast_notification_queue_usage",
            "pg_notification_queue_usage() of the database (0..1).",
            lambda: self.log_stats.get("queue_usage"),
        )
        self.dispatch_seconds = registry.histogram(
            "pgcast_dispatch_seconds", "Time to route and write one batch of changes."
        )
        self.capture_to_send_seconds = registry.histogram(
            "pgcast_capture_to_send_seconds",
            "From a change's capture (end of its statement) to its batch being written.",
        )
        return registry

    def metrics(self) -> str:
        """The Prometheus text exposition of this gateway's metrics."""
        return self.metrics_registry.render()

    def overflowed(self, conn: ClientTransport) -> None:
        """A client's outbox overflowed; the transport is closing it (4001)."""
        self.overflows += 1
        client = self.clients.get(conn)
        who = _who(client) if client is not None else conn.peer
        logger.info("closing slow client %s: outbox overflow (it resumes on reconnect)", who)

    def dispatch(self, changes: list[ChangeEvent]) -> None:
        """Route a batch of committed changes; one write per touched connection.

        A change that cannot be routed or encoded costs only itself: it is withheld
        where it would be evaluated (see unreadable.py), the rest of the batch goes on.
        """
        started = time.perf_counter()
        touched: set[ClientTransport] = set()
        match = self.hub.match
        deliveries = 0
        for change in changes:
            try:
                routed = match(change)
            except Exception as exc:
                self.unreadable.withheld(describe(change), exc)
                routed = self.hub.match_unread(change)
            for sub, view in routed:
                if sub.buffer is not None:
                    sub.buffer.append(change)
                    continue
                try:
                    body = change.body(sub.columns, view)
                except RowImageError as exc:  # a column projection must read the row
                    self.unreadable.withheld(describe(change), exc)
                    continue
                conn: ClientTransport = sub.owner
                conn.queue_change(sub.prefix, body, change.id)
                touched.add(conn)
                deliveries += 1
        for conn in touched:
            conn.flush()
        self.changes_in += len(changes)
        self.deliveries_out += deliveries
        self.dispatch_seconds.observe(time.perf_counter() - started)
        if changes:
            self.capture_to_send_seconds.observe(time.time() - _epoch(changes[-1].committed_at))
        if self.hooks:
            self.hooks.feed(changes)

    def on_change(
        self, table: str, *, schema: str | None = None, events: tuple[str, ...] | None = None
    ) -> Callable[[HookFunction], HookFunction]:
        """Decorator: run the function (sync or async) for each committed change of
        ``table``, off the delivery path (see pgcast.hooks). Register before start()."""
        return self.hooks.on_change(table, schema=schema, events=events)

    def resync_all(self, pruned_through: int) -> None:
        """Tell every table subscriber that changes were lost to pruning: refetch."""
        reason = (
            f"the change log was pruned through id {pruned_through} before this gateway "
            "read it: refetch"
        )
        for client in self.clients.values():
            for sub in client.session.subscriptions.values():
                if sub.channel is None:
                    client.conn.send(protocol.resync(sub.id, reason))

    def deliver_message(self, channel: str, payload: str) -> None:
        """Pass a raw NOTIFY on ``channel`` to its subscribers."""
        subs = self.hub.channel_subscribers(channel)
        if not subs:
            return
        body = protocol.channel_message_body(channel, payload)
        for sub in subs:
            conn: ClientTransport = sub.owner
            conn.queue_message(sub.prefix, body)
            conn.flush()
        self.deliveries_out += len(subs)

    # transport callbacks -----------------------------------------------------------

    async def http(self, request: HttpRequest) -> Response:
        """Plain HTTP: the gateway's own routes, then the embedding app's (``routes``)."""
        if request.path == "/health":
            health = self.health()
            ok = health["status"] == "ok"
            status, reason = (200, "OK") if ok else (503, "Service Unavailable")
            return http_response(status, reason, orjson.dumps(health), "application/json")
        if request.path == "/metrics":
            text = self.metrics().encode()
            return http_response(200, "OK", text, "text/plain; version=0.0.4")
        if self.routes is not None:
            response = await self.routes(request)
            if response is not None:
                return response
        if (script := js_response(request)) is not None:  # the browser client, at /js/
            return script
        if request.path == "/":
            body = {
                "name": "pgcast",
                "version": __version__,
                "websocket": "/ws",
                "sse": "/sse",
                "health": "/health",
                "metrics": "/metrics",
            }
            return http_response(200, "OK", orjson.dumps(body), "application/json")
        return http_response(404, "Not Found", b'{"error":"not found"}', "application/json")

    # admission and authentication ------------------------------------------------------

    def admit(self, conn: ClientTransport, request: Request) -> Response | None:
        """Vet a WebSocket upgrade: origin, token, connection limits. None admits it."""
        limits = self.auth.limits
        if not limits.origin_allowed(request.headers.get("Origin")):
            return _refusal(403, "Forbidden", "forbidden", "this Origin may not connect")
        ip = self.client_address(conn)
        if limits.max_connections_per_ip and self._per_ip[ip] >= limits.max_connections_per_ip:
            return _refusal(429, "Too Many Requests", "rate_limited", "too many connections")
        try:
            token = extract_token(request.path, request.headers.raw_items())
            identity = (
                None if token is None and self.auth.required else self.auth.authenticate(token)
            )
        except AuthError as exc:
            return _refusal(401, "Unauthorized", "unauthorized", str(exc))
        if identity is not None and not self._subject_fits(identity):
            return _refusal(429, "Too Many Requests", "rate_limited", "too many connections")
        self._admitted[conn] = identity  # None: must send an auth message first
        return None

    def client_address(self, conn: ClientTransport) -> str:
        """The address ``conn`` counts under: its peer, or the client its trusted proxy names."""
        request = conn.request
        headers = request.headers.raw_items() if request is not None else ()
        return client_address(conn.peer, headers, self.settings.trusted_proxies)

    def _subject_fits(self, identity: Identity) -> bool:
        limit = self.auth.limits.max_connections_per_subject
        return not (limit and identity.subject and self._per_subject[identity.subject] >= limit)

    def _new_session(self, conn: ClientTransport, identity: Identity | None, subs: int) -> Client:
        limits = self.auth.limits
        session = Session(
            conn,
            max_subscriptions=subs,
            subscribe_rate=limits.subscribe_rate,
            publish_rate=limits.publish_rate,
        )
        client = Client(conn, session, self.client_address(conn))
        self.clients[conn] = client
        self._per_ip[client.ip] += 1
        if identity is None:
            # Authenticate with a first `auth` message, or be closed; until then the
            # client may not make us hold much for it (pongs it does not read).
            conn.max_buffered_bytes = UNAUTHENTICATED_BUFFERED_BYTES
            client.timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT, self._close_unauthenticated, client
            )
        else:
            self._authenticated(client, identity)
        return client

    def _authenticated(self, client: Client, identity: Identity) -> None:
        """Bind the grants of ``identity`` to ``client``; arm the expiry timer."""
        session = client.session
        session.identity = identity
        session.grants = self.auth.rules.bind(identity)
        client.conn.max_buffered_bytes = MAX_BUFFERED_BYTES
        if client.subject is None and identity.subject:
            client.subject = identity.subject
            self._per_subject[identity.subject] += 1
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        if identity.expires_at is not None:
            delay = identity.expires_at + self.auth.leeway - time.time()
            client.timer = asyncio.get_running_loop().call_later(
                max(0.0, delay), self._token_expired, client
            )

    def _close_unauthenticated(self, client: Client) -> None:
        if not client.session.authenticated:
            client.conn.close(CloseCode.UNAUTHORIZED, "no token: send an auth message first")

    def _token_expired(self, client: Client) -> None:
        client.conn.close(
            CloseCode.TOKEN_EXPIRED, "token expired: get a new token, then reconnect and resume"
        )

    def opened(self, conn: ClientTransport) -> None:
        identity = self._admitted.pop(conn, None)
        self._new_session(conn, identity, self.settings.max_subscriptions)
        conn.send(protocol.welcome(SERVER_NAME, self.position()))

    def position(self) -> str | None:
        """The exact log position the gateway has dispatched up to (None before it read).

        A client that resumes from it gets every change the gateway had not yet
        dispatched when it connected: nothing earlier, nothing missed.
        """
        cursor = self.listener.cursor
        if not cursor.initialized:
            return None
        return Horizon(cursor.last_id, frozenset(cursor.pending), cursor.xmax).encode()

    def opened_stream(self, conn: ClientTransport, subscribe: dict[str, Any]) -> str | None:
        """An SSE stream: no welcome, one subscription (``subscribe``, handled like a
        WebSocket message). Returns the position a welcome would carry."""
        request = conn.request
        assert request is not None
        refusal = self.admit(conn, request)
        identity = self._admitted.pop(conn, None)
        client = self._new_session(conn, identity or ANONYMOUS, 1)
        if refusal is not None or identity is None:
            code = "unauthorized" if identity is None and refusal is None else None
            error = orjson.loads(refusal.body) if refusal is not None else {}
            client.session.identity = None
            conn.send(
                protocol.error(
                    code or error.get("code", "unauthorized"),
                    error.get("message", "this gateway requires a token (?token=...)"),
                    SSE_SUB_ID,
                )
            )
            return self.position()
        self.received(conn, orjson.dumps(subscribe).decode())
        return self.position()

    def received(self, conn: ClientTransport, data: str | bytes) -> None:
        client = self.clients.get(conn)
        if client is None:
            return
        client.inbox.append(data)
        client.inbox_bytes += len(data)
        full = len(client.inbox) >= INBOX_LIMIT or client.inbox_bytes >= INBOX_BYTES
        if full and conn.transport is not None:
            conn.transport.pause_reading()  # the client sends faster than we answer
        if client.worker is None:
            client.worker = asyncio.create_task(
                self._work(client), name=f"pgcast-client-{conn.peer}"
            )

    def closed(self, conn: ClientTransport) -> None:
        self._admitted.pop(conn, None)
        client = self.clients.pop(conn, None)
        if client is None:
            return
        if client.timer is not None:
            client.timer.cancel()
        self._per_ip[client.ip] -= 1
        if self._per_ip[client.ip] <= 0:
            del self._per_ip[client.ip]
        if client.subject is not None:
            self._per_subject[client.subject] -= 1
            if self._per_subject[client.subject] <= 0:
                del self._per_subject[client.subject]
        if not self.clients:
            self._all_closed.set()
        if client.worker is not None:
            client.worker.cancel()
        for sub in client.session.close():
            self._forget(sub)

    # client messages -------------------------------------------------------------------

    async def _work(self, client: Client) -> None:
        try:
            while client.inbox:
                data = client.inbox.popleft()
                client.inbox_bytes -= len(data)
                await self._handle(client, data)
                roomy = (
                    len(client.inbox) < INBOX_LIMIT // 2 and client.inbox_bytes < INBOX_BYTES // 2
                )
                if roomy and client.conn.transport is not None:
                    client.conn.transport.resume_reading()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handling a message from %s failed", _who(client))
            client.conn.close(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
        finally:
            client.worker = None

    async def _handle(self, client: Client, data: str | bytes) -> None:
        conn = client.conn
        sub_id: str | None = None
        try:
            if isinstance(data, bytes):
                raise ProtocolError(
                    ErrorCode.BAD_FRAME, "binary frames are not supported; send JSON text frames"
                )
            message = protocol.decode_client_message(data)
            if isinstance(message, protocol.Auth):
                self._refresh_token(client, message.token)
                return
            if isinstance(message, protocol.Ping):
                conn.send(protocol.pong(message.data))
                return
            if not client.session.authenticated:
                conn.send(protocol.error(ErrorCode.UNAUTHORIZED, "authenticate first", None))
                conn.close(CloseCode.UNAUTHORIZED, "authenticate first: send an auth message")
                return
            if isinstance(message, Subscribe):
                sub_id = message.id
                if not client.session.subscribe_limit.allow():
                    raise ProtocolError(
                        ErrorCode.RATE_LIMITED, "too many subscribe messages; slow down"
                    )
                await self._subscribe(client, message)
            elif isinstance(message, Unsubscribe):
                sub_id = message.id
                self._forget(client.session.close_subscription(message.id))
                conn.send(protocol.unsubscribed(message.id))
            else:
                sub_id = message.id
                await self._publish(client, message)
        except ProtocolError as exc:
            # A malformed `auth` message too: the connection stays (docs/close-codes.md);
            # one that never authenticates is still closed by its AUTH_TIMEOUT timer.
            conn.send(protocol.error(exc.code, str(exc), sub_id or exc.sub_id))

    def _refresh_token(self, client: Client, token: str) -> None:
        """An `auth` message: authenticate, or swap in a fresh token for the same subject."""
        conn, session = client.conn, client.session
        try:
            identity = self.auth.authenticate(token)
        except AuthError as exc:
            conn.send(protocol.error(ErrorCode.UNAUTHORIZED, str(exc), None))
            conn.close(exc.close_code, exc.message[:120])
            return
        previous = session.identity
        if previous is not None and previous.subject != identity.subject:
            conn.close(CloseCode.UNAUTHORIZED, "a refreshed token must have the same subject")
            return
        if previous is None and not self._subject_fits(identity):
            conn.close(CloseCode.FORBIDDEN, "too many connections for this subject")
            return
        self._authenticated(client, identity)
        self._rebind(client)

    def _rebind(self, client: Client) -> None:
        """Re-apply the (possibly changed) grants to the client's open subscriptions."""
        session = client.session
        assert session.grants is not None
        for sub in list(session.subscriptions.values()):
            if sub.channel is not None:
                allowed = session.grants.can_read_channel(sub.channel)
            else:
                rule = session.grants.table(sub.schema, sub.table)
                allowed = rule is not None
                if rule is not None:
                    # Same subject, maybe other claims: rebuild from the client's own filter.
                    self.hub.remove(sub)
                    sub.rule, filter_ = _restrict(rule, client.filters.get(sub.id, MATCH_ALL))
                    sub.set_filter(filter_)
                    self.hub.add(sub)
            if not allowed:
                self._forget(session.close_subscription(sub.id))
                client.conn.send(
                    protocol.error(
                        ErrorCode.FORBIDDEN, "the refreshed token may not read this", sub.id
                    )
                )

    async def _publish(self, client: Client, message: protocol.Publish) -> None:
        session = client.session
        assert session.grants is not None
        if not session.publish_limit.allow():
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many publish messages; slow down")
        channel = message.channel
        if (
            channel == "pgcast"
            or not self.settings.allows_channel(channel)
            or not session.grants.can_publish(channel)
        ):
            raise ProtocolError(
                ErrorCode.FORBIDDEN_CHANNEL, f"this token may not publish to {channel!r}"
            )
        size = len(message.payload.encode())
        if size > self.auth.limits.max_publish_bytes:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"payload is {size} bytes; at most {self.auth.limits.max_publish_bytes}",
            )
        try:
            await self._pool.execute("SELECT pg_notify($1, $2)", channel, message.payload)
        except DATABASE_ERRORS as exc:
            # The payload was vetted above, so this is the database's state, not the
            # client's input: the details go to the log, not to the client.
            logger.warning("publish to %r failed: %s", channel, exc)
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, "could not publish: the database is unavailable; retry later"
            ) from None

    async def _subscribe(self, client: Client, request: Subscribe) -> None:
        conn = client.conn
        if request.channel is not None:
            await self._subscribe_channel(client, request)
            return
        assert request.table is not None and self._catalog is not None
        grants = client.session.grants
        assert grants is not None
        # Rights first: a token must not learn which tables are tracked, or their
        # columns, from the errors of tables it may not read.
        if grants.rules.configured and not any(
            table == request.table
            and (request.schema is None or schema == request.schema)
            and grants.table(schema, table) is not None
            for schema, table in grants.rules.tables
        ):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not read {request.table!r}")
        try:
            info = await self._catalog.resolve(request.schema, request.table)
        except DATABASE_ERRORS as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"database unavailable: {exc}") from None
        rule = grants.table(info.schema, info.name)
        if rule is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not read {request.table!r}")
        request.filter.check_columns(info.columns, info.name)
        if request.columns is not None and not request.columns <= info.columns:
            unknown = ", ".join(sorted(request.columns - info.columns))
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"unknown columns for table {info.name!r}: {unknown}"
            )
        rule, filter_ = _restrict(rule, request.filter)
        sub = client.session.open(
            request, schema=info.schema, table=info.name, filter=filter_, rule=rule
        )
        client.filters[sub.id] = request.filter
        fields: dict[str, Any] = {"schema": info.schema, "table": info.name}
        if not request.snapshot and request.since is None:
            self.hub.add(sub)
            conn.send(protocol.subscribed(sub.id, **fields))
            return
        # Project snapshot rows like the log does (tracked columns), then as asked.
        keep = info.columns if sub.columns is None else info.columns & sub.columns
        sub.begin_catch_up(self.settings.catch_up_buffer_limit)
        self.hub.add(sub)
        try:
            fields |= await self.catch_ups.run(
                conn,
                sub,
                key=client.subject or client,  # a tenant's catch-ups take turns
                table_snapshot=request.snapshot,
                since=request.since,
                keep=keep,
                rls=self._rls(client),
            )
        except ProtocolError:
            client.session.close_subscription(sub.id)
            self._forget(sub)
            raise
        except CatchUpAborted:  # the client was closed (4001) or left: nothing to answer
            client.session.close_subscription(sub.id)
            self._forget(sub)
            return
        conn.send(protocol.subscribed(sub.id, **fields))

    def _rls(self, client: Client) -> tuple[str, str] | None:
        """(role, claims JSON) when snapshots defer to row-level security."""
        identity = client.session.identity
        if self.auth.rls_role is None or identity is None:
            return None
        return self.auth.rls_role, exactjson.dumps(dict(identity.claims)).decode()

    async def _subscribe_channel(self, client: Client, request: Subscribe) -> None:
        channel = request.channel
        assert channel is not None
        grants = client.session.grants
        allowed = grants is not None and grants.can_read_channel(channel)
        if channel == "pgcast" or not self.settings.allows_channel(channel) or not allowed:
            raise ProtocolError(
                ErrorCode.FORBIDDEN_CHANNEL,
                f"channel {channel!r} is not allowed",
                hint="allowed patterns: " + ", ".join(self.settings.channels),
            )
        sub = client.session.open(request)
        self.hub.add_channel(sub)
        # `subscribed` promises a live stream: only once LISTEN is in effect.
        if not await self.listener.listen(channel, timeout=self.settings.probe_interval):
            client.session.close_subscription(sub.id)
            self._forget(sub)
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                f"cannot LISTEN on {channel!r} now: PostgreSQL is unreachable",
                hint="retry the subscription later",
            )
        client.conn.send(protocol.subscribed(sub.id, channel=channel))

    def _forget(self, sub: Subscription) -> None:
        if sub.channel is None:
            self.hub.remove(sub)
        elif self.hub.remove_channel(sub):
            self.listener.unlisten(sub.channel)

    # observability ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        listener = self.listener
        ok = listener.state is ListenerState.LISTENING
        return {
            "status": "ok" if ok else "degraded",
            "clients": len(self.clients),
            "subscriptions": self.hub.subscription_count(),
            "listener": {
                "state": listener.state.value,
                "reconnects": listener.reconnects,
                "backend_pid": listener.backend_pid,
                "position": str(listener.cursor.last_id),
                "last_error": listener.last_error,
            },
            "lag_seconds": listener.lag_seconds,
            "catch_up": self.catch_ups.health(),
            "changes_in": self.changes_in,
            "deliveries_out": self.deliveries_out + self.catch_ups.deliveries,
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }


def _restrict(rule: RowRule, requested: Filter) -> tuple[RowRule | None, Filter]:
    """The rule a subscription keeps (None: all rows) and its filter.

    The rule's bound conditions (merchant_id = 7...) are prepended to the client's
    filter so the hub indexes the subscription on the tenant column; the rule itself
    still decides which row images may be shown (Subscription.view).
    """
    if rule.allows_all:
        return None, requested
    conditions = rule.conditions()
    if conditions:
        return rule, Filter(conditions + requested.conditions)
    return rule, requested


def _who(client: Client) -> str:
    """A client for the logs: its address, and the proxy's when one forwarded it."""
    if client.ip == peer_address(client.conn.peer):
        return client.conn.peer
    return f"{client.ip} (via {client.conn.peer})"


def _refusal(status: int, reason: str, code: str, message: str) -> Response:
    """An HTTP answer refusing a WebSocket upgrade, with a JSON error body."""
    body = orjson.dumps({"type": "error", "code": code, "message": message})
    return http_response(status, reason, body, "application/json")


def _epoch(timestamp: str) -> float:
    """Seconds since the epoch of a change's ``committed_at`` (ISO 8601, UTC)."""
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return math.nan


async def serve(
    settings: Settings,
    dsn: str,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Gateway], None] | None = None,
    auth: AuthConfig | None = None,
    routes: Callable[[HttpRequest], Awaitable[Response | None]] | None = None,
) -> None:
    """Run a gateway until ``stop`` is set (or forever), then shut down cleanly."""
    gateway = Gateway(settings, dsn, auth=auth, routes=routes)
    try:
        if not await wait_unless_stopped(gateway.start(retry=True), stop):
            return  # stopped while waiting for the database
        if on_ready is not None:
            on_ready(gateway)
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        with contextlib.suppress(Exception):
            await gateway.stop()
