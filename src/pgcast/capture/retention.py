"""The change log's extent and its pruning: ``log_stats`` and ``prune``.

Pruning always removes a prefix of ids and records the highest removed id
(``pruned_through``), so a reader positioned before it knows it must resync.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import asyncpg

from pgcast.capture.installer import installed_version
from pgcast.exceptions import CaptureError

__all__ = ["LogStats", "log_stats", "prune"]

_PRUNE_BATCH = 10_000


@dataclass(frozen=True)
class LogStats:
    """Size and extent of ``pgcast.changes``.

    ``pruned_through`` is the highest id ever removed by :func:`prune` (0 if none):
    a reader positioned before it may have missed rows and must resync.
    """

    rows: int
    first_id: int | None
    last_id: int | None
    bytes: int
    pruned_through: int


async def _pruned_through(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT value FROM pgcast.state WHERE key = 'pruned_through'")
    return 0 if value is None else int(value)


async def log_stats(conn: asyncpg.Connection) -> LogStats:
    """Row count, id range, on-disk size and prune position of the change log."""
    if await installed_version(conn) is None:
        return LogStats(rows=0, first_id=None, last_id=None, bytes=0, pruned_through=0)
    row = await conn.fetchrow(
        "SELECT count(*) AS rows, min(id) AS first_id, max(id) AS last_id, "
        "pg_total_relation_size('pgcast.changes') AS bytes FROM pgcast.changes"
    )
    return LogStats(
        rows=row["rows"],
        first_id=row["first_id"],
        last_id=row["last_id"],
        bytes=row["bytes"],
        pruned_through=await _pruned_through(conn),
    )


async def prune(
    conn: asyncpg.Connection,
    *,
    older_than: datetime.timedelta | None = None,
    keep_last: int | None = None,
    batch_size: int = _PRUNE_BATCH,
) -> int:
    """Delete old log rows; returns how many were deleted.

    A row goes if it is older than ``older_than`` (by ``committed_at``) or if it is
    not among the ``keep_last`` newest rows; with both given, either condition
    removes it. Deletion always removes a prefix of ids (everything up to the newest
    row that qualifies), so "every id <= pruned_through is gone" holds for the
    gateway's resync decision. Rows go in batches of ``batch_size``, each in its own
    transaction together with the ``pruned_through`` update, to keep locks short.
    """
    if older_than is None and keep_last is None:
        raise CaptureError(
            "prune needs older_than or keep_last", hint="e.g. older_than=timedelta(days=7)"
        )
    if older_than is not None and older_than < datetime.timedelta(0):
        raise CaptureError(f"older_than must not be negative, got {older_than}")
    if keep_last is not None and keep_last < 0:
        raise CaptureError(f"keep_last must not be negative, got {keep_last}")
    if batch_size < 1:
        raise CaptureError(f"batch_size must be positive, got {batch_size}")
    if await installed_version(conn) is None:
        return 0
    try:
        cutoff = await _prune_cutoff(conn, older_than, keep_last)
        if cutoff is None:
            return 0
        deleted = 0
        while True:
            async with conn.transaction():
                row = await conn.fetchrow(
                    """
                    WITH gone AS (
                        DELETE FROM pgcast.changes
                         WHERE id IN (SELECT id FROM pgcast.changes WHERE id <= $1
                                       ORDER BY id LIMIT $2)
                        RETURNING id)
                    SELECT count(*) AS n, max(id) AS last FROM gone
                    """,
                    cutoff,
                    batch_size,
                )
                removed: int = row["n"]
                if removed:
                    await conn.execute(
                        "INSERT INTO pgcast.state (key, value) VALUES ('pruned_through', $1) "
                        "ON CONFLICT (key) DO UPDATE SET value = "
                        "greatest(pgcast.state.value::bigint, EXCLUDED.value::bigint)::text",
                        str(row["last"]),
                    )
            deleted += removed
            if removed < batch_size:
                return deleted
    except asyncpg.PostgresError as exc:
        raise CaptureError(f"could not prune the change log: {exc}") from exc


async def _prune_cutoff(
    conn: asyncpg.Connection,
    older_than: datetime.timedelta | None,
    keep_last: int | None,
) -> int | None:
    """The highest id to delete, or ``None`` if nothing qualifies."""
    cutoffs: list[int] = []
    if older_than is not None:
        # committed_at has no index (it would slow every capture); pruning scans.
        by_age = await conn.fetchval(
            "SELECT max(id) FROM pgcast.changes WHERE committed_at < now() - $1::interval",
            older_than,
        )
        if by_age is not None:
            cutoffs.append(by_age)
    if keep_last is not None:
        by_count = await conn.fetchval(
            "SELECT id FROM pgcast.changes ORDER BY id DESC OFFSET $1 LIMIT 1", keep_last
        )
        if by_count is not None:
            cutoffs.append(by_count)
    return max(cutoffs) if cutoffs else None
