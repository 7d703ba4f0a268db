"""Exact reading of JSON from PostgreSQL (row images) and from tokens (claims).

``to_jsonb`` writes numeric values with every digit (``1e400::numeric`` is a 1
followed by 400 zeros; a numeric may have 131,072 digits before the point and
16,383 after). orjson reads a number with a fraction or exponent, or an integer
outside 64 bits, as a float, and refuses one beyond the float range; Python's own
``int`` refuses more than 4,300 digits. Comparing such a lossy value with a filter
literal or a tenant claim admits rows of other tenants (2**64 + 1 reads as 2**64).

So every number a filter or a rule may compare is an ``int`` (exact, any size that
``int`` accepts) or a ``decimal.Decimal`` (exact, any size): orjson, which is about
seven times faster, is tried first and its result kept as is when it holds no float
at the top level (the only level a filter or a rule reads), which is exactly when
it could be lossy there. A row that does hold one (a price of 12.50) is re-read
exactly only when a filter or rule reads one of its floats (:class:`ExactOnRead`),
so a table with decimal columns costs no more than one without until its decimal
columns are filtered on. Text sent to clients is never rebuilt from parsed numbers:
it is PostgreSQL's text, spliced as is, or (:func:`project_row`) re-assembled with
each number's original text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson

from .exceptions import RowImageError

__all__ = [
    "ExactOnRead",
    "Number",
    "dumps",
    "exact_loads",
    "loads_claims",
    "parse_row",
    "project_row",
]

Number = int | Decimal
"""What an exact parse makes of a JSON number."""


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; PostgreSQL writes them as strings ("NaN").
    raise ValueError(f"{name} is not a JSON number")


def exact_loads(text: str | bytes) -> Any:
    """Parse JSON with every number exact: ``int``, or ``Decimal`` for fractions,
    exponents and integers too long for ``int``. Raises ``ValueError`` (or
    ``RecursionError`` for nesting deeper than Python's recursion limit)."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except ValueError as exc:
        if "digits" not in str(exc):  # not int's 4,300-digit limit: really invalid
            raise
    return json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=_refuse_constant)


def _writable_int(text: str) -> Number:
    # orjson writes ints of 64 bits only; a longer one stays exact as a Decimal.
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return Decimal(text)


def loads_claims(text: str | bytes) -> Any:
    """Parse a token payload exactly, in a form :func:`dumps` can write back."""
    return json.loads(
        text, parse_float=Decimal, parse_int=_writable_int, parse_constant=_refuse_constant
    )


def _fragment(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))  # str of a finite Decimal is a JSON number
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """orjson.dumps that also writes Decimals exactly (values of :func:`loads_claims`)."""
    return orjson.dumps(value, default=_fragment)


class ExactOnRead(dict[str, Any]):
    """A row parsed by orjson that holds top-level floats: ``get`` (what filters and
    rules read through) re-reads the whole row exactly the first time it would
    return a float, so no lossy value is ever compared.

    Raises RowImageError from ``get`` when the exact reading fails.
    """

    __slots__ = ("_text",)

    def __init__(self, parsed: dict[str, Any], text: str) -> None:
        super().__init__(parsed)
        self._text = text

    def get(self, key: str, default: Any = None) -> Any:
        value = dict.get(self, key, default)
        if type(value) is float:
            self.update(_read_exactly(self._text))
            value = dict.get(self, key, default)
        return value

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if type(value) is float:
            self.update(_read_exactly(self._text))
            value = dict.__getitem__(self, key)
        return value


def _read_exactly(text: str) -> Any:
    try:
        return exact_loads(text)
    except (ValueError, RecursionError) as exc:
        raise RowImageError(f"row image cannot be read: {str(exc)[:200]}") from None


def parse_row(text: str) -> Any:
    """A row image (a JSON object) whose top-level numbers read exactly (see module doc).

    Raises RowImageError when the text cannot be read at all.
    """
    try:
        row = orjson.loads(text)
    except orjson.JSONDecodeError:
        # A number beyond the float range, or nesting beyond orjson's limit.
        return _read_exactly(text)
    if type(row) is dict and float in map(type, row.values()):
        return ExactOnRead(row, text)
    return row


def project_row(text: str, columns: Iterable[str]) -> str:
    """The row image ``text`` keeping only ``columns``, every number as PostgreSQL wrote it.

    Numbers are carried as their original text (``orjson.Fragment``), never parsed.
    """
    try:
        row = json.loads(
            text,
            parse_float=orjson.Fragment,
            parse_int=orjson.Fragment,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise RowImageError(f"row image cannot be read: {str(exc)[:200]}") from None
    if not isinstance(row, dict):
        raise RowImageError("row image is not a JSON object")
    keep = frozenset(columns)
    return orjson.dumps({k: v for k, v in row.items() if k in keep}).decode()
