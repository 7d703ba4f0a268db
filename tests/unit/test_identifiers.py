"""Parsing and quoting of table and column names, including hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcast.exceptions import IdentifierError
from pgcast.identifiers import (
    TableName,
    parse_identifier,
    parse_table_name,
    quote_ident,
    validate_column_name,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("orders", TableName(None, "orders")),
        ("Orders", TableName(None, "orders")),
        ("ORDERS_2024$x", TableName(None, "orders_2024$x")),
        ("_private", TableName(None, "_private")),
        ('"Booking"', TableName(None, "Booking")),
        ('"say ""hi"""', TableName(None, 'say "hi"')),
        ("audit.events", TableName("audit", "events")),
        ("Audit.Events", TableName("audit", "events")),
        ('"My Schema"."My.Table"', TableName("My Schema", "My.Table")),
        ('public."Order Items"', TableName("public", "Order Items")),
        ('"a;b".c', TableName("a;b", "c")),
        ('"ünïcødé"', TableName(None, "ünïcødé")),
        ('" "', TableName(None, " ")),
        ("a" * 63, TableName(None, "a" * 63)),
    ],
)
def test_parse_table_name_follows_postgresql_rules(text: str, expected: TableName) -> None:
    assert parse_table_name(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("orders; drop table x", "unexpected ';'"),
        ("orders drop", "whitespace"),
        ("orders;drop table x", "unexpected ';'"),
        ("orders--", "unexpected '-'"),
        ("x' OR '1'='1", "unexpected"),
        ('orders"; DROP TABLE x; --', "unexpected"),
        ('"orders"; DROP TABLE x; --', "unexpected ';'"),
        ("", "expected a name"),
        ("   ", "whitespace"),
        (" orders", "whitespace"),
        ("orders ", "whitespace"),
        ("my table", "whitespace"),
        ("\torders", "whitespace"),
        ("a" * 64, "64 bytes"),
        ('"' + "é" * 32 + '"', "64 bytes"),
        ("ord\x00ers", "NUL"),
        ('"ord\x00ers"', "NUL"),
        ('"orders', "unbalanced"),
        ('orders"', "unexpected"),
        ('"or"ders"', "unexpected"),
        ('""', "empty"),
        ('"".orders', "empty"),
        ("a.b.c", "3 dot-separated parts"),
        ("a..b", "expected a name"),
        (".orders", "expected a name"),
        ("orders.", "expected a name after '.'"),
        ("1orders", "ASCII letter"),
        ("$orders", "ASCII letter"),
        ("ördérs", "ASCII letter"),
        ("orders()", "unexpected '('"),
        ("pg_catalog.pg_class;", "unexpected ';'"),
    ],
)
def test_parse_table_name_rejects_hostile_input(text: str, reason: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_table_name(text)
    message = str(caught.value)
    assert message.startswith(f"{text!r} is not a valid table name: ")
    assert reason in message
    assert caught.value.hint


def test_parse_table_name_rejects_non_text() -> None:
    with pytest.raises(IdentifierError, match="must be text"):
        parse_table_name(42)  # type: ignore[arg-type]


def test_quoted_is_sql_text_for_the_same_name() -> None:
    assert TableName(None, "orders").quoted() == '"orders"'
    assert TableName("My Schema", 'x"y').quoted() == '"My Schema"."x""y"'


@pytest.mark.parametrize(
    ("table", "shown"),
    [
        (TableName(None, "orders"), "orders"),
        (TableName("audit", "events"), "audit.events"),
        (TableName(None, "Booking"), '"Booking"'),
        (TableName("My Schema", "My.Table"), '"My Schema"."My.Table"'),
        (TableName("public", 'a"b'), 'public."a""b"'),
    ],
)
def test_str_quotes_only_where_needed(table: TableName, shown: str) -> None:
    assert str(table) == shown
    assert parse_table_name(shown) == table


@pytest.mark.parametrize(
    ("schema", "name", "reason"),
    [
        (None, "", "empty"),
        ("", "x", "empty"),
        (None, "a\x00b", "NUL"),
        (None, "x" * 64, "64 bytes"),
    ],
)
def test_table_name_refuses_names_postgresql_cannot_hold(
    schema: str | None, name: str, reason: str
) -> None:
    with pytest.raises(IdentifierError, match=reason):
        TableName(schema, name)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("orders", '"orders"'),
        ("Booking", '"Booking"'),
        ('a"b', '"a""b"'),
        ('"; DROP TABLE x; --', '"""; DROP TABLE x; --"'),
        ("a.b", '"a.b"'),
    ],
)
def test_quote_ident_doubles_quotes(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


@pytest.mark.parametrize("name", ["", "a\x00b"])
def test_quote_ident_rejects_unquotable(name: str) -> None:
    with pytest.raises(IdentifierError):
        quote_ident(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("status", "status"), ("Status", "status"), ('"Status"', "Status"), ('"a b"', "a b")],
)
def test_validate_column_name_parses_one_part(text: str, expected: str) -> None:
    assert validate_column_name(text) == expected


@pytest.mark.parametrize("text", ["a.b", "", "x y", "id; drop table x", "c" * 64, "\x00", '"open'])
def test_validate_column_name_rejects(text: str) -> None:
    with pytest.raises(IdentifierError, match="is not a valid column name"):
        validate_column_name(text)


def test_parse_identifier_names_what_it_parses() -> None:
    with pytest.raises(IdentifierError, match="not a valid channel"):
        parse_identifier("a b", "channel")


_names = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
    min_size=1,
).filter(lambda s: len(s.encode()) <= 63)


@given(schema=st.none() | _names, name=_names)
def test_display_form_round_trips(schema: str | None, name: str) -> None:
    table = TableName(schema, name)
    assert parse_table_name(str(table)) == table
    assert parse_table_name(table.quoted()) == table


@given(text=st.text())
def test_parser_either_parses_or_raises_identifier_error(text: str) -> None:
    try:
        table = parse_table_name(text)
    except IdentifierError:
        return
    # Whatever parses is safe to quote and quoting is lossless.
    assert parse_table_name(table.quoted()) == table
