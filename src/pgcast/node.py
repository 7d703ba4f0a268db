"""A pgcast node: composes listener, hub, client connections, catch-ups, housekeeping
and metrics around one database.

Data path: the listener reads committed changes from the log and calls
:meth:`Node.dispatch`; the hub says which subscriptions want each change; the change
is encoded once per projection and queued on each subscriber's connection; every
touched connection is flushed once per batch. Client messages are the sessions'
(:mod:`pgcast.connections`, :mod:`pgcast.session`); the transports that carry the
connections are bound by :mod:`pgcast.server` (native) or :mod:`pgcast.asgi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from . import protocol
from .admission import Admission
from .auth import AuthConfig, RowRule
from .bus import Bus
from .bus_postgres import PostgresBus
from .capture.retention import prune
from .capture.wal import WalConsumer
from .catalog import Catalog
from .catch_up import CatchUps
from .changelog import DATABASE_ERRORS
from .client_address import is_trusted_proxy
from .config import Settings
from .connections import Client, Connections
from .console_feed import NodeList
from .console_feed import run as feed_console
from .console_stats import SampleRing
from .events import ChangeEvent, Horizon
from .exceptions import ConfigError, RowImageError
from .filters import Filter
from .hooks import ChangeHooks, HookFunction
from .hub import Hub, Subscription
from .listener import Listener
from .metrics import Histogram
from .observability import build_metrics
from .observability import health as node_health
from .protocol import CloseCode
from .realtime import Realtime
from .schema_watch import check_rules, watch_catalog
from .startup import connect_with_retry
from .supabase import PhoenixEndpoint
from .topics import check_topic
from .transports import Connection, Refusal
from .transports.pending import PendingRequests
from .unreadable import UnreadableRows, describe

if TYPE_CHECKING:
    from .broker.tier import BrokerTier

logger = logging.getLogger("pgcast.server")

PRUNE_EVERY = 600.0
STATS_EVERY = 15.0
# Estimates, not count(*): cheap on a log of any size.
_STATS_QUERY = """
SELECT (SELECT greatest(reltuples, 0) FROM pg_class
         WHERE oid = to_regclass('pgcast.changes')) AS rows,
       pg_total_relation_size(to_regclass('pgcast.changes')) AS bytes,
       pg_notification_queue_usage() AS queue_usage
"""


class Node:
    """A pgcast gateway bound to one database, whatever transports carry its clients."""

    dispatch_seconds: Histogram  # set by build_metrics
    capture_to_send_seconds: Histogram

    def __init__(
        self,
        settings: Settings,
        dsn: str,
        *,
        auth: AuthConfig | None = None,
        bus: Bus | None = None,
    ) -> None:
        """``bus`` joins this node to the others for presence and broadcast (default:
        LISTEN/NOTIFY on ``dsn``, see pgcast.bus_postgres)."""
        self.settings = settings
        self.dsn = dsn
        self.auth = auth if auth is not None else AuthConfig()
        self.admission = Admission(self.auth, settings.trusted_proxies)
        self.pending_requests = PendingRequests(
            max_per_ip=settings.max_pending_per_ip,
            head_timeout=settings.head_timeout,
            body_timeout=settings.body_timeout,
            uncapped=lambda ip: is_trusted_proxy(ip, settings.trusted_proxies),
        )
        self.hub = Hub()
        self.connections = Connections(self)
        self.phoenix = PhoenixEndpoint(self)  # /realtime/v1/websocket: supabase-js
        self.listener = Listener(
            dsn,
            on_changes=self.dispatch,
            on_message=self.deliver_message,
            on_gap=self.resync_all,
            poll_interval=settings.poll_interval,
            fast_poll_interval=settings.fast_poll_interval,
            probe_timeout=settings.probe_interval,
            read_log=settings.broker is None,
        )
        self.changes_in = 0
        self.deliveries_out = 0
        self.overflows = 0
        self.capture_lag: float | None = None  # commit to dispatch of the newest change
        self.console_samples = SampleRing()  # fed only while the console is configured
        self.console_nodes = NodeList()
        self.unreadable = UnreadableRows()
        self._pool: Any = None
        self._catalog: Catalog | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.started_at = time.time()
        self.log_stats: dict[str, float] = {}  # refreshed by the housekeeping task
        self.catch_ups = CatchUps(settings, self.unreadable)
        self.metrics_registry = build_metrics(self)
        self.catch_ups.register_metrics(self.metrics_registry)
        self.hooks = ChangeHooks()  # server-side callbacks (on_change), run off the hot path
        self.hooks.register_metrics(self.metrics_registry)
        # WAL capture: one gateway per database (elected) appends decoded changes to
        # the log and wakes its reader; the others' readers find the rows by polling.
        self.wal = WalConsumer(
            dsn,
            on_appended=self._appended,
            # With a broker the fleet is meant to grow: wait for the slot through
            # the pool, not on a connection per node (pgcast.election).
            pool=(lambda: self.pool) if settings.broker is not None else None,
        )
        self.wal.register_metrics(self.metrics_registry)
        # The broker tier (settings.broker): one elected reader publishes the log to
        # NATS JetStream, and this node's changes come from the stream.
        self.broker: BrokerTier | None = None
        if settings.broker is not None:
            self.broker = _broker_tier(self)
            self.broker.register_metrics(self.metrics_registry)
        self.realtime = Realtime(
            bus if bus is not None else self._default_bus(),
            self.auth.limits,
            heartbeat_interval=settings.presence_heartbeat,
            node_timeout=settings.presence_timeout,
        )
        self.realtime.register_metrics(self.metrics_registry)

    @property
    def clients(self) -> dict[Connection, Client]:
        return self.connections.clients

    @property
    def _admitted(self) -> dict[Connection, Any]:
        return self.admission.admitted

    @property
    def pool(self) -> Any:
        assert self._pool is not None, "the node is not started"
        return self._pool

    @property
    def catalog(self) -> Catalog:
        assert self._catalog is not None, "the node is not started"
        return self._catalog

    # lifecycle -------------------------------------------------------------------------

    async def start(self, *, ready_timeout: float = 10.0, retry: bool = False) -> None:
        """Connect to PostgreSQL, start the listener, the WAL consumer and housekeeping.

        ``retry`` waits for an unreachable database (with backoff, logging each
        attempt) instead of failing."""
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
        self.wal.start()
        if self.broker is not None:
            # Waits for NATS (with retry) and the stream: the feed must run before
            # any catch-up takes its horizon.
            await self.broker.start(retry=retry)
        else:
            self.listener.start()
            if not await self.listener.wait_ready(ready_timeout):
                logger.warning(
                    "PostgreSQL LISTEN not ready yet (%s); serving anyway",
                    self.listener.last_error,
                )
        await self.realtime.start()
        self._spawn(self._housekeeping(), "pgcast-housekeeping")
        if self.settings.admin_token is not None:
            self._spawn(feed_console(self), "pgcast-console-feed")
        await check_rules(self.auth.rules, self._catalog)
        self._spawn(watch_catalog(self._catalog, self.connections), "pgcast-catalog")

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Tell every client to reconnect elsewhere (4000), then release everything."""
        clients = self.connections.clients
        for conn in list(clients):
            conn.close(CloseCode.SHUTTING_DOWN, "gateway shutting down: reconnect and resume")
        if clients:
            self.connections.all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.connections.all_closed.wait()
        for conn in list(clients):
            conn.abort()
        await self.realtime.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.wal.stop()
        if self.broker is not None:
            await self.broker.stop()
        await self.listener.stop()
        await self.hooks.stop(timeout=timeout)
        if self._pool is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._pool.close()
            except TimeoutError:  # a connection to a dead server never answers
                self._pool.terminate()

    def _default_bus(self) -> Bus:
        """NATS core subjects when a broker is configured, else LISTEN/NOTIFY."""
        if self.broker is not None:
            from .broker.bus import NatsBus

            return NatsBus(self.broker.link)
        return PostgresBus(self.dsn)

    def _appended(self) -> None:
        """The WAL consumer appended to the log: read it now."""
        if self.broker is not None:
            self.broker.wake()
        else:
            self.listener.wake()

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

    # delivery (hot path) -----------------------------------------------------------------

    def dispatch(self, changes: list[ChangeEvent]) -> None:
        """Route a batch of committed changes; one write per touched connection.

        A change that cannot be routed or encoded costs only itself: it is withheld
        where it would be evaluated (see unreadable.py), the rest of the batch goes on.
        """
        started = time.perf_counter()
        touched: set[Connection] = set()
        match = self.hub.match
        deliveries = 0
        for change in changes:
            try:
                routed = match(change)
            except Exception as exc:
                self.unreadable.withheld(describe(change), exc)
                routed = self.hub.match_unread(change)
            projection_failed = False
            for sub, view in routed:
                if sub.buffer is not None:
                    sub.buffer.append(change)
                    continue
                if projection_failed and sub.columns is not None:
                    continue  # read once, withheld once: not per subscriber
                try:
                    body = change.body(sub.columns, view)
                except RowImageError as exc:  # a column projection must read the row
                    projection_failed = True
                    self.unreadable.withheld(describe(change), exc)
                    continue
                conn: Connection = sub.owner
                try:
                    conn.queue_change(sub.prefix, body, change.id)
                except Exception as exc:  # a transport's own encoding (Supabase's) failed
                    self.unreadable.withheld(describe(change), exc)
                    continue
                touched.add(conn)
                deliveries += 1
        for conn in touched:
            conn.flush()
        self.changes_in += len(changes)
        self.deliveries_out += deliveries
        self.dispatch_seconds.observe(time.perf_counter() - started)
        if changes:
            lag = time.time() - _epoch(changes[-1].committed_at)
            self.capture_to_send_seconds.observe(lag)
            if not math.isnan(lag):
                self.capture_lag = lag
        if self.hooks:
            self.hooks.feed(changes)

    def deliver_message(self, channel: str, payload: str) -> None:
        """Pass a raw NOTIFY on ``channel`` to its subscribers."""
        subs = self.hub.channel_subscribers(channel)
        if not subs:
            return
        body = protocol.channel_message_body(channel, payload)
        for sub in subs:
            conn: Connection = sub.owner
            conn.queue_message(sub.prefix, body)
            conn.flush()
        self.deliveries_out += len(subs)

    def resync_all(self, pruned_through: int) -> None:
        """Tell every table subscriber that changes were lost to pruning: refetch."""
        reason = (
            f"the change log was pruned through id {pruned_through} before this gateway "
            "read it: refetch"
        )
        # No position: the changes after the gap are dispatched next, and the node's
        # position may already include them.
        for client in self.connections.clients.values():
            for sub in client.session.subscriptions.values():
                if sub.channel is None:
                    client.conn.send(protocol.resync(sub.id, reason))

    def on_change(
        self, table: str, *, schema: str | None = None, events: tuple[str, ...] | None = None
    ) -> Callable[[HookFunction], HookFunction]:
        """Decorator: run the function (sync or async) for each committed change of
        ``table``, off the delivery path (see pgcast.hooks). Register before start()."""
        return self.hooks.on_change(table, schema=schema, events=events)

    async def broadcast(self, topic: str, event: str, payload: Any) -> None:
        """Send ``event`` with ``payload`` (JSON) to every member of ``topic`` on every
        node. ProtocolError for a bad topic or event or a payload above the limit."""
        await self.realtime.broadcast(check_topic(topic), event, payload)

    def position(self) -> str | None:
        """The exact log position the gateway has dispatched up to (None before it read).

        A client that resumes from it gets every change the gateway had not yet
        dispatched when it connected: nothing earlier, nothing missed.
        """
        if self.broker is not None:
            at = self.broker.position()
            return None if at is None else at.encode()
        cursor = self.listener.cursor
        if not cursor.initialized:
            return None
        return Horizon(cursor.last_id, frozenset(cursor.pending), cursor.xmax).encode()

    # what sessions ask of the node (pgcast.connections carries them out) ------------------

    def watch(self, sub: Subscription) -> None:
        if sub.channel is None:
            self.hub.add(sub)
        else:
            self.hub.add_channel(sub)

    def forget(self, sub: Subscription) -> None:
        if sub.channel is None:
            self.hub.remove(sub)
        elif self.hub.remove_channel(sub):
            self.listener.unlisten(sub.channel)

    def refilter(self, sub: Subscription, rule: RowRule | None, filter_: Filter) -> None:
        self.hub.remove(sub)
        sub.rule = rule
        sub.set_filter(filter_)
        self.hub.add(sub)

    async def listen(self, sub: Subscription) -> bool:
        assert sub.channel is not None
        if not self.listener.started:  # with a broker: on the first raw channel
            self.listener.start()
        return await self.listener.listen(sub.channel, timeout=self.settings.probe_interval)

    async def notify(self, channel: str, payload: str) -> None:
        await self._pool.execute("SELECT pg_notify($1, $2)", channel, payload)

    # transport callbacks (pgcast.transports.websocket.Application) -------------------------

    def admit(self, conn: Connection) -> Refusal | None:
        return self.phoenix.vet(conn) or self.admission.admit(conn)

    def opened(self, conn: Connection) -> None:
        if self.phoenix.serves(conn):
            self.phoenix.opened(conn)
        else:
            self.connections.opened(conn)

    def opened_stream(self, conn: Connection, subscribe: dict[str, Any]) -> str | None:
        return self.connections.opened_stream(conn, subscribe)

    def received(self, conn: Connection, data: str | bytes) -> None:
        link = self.phoenix.links.get(conn)
        if link is not None:
            self.phoenix.received(link, data)
        else:
            self.connections.received(conn, data)

    def closed(self, conn: Connection) -> None:
        if not self.phoenix.closed(conn):
            self.connections.closed(conn)

    def overflowed(self, conn: Connection) -> None:
        """A client's outbox overflowed; the transport is closing it (4001)."""
        self.overflows += 1
        client = self.connections.clients.get(conn)
        who = client.who() if client is not None else conn.peer
        logger.info("closing slow client %s: outbox overflow (it resumes on reconnect)", who)

    # observability -------------------------------------------------------------------------

    def metrics(self) -> str:
        """The Prometheus text exposition of this gateway's metrics."""
        return self.metrics_registry.render()

    def health(self) -> dict[str, Any]:
        return node_health(self)


def _broker_tier(node: Node) -> BrokerTier:
    try:
        from .broker.tier import BrokerTier
    except ImportError as exc:
        raise ConfigError(
            f"the broker setting needs the nats-py package ({exc})",
            hint="pip install 'pgcast[nats]'",
        ) from None
    return BrokerTier(node)


def _epoch(timestamp: str) -> float:
    """Seconds since the epoch of a change's ``committed_at`` (ISO 8601, UTC)."""
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return math.nan
