"""Subscription filters in the PostgREST / Supabase syntax, matched in memory.

``status=eq.pending&amount=gt.100&merchant_id=in.(1,2,3)&deleted_at=is.null``

Conditions are joined with ``&`` (AND). Operators: ``eq neq lt lte gt gte in is``,
each optionally negated with ``not.`` (``status=not.eq.shipped``). Values are compared
with the type of the row's value: numbers numerically, strings as strings, booleans
as ``true``/``false``. Numbers compare exactly: row values are ``int`` or
``Decimal`` (see exactjson) and so are numeric literals, whatever their size.
``to_jsonb`` writes the numeric and float values NaN, Infinity and -Infinity as
strings; compared with a numeric literal they are ordered as PostgreSQL orders them
(NaN above every number, equal only to itself). A NULL column matches only
``is.null`` (SQL semantics: NULL is neither equal nor unequal to anything).

Matching is a pure function of a row. ``eq`` conditions also yield index keys, so
the hub finds candidate subscriptions by hash lookup instead of scanning them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .exceptions import FilterError

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "is")
_IS_VALUES = ("null", "not_null", "true", "false")
MAX_FILTER_LENGTH = 4096
MAX_CONDITIONS = 32
MAX_IN_VALUES = 1000
_COLUMN = re.compile(r"[^\x00-\x1f=&\"]{1,63}")

IndexKey = tuple[str, Any]
# "pending,customer_name=eq.ann": a value that goes on with another column=op. term was
# meant as two conditions (joined with ','), and as one it would match nothing.
_JOINED_BY_COMMA = re.compile(
    r",\s*[^\x00-\x1f=&\",]{1,63}=(?:not\.)?(?:" + "|".join(OPERATORS) + r")\."
)


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``column=op.value`` term."""

    column: str
    op: str
    values: tuple[str, ...]
    negate: bool = False

    def matches(self, row: Mapping[str, Any]) -> bool:
        """True when ``row`` satisfies this condition (absent column = NULL)."""
        result = _test(self.op, row.get(self.column), self.values)
        if result is None:  # NULL compared with a value: never matches, negated or not
            return False
        return result != self.negate

    def index_keys(self) -> list[IndexKey]:
        """Keys under which an un-negated ``eq`` condition is indexed (see value_key)."""
        return literal_keys(self.values[0])

    def __str__(self) -> str:
        value = f"({','.join(self.values)})" if self.op == "in" else self.values[0]
        return f"{self.column}={'not.' if self.negate else ''}{self.op}.{value}"


@dataclass(frozen=True, slots=True)
class Filter:
    """A conjunction of conditions; the empty filter matches every row."""

    conditions: tuple[Condition, ...] = ()

    def matches(self, row: Mapping[str, Any] | None) -> bool:
        if row is None:
            return False
        return all(condition.matches(row) for condition in self.conditions)

    @property
    def columns(self) -> frozenset[str]:
        return frozenset(condition.column for condition in self.conditions)

    def index_condition(self) -> Condition | None:
        """The first un-negated ``eq`` condition, used to index the subscription."""
        for condition in self.conditions:
            if condition.op == "eq" and not condition.negate:
                return condition
        return None

    def check_columns(
        self, known: Iterable[str], table: str, types: Mapping[str, str] | None = None
    ) -> None:
        """Raise FilterError naming the first column ``table`` does not have, or the
        first literal that can never compare with its column's type (``types``: each
        column's PostgreSQL typcategory, 'N' numeric, 'B' boolean)."""
        known_set = set(known)
        for condition in self.conditions:
            if condition.column not in known_set:
                raise FilterError(
                    f"unknown column {condition.column!r} in filter for table {table!r}",
                    hint=f"columns are: {', '.join(sorted(known_set))}",
                )
            category = (types or {}).get(condition.column)
            if condition.op == "is" or category not in _TYPED:
                continue
            for literal in condition.values:
                if not _TYPED[category][1](literal):
                    raise FilterError(
                        f"{literal!r} in filter term {str(condition)!r} cannot be compared "
                        f"with column {condition.column!r} of table {table!r}, which is "
                        f"{_TYPED[category][0]}",
                        hint=_TYPED[category][2],
                    )

    def __str__(self) -> str:
        return "&".join(str(condition) for condition in self.conditions)


MATCH_ALL = Filter()


def parse_filter(text: str | None) -> Filter:
    """Parse a filter string; raise FilterError with the offending term on bad input."""
    if text is None or text == "":
        return MATCH_ALL
    if not isinstance(text, str):
        raise FilterError("filter must be a string like 'status=eq.pending'")
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is longer than {MAX_FILTER_LENGTH} characters")
    terms = text.split("&")
    if len(terms) > MAX_CONDITIONS:
        raise FilterError(f"filter has more than {MAX_CONDITIONS} conditions")
    return Filter(tuple(_parse_term(term) for term in terms))


def _parse_term(term: str) -> Condition:
    column, sep, rest = term.partition("=")
    if not sep or not column:
        raise FilterError(
            f"bad filter term {term!r}: expected column=operator.value",
            hint="for example status=eq.pending",
        )
    if not _COLUMN.fullmatch(column):
        raise FilterError(f"bad column name {column!r} in filter term {term!r}")
    negate = False
    if rest.startswith("not."):
        negate, rest = True, rest[4:]
    op, dot, value = rest.partition(".")
    if op not in OPERATORS or not dot:
        raise FilterError(
            f"bad operator in filter term {term!r}",
            hint=f"use one of {', '.join(OPERATORS)} followed by a dot and a value",
        )
    if op == "in":
        return Condition(column, op, _parse_list(term, value), negate)
    if op == "is" and value not in _IS_VALUES:
        raise FilterError(
            f"bad value in filter term {term!r}", hint="is. takes null, not_null, true or false"
        )
    if _JOINED_BY_COMMA.search(value):
        raise FilterError(
            f"filter term {term!r} holds a second condition after a comma",
            hint="join conditions with '&', e.g. status=eq.pending&customer_name=eq.ann",
        )
    return Condition(column, op, (value,), negate)


def _parse_list(term: str, value: str) -> tuple[str, ...]:
    if len(value) < 2 or value[0] != "(" or value[-1] != ")":
        raise FilterError(f"bad list in filter term {term!r}", hint="write in.(1,2,3)")
    inner = value[1:-1]
    items: list[str] = []
    i = 0
    while i <= len(inner):
        if i < len(inner) and inner[i] == '"':
            end = i + 1
            chars: list[str] = []
            while end < len(inner) and inner[end] != '"':
                if inner[end] == "\\" and end + 1 < len(inner):
                    end += 1
                chars.append(inner[end])
                end += 1
            if end >= len(inner):
                raise FilterError(f"unterminated quote in filter term {term!r}")
            items.append("".join(chars))
            i = end + 1
            if i < len(inner) and inner[i] != ",":
                raise FilterError(f"bad list in filter term {term!r}")
            i += 1
        else:
            end = inner.find(",", i)
            if end == -1:
                end = len(inner)
            items.append(inner[i:end])
            i = end + 1
    if not inner or len(items) > MAX_IN_VALUES:
        raise FilterError(f"list in filter term {term!r} must hold 1 to {MAX_IN_VALUES} values")
    return tuple(items)


_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


_INT_DIGITS = 4000  # below Python's int() limit of 4,300 digits; longer ones are Decimal

# How PostgreSQL orders the non-finite values that to_jsonb writes as strings:
# -Infinity below every number, Infinity above, NaN above everything (and equal to NaN).
_NON_FINITE = {"-Infinity": (-1, 0), "Infinity": (1, 0), "NaN": (1, 1)}


def parse_number(literal: str) -> int | Decimal | None:
    """A strict JSON-style number, exact: no ``_``, spaces, ``+`` or leading zeros.

    Python's int()/float() accept "7_0", " 70", "+70" and "0070" as 70; a token
    claim like that must not match tenant 70's rows. Never a float: 0.1 must not
    equal 0.1000000000000000001, nor 2**64 equal 2**64 + 1.
    """
    if _INTEGER.fullmatch(literal):
        return int(literal) if len(literal) <= _INT_DIGITS else Decimal(literal)
    if not _DECIMAL.fullmatch(literal) or (
        literal.lstrip("-")[:1] == "0" and literal.lstrip("-")[1:2].isdigit()
    ):
        return None
    try:
        return Decimal(literal)
    except InvalidOperation:  # an exponent beyond what Decimal represents
        return None


_NUMBERS = (int, Decimal, float)  # a tuple: isinstance with an `a | b` union is slower


def _order(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _compare(value: Any, literal: str) -> int | None:
    """-1/0/1 comparing a row value with a literal, or None when incomparable."""
    if isinstance(value, bool):
        if literal not in ("true", "false"):
            return None
        return _order(value, literal == "true")
    if isinstance(value, _NUMBERS):
        number = parse_number(literal)
        if number is None:
            return None
        if value != value:
            # A float NaN (rows from exactjson hold none; it writes NaN as a string):
            # above every number, as PostgreSQL orders it. Comparing it with a Decimal
            # would raise InvalidOperation.
            return 1
        return _order(value, number)
    if isinstance(value, str):
        special = _NON_FINITE.get(value)
        if special is not None:
            number = parse_number(literal)
            if number is not None:
                return special[0]
            other = _NON_FINITE.get(literal)
            if other is not None:
                return _order(special, other)
        return _order(value, literal)
    return None


def _test(op: str, value: Any, literals: tuple[str, ...]) -> bool | None:
    if op == "is":
        literal = literals[0]
        if literal == "null":
            return value is None
        if literal == "not_null":
            return value is not None
        return value is (literal == "true")
    if value is None:
        return None
    if op == "in":
        return any(_compare(value, literal) == 0 for literal in literals)
    order = _compare(value, literals[0])
    if order is None:
        return op == "neq"
    if op == "eq":
        return order == 0
    if op == "neq":
        return order != 0
    if op == "lt":
        return order < 0
    if op == "lte":
        return order <= 0
    if op == "gt":
        return order > 0
    return order >= 0  # gte


def _numeric_literal(literal: str) -> bool:
    return parse_number(literal) is not None or literal in _NON_FINITE


# typcategory -> (what it is, whether a literal can compare with it, the hint)
_TYPED: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "N": ("numeric", _numeric_literal, "compare it with a number, e.g. gt.100"),
    "B": ("boolean", lambda literal: literal in ("true", "false"), "use true or false"),
}


def literal_keys(literal: str) -> list[IndexKey]:
    """Every index key a row value equal to ``literal`` could have."""
    keys: list[IndexKey] = [("s", literal)]
    number = parse_number(literal)
    if number is not None:
        keys.append(("n", number))
    if literal in ("true", "false"):
        keys.append(("b", literal == "true"))
    return keys


def value_key(value: Any) -> IndexKey | None:
    """The index key of a row value, or None when it cannot equal any literal."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, _NUMBERS):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None
