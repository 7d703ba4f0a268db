"""Removing everything pgcast put in a database: ``pgcast uninstall``.

What pgcast creates, and so what goes: the ``pgcast`` schema (the change log, the
tracked options, the state, the wake-up sequence, the capture functions), the
capture triggers on tracked tables, and for WAL mode the publication, the
replication slot and ``REPLICA IDENTITY FULL`` on WAL tables (restored to what
each table had before, as kept in ``pgcast.wal_tables``). The application's
tables and rows are never touched beyond that.

Order: the slot and the publication go first, so a running gateway's WAL consumer
sees its slot vanish and idles instead of failing on a log that is gone; then, in
one transaction under the install lock (so no concurrent ``track`` half-recreates
the schema), identities are restored, triggers dropped and the schema dropped. An
uninstall interrupted between the two steps is finished by running it again: each
step looks at what is there, not at what it expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from pgcast.capture import sql, wal_setup
from pgcast.exceptions import CaptureError
from pgcast.identifiers import TableName, quote_ident

__all__ = ["Footprint", "footprint", "uninstall"]


@dataclass(frozen=True)
class Footprint:
    """pgcast's objects in one database."""

    schema: bool
    log_bytes: int
    triggers: tuple[tuple[TableName, str], ...]  # (table, trigger name)
    wal_tables: tuple[TableName, ...]  # whose replica identity pgcast changed
    slot: str | None
    publication: bool

    @property
    def empty(self) -> bool:
        return not (self.schema or self.triggers or self.wal_tables or self.slot) and not (
            self.publication
        )

    def describe(self) -> str:
        """One line: what there is (or was), for the refusal and the report."""
        parts = []
        if self.triggers:
            tables = sorted({str(table) for table, _ in self.triggers})
            parts.append(
                f"{len(self.triggers)} capture trigger(s) on {len(tables)} table(s) "
                f"({', '.join(tables)})"
            )
        if self.wal_tables:
            names = ", ".join(sorted(str(t) for t in self.wal_tables))
            parts.append(f"REPLICA IDENTITY FULL of {len(self.wal_tables)} WAL table(s) ({names})")
        if self.slot:
            parts.append(f"the replication slot {self.slot}")
        if self.publication:
            parts.append(f"the publication {wal_setup.PUBLICATION}")
        if self.schema:
            parts.append(f"the {sql.SCHEMA} schema with its change log ({self.log_bytes} bytes)")
        return "; ".join(parts) if parts else "nothing"


async def footprint(conn: asyncpg.Connection) -> Footprint:
    """What pgcast has installed in the connected database (reads only)."""
    schema = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", sql.SCHEMA
    )
    log_bytes = 0
    wal_tables: tuple[TableName, ...] = ()
    if schema:
        log_bytes = await conn.fetchval(
            "SELECT coalesce(pg_total_relation_size(to_regclass('pgcast.changes')), 0)"
        )
        wal_tables = tuple(TableName(r["schema"], r["name"]) for r in await _wal_tables(conn))
    triggers = tuple(
        (TableName(r["schema"], r["name"]), r["tgname"]) for r in await _triggers(conn)
    )
    slot = await wal_setup.slot_status(conn)
    publication = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", wal_setup.PUBLICATION
    )
    return Footprint(
        schema=schema,
        log_bytes=log_bytes,
        triggers=triggers,
        wal_tables=wal_tables,
        slot=slot.name if slot else None,
        publication=publication,
    )


async def _triggers(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    # Every trigger that runs a function of pgcast's schema; clones on partitions
    # (tgparentid <> 0) go with their parent's.
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT t.tgrelid AS oid, n.nspname AS schema, c.relname AS name, t.tgname "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_proc p ON p.oid = t.tgfoid "
        "JOIN pg_namespace pn ON pn.oid = p.pronamespace "
        "WHERE pn.nspname = $1 AND NOT t.tgisinternal AND t.tgparentid = 0 "
        "ORDER BY n.nspname, c.relname, t.tgname",
        sql.SCHEMA,
    )
    return rows


async def _wal_tables(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    if not await conn.fetchval("SELECT to_regclass('pgcast.wal_tables') IS NOT NULL"):
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT c.oid, n.nspname AS schema, c.relname AS name FROM pgcast.wal_tables w "
        "JOIN pg_class c ON c.oid = w.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "ORDER BY n.nspname, c.relname"
    )
    return rows


async def uninstall(conn: asyncpg.Connection) -> Footprint:
    """Drop everything pgcast installed; returns what was there. Idempotent.

    Running gateways should be stopped first: their readers fail (and retry) once
    the log is gone.
    """
    before = await footprint(conn)
    if before.empty:
        return before
    await wal_setup.drop_slot_and_publication(conn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.INSTALL_LOCK_KEY)
            if await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", sql.SCHEMA
            ):
                for row in await _wal_tables(conn):
                    table = TableName(row["schema"], row["name"])
                    await wal_setup.restore_identity(conn, row["oid"], table)
                for row in await _triggers(conn):
                    table = TableName(row["schema"], row["name"])
                    await conn.execute(
                        f"DROP TRIGGER IF EXISTS {quote_ident(row['tgname'])} ON {table.quoted()}"
                    )
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(sql.SCHEMA)} CASCADE")
    except asyncpg.PostgresError as exc:
        raise CaptureError(
            f"could not uninstall pgcast: {exc}",
            hint="connect as the role that ran `pgcast track` (it owns the pgcast schema) "
            "or as a superuser",
        ) from exc
    return before
