"""Parsing, validating and quoting PostgreSQL identifiers (a leaf: no I/O).

This module owns the one rule for turning user text (a CLI argument, a config value,
a subscribe frame) into a table or column name, and the one helper that turns a
name back into SQL text: :func:`quote_ident`. Every identifier pgcast puts into SQL
goes through it; values never do (they are query parameters).

Parsing follows PostgreSQL's own rules, stricter where PostgreSQL would silently
do something surprising:

* an unquoted part matches ``[A-Za-z_][A-Za-z0-9_$]*`` and folds to lower case;
* a quoted part keeps its case, may hold any character but NUL, and ``""`` inside
  it stands for one ``"``;
* a part is at most 63 bytes in UTF-8 (PostgreSQL would truncate a longer name
  and then quietly refer to a different object, so we refuse it instead);
* a table name has one or two parts (``table`` or ``schema.table``), with no
  whitespace outside quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgcast.exceptions import IdentifierError

__all__ = [
    "MAX_IDENTIFIER_BYTES",
    "TableName",
    "parse_identifier",
    "parse_table_name",
    "quote_ident",
    "validate_column_name",
]

MAX_IDENTIFIER_BYTES = 63
"""NAMEDATALEN - 1 in a stock PostgreSQL build."""

_UNQUOTED_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
# The form __str__ may print without quotes: parsing it back gives the same name.
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")
_HINT = "quote names with upper case or special characters, e.g. '\"My Table\"'"


def _check_part(part: str, what: str) -> None:
    """Refuse a decoded name PostgreSQL cannot hold as written."""
    if part == "":
        raise IdentifierError(f"{what} is empty")
    if "\x00" in part:
        raise IdentifierError(f"{what} contains a NUL character")
    size = len(part.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(
            f"{what} is {size} bytes long; PostgreSQL names are at most "
            f"{MAX_IDENTIFIER_BYTES} bytes"
        )


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier, safe to splice into SQL text.

    Embedded double quotes are doubled. NUL (which PostgreSQL cannot store) and the
    empty name (which is not valid SQL) raise :class:`IdentifierError`.
    """
    if name == "":
        raise IdentifierError("cannot quote an empty identifier")
    if "\x00" in name:
        raise IdentifierError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def _display(part: str) -> str:
    return part if _PLAIN.fullmatch(part) else quote_ident(part)


@dataclass(frozen=True)
class TableName:
    """A parsed table name: ``name`` in ``schema`` (``None``: found via search_path).

    Both fields hold the real (case-folded, unquoted) names. Construction refuses
    names PostgreSQL cannot hold, so a ``TableName`` is always safe to quote.
    """

    schema: str | None
    name: str

    def __post_init__(self) -> None:
        if self.schema is not None:
            _check_part(self.schema, "schema name")
        _check_part(self.name, "table name")

    def quoted(self) -> str:
        """SQL text for this table: ``"schema"."name"`` or ``"name"``."""
        if self.schema is None:
            return quote_ident(self.name)
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def __str__(self) -> str:
        # Quote only where needed, so that parse_table_name(str(t)) == t.
        if self.schema is None:
            return _display(self.name)
        return f"{_display(self.schema)}.{_display(self.name)}"


def _split_parts(text: str) -> list[str]:
    """Decode dot-separated identifier parts; raises IdentifierError (message only)."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i >= n:
            raise IdentifierError("expected a name" + (" after '.'" if parts else ""))
        if text[i] == '"':
            i += 1
            chunks: list[str] = []
            while True:
                end = text.find('"', i)
                if end < 0:
                    raise IdentifierError("unbalanced double quote")
                chunks.append(text[i:end])
                if end + 1 < n and text[end + 1] == '"':  # "" stands for one "
                    chunks.append('"')
                    i = end + 2
                    continue
                i = end + 1
                break
            part = "".join(chunks)
            if part == "":
                raise IdentifierError('a quoted name ("") cannot be empty')
        else:
            match = _UNQUOTED_PART.match(text, i)
            if match is None:
                char = text[i]
                if char.isspace():
                    raise IdentifierError("whitespace outside double quotes")
                if char == ".":
                    raise IdentifierError("expected a name before '.'")
                raise IdentifierError(
                    f"unquoted names start with an ASCII letter or '_', not {char!r}"
                )
            part = match.group().lower()
            i = match.end()
        parts.append(part)
        if i == n:
            return parts
        char = text[i]
        if char != ".":
            if char.isspace():
                raise IdentifierError("whitespace outside double quotes")
            raise IdentifierError(f"unexpected {char!r} after a name")
        i += 1


def _parse(text: str, what: str, max_parts: int) -> list[str]:
    if not isinstance(text, str):
        raise IdentifierError(f"{what} must be text, not {type(text).__name__}")
    try:
        if "\x00" in text:
            raise IdentifierError("contains a NUL character")
        parts = _split_parts(text)
        if len(parts) > max_parts:
            form = "name" if max_parts == 1 else "name or schema.name"
            raise IdentifierError(f"has {len(parts)} dot-separated parts; expected {form}")
        for part in parts:
            _check_part(part, "a name")
    except IdentifierError as exc:
        raise IdentifierError(
            f"{text!r} is not a valid {what}: {exc.message}", hint=_HINT
        ) from None
    return parts


def parse_table_name(text: str) -> TableName:
    """Parse ``table`` or ``schema.table`` written as in SQL (see module docstring)."""
    parts = _parse(text, "table name", 2)
    if len(parts) == 2:
        return TableName(schema=parts[0], name=parts[1])
    return TableName(schema=None, name=parts[0])


def parse_identifier(text: str, what: str = "identifier") -> str:
    """Parse one identifier part written as in SQL; returns the real name."""
    return _parse(text, what, 1)[0]


def validate_column_name(name: str) -> str:
    """Parse a column name written as in SQL (``status``, ``"Status"``); returns the real name.

    ``Status`` folds to ``status`` exactly as it would in a query; quote it to keep
    the case.
    """
    return parse_identifier(name, "column name")
