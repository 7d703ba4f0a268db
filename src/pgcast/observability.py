"""What a node shows about itself: its Prometheus metrics and its /health document."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .listener import ListenerState
from .metrics import Registry

if TYPE_CHECKING:
    from .node import Node

__all__ = ["build_metrics", "health"]


def build_metrics(self: Node) -> Registry:
    registry = Registry()
    registry.gauge(
        "pgcast_connections",
        "Connected WebSocket and SSE clients.",
        lambda: len(self.connections.clients),
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
    registry.counter("pgcast_changes_total", "Changes read from the log.", lambda: self.changes_in)
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
    registry.gauge("pgcast_log_rows", "Rows in the change log.", lambda: self.log_stats.get("rows"))
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


def health(self: Node) -> dict[str, Any]:
    listener = self.listener
    broker = self.broker
    if broker is None:
        ok = listener.state is ListenerState.LISTENING
        lag = listener.lag_seconds
    else:  # the stream brings the changes; the listener only carries raw channels
        ok = broker.ok and listener.state in (ListenerState.LISTENING, ListenerState.CONNECTING)
        lag = broker.lag_seconds()
    document: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "clients": len(self.connections.clients),
        "subscriptions": self.hub.subscription_count(),
        "listener": {
            "state": listener.state.value,
            "reconnects": listener.reconnects,
            "backend_pid": listener.backend_pid,
            "position": str(listener.cursor.last_id),
            "last_error": listener.last_error,
        },
        "lag_seconds": lag,
        "catch_up": self.catch_ups.health(),
        "realtime": self.realtime.health(),
        "changes_in": self.changes_in,
        "deliveries_out": self.deliveries_out + self.catch_ups.deliveries,
        "uptime_seconds": round(time.time() - self.started_at, 3),
    }
    if broker is not None:
        document["broker"] = broker.health()
    return document
