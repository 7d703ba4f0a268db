"""Applying change capture to a database: install, track, untrack, inspect.

This module owns every statement that changes pgcast's objects in a user's
database. The SQL text itself lives in :mod:`pgcast.capture.sql`; here we decide
when to run it, inside which transaction, and how to report what went wrong
(always :class:`~pgcast.exceptions.CaptureError`, with a hint).

Identifiers reach SQL only through :func:`pgcast.identifiers.quote_ident` (via
:meth:`TableName.quoted`); every value is a query parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgcast.capture import capture_functions, sql, wal_setup
from pgcast.exceptions import CaptureError, IdentifierError
from pgcast.identifiers import MAX_IDENTIFIER_BYTES, TableName

__all__ = [
    "TrackOptions",
    "TrackedTable",
    "install",
    "installed_version",
    "track",
    "tracked_tables",
    "untrack",
]

# Schemas whose tables are never tracked: the system catalogs cannot carry user
# triggers, and tracking pgcast's own log would make every capture capture itself.
_FORBIDDEN_SCHEMAS = frozenset({"pg_catalog", "information_schema", sql.SCHEMA})
_TRACKABLE_KINDS = {"r": "table", "p": "partitioned table"}
_KIND_NAMES = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "a partitioned index",
    "c": "a composite type",
    "t": "a TOAST table",
}


@dataclass(frozen=True)
class TrackOptions:
    """What to capture for one table.

    ``columns`` and ``when_changed`` hold real column names (as returned by
    :func:`pgcast.identifiers.validate_column_name`), not SQL text.

    * ``columns``: log only these columns (``None``: all). The primary key and the
      ``when_changed`` columns are always added, so every event identifies its row
      and ``changed`` can be tested against ``when_changed``.
    * ``when_changed``: log an UPDATE only if one of these columns changed.
    * ``skip_unchanged``: drop UPDATEs that change none of the logged columns.
    """

    columns: tuple[str, ...] | None = None
    when_changed: tuple[str, ...] | None = None
    skip_unchanged: bool = True


@dataclass(frozen=True)
class TrackedTable:
    """A tracked table, its effective options and the number of its log rows."""

    schema: str
    name: str
    options: TrackOptions
    primary_key: tuple[str, ...]
    changes: int
    capture: str = "trigger"  # or "wal"

    @property
    def table(self) -> TableName:
        """The table as a schema-qualified :class:`TableName`."""
        return TableName(self.schema, self.name)


def _error(
    message: str, exc: BaseException | None = None, *, hint: str | None = None
) -> CaptureError:
    if exc is not None:
        message = f"{message}: {exc}"
    return CaptureError(message, hint=hint)


async def installed_version(conn: asyncpg.Connection) -> int | None:
    """The pgcast schema version installed in the database, or ``None``."""
    # Scan the catalogs rather than call to_regclass(): a scan reads them with a fresh
    # snapshot (and, by locking pg_class, makes the backend apply pending catalog
    # invalidations), whereas name lookups can answer from a cache that predates
    # an install another process committed while we waited for the install lock.
    has_state = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = 'state')",
        sql.SCHEMA,
    )
    if not has_state:
        return None
    value = await conn.fetchval("SELECT value FROM pgcast.state WHERE key = 'schema_version'")
    return None if value is None else int(value)


async def install(conn: asyncpg.Connection) -> None:
    """Create (or upgrade to) the current pgcast schema; idempotent and concurrency-safe.

    Runs in one transaction under an advisory lock, so two processes installing at
    the same time neither fail nor leave a half-made schema.
    """
    if await installed_version(conn) == sql.SCHEMA_VERSION:
        return  # The common case: no lock, no DDL.
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.INSTALL_LOCK_KEY)
            version = await installed_version(conn)
            if version is not None and version > sql.SCHEMA_VERSION:
                raise CaptureError(
                    f"the database has pgcast schema version {version}, newer than this "
                    f"pgcast (version {sql.SCHEMA_VERSION})",
                    hint="upgrade the pgcast package",
                )
            if version == sql.SCHEMA_VERSION:
                return  # Another process installed it while we waited for the lock.
            captured = await capture_functions.lock_captured_tables(conn)
            await conn.execute(sql.install_script())
            await capture_functions.regenerate_all(conn, captured)
            await conn.execute(
                "INSERT INTO pgcast.state (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                str(sql.SCHEMA_VERSION),
            )
    except asyncpg.PostgresError as exc:
        raise _error(
            "could not install the pgcast schema",
            exc,
            hint="connect as a role that may CREATE in the database",
        ) from exc


@dataclass(frozen=True)
class _Relation:
    oid: int
    table: TableName  # schema-qualified
    columns: tuple[str, ...]  # in attnum order
    primary_key: tuple[str, ...]


async def _resolve(conn: asyncpg.Connection, table: TableName) -> _Relation | None:
    """Find ``table`` (through search_path if unqualified); ``None`` if absent."""
    row = await conn.fetchrow(
        "SELECT c.oid, n.nspname, c.relname, c.relkind::text AS relkind "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass($1)",
        table.quoted(),
    )
    if row is None:
        return None
    qualified = TableName(row["nspname"], row["relname"])
    kind = row["relkind"]
    if kind not in _TRACKABLE_KINDS:
        raise CaptureError(
            f"{qualified} is {_KIND_NAMES.get(kind, f'a relation of kind {kind!r}')}, not a table",
            hint="pgcast tracks ordinary and partitioned tables; track the underlying table",
        )
    columns = await conn.fetch(
        "SELECT attname FROM pg_attribute "
        "WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        row["oid"],
    )
    primary_key = await conn.fetch(
        "SELECT a.attname FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
        row["oid"],
    )
    return _Relation(
        oid=row["oid"],
        table=qualified,
        columns=tuple(r["attname"] for r in columns),
        primary_key=tuple(r["attname"] for r in primary_key),
    )


def _not_found(table: TableName) -> CaptureError:
    where = f"in schema {table.schema!r}" if table.schema else "on the search_path"
    return CaptureError(
        f"table {table} does not exist {where}",
        hint="check the spelling; names are case-folded unless double-quoted "
        "(e.g. '\"Booking\"'), and a schema can be given as schema.table",
    )


def _check_columns(relation: _Relation, names: Iterable[str], option: str) -> None:
    known = set(relation.columns)
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise IdentifierError(f"{option}: {name!r} is not a valid column name")
        if len(name.encode()) > MAX_IDENTIFIER_BYTES or name not in known:
            raise CaptureError(
                f"{option}: table {relation.table} has no column {name!r}",
                hint="its columns are " + ", ".join(relation.columns),
            )


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _effective_options(relation: _Relation, options: TrackOptions) -> TrackOptions:
    """Validate ``options`` against the table; add the PK and when_changed to columns."""
    if options.columns is not None:
        _check_columns(relation, options.columns, "columns")
    if options.when_changed is not None:
        _check_columns(relation, options.when_changed, "when_changed")
        if not options.when_changed:
            raise CaptureError(
                "when_changed is empty, so no UPDATE would ever be logged",
                hint="leave it unset to log every UPDATE",
            )
    columns = None
    if options.columns is not None:
        columns = _unique([*options.columns, *relation.primary_key, *(options.when_changed or ())])
    when_changed = None if options.when_changed is None else _unique(options.when_changed)
    return TrackOptions(columns, when_changed, options.skip_unchanged)


async def _count_changes(conn: asyncpg.Connection, table: TableName) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pgcast.changes WHERE schema_name = $1 AND table_name = $2",
        table.schema,
        table.name,
    )
    return count


CAPTURE_MODES = ("trigger", "wal")


async def track(
    conn: asyncpg.Connection,
    table: TableName,
    options: TrackOptions = TrackOptions(),
    *,
    capture: str = "trigger",
) -> TrackedTable:
    """Start capturing changes of ``table`` (installing pgcast first if needed).

    ``capture`` is ``"trigger"`` (capture triggers on the table) or ``"wal"``
    (decoded from the WAL by the gateway's slot consumer; see
    :mod:`pgcast.capture.wal_setup`). WAL mode is checked first (wal_level, the
    role's REPLICATION attribute), so nothing is installed when it cannot work.

    Idempotent: tracking a tracked table replaces its options and capture, in one
    transaction, so no write goes uncaptured in between. Returns the table with its
    effective options (see :class:`TrackOptions`).
    """
    if capture not in CAPTURE_MODES:
        raise CaptureError(
            f"unknown capture mode {capture!r}", hint="use one of " + ", ".join(CAPTURE_MODES)
        )
    if capture == "wal" and (problems := await wal_setup.wal_problems(conn)):
        raise problems[0]
    await install(conn)
    if capture == "wal":
        await wal_setup.ensure_publication_and_slot(conn)
    was_wal = False
    try:
        async with conn.transaction():
            relation = await _resolve(conn, table)
            if relation is None:
                raise _not_found(table)
            if relation.table.schema in _FORBIDDEN_SCHEMAS:
                raise CaptureError(
                    f"{relation.table} is in schema {relation.table.schema!r}, "
                    "which pgcast does not track",
                    hint="track your own tables",
                )
            effective = _effective_options(relation, options)
            # Tracked rows whose table was dropped: remove, so a reused oid starts clean.
            await conn.execute(
                "DELETE FROM pgcast.tracked t WHERE NOT EXISTS "
                "(SELECT FROM pg_class c WHERE c.oid = t.relid)"
            )
            await capture_functions.drop_orphans(conn)
            await conn.execute(
                "INSERT INTO pgcast.tracked (relid, columns, when_changed, skip_unchanged) "
                "VALUES ($1::oid::regclass, $2, $3, $4) "
                "ON CONFLICT (relid) DO UPDATE SET columns = EXCLUDED.columns, "
                "when_changed = EXCLUDED.when_changed, "
                "skip_unchanged = EXCLUDED.skip_unchanged, tracked_at = now()",
                relation.oid,
                _as_list(effective.columns),
                _as_list(effective.when_changed),
                effective.skip_unchanged,
            )
            if capture == "wal":
                for statement in sql.drop_triggers(relation.table):
                    await conn.execute(statement)
                await capture_functions.drop(conn, relation.oid)
                await wal_setup.attach(conn, relation.oid, relation.table)
            else:
                was_wal = await wal_setup.detach(conn, relation.oid, relation.table)
                await capture_functions.attach(conn, relation.oid, relation.table)
            changes = await _count_changes(conn, relation.table)
        if was_wal:
            await _drop_slot_if_unused(conn)
    except asyncpg.PostgresError as exc:
        raise _error(
            f"could not track {table}",
            exc,
            hint="the role needs to own the table (or have the TRIGGER privilege on it)",
        ) from exc
    return TrackedTable(
        schema=relation.table.schema or "",
        name=relation.table.name,
        options=effective,
        primary_key=relation.primary_key,
        changes=changes,
        capture=capture,
    )


def _as_list(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else list(names)


async def untrack(conn: asyncpg.Connection, table: TableName) -> bool:
    """Stop capturing ``table``: drop its triggers and options; keep its log rows.

    A WAL-mode table leaves the publication and gets its replica identity back;
    untracking the last one drops the slot and the publication, which would
    otherwise keep WAL without bound.

    Returns ``False`` if it was not tracked (idempotent; does not install pgcast).
    """
    if await installed_version(conn) is None:
        return False
    was_wal = False
    try:
        async with conn.transaction():
            relation = await _resolve(conn, table)
            if relation is None:
                return False
            triggers = await conn.fetchval(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = $1 AND tgname = ANY($2)",
                relation.oid,
                [name for name, _, _ in sql.TRIGGERS],
            )
            deleted = await conn.fetchval(
                "WITH d AS (DELETE FROM pgcast.tracked WHERE relid = $1::oid::regclass "
                "RETURNING 1) SELECT count(*) FROM d",
                relation.oid,
            )
            for statement in sql.drop_triggers(relation.table):
                await conn.execute(statement)
            await capture_functions.drop(conn, relation.oid)
            was_wal = await wal_setup.detach(conn, relation.oid, relation.table)
        if was_wal:
            await _drop_slot_if_unused(conn)
    except asyncpg.PostgresError as exc:
        raise _error(f"could not untrack {table}", exc) from exc
    return bool(triggers or deleted or was_wal)


async def _drop_slot_if_unused(conn: asyncpg.Connection) -> None:
    if await wal_setup.wal_table_count(conn) == 0:
        # Changes committed before the untrack must reach the log before the slot goes.
        await wal_setup.wait_until_consumed(conn)
        await wal_setup.drop_slot_and_publication(conn)


async def tracked_tables(conn: asyncpg.Connection) -> list[TrackedTable]:
    """Every tracked table, by schema and name (empty if pgcast is not installed)."""
    if await installed_version(conn) is None:
        return []
    rows = await conn.fetch(
        """
        SELECT n.nspname, c.relname, t.columns, t.when_changed, t.skip_unchanged,
               coalesce(pk.columns, '{}') AS primary_key,
               coalesce(counts.n, 0) AS changes,
               EXISTS (SELECT FROM pg_publication_rel r JOIN pg_publication p
                        ON p.oid = r.prpubid
                        WHERE p.pubname = $1 AND r.prrelid = t.relid) AS wal
          FROM pgcast.tracked t
          JOIN pg_class c ON c.oid = t.relid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN LATERAL (
               SELECT array_agg(a.attname::text ORDER BY k.ord) AS columns
                 FROM pg_index i
                CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE i.indrelid = c.oid AND i.indisprimary) pk ON true
          LEFT JOIN (SELECT schema_name, table_name, count(*) AS n
                       FROM pgcast.changes GROUP BY 1, 2) counts
                 ON counts.schema_name = n.nspname AND counts.table_name = c.relname
         ORDER BY n.nspname, c.relname
        """,
        wal_setup.PUBLICATION,
    )
    return [
        TrackedTable(
            schema=r["nspname"],
            name=r["relname"],
            options=TrackOptions(
                columns=_as_tuple(r["columns"]),
                when_changed=_as_tuple(r["when_changed"]),
                skip_unchanged=r["skip_unchanged"],
            ),
            primary_key=tuple(r["primary_key"]),
            changes=r["changes"],
            capture="wal" if r["wal"] else "trigger",
        )
        for r in rows
    ]


def _as_tuple(values: Any) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
