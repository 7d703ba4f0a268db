"""Decoding PostgreSQL's ``pgoutput`` logical replication messages (pure: bytes in, values out).

The format is PostgreSQL's "Logical Replication Message Formats" (protocol version
1: whole transactions, sent at commit). Integers are big-endian; strings are
NUL-terminated UTF-8; column values arrive in text format (the type's output
function), which :mod:`pgcast.capture.wal` hands back to PostgreSQL to type them
exactly as ``to_jsonb`` would.

Only what pgcast needs is decoded: Begin, Commit, Relation, Insert, Update, Delete
and Truncate. Type, Origin and logical Message are recognised and skipped. Anything
else raises :class:`~pgcast.exceptions.CaptureError`: decoding on past an
unknown message would risk a wrong change, which is worse than stopping.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pgcast.exceptions import CaptureError

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "Relation",
    "Skipped",
    "Truncate",
    "Tuple",
    "Update",
    "decode",
    "format_lsn",
    "parse_lsn",
]

# PostgreSQL's epoch (2000-01-01) in Unix microseconds.
_PG_EPOCH_US = 946_684_800_000_000


class _Unchanged:
    """An unchanged TOASTed value: pgoutput sends a marker instead of the value."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()

Value = str | None | _Unchanged
Tuple = tuple[Value, ...]


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time_us: int  # Unix microseconds
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time_us: int


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Insert:
    relation: int
    new: Tuple


@dataclass(frozen=True)
class Update:
    relation: int
    old: Tuple | None  # the whole old row with REPLICA IDENTITY FULL; key only with 'K'
    new: Tuple
    old_is_key: bool = False


@dataclass(frozen=True)
class Delete:
    relation: int
    old: Tuple
    old_is_key: bool = False


@dataclass(frozen=True)
class Truncate:
    relations: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Skipped:
    """A message pgcast has no use for (Type, Origin, logical Message)."""

    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Skipped


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> the 64-bit position."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not an LSN (expected X/Y in hex)")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    """The 64-bit position as PostgreSQL writes it (``'16/B374D848'``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str, size: int) -> int:
        end = self.pos + size
        if end > len(self.data):
            raise _truncated(self.data)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos = end
        result: int = value
        return result

    def int8(self) -> int:
        return self._take(">b", 1)

    def int16(self) -> int:
        return self._take(">h", 2)

    def int32(self) -> int:
        return self._take(">i", 4)

    def uint32(self) -> int:
        return self._take(">I", 4)

    def int64(self) -> int:
        return self._take(">q", 8)

    def uint64(self) -> int:
        return self._take(">Q", 8)

    def byte(self) -> str:
        if self.pos >= len(self.data):
            raise _truncated(self.data)
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def string(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise _truncated(self.data)
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def raw(self, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise _truncated(self.data)
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def tuple(self) -> Tuple:
        # The hot loop of WAL capture (every column of every change): local names and
        # precompiled structs, one bounds check per field.
        data, pos, size = self.data, self.pos, len(self.data)
        if pos + 2 > size:
            raise _truncated(data)
        (count,) = _INT16.unpack_from(data, pos)
        pos += 2
        values: list[Value] = []
        append = values.append
        for _ in range(count):
            if pos >= size:
                raise _truncated(data)
            kind = data[pos]
            pos += 1
            if kind == _TEXT:
                if pos + 4 > size:
                    raise _truncated(data)
                (length,) = _INT32.unpack_from(data, pos)
                pos += 4
                end = pos + length
                if length < 0 or end > size:
                    raise _truncated(data)
                append(data[pos:end].decode())
                pos = end
            elif kind == _NULL:
                append(None)
            elif kind == _UNCHANGED_TOAST:
                append(UNCHANGED)
            else:  # 'b' needs the binary option, which pgcast never asks for
                raise CaptureError(f"pgoutput: unexpected column value kind {chr(kind)!r}")
        self.pos = pos
        return tuple(values)


_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_TEXT, _NULL, _UNCHANGED_TOAST = ord("t"), ord("n"), ord("u")


def _truncated(data: bytes) -> CaptureError:
    return CaptureError(f"pgoutput: truncated message {data[:32]!r}")


def _time(us_since_2000: int) -> int:
    return us_since_2000 + _PG_EPOCH_US


def decode(data: bytes) -> Message:
    """Decode one pgoutput message (the payload of one XLogData)."""
    if not data:
        raise CaptureError("pgoutput: empty message")
    r = _Reader(data)
    kind = r.byte()
    if kind == "B":
        return Begin(final_lsn=r.uint64(), commit_time_us=_time(r.int64()), xid=r.uint32())
    if kind == "C":
        r.int8()  # flags, unused
        return Commit(commit_lsn=r.uint64(), end_lsn=r.uint64(), commit_time_us=_time(r.int64()))
    if kind == "R":
        oid = r.uint32()
        schema, name = r.string(), r.string()
        identity = r.byte()
        columns = []
        for _ in range(r.int16()):
            flags = r.int8()
            columns.append(Column(r.string(), r.uint32(), r.int32(), bool(flags & 1)))
        return Relation(oid, schema or "pg_catalog", name, identity, tuple(columns))
    if kind == "I":
        oid = r.uint32()
        if r.byte() != "N":
            raise CaptureError("pgoutput: INSERT without a new tuple")
        return Insert(oid, r.tuple())
    if kind == "U":
        oid = r.uint32()
        marker = r.byte()
        old: Tuple | None = None
        if marker in ("K", "O"):
            old = r.tuple()
            is_key = marker == "K"
            marker = r.byte()
        else:
            is_key = False
        if marker != "N":
            raise CaptureError(f"pgoutput: UPDATE with tuple marker {marker!r}")
        return Update(oid, old, r.tuple(), is_key)
    if kind == "D":
        oid = r.uint32()
        marker = r.byte()
        if marker not in ("K", "O"):
            raise CaptureError(f"pgoutput: DELETE with tuple marker {marker!r}")
        return Delete(oid, r.tuple(), marker == "K")
    if kind == "T":
        count = r.int32()
        options = r.int8()
        relations = tuple(r.uint32() for _ in range(count))
        return Truncate(relations, bool(options & 1), bool(options & 2))
    if kind in ("Y", "O", "M"):
        return Skipped(kind)
    raise CaptureError(f"pgoutput: unknown message type {kind!r}")
