"""Which snapshot rows PostgreSQL can leave out: a subscription's conditions in SQL.

A table snapshot used to read every row of the table and filter them in the gateway,
so a client asking for its own few rows (``customer_id=eq.7``, or a row rule on a
tenant column) of a large table cost a scan of all of it. :func:`pushdown` turns the
conditions that can be written *exactly* in SQL into a ``WHERE`` clause, which
PostgreSQL can answer from an index on the column.

The subscription's filter holds its row rule's conditions too when the rule is a
plain AND of them (``session.restrict``), so both reach the clause. The gateway's
filter still decides every row that comes back (``unreadable.select_rows``),
so the clause only has to keep every row the filter would keep; it may keep more.
Hence only conditions whose SQL meaning is the filter's meaning, or wider:

* un-negated ``eq`` and ``in`` (no ``neq``, ``lt``..., ``is``, ``not.``);
* on a column whose type is ``int2``, ``int4`` or ``int8``, as integers (a filter
  compares numbers exactly: ``7.0`` equals 7, while ``7.5``, ``07`` or ``abc`` equal
  no integer, so they leave the value list, and an empty list matches nothing);
* on ``text`` or ``varchar``, compared as text (the filter compares a string value
  exactly with the literal; a column with a non-deterministic collation only makes
  the SQL side wider);
* on ``bool``, with ``true`` or ``false``.

Every other column type (``char(n)`` pads, enums and domains refuse unknown labels,
timestamps and numerics print differently from how they compare) and every other
literal leaves its condition to the gateway. Values travel as typed parameters, names
through :func:`pgcast.identifiers.quote_ident`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .filters import Condition, parse_number
from .identifiers import quote_ident

__all__ = ["Pushdown", "pushdown"]

_INTEGER_TYPES = frozenset({"int2", "int4", "int8"})
_TEXT_TYPES = frozenset({"text", "varchar"})
_INT8 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Pushdown:
    """A ``WHERE`` clause over alias ``t`` (``""``: none) and its parameters."""

    where: str
    params: tuple[Any, ...]


def _integer(literal: str) -> int | None:
    number = parse_number(literal)
    if isinstance(number, Decimal):
        if not number.is_finite() or number != number.to_integral_value():
            return None
        number = int(number)
    if number is None or not _INT8[0] <= number <= _INT8[1]:
        return None
    return number


def _values(type_name: str, literals: tuple[str, ...]) -> tuple[str, list[Any]] | None:
    """(SQL type of the parameter, the literals as values), or None: not exact."""
    if type_name in _INTEGER_TYPES:
        numbers = (_integer(literal) for literal in literals)
        return "int8", [n for n in numbers if n is not None]
    if type_name in _TEXT_TYPES:
        return "text", list(literals)
    if type_name == "bool" and all(literal in ("true", "false") for literal in literals):
        return "boolean", [literal == "true" for literal in literals]
    return None


def pushdown(
    conditions: Iterable[Condition], type_names: Mapping[str, str], first_param: int = 1
) -> Pushdown:
    """The conditions of ``conditions`` (all ANDed) that SQL can apply exactly, on
    columns typed by ``type_names`` (column -> ``pg_type.typname``)."""
    terms: list[str] = []
    params: list[Any] = []
    for condition in conditions:
        if condition.negate or condition.op not in ("eq", "in"):
            continue
        typed = _values(type_names.get(condition.column, ""), condition.values)
        if typed is None:
            continue
        sql_type, values = typed
        column = f"t.{quote_ident(condition.column)}"
        number = first_param + len(params)
        if len(values) == 1:
            terms.append(f"{column} = ${number}::{sql_type}")
            params.append(values[0])
        else:
            terms.append(f"{column} = ANY(${number}::{sql_type}[])")
            params.append(values)
    return Pushdown(" AND ".join(terms), tuple(params))
