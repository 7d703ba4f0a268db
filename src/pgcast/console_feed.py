"""What feeds the operator's console: a node's counters read once a second into its
:class:`pgcast.console_stats.SampleRing`, and the list of gateway nodes sharing the
database.

The node list comes from ``pg_stat_activity`` and needs no table of pgcast's own:
every gateway holds one LISTEN connection named ``pgcast-listener``
(application_name, see :mod:`pgcast.listener`), so the listener connections to this
database are the nodes that are up and reading the log. This node is the one whose
listener backend pid is ours. What the database knows of the others is what it shows
(client address and port, since when, state); their counters are on their own
consoles. The task runs only while the console is configured.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from .changelog import DATABASE_ERRORS
from .console_stats import Reading

if TYPE_CHECKING:
    from .node import Node

__all__ = ["NODES_EVERY", "SAMPLE_EVERY", "NodeList", "read", "run"]

logger = logging.getLogger("pgcast.console")

SAMPLE_EVERY: Final = 1.0
NODES_EVERY: Final = 5.0
_NODES_TIMEOUT: Final = 5.0
NODES_QUERY: Final = """
SELECT pid, host(client_addr) AS address, client_port AS port, backend_start, state
FROM pg_stat_activity
WHERE application_name = 'pgcast-listener' AND datname = current_database()
ORDER BY backend_start, pid
LIMIT 100
"""


@dataclasses.dataclass
class NodeList:
    """The gateway nodes reading this database, as last seen in pg_stat_activity."""

    nodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    checked_at: float | None = None
    error: str | None = None

    def document(self, own_pid: int | None) -> dict[str, Any]:
        nodes = [{**node, "self": node["pid"] == own_pid} for node in self.nodes]
        return {"nodes": nodes, "checked_at": self.checked_at, "error": self.error}


def read(node: Node) -> Reading:
    """The node's counters now (cheap: no I/O, one pass over the hub's tables)."""
    tables = {f"{schema}.{table}": count for (schema, table), count in node.hub.table_counts()}
    return Reading(
        changes=node.changes_in,
        deliveries=node.deliveries_out + node.catch_ups.deliveries,
        slow_closes=node.overflows,
        connections=len(node.connections.clients),
        subscriptions=node.hub.subscription_count(),
        tables=tables,
        listener_lag=node.listener.lag_seconds,
        capture_lag=node.capture_lag,
    )


async def run(node: Node) -> None:
    """Sample ``node`` every second and list the nodes every few seconds, forever."""
    next_nodes = time.monotonic()
    while True:
        node.console_samples.record(time.time(), read(node))
        if time.monotonic() >= next_nodes:
            next_nodes = time.monotonic() + NODES_EVERY
            await _list_nodes(node)
        await asyncio.sleep(SAMPLE_EVERY)


async def _list_nodes(node: Node) -> None:
    found = node.console_nodes
    try:
        async with asyncio.timeout(_NODES_TIMEOUT):
            rows = await node.pool.fetch(NODES_QUERY)
    except DATABASE_ERRORS as exc:  # TimeoutError among them
        found.error = f"cannot list the nodes: {type(exc).__name__}: {exc}"[:300]
        logger.debug("console: %s", found.error)
        return
    found.nodes = [
        {
            "pid": row["pid"],
            "address": row["address"],
            "port": row["port"],
            "since": row["backend_start"].isoformat() if row["backend_start"] else None,
            "state": row["state"],
        }
        for row in rows
    ]
    found.checked_at = time.time()
    found.error = None
