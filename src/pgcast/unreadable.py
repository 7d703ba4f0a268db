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

from .exceptions import RowImageError

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
