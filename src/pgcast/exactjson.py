"""Exact reading of JSON from PostgreSQL (row images) and from tokens (claims).

``to_jsonb`` writes numeric values with every digit (``1e400::numeric`` is a 1
followed by 400 zeros; a numeric may have 131,072 digits before the point and
16,383 after). orjson reads a number with a fraction or exponent, or an integer
outside 64 bits, as a float, and refuses one beyond the float range; Python's own
``int`` refuses more than 4,300 digits. Comparing such a lossy value with a filter
literal or a tenant claim admits rows of other tenants (2**64 + 1 reads as 2**64).

So every number a filter or a rule may compare is an ``int`` (exact, any size that
``int`` accepts) or a ``decimal.Decimal`` (exact, any size): orjson, which is about
seven times faster, is tried first and its result kept only when it holds no float
at the top level (the only level a filter or a rule reads), which is exactly when
it could be lossy there. Text sent to clients is never rebuilt from parsed numbers:
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

__all__ = ["Number", "dumps", "exact_loads", "loads_claims", "parse_row", "project_row"]

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


def parse_row(text: str) -> Any:
    """A row image (a JSON object) with exact top-level numbers (see module doc).

    Raises RowImageError when the text cannot be read at all.
    """
    try:
        row = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # a number beyond the float range, or nesting beyond orjson's limit
    else:
        if type(row) is not dict or float not in map(type, row.values()):
            return row
    try:
        return exact_loads(text)
    except (ValueError, RecursionError) as exc:
        raise RowImageError(f"row image cannot be read: {str(exc)[:200]}") from None


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
