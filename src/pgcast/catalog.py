"""Tracked tables and their columns, as subscribe needs them: cached, refreshed on a miss."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .exceptions import ProtocolError
from .protocol import ErrorCode

__all__ = ["Catalog", "TableInfo"]

CATALOG_REFRESH_MIN = 1.0


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: frozenset[str]


_CATALOG_QUERY = """
SELECT n.nspname AS schema, c.relname AS name,
       coalesce(t.columns, ARRAY(
           SELECT a.attname::text FROM pg_attribute a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)) AS columns
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

    async def _reload(self) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded_at < CATALOG_REFRESH_MIN:
                return
            async with self._pool.acquire() as conn:
                if await conn.fetchval("SELECT to_regclass('pgcast.tracked') IS NULL"):
                    rows = []
                else:
                    rows = await conn.fetch(_CATALOG_QUERY)
            self._tables = {
                (r["schema"], r["name"]): TableInfo(r["schema"], r["name"], frozenset(r["columns"]))
                for r in rows
            }
            self._loaded_at = time.monotonic()

    def _find(self, schema: str | None, name: str) -> list[TableInfo]:
        if schema is not None:
            found = self._tables.get((schema, name))
            return [found] if found else []
        return [info for (s, n), info in self._tables.items() if n == name]

    async def resolve(self, schema: str | None, name: str) -> TableInfo:
        found = self._find(schema, name)
        if not found:
            await self._reload()
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
