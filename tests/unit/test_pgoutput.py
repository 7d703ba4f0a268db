"""The pgoutput decoder and the WAL position on byte fixtures (no database)."""

from __future__ import annotations

import struct

import pytest

from pgcast.capture import pgoutput
from pgcast.capture.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Relation,
    Skipped,
    Truncate,
    Update,
    decode,
)
from pgcast.capture.wal import WalPosition
from pgcast.capture.wal_batch import LogRow, build_insert, merge_unchanged
from pgcast.exceptions import CaptureError

EPOCH_2000_US = 946_684_800_000_000


def tuple_data(*values: object) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            raw = str(value).encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def test_begin_and_commit() -> None:
    assert decode(b"B" + struct.pack(">QqI", 0x1_0000_0010, 5, 731)) == Begin(
        0x1_0000_0010, EPOCH_2000_US + 5, 731
    )
    assert decode(b"C" + struct.pack(">bQQq", 0, 100, 180, 7)) == Commit(
        100, 180, EPOCH_2000_US + 7
    )


def test_relation_with_an_empty_namespace_is_pg_catalog() -> None:
    body = struct.pack(">I", 16384) + b"public\x00orders\x00" + b"f" + struct.pack(">h", 2)
    body += struct.pack(">b", 1) + b"id\x00" + struct.pack(">Ii", 23, -1)
    body += struct.pack(">b", 0) + "zoë".encode() + b"\x00" + struct.pack(">Ii", 25, -1)
    assert decode(b"R" + body) == Relation(
        16384,
        "public",
        "orders",
        "f",
        (Column("id", 23, -1, True), Column("zoë", 25, -1, False)),
    )
    empty = struct.pack(">I", 1) + b"\x00t\x00" + b"d" + struct.pack(">h", 0)
    assert decode(b"R" + empty).schema == "pg_catalog"  # type: ignore[union-attr]


def test_insert_update_delete_tuples() -> None:
    assert decode(b"I" + struct.pack(">I", 9) + b"N" + tuple_data("1", None, "日本")) == Insert(
        9, ("1", None, "日本")
    )
    full = decode(
        b"U"
        + struct.pack(">I", 9)
        + b"O"
        + tuple_data("1", "old")
        + b"N"
        + tuple_data("1", UNCHANGED)
    )
    assert full == Update(9, ("1", "old"), ("1", UNCHANGED), False)
    no_old = decode(b"U" + struct.pack(">I", 9) + b"N" + tuple_data("2"))
    assert no_old == Update(9, None, ("2",), False)
    key = decode(b"D" + struct.pack(">I", 9) + b"K" + tuple_data("3", None))
    assert key == Delete(9, ("3", None), True)


def test_truncate_and_skipped_messages() -> None:
    body = struct.pack(">ib", 2, 3) + struct.pack(">II", 10, 11)
    assert decode(b"T" + body) == Truncate((10, 11), True, True)
    assert decode(b"Y" + b"anything") == Skipped("Y")
    assert decode(b"M" + b"anything") == Skipped("M")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Z",
        b"B\x00\x01",
        b"I" + struct.pack(">I", 9) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 50),
        b"I" + struct.pack(">I", 9) + b"X",
        b"I" + struct.pack(">I", 9) + b"N" + struct.pack(">h", 1) + b"b",
        b"I" + struct.pack(">I", 9) + b"N" + struct.pack(">h", 2) + b"n",  # a value short
        b"I" + struct.pack(">I", 9) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", -5),
        b"I" + struct.pack(">I", 9) + b"N" + struct.pack(">h", 1) + b"t\x00\x00",  # cut length
        b"I" + struct.pack(">I", 9) + b"N" + b"\x00",  # cut count
        b"R" + struct.pack(">I", 1) + b"no-terminator",
    ],
)
def test_malformed_messages_raise_capture_errors(data: bytes) -> None:
    with pytest.raises(CaptureError):
        decode(data)


def test_lsn_text_round_trip() -> None:
    assert pgoutput.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert pgoutput.format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    with pytest.raises(ValueError, match="not an LSN"):
        pgoutput.parse_lsn("12")


def test_position_holds_earlier_transactions_and_applied_changes() -> None:
    partial = WalPosition(100, 3)
    assert partial.holds(99, 10) and partial.holds(100, 2)
    assert not partial.holds(100, 3) and not partial.holds(101, 0)
    complete = WalPosition.parse(str(WalPosition(100)))
    assert complete.holds(100, 10_000) and not complete.holds(101, 0)
    assert WalPosition.parse(None) == WalPosition(0)
    assert not WalPosition.parse("").holds(1, 0)


def test_unchanged_toast_values_come_from_the_old_row() -> None:
    assert merge_unchanged(("1", UNCHANGED), ("1", "big")) == ("1", "big")
    assert merge_unchanged(("1", UNCHANGED), None) == ("1", None)
    row = ("1", "x")
    assert merge_unchanged(row, None) is row


def test_insert_statement_keeps_names_and_values_out_of_the_sql() -> None:
    hostile = 'x"); DROP TABLE t; --'
    relation = Relation(
        7, "s", hostile, "f", tuple(Column(f"{hostile}{i}", 23, -1, False) for i in range(120))
    )
    values = tuple(str(i) for i in range(120))
    statement, params = build_insert(
        [LogRow(7, "INSERT", values, None, 0)], {7: relation}, {23: "integer"}
    )
    assert hostile not in statement
    assert hostile in params and f"{hostile}0" in params[1]
    # jsonb_build_object takes at most 100 arguments: 120 columns need three calls
    assert statement.count("jsonb_build_object(") == 2 * 3
