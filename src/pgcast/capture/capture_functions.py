"""Each tracked table's own capture function: generate, attach, regenerate, drop.

Since schema version 4 a trigger-tracked table is captured by a function made for it
(``pgcast.capture_<table oid>()``, generated server-side by
``pgcast.generate_capture()`` from its ``pgcast.tracked`` options; see
:mod:`pgcast.capture.sql`). This module keeps those functions and the tables'
triggers in step: :func:`attach` on track, :func:`drop` on untrack or a switch to
WAL mode, :func:`regenerate_all` on a schema upgrade (including from the generic
``pgcast.capture()`` of versions 1-3), :func:`drop_orphans` for tables dropped while
tracked. Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import asyncpg

from pgcast.capture import sql
from pgcast.exceptions import CaptureError
from pgcast.identifiers import TableName

__all__ = ["attach", "drop", "drop_orphans", "lock_captured_tables", "regenerate_all"]


async def attach(conn: asyncpg.Connection, oid: int, table: TableName) -> None:
    """(Re)generate the table's capture function from its options and put the
    triggers calling it on the table, replacing any capture triggers there.

    In one transaction with the caller's: writers of the table (whose lock conflicts
    with CREATE TRIGGER) never see it without a trigger.
    """
    for statement in sql.drop_triggers(table):
        await conn.execute(statement)
    function = sql.capture_function(oid)
    made = await conn.fetchval("SELECT pgcast.generate_capture($1::oid::regclass)", oid)
    same = await conn.fetchval("SELECT to_regprocedure($1) = to_regprocedure($2)", made, function)
    if not same:  # the SQL and the Python side must name it alike
        raise CaptureError(f"the generated capture function is not {function}")
    for statement in sql.create_triggers(table, function):
        await conn.execute(statement)


async def drop(conn: asyncpg.Connection, oid: int) -> None:
    """Drop the capture function of the table with oid ``oid`` (its triggers first)."""
    await conn.execute(f"DROP FUNCTION IF EXISTS {sql.capture_function(oid)}")


async def lock_captured_tables(conn: asyncpg.Connection) -> list[tuple[int, TableName]]:
    """Lock every table captured by a pgcast trigger, for an upgrade; returns them.

    Call it before the upgrade touches ``pgcast.changes``: a writer locks its table,
    then the log (in the trigger), so an upgrade that held the log and then wanted
    the table for DROP TRIGGER would deadlock with it (seen in
    test_upgrade_keeps_writers_captured_while_it_runs). Writers wait for the upgrade's
    transaction, which is a few statements per table.
    """
    rows = await conn.fetch(
        "SELECT DISTINCT t.tgrelid AS oid, n.nspname, c.relname "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE p.pronamespace = to_regnamespace($1) AND t.tgname = ANY($2) "
        "AND t.tgparentid = 0 AND NOT t.tgisinternal",
        sql.SCHEMA,
        [name for name, _, _ in sql.TRIGGERS],
    )
    tables = [(row["oid"], TableName(row["nspname"], row["relname"])) for row in rows]
    for _, table in tables:
        await conn.execute(f"LOCK TABLE {table.quoted()} IN ACCESS EXCLUSIVE MODE")
    return tables


async def regenerate_all(conn: asyncpg.Connection, tables: list[tuple[int, TableName]]) -> None:
    """After the install script of a new schema version: regenerate the function of
    every table captured by a pgcast trigger (``tables``, from
    :func:`lock_captured_tables`: the template may have changed), moving tables still
    on the generic ``pgcast.capture()`` of versions 1-3 to their own functions, then
    drop the generic one."""
    for oid, table in tables:
        await attach(conn, oid, table)
    await conn.execute(f"DROP FUNCTION IF EXISTS {sql.SCHEMA}.{sql.LEGACY_CAPTURE}()")


async def drop_orphans(conn: asyncpg.Connection) -> None:
    """Drop capture functions of tables that no longer exist (dropped while tracked:
    their triggers went with the table, the function stayed)."""
    rows = await conn.fetch(
        "SELECT substr(p.proname, length($2) + 1)::oid AS oid FROM pg_proc p "
        "WHERE p.pronamespace = to_regnamespace($1) AND p.proname ~ ('^' || $2 || '[0-9]+$') "
        "AND NOT EXISTS (SELECT FROM pg_class c "
        "                WHERE c.oid = substr(p.proname, length($2) + 1)::oid)",
        sql.SCHEMA,
        sql.CAPTURE_PREFIX,
    )
    for row in rows:
        await drop(conn, row["oid"])
