"""``postgres_changes`` bindings in, pgcast subscriptions out; changes back. Pure.

A Supabase channel's join carries ``config.postgres_changes``: bindings of
``event`` (``*``, ``INSERT``, ``UPDATE``, ``DELETE``), ``schema``, ``table`` and
``filter`` (PostgREST operators; several conditions joined with commas). Each is
answered with an integer id, the same for equal bindings, as the Supabase server
does. A binding becomes one pgcast subscription per table it names (a binding
without a table covers every tracked table of its schema), so pgcast's filters,
row rules and catch-ups apply unchanged.

Beyond Supabase: a ``pgcast_since`` key in a binding (supabase-js passes a
binding's keys to the server as given) resumes from pgcast's change log. Every
``postgres_changes`` message carries its change's position in the Phoenix ``ref``
(``pgcast:<change id>``), which supabase-js hands to the binding's callback as its
second argument.

Change messages are shaped as the Supabase server's ``Realtime.Adapters.Changes``
records: ``data`` holds ``columns`` (name and PostgreSQL type name, for
supabase-js's value conversion), ``commit_timestamp`` (UTC, milliseconds),
``errors``, ``schema``, ``table``, ``type`` and ``record`` (INSERT, UPDATE) and
``old_record`` (UPDATE, DELETE). Row values are PostgreSQL's ``to_jsonb`` text,
numbers carried digit for digit.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..exceptions import ProtocolError
from ..filters import MAX_FILTER_LENGTH
from ..protocol import MAX_ID_LENGTH, ErrorCode

__all__ = [
    "POSITION_PREFIX",
    "Binding",
    "binding_id",
    "change_data",
    "encoded_change",
    "parse_bindings",
    "supabase_filter",
]

POSITION_PREFIX = "pgcast:"
SINCE_KEY = "pgcast_since"
MAX_BINDINGS = 32  # per channel: each is at least one subscription of the connection
_EVENTS = {"*": ("INSERT", "UPDATE", "DELETE"), "INSERT": ("INSERT",)}
_EVENTS |= {"UPDATE": ("UPDATE",), "DELETE": ("DELETE",)}

MAX_BINDINGS_BYTES = 65_536  # a channel's bindings, JSON-encoded
MAX_COLUMNS = 1600  # PostgreSQL's most columns per table
_ECHOED = ("event", "schema", "table", "filter", "select", SINCE_KEY)

Tables = Callable[[str | None], Sequence[tuple[str, str]]]


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """One binding of a join: its id, what the reply echoes, and what to subscribe to."""

    id: int
    echo: dict[str, Any]  # the binding as the client sent it, plus "id"
    tables: tuple[tuple[str | None, str], ...]
    events: tuple[str, ...]
    filter: str | None
    since: str | None
    columns: tuple[str, ...] | None
    wildcard: bool = False  # no table named: the tracked tables the token may read

    def subscribe(self, sub_id: str, schema: str | None, table: str) -> dict[str, Any]:
        """The pgcast ``subscribe`` message for one of this binding's tables."""
        message: dict[str, Any] = {
            "type": "subscribe",
            "id": sub_id,
            "table": table,
            "events": list(self.events),
        }
        if schema is not None:
            message["schema"] = schema
        if self.filter:
            message["filter"] = self.filter
        if self.since is not None:
            message["since"] = self.since
        if self.columns is not None:
            message["columns"] = list(self.columns)
        return message


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"InvalidJoinPayload: {message}")


def binding_id(params: dict[str, Any]) -> int:
    """A binding's id: equal bindings get equal ids (as the server's phash2 does); the
    resume position is left out, so a binding keeps its id across resumes."""
    kept = {key: value for key, value in params.items() if key != SINCE_KEY}
    return zlib.crc32(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)) & 0x7FFFFFF


def supabase_filter(text: str) -> str:
    """Supabase's filter (conditions joined by commas outside quotes and parentheses)
    as pgcast's (joined by ``&``)."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return "&".join(part.strip() for part in parts)


def _since(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH * 8:
        return value.removeprefix(POSITION_PREFIX)
    raise _invalid(f"{SINCE_KEY} must be a change position such as 'pgcast:1042'")


def _name(binding: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = binding.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 63:
        raise _invalid(f"postgres_changes {key!r} must be a name of 1 to 63 characters")
    return value


def parse_bindings(raw: Any, tables: Tables) -> list[Binding]:
    """The bindings of ``config.postgres_changes``; ProtocolError on a bad one.

    ``tables(schema)`` lists the tracked tables of ``schema`` (None: every schema),
    for bindings that name no table.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("config.postgres_changes must be a list")
    raw = [binding for binding in raw if binding is not None]
    if len(raw) > MAX_BINDINGS:
        raise _invalid(f"at most {MAX_BINDINGS} postgres_changes bindings per channel")
    try:
        size = len(orjson.dumps(raw))
    except TypeError:
        size = 0  # not JSON at all: refused below, binding by binding
    if size > MAX_BINDINGS_BYTES:  # a channel keeps its bindings until it leaves
        raise _invalid(f"postgres_changes bindings over {MAX_BINDINGS_BYTES} bytes")
    bindings = []
    for params in raw:
        if not isinstance(params, dict):
            raise _invalid("each postgres_changes binding must be an object")
        event = params.get("event")
        if not isinstance(event, str) or event.upper() not in _EVENTS:
            raise _invalid("postgres_changes 'event' must be *, INSERT, UPDATE or DELETE")
        schema = _name(params, "schema", required=True)
        table = _name(params, "table", required=False)
        text = params.get("filter")
        if text is not None and (not isinstance(text, str) or len(text) > MAX_FILTER_LENGTH):
            raise _invalid(
                f"postgres_changes 'filter' must be a string of at most {MAX_FILTER_LENGTH}"
            )
        select = params.get("select")
        if select is not None and (
            not isinstance(select, list)
            or not select
            or len(select) > MAX_COLUMNS
            or not all(isinstance(c, str) and 0 < len(c) <= 63 for c in select)
        ):
            raise _invalid("postgres_changes 'select' must be a non-empty list of column names")
        wildcard = None if schema == "*" else schema
        if table is None or table == "*":
            found = tuple(tables(wildcard))
            if not found:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_TABLE, f"pgcast tracks no table in schema {schema!r}"
                )
            named: tuple[tuple[str | None, str], ...] = tuple(found)
        else:
            named = ((wildcard, table),)
        bindings.append(
            Binding(
                id=binding_id(params),
                # Only the binding's own keys: a channel keeps this until it leaves.
                echo={k: v for k, v in params.items() if k in _ECHOED} | {"id": binding_id(params)},
                tables=named,
                events=_EVENTS[event.upper()],
                filter=supabase_filter(text) if text else None,
                since=_since(params.get(SINCE_KEY)),
                columns=tuple(select) if select is not None else None,
                wildcard=table is None or table == "*",
            )
        )
    return bindings


def _number(text: str) -> orjson.Fragment:
    return orjson.Fragment(text)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def change_data(body: bytes, columns: Callable[[str, str], bytes]) -> tuple[str, dict[str, Any]]:
    """``(change id, data)`` of a pgcast change body (``"id":...}``, see ChangeEvent.body).

    ``columns(schema, table)`` is the table's encoded ``[{"name", "type"}...]``. Numbers keep
    PostgreSQL's text (``orjson.Fragment``), so nothing is rounded on the way.
    """
    try:
        change = json.loads(
            b"{" + body, parse_float=_number, parse_int=_number, parse_constant=_refuse
        )
    except RecursionError:  # a value nested deeper than Python's recursion limit
        change = _shallow_change(b"{" + body)
    op = change["op"]
    committed = str(change["committed_at"])
    if len(committed) > 24 and committed.endswith("Z"):
        committed = committed[:23] + "Z"  # microseconds to the server's milliseconds
    data: dict[str, Any] = {
        "columns": orjson.Fragment(columns(change["schema"], change["table"])),
        "commit_timestamp": committed,
        "errors": None,
        "schema": change["schema"],
        "table": change["table"],
        "type": op,
    }
    if op in ("INSERT", "UPDATE"):
        data["record"] = change["record"] or {}
    if op in ("UPDATE", "DELETE"):
        data["old_record"] = change["old_record"] or {}
    return str(change["id"]), data


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


def _members(text: str) -> dict[str, str]:
    """The members of the JSON object ``text`` (well-formed): name -> the value's raw
    text. Iterative, so any nesting depth passes."""
    members: dict[str, str] = {}
    depth, key, value_at = 0, None, 0
    for token in _TOKEN.finditer(text):
        item = token.group()
        if item in "[{":
            depth += 1
        elif item in "]}":
            depth -= 1
            if depth == 0:
                if key is not None:
                    members[key] = text[value_at : token.start()].strip()
                break
        elif depth == 1:
            if item == ":":
                value_at = token.end()
            elif item == ",":
                assert key is not None
                members[key] = text[value_at : token.start()].strip()
                key = None
            elif key is None:
                key = json.loads(item)
    return members


def _shallow_change(body: bytes) -> dict[str, Any]:
    """A change body parsed to its row values only; each value is kept as its raw
    text (an ``orjson.Fragment``), however deeply it nests."""
    change: dict[str, Any] = {}
    for name, raw in _members(body.decode()).items():
        if name in ("record", "old_record") and raw != "null":
            change[name] = {k: orjson.Fragment(v) for k, v in _members(raw).items()}
        else:
            change[name] = json.loads(raw, parse_float=_number, parse_int=_number)
    return change


# The last changes encoded, by their pgcast body: a change dispatched to many Supabase
# subscribers shares one body (pgcast.node.dispatch), so it is parsed and encoded once.
# Bounded in bytes; a body past CACHE_BODY_BYTES is encoded per subscriber.
CACHE_BYTES = 16 * 1024 * 1024
CACHE_BODY_BYTES = 1024 * 1024
_encoded: dict[bytes, tuple[str, orjson.Fragment]] = {}
_encoded_bytes = 0


def encoded_change(
    body: bytes, columns: Callable[[str, str], bytes]
) -> tuple[str, orjson.Fragment]:
    """``(change id, data encoded)``: :func:`change_data`, memoized for shared bodies."""
    global _encoded_bytes
    found = _encoded.get(body)
    if found is not None:
        return found
    change_id, data = change_data(body, columns)
    encoded = orjson.dumps(data)
    result = (change_id, orjson.Fragment(encoded))
    size = len(body) + len(encoded)
    if size <= CACHE_BODY_BYTES:
        if _encoded_bytes + size > CACHE_BYTES:
            _encoded.clear()
            _encoded_bytes = 0
        _encoded[body] = result
        _encoded_bytes += size
    return result
