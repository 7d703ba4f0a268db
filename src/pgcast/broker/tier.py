"""The broker tier as a node sees it: the NATS link, the stream feed that replaces the
node's own log reads, and the reader candidacy; with their /health and /metrics.

With a broker the node holds no log-reading connection of its own: the feed's
batches go through :meth:`pgcast.node.Node.dispatch` exactly as the listener's
pages do, and gaps through ``resync_all``. Snapshots and replays still read
PostgreSQL through the node's pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from pgcast.events import ChangeEvent, Horizon
from pgcast.log_replay import Acquire
from pgcast.metrics import Registry

from .codec import StreamEntry
from .feed import StreamFeed
from .link import BrokerLink, LinkState
from .reader import StreamReader
from .replay import stream_replay

if TYPE_CHECKING:
    from pgcast.node import Node

__all__ = ["BrokerTier"]

logger = logging.getLogger("pgcast.broker")


class BrokerTier:
    def __init__(self, node: Node) -> None:
        settings = node.settings
        assert settings.broker is not None
        self.node = node
        self.link = BrokerLink(settings.broker, settings.broker_stream, name="pgcast-node")
        self.feed = StreamFeed(self.link, on_entries=self._on_entries, on_gap=node.resync_all)
        wal = node.wal
        self.reader = StreamReader(
            node.dsn,
            self.link,
            pool=lambda: node.pool,
            # WAL capture: the slot's consumer is the reader (one process per database).
            eligible=lambda: wal.leader or wal.slot is None,
            max_age=settings.retention.total_seconds(),
            fast_poll_interval=settings.fast_poll_interval,
            poll_interval=settings.poll_interval,
            probe_timeout=settings.probe_interval,
        )
        self.last_dispatch_at: float | None = None
        node.catch_ups.stream_source = self._stream_replay

    async def _stream_replay(
        self, acquire: Acquire, since: int | Horizon, schema: str, table: str, events: list[str]
    ) -> AsyncGenerator[list[ChangeEvent] | Horizon, None] | None:
        return await stream_replay(
            self.feed, acquire, since=since, schema=schema, table=table, events=events
        )

    async def start(self, *, retry: bool) -> None:
        """Connect (waiting for NATS with ``retry``), stand for reader, start the feed.

        Returns once the feed is subscribed: a catch-up's horizon must come after the
        feed's starting point (see feed.py)."""
        await self.link.connect(retry=retry)
        self.reader.start()
        await self.feed.start()

    async def stop(self) -> None:
        await self.reader.stop()
        await self.feed.stop()
        await self.link.close()

    def wake(self) -> None:
        self.reader.wake()

    def position(self) -> Horizon | None:
        return self.feed.position

    def _on_entries(self, entries: list[StreamEntry]) -> None:
        node = self.node
        changes: list[ChangeEvent] = []
        for entry in entries:
            if entry.change is not None:
                changes.append(entry.change)
            elif entry.gap_through is not None:
                if changes:
                    node.dispatch(changes)
                    changes = []
                node.resync_all(entry.gap_through)
        if changes:
            node.dispatch(changes)
        last = entries[-1].position
        if last is not None:
            self.feed.position = last
        self.last_dispatch_at = time.monotonic()

    # observability ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        reader, feed = self.reader, self.feed
        return {
            "state": self.link.state.value,
            "servers": self.link.where,
            "stream": self.link.stream,
            "reconnects": self.link.reconnects,
            "last_error": self.link.last_error or feed.last_error,
            "role": "reader" if reader.leader else "follower",
            "reader": {
                "terms": reader.terms,
                "published": reader.published,
                "backend_pid": reader.backend_pid if reader.leader else None,
                "last_error": reader.last_error,
            },
            "feed": {
                "started": feed.started,
                "sequence": feed.last_seq,
                "stream_sequence": feed.stream_last_seq,
                "lag_messages": feed.lag,
                "resubscribes": feed.resubscribes,
            },
        }

    def lag_seconds(self) -> float | None:
        """0 while the node holds every stream message; else seconds since it last got one."""
        if not self.feed.started:
            return None
        if self.feed.lag == 0:
            return 0.0
        since = self.last_dispatch_at
        return None if since is None else max(0.0, time.monotonic() - since)

    @property
    def ok(self) -> bool:
        return self.link.state is LinkState.CONNECTED and self.feed.started

    def register_metrics(self, registry: Registry) -> None:
        link, feed, reader = self.link, self.feed, self.reader
        registry.gauge(
            "pgcast_broker_up",
            "1 while the node is connected to NATS.",
            lambda: float(link.state is LinkState.CONNECTED),
        )
        registry.counter(
            "pgcast_broker_reconnects_total", "NATS reconnects.", lambda: link.reconnects
        )
        registry.gauge(
            "pgcast_broker_reader",
            "1 while this node is the database's elected stream reader.",
            lambda: float(reader.leader),
        )
        registry.counter(
            "pgcast_broker_published_total",
            "Changes this node published to the stream as its reader.",
            lambda: reader.published,
        )
        registry.counter(
            "pgcast_broker_reader_log_reads_total",
            "Queries this node sent to read the change log as its reader.",
            lambda: reader.log_reads,
        )
        registry.gauge(
            "pgcast_broker_stream_lag_messages",
            "Messages in the stream this node has not received yet.",
            lambda: feed.lag,
        )
        registry.counter(
            "pgcast_broker_received_total",
            "Stream messages this node received.",
            lambda: feed.received,
        )
        registry.counter(
            "pgcast_broker_stream_replays_total",
            "Resumes (`since`) served from the stream instead of the log.",
            lambda: self.node.catch_ups.stream_replays,
        )
        registry.counter(
            "pgcast_broker_bad_messages_total",
            "Stream messages skipped because pgcast could not read them.",
            lambda: feed.bad_messages,
        )
        registry.counter(
            "pgcast_broker_resubscribes_total",
            "Times the stream feed was subscribed again (lost NATS, stalled consumer).",
            lambda: feed.resubscribes,
        )
