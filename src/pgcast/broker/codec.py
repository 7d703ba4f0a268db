"""What travels on the stream: one message per change, and where the reader stood.

Pure code: changes and positions in, payloads and headers out, and back.

Payload: a JSON array ``[id, txid, schema, table, op, record, old_record, changed,
committed_at]`` where ``record`` and ``old_record`` are the log's ``to_jsonb`` text,
carried as JSON strings so the bytes the client receives are the bytes PostgreSQL
wrote (invariant 8). A gap marker (the log was pruned past the reader) has an
empty payload and the ``Pgcast-Gap`` header.

Headers:

* ``Nats-Msg-Id``: the change id, so JetStream drops a change published twice
  within its duplicate window (a reader that restarts in the middle of a read).
* ``Pgcast-Position`` on the last message of a read: the reader's cursor after that
  read (an exact ``Horizon``: every change not after it is at or before this
  message in the stream, every change after it is later). ``Pgcast-From`` on the
  others: the cursor before the read. A restarted reader continues from the last
  message's position; a node hands out the last position it dispatched.
* ``Nats-Expected-Last-Msg-Id`` (reader only): the message before it in the stream,
  so a publish lost while later ones land (a reconnect) breaks the chain and is
  refused instead of leaving a hole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from pgcast.events import OPS, ChangeEvent, Horizon
from pgcast.exceptions import BrokerError

__all__ = [
    "EXPECTED_LAST_ID",
    "FROM",
    "GAP",
    "MSG_ID",
    "POSITION",
    "StreamEntry",
    "decode",
    "encode_change",
    "gap_id",
    "headers",
    "subject",
]

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_ID = "Nats-Expected-Last-Msg-Id"
POSITION = "Pgcast-Position"
FROM = "Pgcast-From"
GAP = "Pgcast-Gap"

_MAX_INT8 = 2**63 - 1


def subject(stream: str) -> str:
    """The one subject of a database's stream: every node needs every table's changes,
    and table names are not safe subject tokens (dots, spaces, wildcards)."""
    return f"{stream}.changes"


def encode_change(change: ChangeEvent) -> bytes:
    return orjson.dumps(
        [
            change.id,
            change.txid,
            change.schema,
            change.table,
            change.op,
            change.record_json,
            change.old_record_json,
            change.changed,
            change.committed_at,
        ]
    )


def headers(
    msg_id: str, *, position: Horizon, last: bool, gap_through: int | None = None
) -> dict[str, str]:
    """A message's headers: its id, and ``position`` as exact (``last`` of its read)
    or as where its read started."""
    result = {MSG_ID: msg_id, (POSITION if last else FROM): position.encode()}
    if gap_through is not None:
        result[GAP] = str(gap_through)
    return result


def gap_id(pruned_through: int) -> str:
    return f"gap-{pruned_through}"


@dataclass(frozen=True)
class StreamEntry:
    """One decoded stream message: a change or a gap, and the position it carries.

    ``exact``: ``position`` is the reader's cursor after this message (else the
    cursor before this message's read: safe to resume from, possibly early)."""

    change: ChangeEvent | None
    gap_through: int | None
    position: Horizon | None
    exact: bool


def decode(data: bytes, headers: Mapping[str, str] | None) -> StreamEntry:
    """Read one stream message; ``BrokerError`` for anything the reader did not write."""
    headers = headers or {}
    position: Horizon | None = None
    exact = POSITION in headers
    text = headers.get(POSITION if exact else FROM)
    if text is not None:
        position = Horizon.parse(text)
        if position is None:
            raise BrokerError(f"stream message has a malformed position header {text[:40]!r}")
    if GAP in headers:
        through = headers[GAP]
        if not through.isdigit() or int(through) > _MAX_INT8:
            raise BrokerError(f"stream message has a malformed gap header {through[:40]!r}")
        return StreamEntry(None, int(through), position, exact)
    return StreamEntry(_change(data), None, position, exact)


def _change(data: bytes) -> ChangeEvent:
    try:
        fields = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BrokerError("stream message is not JSON: not written by a pgcast reader") from None
    if not isinstance(fields, list) or len(fields) != 9:
        raise BrokerError("stream message is not a change: expected a 9-field array")
    id_, txid, schema, table, op, record, old_record, changed, committed_at = fields
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (id_, txid)):
        raise BrokerError("stream message: id and txid must be integers")
    if not (0 < id_ <= _MAX_INT8 and 0 <= txid <= _MAX_INT8):
        raise BrokerError("stream message: id or txid out of range")
    if not all(isinstance(v, str) for v in (schema, table, committed_at, op)) or op not in OPS:
        raise BrokerError("stream message: schema, table, op or committed_at malformed")
    if not all(v is None or isinstance(v, str) for v in (record, old_record)):
        raise BrokerError("stream message: row images must be JSON text or null")
    if changed is not None and (
        not isinstance(changed, list) or not all(isinstance(c, str) for c in changed)
    ):
        raise BrokerError("stream message: 'changed' must be a list of column names")
    return ChangeEvent(
        id=id_,
        schema=schema,
        table=table,
        op=op,
        record_json=record,
        old_record_json=old_record,
        changed=changed,
        txid=txid,
        committed_at=committed_at,
    )
