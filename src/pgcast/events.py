"""The change event: one captured row change, and its wire encoding.

A change is encoded once per distinct column projection and the bytes are shared by
every subscriber it is delivered to; only the short ``{"type":"change","sub":...,``
prefix differs per subscription. Row images arrive from PostgreSQL as JSON text and
are spliced into the encoding untouched; they are parsed lazily, only when a filter
or a row rule needs a value, and then exactly (see exactjson).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .exactjson import parse_row, project_row

OPS = frozenset({"INSERT", "UPDATE", "DELETE", "TRUNCATE"})

# How a subscriber may see a change (see hub.Subscription.view). Row rules bound to a
# token can admit only one side of an UPDATE: a row moving into the subscriber's
# tenant is shown as an INSERT of the new row, one moving out as a DELETE of the old
# row, so no subscriber ever receives a row image its rule does not allow.
HIDDEN, FULL, AS_INSERT, AS_DELETE = 0, 1, 2, 3
View = int

Row = dict[str, Any]


class ChangeEvent:
    """One row change read from the change log (``pgcast.changes``)."""

    __slots__ = (
        "_bodies",
        "_full_body",
        "_old_record",
        "_record",
        "changed",
        "committed_at",
        "id",
        "old_record_json",
        "op",
        "record_json",
        "schema",
        "table",
        "txid",
    )

    def __init__(
        self,
        *,
        id: int,
        schema: str,
        table: str,
        op: str,
        record_json: str | None,
        old_record_json: str | None,
        changed: list[str] | None,
        txid: int,
        committed_at: str,
    ) -> None:
        self.id = id
        self.schema = schema
        self.table = table
        self.op = op
        self.record_json = record_json
        self.old_record_json = old_record_json
        self.changed = changed
        self.txid = txid
        self.committed_at = committed_at
        self._record: Row | None = None
        self._old_record: Row | None = None
        # The common case, every column and FULL view, in a slot; other projections in a
        # dict made on demand (one GC-tracked allocation fewer per change: with many
        # live subscriptions, the cyclic GC's passes are what grows).
        self._full_body: bytes | None = None
        self._bodies: dict[tuple[frozenset[str] | None, View], bytes] | None = None

    @classmethod
    def from_dicts(
        cls,
        *,
        id: int,
        schema: str,
        table: str,
        op: str,
        record: Row | None,
        old_record: Row | None = None,
        changed: list[str] | None = None,
        txid: int = 0,
        committed_at: str = "1970-01-01T00:00:00.000Z",
    ) -> ChangeEvent:
        """Build an event from Python dicts (tests, fakes)."""
        return cls(
            id=id,
            schema=schema,
            table=table,
            op=op,
            record_json=None if record is None else orjson.dumps(record).decode(),
            old_record_json=None if old_record is None else orjson.dumps(old_record).decode(),
            changed=changed,
            txid=txid,
            committed_at=committed_at,
        )

    @property
    def record(self) -> Row | None:
        """The new row image (INSERT, UPDATE), parsed exactly on first use.

        Raises RowImageError when the image cannot be read (see exactjson).
        """
        if self._record is None and self.record_json is not None:
            self._record = parse_row(self.record_json)
        return self._record

    @property
    def old_record(self) -> Row | None:
        """The old row image (UPDATE, DELETE), parsed exactly on first use."""
        if self._old_record is None and self.old_record_json is not None:
            self._old_record = parse_row(self.old_record_json)
        return self._old_record

    def body(self, columns: frozenset[str] | None = None, view: View = FULL) -> bytes:
        """The encoded event after the ``sub`` field: ``"id":...}``, cached per projection
        and view. Concatenate ``subscription_prefix(sub) + body`` for a whole message.
        """
        common = columns is None and view == FULL
        if common:
            if self._full_body is not None:
                return self._full_body
        elif self._bodies is not None:
            cached = self._bodies.get((columns, view))
            if cached is not None:
                return cached
        op, changed = self.op, self.changed
        if columns is None:
            record = self.record_json or "null"
            old_record = self.old_record_json or "null"
        else:
            record = _project(self.record_json, columns)
            old_record = _project(self.old_record_json, columns)
        if view == AS_INSERT:
            op, old_record, changed = "INSERT", "null", None
        elif view == AS_DELETE:
            op, record, changed = "DELETE", "null", None
        encoded = (
            f'"id":"{self.id}",{_table_fields(self.schema, self.table)}'
            f'"op":"{op}","record":{record},"old_record":{old_record},'
            f'"changed":{"null" if changed is None else orjson.dumps(changed).decode()},'
            f'"txid":"{self.txid}","committed_at":"{self.committed_at}"}}'
        ).encode()
        if common:
            self._full_body = encoded
        else:
            if self._bodies is None:
                self._bodies = {}
            self._bodies[(columns, view)] = encoded
        return encoded

    def to_message(self, sub: str, columns: frozenset[str] | None = None) -> dict[str, Any]:
        """The decoded wire message, as a subscriber receives it (tests, SSE, hooks)."""
        decoded: dict[str, Any] = orjson.loads(subscription_prefix(sub) + self.body(columns))
        return decoded

    def __repr__(self) -> str:
        return f"<ChangeEvent {self.id} {self.op} {self.schema}.{self.table}>"


def _str(value: str) -> str:
    return orjson.dumps(value).decode()


_TABLE_FIELDS: dict[tuple[str, str], str] = {}


def _table_fields(schema: str, table: str) -> str:
    """``"schema":...,"table":...,`` encoded once per table (a few entries per gateway)."""
    fields = _TABLE_FIELDS.get((schema, table))
    if fields is None:
        fields = f'"schema":{_str(schema)},"table":{_str(table)},'
        if len(_TABLE_FIELDS) < 10_000:
            _TABLE_FIELDS[(schema, table)] = fields
    return fields


def _project(row: str | None, columns: frozenset[str]) -> str:
    # From the text, not the parsed row: numbers keep PostgreSQL's exact text.
    return "null" if row is None else project_row(row, columns)


def subscription_prefix(sub: str) -> bytes:
    """The per-subscription start of a change message: ``{"type":"change","sub":"s1",``."""
    return b'{"type":"change","sub":' + orjson.dumps(sub) + b","


_POSITION = re.compile(r"([0-9]{1,19}):([0-9]{1,19}):((?:[0-9]{1,19})(?:,[0-9]{1,19}){0,999})?")


@dataclass(frozen=True)
class Horizon:
    """An exact log position: a snapshot's head and the transactions open in it.

    A change is *after* the horizon iff its id is above ``head`` or its transaction
    was still open then (listed in ``pending``, or at or above ``xmax``: PostgreSQL
    does not list running xids at or above xmax). Used to hand a snapshot or a replay
    over to the live stream without gap or duplicate, and, encoded as a position
    string (``head:xmax:pending,...``), to resume exactly after a snapshot.
    """

    head: int
    pending: frozenset[int]
    xmax: int

    def is_after(self, change: ChangeEvent) -> bool:
        return change.id > self.head or change.txid >= self.xmax or change.txid in self.pending

    def encode(self) -> str:
        return f"{self.head}:{self.xmax}:{','.join(str(x) for x in sorted(self.pending))}"

    @classmethod
    def parse(cls, text: str) -> Horizon | None:
        """The horizon a position string encodes, or None if it is not one."""
        match = _POSITION.fullmatch(text)
        if match is None:
            return None
        pending = match.group(3)
        return cls(
            int(match.group(1)),
            frozenset(int(x) for x in pending.split(",")) if pending else frozenset(),
            int(match.group(2)),
        )
