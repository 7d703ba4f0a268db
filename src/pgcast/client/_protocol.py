"""Pure pieces of the client: URL rules, close-code policy, frames, duplicate ids.

Nothing here does I/O or touches the event loop, so every rule the client follows
(when to reconnect, what a subscribe frame looks like, which change ids are
duplicates, how a ``pgcast listen`` target is split) is unit-tested directly.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from pgcast.exceptions import IdentifierError, PgcastError

__all__ = [
    "CloseAction",
    "Position",
    "RecentIds",
    "close_action",
    "encode",
    "normalize_url",
    "parse_target",
    "subscribe_frame",
]

# Close codes of the pgcast protocol (see the wire protocol docs).
NORMAL = 1000
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009
RESUMABLE = range(4000, 4500)  # reconnect and resume
TERMINAL = range(4500, 5000)  # do not reconnect


class CloseAction(enum.Enum):
    """What the client does after the gateway closed the connection."""

    RECONNECT = "reconnect"
    """Reconnect (with backoff) and resume every subscription."""
    TERMINAL = "terminal"
    """Do not reconnect; fail every subscription with the close reason."""
    FRAME_TOO_BIG = "frame_too_big"
    """The gateway refused a frame we sent: do not resend it, reconnect for the rest."""


def close_action(code: int | None) -> CloseAction:
    """The client's policy for a close ``code`` received from the gateway.

    ``None`` means no close frame arrived (network error, abnormal closure 1006).
    A server-initiated 1000 also reconnects: the caller still holds subscriptions
    it wants served; only the caller decides when the stream ends.
    """
    if code is not None and code in TERMINAL:
        return CloseAction.TERMINAL
    if code == MESSAGE_TOO_BIG:
        return CloseAction.FRAME_TOO_BIG
    return CloseAction.RECONNECT


def normalize_url(url: str) -> str:
    """The gateway WebSocket endpoint for ``url``: path ending in ``/ws``.

    ``ws://h:8000`` -> ``ws://h:8000/ws``; ``ws://h/app/`` -> ``ws://h/app/ws``;
    ``ws://h/ws`` is kept. ``http(s)`` is accepted and mapped to ``ws(s)``; query
    strings are kept.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise PgcastError(
            f"not a gateway URL: {url!r}",
            hint="use ws://host:port or wss://host (for example ws://127.0.0.1:8000)",
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def encode(message: dict[str, Any]) -> str:
    """One JSON text frame."""
    return orjson.dumps(message).decode()


def subscribe_frame(
    wire_id: str,
    *,
    table: str | None = None,
    channel: str | None = None,
    schema: str | None = None,
    events: Sequence[str] | None = None,
    filter: str | None = None,
    columns: Sequence[str] | None = None,
    since: str | None = None,
    snapshot: bool = False,
) -> dict[str, Any]:
    """A ``subscribe`` message; optional fields are omitted when not given."""
    if (table is None) == (channel is None):
        raise ValueError("a subscription names exactly one of table or channel")
    message: dict[str, Any] = {"type": "subscribe", "id": wire_id}
    if channel is not None:
        message["channel"] = channel
        return message
    message["table"] = table
    if schema is not None:
        message["schema"] = schema
    if events is not None:
        message["events"] = [event.upper() for event in events]
    if filter is not None:
        message["filter"] = filter
    if columns is not None:
        message["columns"] = list(columns)
    if since is not None:
        message["since"] = since
    elif snapshot:
        message["snapshot"] = True
    return message


class RecentIds:
    """The change ids a subscription delivered most recently, to drop replays.

    Duplicates only arise when a resumed subscription replays the window just
    before its resume point (the gateway cannot tell exactly which of the
    concurrently committed changes the client saw). So remembering the last
    ``capacity`` delivered ids (a bounded LRU) catches them with bounded memory.

    Why not "drop every id <= a low-water mark": change ids come from a sequence,
    which is not commit order; a long transaction can commit an id far below ids
    already delivered, and a mark would silently drop it. The LRU fails in the
    safe direction instead: a replayed id older than the last ``capacity``
    deliveries is delivered twice, a new id is never dropped.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, change_id: str) -> bool:
        """Remember ``change_id``; False if it was already remembered (a duplicate)."""
        if change_id in self._ids:
            self._ids.move_to_end(change_id)
            return False
        self._ids[change_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


_POSITION = re.compile(r"([0-9]{1,19}):([0-9]{1,19}):((?:[0-9]{1,19})(?:,[0-9]{1,19}){0,999})?")


class Position:
    """An exact log position (``head:xmax:open,txids``), as a snapshot hands it out.

    A state taken at this position already holds every change it does not see as
    *after* it. A resume by change id replays a window before that id, and the
    window can reach back before the snapshot the subscription started from
    (``tx_xmin`` of a row is held low by any long transaction, in any database of
    the cluster). The client never saw those changes' ids, since the snapshot's
    rows stood for them, so the id filter would let them through and move rows
    back to older versions; ``holds`` recognises them.
    """

    __slots__ = ("head", "pending", "xmax")

    def __init__(self, head: int, xmax: int, pending: frozenset[int]) -> None:
        self.head = head
        self.xmax = xmax
        self.pending = pending

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """The position ``text`` encodes, or None if it is a change id (or garbage)."""
        match = _POSITION.fullmatch(text)
        if match is None:
            return None
        pending = match.group(3)
        return cls(
            int(match.group(1)),
            int(match.group(2)),
            frozenset(int(x) for x in pending.split(",")) if pending else frozenset(),
        )

    def holds(self, frame: dict[str, Any]) -> bool:
        """Whether the state at this position already reflects change ``frame``
        (the gateway's rule: a change is after the position iff its id is above
        ``head`` or its transaction was open then). Unknown fields: not held."""
        try:
            change_id, txid = int(frame["id"]), int(frame["txid"])
        except (KeyError, TypeError, ValueError):
            return False
        return change_id <= self.head and txid < self.xmax and txid not in self.pending


def parse_target(target: str) -> tuple[str | None, str]:
    """Split a ``pgcast listen`` target into ``(schema, table)``.

    PostgreSQL identifier rules: unquoted parts are lowercased, double-quoted parts
    keep their case and may contain dots (``""`` is a literal quote). ``orders`` ->
    ``(None, "orders")``; ``Audit.Events`` -> ``("audit", "events")``;
    ``"Booking"`` -> ``(None, "Booking")``.
    """
    parts: list[str] = []
    i, n = 0, len(target)
    while True:
        if i < n and target[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise IdentifierError(
                        f"unterminated quoted identifier in {target!r}",
                        hint='close the quote: "MyTable"',
                    )
                if target[i] == '"':
                    if i + 1 < n and target[i + 1] == '"':
                        chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(target[i])
                i += 1
            part = "".join(chars)
        else:
            end = target.find(".", i)
            end = n if end == -1 else end
            part = target[i:end].strip().lower()
            if '"' in part:
                raise IdentifierError(f"stray quote in {target!r}")
            i = end
        if not part:
            raise IdentifierError(
                f"empty name in {target!r}", hint='use table, schema.table or "Table"'
            )
        parts.append(part)
        if i >= n:
            break
        if target[i] != ".":
            raise IdentifierError(f"unexpected {target[i]!r} after a quoted name in {target!r}")
        i += 1
    if len(parts) > 2:
        raise IdentifierError(
            f"too many dots in {target!r}", hint="use table or schema.table (quote names with dots)"
        )
    if len(parts) == 1:
        return None, parts[0]
    return parts[0], parts[1]
