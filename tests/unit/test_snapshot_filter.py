"""Which filter conditions a snapshot leaves to PostgreSQL, and how (pure)."""

from __future__ import annotations

from pgcast.filters import parse_filter
from pgcast.snapshot_filter import pushdown

TYPES = {
    "n": "int4",
    "big": "int8",
    "small": "int2",
    "s": "text",
    "v": "varchar",
    "flag": "bool",
    "c": "bpchar",
    "amount": "numeric",
    "at": "timestamptz",
    "mood": "mood_enum",
    "Odd Name": "text",
}


def clause(text: str, first: int = 1) -> tuple[str, tuple[object, ...]]:
    result = pushdown(parse_filter(text).conditions, TYPES, first)
    return result.where, result.params


def test_exact_conditions_become_typed_parameters() -> None:
    assert clause("n=eq.7") == ('t."n" = $1::int8', (7,))
    assert clause("s=eq.pending&flag=eq.false", 3) == (
        't."s" = $3::text AND t."flag" = $4::boolean',
        ("pending", False),
    )
    assert clause("v=in.(a,b)") == ('t."v" = ANY($1::text[])', (["a", "b"],))
    assert clause("Odd Name=eq.x") == ('t."Odd Name" = $1::text', ("x",))


def test_integers_compare_as_the_filter_compares_them() -> None:
    assert clause("n=eq.7.0") == ('t."n" = $1::int8', (7,))  # the filter: 7.0 == 7
    # No integer: the filter keeps no row, and neither does the clause.
    assert clause("n=eq.07") == ('t."n" = ANY($1::int8[])', ([],))
    assert clause("n=eq.7.5") == ('t."n" = ANY($1::int8[])', ([],))
    assert clause("big=eq.9223372036854775807") == (
        't."big" = $1::int8',
        (9223372036854775807,),
    )
    assert clause("big=eq.9223372036854775808") == (  # beyond int8: equals no row
        't."big" = ANY($1::int8[])',
        ([],),
    )
    # Literals that are no integer never match an integer column: only the others go.
    assert clause("small=in.(1,abc,2.5,3)") == ('t."small" = ANY($1::int8[])', ([1, 3],))


def test_conditions_sql_would_not_mean_exactly_are_left_to_the_gateway() -> None:
    for text in (
        "n=neq.7",
        "n=not.eq.7",
        "n=gt.7",
        "n=is.null",
        "s=not.in.(a,b)",
        "flag=eq.yes",
        "c=eq.x",  # char(n) pads: SQL would ignore trailing blanks the filter sees
        "amount=eq.1.50",
        "at=eq.2026-11-30T00:00:00Z",
        "mood=eq.happy",  # an enum refuses unknown labels with an error
        "unknown=eq.1",
    ):
        assert clause(text) == ("", ()), text
    assert clause("n=gt.1&s=eq.x&amount=eq.1") == ('t."s" = $1::text', ("x",))
