"""The database side of WAL capture: checks, the publication, the slot, per-table setup.

A WAL-tracked table has no trigger: it is a member of the publication
:data:`PUBLICATION`, has ``REPLICA IDENTITY FULL`` (so UPDATE and DELETE carry the
whole old row, as in trigger mode), and its previous replica identity is kept in
``pgcast.wal_tables`` so that untrack restores it. One logical replication slot
per database (:func:`slot_name`: slots are cluster-wide, so the name carries the
database oid) decodes the changes with ``pgoutput``; :mod:`pgcast.capture.wal`
consumes it.

Order matters when setting up: the publication exists before the slot (pgoutput
fails on WAL it decodes before its publication exists, and a slot stuck on such
WAL never advances), and the slot exists before any table joins the publication
(changes committed before the slot was created are not in it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgcast.capture import sql
from pgcast.exceptions import CaptureError
from pgcast.identifiers import TableName, quote_ident

__all__ = [
    "PUBLICATION",
    "SlotStatus",
    "attach",
    "detach",
    "drop_slot_and_publication",
    "ensure_publication_and_slot",
    "install_script",
    "restore_identity",
    "slot_name",
    "slot_status",
    "wait_until_consumed",
    "wal_problems",
    "wal_table_count",
]

PUBLICATION = "pgcast"

_WAL_TABLES = f"""
CREATE TABLE IF NOT EXISTS {quote_ident(sql.SCHEMA)}.wal_tables (
    relid regclass PRIMARY KEY,
    replica_identity "char" NOT NULL,
    identity_index regclass
);
"""

_IDENTITY_CLAUSE = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}


def install_script() -> str:
    """Idempotent DDL of the WAL-mode bookkeeping (run under the install lock)."""
    return _WAL_TABLES


async def slot_name(conn: asyncpg.Connection) -> str:
    """The slot of this database: ``pgcast_<database oid>`` (slot names are cluster-wide)."""
    oid = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
    return f"pgcast_{oid}"


async def wal_problems(conn: asyncpg.Connection) -> list[CaptureError]:
    """Why WAL capture cannot run here (empty when it can), each with its fix."""
    row = await conn.fetchrow(
        "SELECT current_setting('wal_level') AS wal_level, current_user AS role, "
        "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)"
        " AS can_replicate, current_setting('max_replication_slots')::int AS max_slots, "
        "(SELECT count(*) FROM pg_replication_slots) AS used_slots"
    )
    problems = []
    if row["wal_level"] != "logical":
        problems.append(
            CaptureError(
                f"WAL capture needs wal_level = logical; this server has "
                f"wal_level = {row['wal_level']}",
                hint="run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) "
                "and restart PostgreSQL; or track with --capture trigger",
            )
        )
    if not row["can_replicate"]:
        problems.append(
            CaptureError(
                f"WAL capture needs a role with the REPLICATION attribute; "
                f"role {row['role']!r} has not",
                hint=f"run ALTER ROLE {quote_ident(row['role'])} REPLICATION as a superuser; "
                "or track with --capture trigger",
            )
        )
    if row["max_slots"] <= 0:
        problems.append(
            CaptureError(
                "WAL capture needs a replication slot; max_replication_slots = 0",
                hint="set max_replication_slots to at least 1 and restart PostgreSQL",
            )
        )
    return problems


async def ensure_publication_and_slot(conn: asyncpg.Connection) -> None:
    """Create the publication, then the slot, each if missing (outside a transaction)."""
    name = await slot_name(conn)
    try:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", PUBLICATION
        ):
            # publish_via_partition_root: changes to a partition carry the tracked
            # (root) table's name, as the trigger on a partitioned table does.
            with contextlib.suppress(asyncpg.DuplicateObjectError):  # created meanwhile
                await conn.execute(
                    f"CREATE PUBLICATION {quote_ident(PUBLICATION)}"
                    " WITH (publish_via_partition_root = true)"
                )
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)", name
        ):
            with contextlib.suppress(asyncpg.DuplicateObjectError):
                await conn.execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name
                )
    except asyncpg.PostgresError as exc:
        raise CaptureError(
            f"could not create the publication and replication slot for WAL capture: {exc}",
            hint="the role needs CREATE on the database and the REPLICATION attribute",
        ) from exc


async def attach(conn: asyncpg.Connection, oid: int, table: TableName) -> None:
    """Put ``table`` in WAL mode (inside the caller's transaction)."""
    await conn.execute(install_script())
    row = await conn.fetchrow(
        "SELECT c.relreplident::text AS ident, "
        "(SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)"
        " AS idx FROM pg_class c WHERE c.oid = $1",
        oid,
    )
    # Keep the identity the table had before pgcast first set FULL, not FULL itself.
    await conn.execute(
        "INSERT INTO pgcast.wal_tables (relid, replica_identity, identity_index) "
        'VALUES ($1::oid::regclass, $2::text::"char", $3::oid::regclass) '
        "ON CONFLICT (relid) DO NOTHING",
        oid,
        row["ident"],
        row["idx"],
    )
    await conn.execute(f"ALTER TABLE {table.quoted()} REPLICA IDENTITY FULL")
    member = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_publication_rel r JOIN pg_publication p "
        "ON p.oid = r.prpubid WHERE p.pubname = $1 AND r.prrelid = $2)",
        PUBLICATION,
        oid,
    )
    if not member:
        await conn.execute(
            f"ALTER PUBLICATION {quote_ident(PUBLICATION)} ADD TABLE ONLY {table.quoted()}"
        )


async def is_wal_table(conn: asyncpg.Connection, oid: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT to_regclass('pgcast.wal_tables') IS NOT NULL AND EXISTS "
            "(SELECT FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
            "WHERE p.pubname = $1 AND r.prrelid = $2)",
            PUBLICATION,
            oid,
        )
    )


async def detach(conn: asyncpg.Connection, oid: int, table: TableName) -> bool:
    """Take ``table`` out of WAL mode, restoring its replica identity (in a transaction).

    Returns whether it was in WAL mode.
    """
    if not await is_wal_table(conn, oid):
        return False
    await conn.execute(f"ALTER PUBLICATION {quote_ident(PUBLICATION)} DROP TABLE {table.quoted()}")
    await restore_identity(conn, oid, table)
    return True


async def restore_identity(conn: asyncpg.Connection, oid: int, table: TableName) -> bool:
    """Give ``table`` back the replica identity it had before WAL mode; forget it.

    Returns whether pgcast had kept one for it (in ``pgcast.wal_tables``).
    """
    row = await conn.fetchrow(
        "DELETE FROM pgcast.wal_tables WHERE relid = $1::oid::regclass "
        "RETURNING replica_identity::text AS ident, "
        "(SELECT relname FROM pg_class WHERE oid = identity_index) AS idx",
        oid,
    )
    if row is None:
        return False
    if row["ident"] == "i" and row["idx"] is not None:
        clause = f"USING INDEX {quote_ident(row['idx'])}"
    else:
        clause = _IDENTITY_CLAUSE.get(row["ident"], "DEFAULT")
    await conn.execute(f"ALTER TABLE {table.quoted()} REPLICA IDENTITY {clause}")
    return True


async def wal_table_count(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
        "WHERE p.pubname = $1",
        PUBLICATION,
    )
    return count


async def wal_table_oids(conn: asyncpg.Connection) -> set[int]:
    rows = await conn.fetch(
        "SELECT r.prrelid FROM pg_publication_rel r JOIN pg_publication p "
        "ON p.oid = r.prpubid WHERE p.pubname = $1",
        PUBLICATION,
    )
    return {r["prrelid"] for r in rows}


async def wait_until_consumed(conn: asyncpg.Connection, *, timeout: float = 10.0) -> bool:
    """Wait until a streaming consumer has confirmed all WAL written so far.

    Dropping the slot of the last WAL table would otherwise discard changes
    committed before the untrack that the consumer has not appended yet. The
    consumer confirms a position only after the log holds everything before it
    (and, when idle, moves it to the server's WAL end on keepalives), so reaching
    the current insert position means nothing committed earlier is left behind.
    Returns ``False`` when there is no active consumer or ``timeout`` passed:
    then whatever the slot still holds is not in the log.
    """
    name = await slot_name(conn)
    target = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
    try:
        async with _deadline(timeout):
            while True:
                row = await conn.fetchrow(
                    "SELECT active, confirmed_flush_lsn >= $2 AS reached "
                    "FROM pg_replication_slots WHERE slot_name = $1",
                    name,
                    target,
                )
                if row is None or not row["active"]:
                    return False
                if row["reached"]:
                    return True
                await _pause()
    except TimeoutError:
        return False


async def drop_slot_and_publication(conn: asyncpg.Connection, *, timeout: float = 10.0) -> bool:
    """Drop the slot (ending its consumer's stream) and the publication, if present.

    A slot with an active consumer cannot be dropped, so its walsender is ended
    first; the consumer then finds no slot and idles. Returns whether a slot existed.
    """
    name = await slot_name(conn)
    existed = False
    try:
        async with _deadline(timeout):
            while True:
                row = await conn.fetchrow(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", name
                )
                if row is None:
                    break
                existed = True
                if row["active_pid"] is not None:
                    await conn.execute("SELECT pg_terminate_backend($1)", row["active_pid"])
                try:
                    await conn.execute("SELECT pg_drop_replication_slot($1)", name)
                    break
                except (asyncpg.ObjectInUseError, asyncpg.UndefinedObjectError):
                    await _pause()  # the walsender is exiting, or a consumer came back
        await conn.execute(f"DROP PUBLICATION IF EXISTS {quote_ident(PUBLICATION)}")
    except (asyncpg.PostgresError, TimeoutError) as exc:
        raise CaptureError(
            f"could not drop the replication slot {name} and publication {PUBLICATION}: {exc}",
            hint="drop them by hand: SELECT pg_drop_replication_slot(...); DROP PUBLICATION ...",
        ) from exc
    return existed


@dataclass(frozen=True)
class SlotStatus:
    """The WAL capture slot as ``pg_replication_slots`` shows it."""

    name: str
    active: bool
    active_pid: int | None
    retained_bytes: int | None  # WAL kept for the slot (current LSN - restart_lsn)
    lag_bytes: int | None  # WAL not yet confirmed by the consumer
    wal_status: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "active": self.active,
            "active_pid": self.active_pid,
            "retained_bytes": self.retained_bytes,
            "lag_bytes": self.lag_bytes,
            "wal_status": self.wal_status,
        }


async def slot_status(conn: asyncpg.Connection) -> SlotStatus | None:
    """The slot of this database, or ``None`` when there is none."""
    name = await slot_name(conn)
    row = await conn.fetchrow(
        "SELECT active, active_pid, wal_status, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag "
        "FROM pg_replication_slots WHERE slot_name = $1",
        name,
    )
    if row is None:
        return None
    return SlotStatus(
        name, row["active"], row["active_pid"], row["retained"], row["lag"], row["wal_status"]
    )


def _deadline(timeout: float) -> Any:
    return asyncio.timeout(timeout)


async def _pause() -> None:
    await asyncio.sleep(0.05)  # polling a catalog state PostgreSQL offers no wait for
