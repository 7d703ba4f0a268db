"""Turning decoded pgoutput changes into one ``INSERT`` into ``pgcast.changes`` (pure).

pgoutput sends column values as text (each type's output function). Typing them in
Python would have to re-implement ``to_jsonb`` for every type, so PostgreSQL does
it: each value is cast from text to its column's type (by the type name
``format_type`` gave for the oid in the Relation message) and the row object is
built with ``jsonb_build_object``, which converts each value exactly as
``to_jsonb(row)`` converts that field (both go through the same per-type JSON
conversion; jsonb keys have one canonical order). The row shape comes from the
Relation message, not from the table as it is now, so a column added or dropped, a
table renamed or dropped after the change was written cannot break the statement.

Column names travel as a ``text[]`` parameter and values as one ``jsonb``
parameter per relation, so no name or value is ever spliced into the SQL; only the
type names (PostgreSQL's own quoting, from ``format_type``) are.

The row rules of ``pgcast.tracked`` (columns, when_changed, skip_unchanged) are
applied in the same statement with the expressions of the capture trigger, so both
capture modes log the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pgcast.capture.pgoutput import UNCHANGED, Relation, Tuple

__all__ = ["Batch", "LogRow", "build_insert", "merge_unchanged"]

# jsonb_build_object takes at most 100 arguments (FUNC_MAX_ARGS): 50 key/value pairs.
_PAIRS_PER_CALL = 50


@dataclass(frozen=True)
class LogRow:
    """One change to append: op, relation, row images as text values, source commit time."""

    relation: int
    op: str  # INSERT, UPDATE, DELETE, TRUNCATE
    new: Tuple | None
    old: Tuple | None
    commit_time_us: int


@dataclass
class Batch:
    """Changes to append in one transaction, in source commit order."""

    rows: list[LogRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def merge_unchanged(new: Tuple, old: Tuple | None) -> Tuple:
    """``new`` with unchanged TOASTed values taken from ``old`` (REPLICA IDENTITY FULL
    sends the whole old row, so they are there); ``None`` where they are not."""
    if UNCHANGED not in new:
        return new
    return tuple(
        (old[i] if old is not None and i < len(old) else None) if value is UNCHANGED else value
        for i, value in enumerate(new)
    )


def _values(values: Tuple | None) -> list[str | None] | None:
    if values is None:
        return None
    return [None if v is UNCHANGED else v for v in values]  # type: ignore[misc]


def _build_object(source: str, relation: Relation, names: str, types: Mapping[int, str]) -> str:
    pairs = [
        f"{names}[{i + 1}], ({source}->>{i})::{types.get(column.type_oid, 'text')}"
        for i, column in enumerate(relation.columns)
    ]
    if not pairs:
        return "'{}'::jsonb"
    calls = [
        "jsonb_build_object(" + ", ".join(pairs[start : start + _PAIRS_PER_CALL]) + ")"
        for start in range(0, len(pairs), _PAIRS_PER_CALL)
    ]
    return " || ".join(calls)


_TEMPLATE = """
WITH ev AS MATERIALIZED (
{events}
), proj AS (
    SELECT ev.ord, ev.at_us, ev.schema_name, ev.table_name, ev.op, o.skip, o.when_changed,
           CASE WHEN o.columns IS NULL THEN ev.rec
                ELSE ev.rec - ARRAY(SELECT k FROM jsonb_object_keys(ev.rec) AS k
                                     WHERE k <> ALL (o.columns)) END AS rec,
           CASE WHEN o.columns IS NULL THEN ev.old
                ELSE ev.old - ARRAY(SELECT k FROM jsonb_object_keys(ev.old) AS k
                                     WHERE k <> ALL (o.columns)) END AS old
      FROM ev
      LEFT JOIN LATERAL (
           SELECT t.columns, t.when_changed, coalesce(t.skip_unchanged, true) AS skip
             FROM pgcast.tracked AS t WHERE t.relid::oid = ev.relid) AS o ON true
)
INSERT INTO pgcast.changes
       (txid, tx_xmin, committed_at, schema_name, table_name, op, record, old_record, changed)
SELECT pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()),
       timestamptz 'epoch' + p.at_us * interval '1 microsecond',
       p.schema_name, p.table_name, p.op, p.rec, p.old, c.changed
  FROM proj AS p
 CROSS JOIN LATERAL (
       SELECT CASE WHEN p.op = 'UPDATE' THEN
                   ARRAY(SELECT k FROM jsonb_object_keys(p.rec) AS k
                          WHERE p.rec -> k IS DISTINCT FROM p.old -> k) END AS changed
       OFFSET 0) AS c
 WHERE (p.op <> 'UPDATE'
        OR ((NOT coalesce(p.skip, true) OR cardinality(c.changed) > 0)
            AND (p.when_changed IS NULL OR c.changed && p.when_changed))){gate}
 ORDER BY p.ord
"""


def build_insert(
    batch: Sequence[LogRow],
    relations: Mapping[int, Relation],
    types: Mapping[int, str],
    *,
    only_if: str | None = None,
) -> tuple[str, list[Any]]:
    """The statement and parameters appending ``batch`` to ``pgcast.changes``.

    ``only_if``: the name of a CTE of an enclosing statement (a constant of the
    caller, never input) that must yield a row for anything to be appended.

    ``types`` maps type oids to SQL type names (``format_type``); an oid it lacks is
    kept as text. Rows are appended in ``batch`` order (the ORDER BY feeds the
    identity column in that order).
    """
    groups: dict[int, list[list[Any]]] = {}
    for ord_, row in enumerate(batch):
        groups.setdefault(row.relation, []).append(
            [ord_, row.op, row.commit_time_us, _values(row.new), _values(row.old)]
        )
    params: list[Any] = []
    selects: list[str] = []
    for oid, elements in groups.items():
        relation = relations[oid]
        base = len(params)
        params += [
            orjson.dumps(elements).decode(),
            [column.name for column in relation.columns],
            oid,
            relation.schema,
            relation.name,
        ]
        data, names = f"${base + 1}::jsonb", f"${base + 2}::text[]"
        new = _build_object("e->3", relation, f"({names})", types)
        old = _build_object("e->4", relation, f"({names})", types)
        selects.append(
            f"    SELECT (e->>0)::bigint AS ord, (e->>2)::bigint AS at_us,"
            f" ${base + 3}::oid AS relid, ${base + 4}::text AS schema_name,"
            f" ${base + 5}::text AS table_name, e->>1 AS op,\n"
            f"           CASE WHEN jsonb_typeof(e->3) = 'array' THEN {new} END AS rec,\n"
            f"           CASE WHEN jsonb_typeof(e->4) = 'array' THEN {old} END AS old\n"
            f"      FROM jsonb_array_elements({data}) AS e"
        )
    gate = f"\n   AND EXISTS (SELECT FROM {only_if})" if only_if else ""
    return _TEMPLATE.format(events="\n    UNION ALL\n".join(selects), gate=gate), params
