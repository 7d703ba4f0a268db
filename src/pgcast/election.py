"""Elections by session advisory lock, without holding a connection while waiting.

The database's one stream reader (pgcast.broker.reader) and, with a broker, its one
WAL slot consumer (pgcast.capture.wal) are elected by a session advisory lock held
on their own connection: when the holder's session ends, however it ends, the lock
is free. Candidates do not each keep a connection open to wait on the lock; they
ask through their pool whether anyone holds it (``pg_locks``), and only then
connect and try to take it. So a fleet of N nodes costs the primary one elected
connection, not N.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lock_is_free"]

# A bigint key is classid = its high half, objid = its low half, objsubid = 1.
_LOCK_FREE = """
SELECT NOT EXISTS (
    SELECT FROM pg_catalog.pg_locks
     WHERE locktype = 'advisory' AND granted AND objsubid = 1
       AND classid::bigint = $1 AND objid::bigint = $2
       AND database = (SELECT oid FROM pg_catalog.pg_database
                        WHERE datname = current_database()))
"""


async def lock_is_free(conn: Any, key: int, *, timeout: float | None = None) -> bool:
    """Whether no session of this database holds advisory lock ``key`` (a hint: take
    it with ``pg_try_advisory_lock``, which may still lose the race)."""
    return bool(await conn.fetchval(_LOCK_FREE, key >> 32, key & 0xFFFFFFFF, timeout=timeout))
