"""Row images the gateway cannot read: withheld where they would be evaluated, counted.

Every number ``to_jsonb`` writes is read exactly (exactjson), so what remains
unreadable is rare (a jsonb value nested deeper than Python's recursion limit, or
a bug). One such change or snapshot row must never cost another its delivery, nor
be shown to a subscriber whose filter or row rule could not approve it: it goes
only to subscriptions that read nothing (no filter, no rule), as PostgreSQL's text.
The log is bounded: a tenant writing such rows in a loop cannot flood it.
"""

from __future__ import annotations

import logging

from .events import ChangeEvent
from .exactjson import parse_row, project_row
from .exceptions import RowImageError
from .hub import Subscription

logger = logging.getLogger("pgcast.delivery")

LOG_FIRST = 10  # log each of the first ones, then one in LOG_EVERY
LOG_EVERY = 1000


class UnreadableRows:
    """Counts withheld deliveries (``pgcast_unreadable_rows_total``) and logs them, bounded."""

    def __init__(self) -> None:
        self.count = 0

    def withheld(self, what: str, exc: BaseException) -> None:
        """``what`` ("change 42 of public.orders", ...) was withheld because of ``exc``."""
        self.count += 1
        if self.count <= LOG_FIRST or self.count % LOG_EVERY == 0:
            logger.error(
                "%s withheld from subscriptions with a filter or row rule: %s: %s "
                "(%d unreadable so far)",
                what,
                type(exc).__name__,
                str(exc)[:200],
                self.count,
                exc_info=not isinstance(exc, RowImageError),
            )


def describe(change: ChangeEvent) -> str:
    return f"change {change.id} ({change.op} on {change.schema}.{change.table})"


def body_for(sub: Subscription, change: ChangeEvent, unreadable: UnreadableRows) -> bytes | None:
    """``change`` encoded as ``sub`` sees it (None: hidden from it). An unreadable change
    goes only where nothing has to read it (no filter, no rule, all columns)."""
    try:
        view = sub.view(change)
        return change.body(sub.columns, view) if view else None
    except RowImageError as exc:
        unreadable.withheld(describe(change), exc)
        view = sub.view_unread(change)
        if not view or sub.columns is not None:
            return None
        return change.body(None, view)


def select_rows(
    rows: list[str], sub: Subscription, keep: frozenset[str] | None, unreadable: UnreadableRows
) -> list[bytes]:
    """Snapshot rows (JSON text) that pass the subscription's filter, projected to ``keep``.

    A row is sent as PostgreSQL wrote it; a projection keeps each value's text. A row
    that cannot be read is withheld (and counted): its filter, rule and projection
    cannot be decided.
    """
    selected: list[bytes] = []
    for text in rows:
        try:
            row = parse_row(text)
            if sub.filter.conditions and not sub.filter.matches(row):
                continue
            if sub.rule is not None and not sub.rule.matches(row):
                continue
            if keep is not None and not keep.issuperset(row):
                text = project_row(text, keep)
        except RowImageError as exc:
            unreadable.withheld(f"a snapshot row of {sub.schema}.{sub.table}", exc)
            continue
        selected.append(text.encode())
    return selected
