"""Tracked tables, their columns and the columns' types, as subscribe needs them.

Cached, and kept current without a restart: a subscribe naming a table or a column
the cache does not hold reloads it (one query, at most one per CATALOG_REFRESH_MIN
seconds whoever asks: concurrent misses share a reload), and the node reloads it
every CATALOG_REFRESH_EVERY seconds to find dropped columns and tables that were
renamed or dropped (``take_gone`` hands those over, so their subscribers are told).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ProtocolError
from .protocol import ErrorCode

__all__ = ["CATALOG_REFRESH_EVERY", "Catalog", "Gone", "TableInfo"]

CATALOG_REFRESH_MIN = 1.0
CATALOG_REFRESH_EVERY = 5.0


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: frozenset[str]
    # PostgreSQL's typcategory of each column ('N' numeric, 'B' boolean, 'S' string...):
    # a filter literal that cannot compare with the type is refused, not silently dead.
    types: Mapping[str, str] = field(default_factory=dict)
    relid: int = 0
    whole: bool = False  # every column is tracked (no `pgcast track --columns`)
    # (column, PostgreSQL type name) in column order: the Supabase endpoint's `columns`.
    type_names: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Gone:
    """A table the last refresh no longer finds under its name: ``now`` is its new name."""

    schema: str
    name: str
    now: tuple[str, str] | None  # None: dropped (or untracked)

    def reason(self) -> str:
        shown = f"{self.schema}.{self.name}"
        if self.now is None:
            return f"table {shown!r} was dropped or is no longer tracked"
        return f"table {shown!r} was renamed to {'.'.join(self.now)!r}: subscribe to it again"


# typcategory of a domain is the domain's own ('U'): use its base type's.
_CATALOG_QUERY = """
SELECT c.oid::int8 AS relid, t.columns IS NULL AS whole, n.nspname AS schema, c.relname AS name,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND (t.columns IS NULL OR a.attname::text = ANY(t.columns))
             ORDER BY a.attnum) AS columns,
       ARRAY(SELECT ty.typcategory::text FROM pg_attribute a
             JOIN pg_type ty ON ty.oid = coalesce(
                 nullif((SELECT d.typbasetype FROM pg_type d WHERE d.oid = a.atttypid), 0),
                 a.atttypid)
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND (t.columns IS NULL OR a.attname::text = ANY(t.columns))
             ORDER BY a.attnum) AS categories,
       ARRAY(SELECT ty.typname::text FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND (t.columns IS NULL OR a.attname::text = ANY(t.columns))
             ORDER BY a.attnum) AS type_names
FROM pgcast.tracked t
JOIN pg_class c ON c.oid = t.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
"""


class Catalog:
    """Tracked tables and their columns, cached; refreshed on a miss (rate-limited)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._tables: dict[tuple[str, str], TableInfo] = {}
        self._loaded_at = -1e9
        self._lock = asyncio.Lock()
        self.reloads = 0
        self._gone: list[Gone] = []  # found by any reload, until taken

    @property
    def tables(self) -> Mapping[tuple[str, str], TableInfo]:
        return self._tables

    def take_gone(self) -> list[Gone]:
        """The tables renamed or dropped that reloads found since the last call."""
        gone, self._gone = self._gone, []
        return gone

    async def refresh(self, *, newer_than: float | None = None) -> None:
        """Reload, unless one loaded after ``newer_than`` already; see ``take_gone``.

        Reloads at most once per CATALOG_REFRESH_MIN: a caller in between waits for
        the next one, so a flood of misses costs one query per interval.
        """
        async with self._lock:
            if newer_than is not None and self._loaded_at >= newer_than:
                return
            wait = self._loaded_at + CATALOG_REFRESH_MIN - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._pool.acquire() as conn:
                if await conn.fetchval("SELECT to_regclass('pgcast.tracked') IS NULL"):
                    rows = []
                else:
                    rows = await conn.fetch(_CATALOG_QUERY)
            old = self._tables
            self._tables = {
                (r["schema"], r["name"]): TableInfo(
                    r["schema"],
                    r["name"],
                    frozenset(r["columns"]),
                    dict(zip(r["columns"], r["categories"], strict=True)),
                    r["relid"],
                    r["whole"],
                    tuple(zip(r["columns"], r["type_names"], strict=True)),
                )
                for r in rows
            }
            self._loaded_at = time.monotonic()
            self.reloads += 1
            by_relid = {info.relid: key for key, info in self._tables.items()}
            self._gone += [
                Gone(schema, name, by_relid.get(info.relid))
                for (schema, name), info in old.items()
                if (schema, name) not in self._tables
            ]

    def _find(self, schema: str | None, name: str) -> list[TableInfo]:
        if schema is not None:
            found = self._tables.get((schema, name))
            return [found] if found else []
        return [info for (s, n), info in self._tables.items() if n == name]

    async def resolve(
        self, schema: str | None, name: str, columns: Iterable[str] = ()
    ) -> TableInfo:
        """The table, reloading first when it or one of ``columns`` is not cached."""
        wanted = frozenset(columns)
        found = self._find(schema, name)
        if not found or any(not wanted <= info.columns for info in found):
            await self.refresh(newer_than=time.monotonic())
            found = self._find(schema, name)
        shown = f"{schema}.{name}" if schema else name
        if not found:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TABLE,
                f"table {shown!r} is not tracked",
                hint=f"run: pgcast track {shown}",
            )
        if len(found) > 1:
            schemas = ", ".join(sorted(info.schema for info in found))
            raise ProtocolError(
                ErrorCode.UNKNOWN_TABLE,
                f"table {name!r} is tracked in several schemas ({schemas})",
                hint="add 'schema' to the subscribe message",
            )
        return found[0]
