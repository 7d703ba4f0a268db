"""The hub: which subscriptions does a change (or a channel message) go to?

Pure and synchronous. Subscriptions are indexed by table; within a table, a
subscription whose filter has an un-negated ``eq`` condition is indexed by that
column's value, so the cost of routing a change depends on the number of
subscriptions it could match, not on the number of subscriptions to the table.

An UPDATE matches a filter when the new row OR the old row matches it, so a
subscriber learns that a row left its filter (its mirror then drops the row). A
DELETE is matched on the old row. A TRUNCATE reaches every subscription of the table
that wants TRUNCATE events, whatever its filter.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .events import (
    AS_DELETE,
    AS_INSERT,
    FULL,
    HIDDEN,
    ChangeEvent,
    Horizon,
    Row,
    View,
    subscription_prefix,
)
from .filters import MATCH_ALL, Filter, value_key

if TYPE_CHECKING:
    from .auth import RowRule
from .protocol import channel_message_prefix

TableKey = tuple[str, str]


class SubscriptionState(enum.Enum):
    CATCHING_UP = "catching_up"  # registered; live changes are buffered while a replay runs
    LIVE = "live"
    CLOSED = "closed"


class CatchUpBuffer(list[ChangeEvent]):
    """Live changes held for a catching-up subscription, at most ``limit`` of them.

    Past the limit further changes are dropped and ``overflowed`` is set: the
    catch-up then reads them from the log instead (pgcast.catch_up), so a client
    that is slow to take its replay costs bounded memory and loses nothing.
    """

    __slots__ = ("limit", "overflowed")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.overflowed = False

    def append(self, change: ChangeEvent) -> None:
        if len(self) >= self.limit:
            self.overflowed = True
            return
        super().append(change)

    def restart(self) -> None:
        """Forget what was held: the log has it (every held change is committed)."""
        self.clear()
        self.overflowed = False


class Subscription:
    """One client subscription to a table's changes or to a raw channel."""

    __slots__ = (
        "buffer",
        "channel",
        "columns",
        "events",
        "filter",
        "horizon",
        "id",
        "index_column",
        "owner",
        "prefix",
        "rule",
        "schema",
        "sole_eq",
        "state",
        "table",
    )

    def __init__(
        self,
        id: str,
        owner: Any,
        *,
        schema: str = "",
        table: str = "",
        channel: str | None = None,
        events: frozenset[str] = frozenset(),
        filter: Filter = MATCH_ALL,
        columns: frozenset[str] | None = None,
        rule: RowRule | None = None,
    ) -> None:
        self.id = id
        self.rule = rule
        self.owner = owner
        self.schema = schema
        self.table = table
        self.channel = channel
        self.events = events
        self.columns = columns
        self.prefix = channel_message_prefix(id) if channel else subscription_prefix(id)
        self.state = SubscriptionState.LIVE
        self.buffer: CatchUpBuffer | None = None
        # After a snapshot or replay: only changes after its horizon are still owed.
        # The listener may lag behind the snapshot (it was reconnecting, say) and
        # deliver a change the snapshot already holds: that would move a row back.
        self.horizon: Horizon | None = None
        self.set_filter(filter)

    def set_filter(self, filter: Filter) -> None:
        """Use ``filter`` (remove the subscription from the hub first, add it after)."""
        self.filter = filter
        condition = filter.index_condition()
        self.index_column = condition.column if condition else None
        # The filter is exactly the eq condition it is indexed by: a hit in its index
        # bucket is a match (see Hub.match), no need to evaluate the filter again.
        self.sole_eq = condition is not None and len(filter.conditions) == 1

    def begin_catch_up(self, limit: int = 1_000_000) -> None:
        """Buffer up to ``limit`` live changes until the replay is done (see finish_catch_up)."""
        self._expect(SubscriptionState.LIVE)
        self.state = SubscriptionState.CATCHING_UP
        self.buffer = CatchUpBuffer(limit)

    def finish_catch_up(
        self, replayed_ids: set[int], is_after: Callable[[ChangeEvent], bool] | None = None
    ) -> list[ChangeEvent]:
        """Go live; return the buffered changes still owed to the client.

        That is those the replay did not send and, given ``is_after`` (the replay's
        horizon), only those committed after the replay's snapshot.
        """
        self._expect(SubscriptionState.CATCHING_UP)
        buffered: list[ChangeEvent] = self.buffer or []
        self.buffer = None
        self.state = SubscriptionState.LIVE
        return [
            change
            for change in buffered
            if change.id not in replayed_ids and (is_after is None or is_after(change))
        ]

    def close(self) -> None:
        self.state = SubscriptionState.CLOSED
        self.buffer = None

    def _expect(self, state: SubscriptionState) -> None:
        if self.state is not state:
            raise RuntimeError(
                f"subscription {self.id!r} is {self.state.value}, expected {state.value}"
            )

    def view(self, change: ChangeEvent) -> View:
        """How this subscription sees ``change``: HIDDEN, FULL, AS_INSERT or AS_DELETE.

        The filter selects (UPDATE: on the new or the old row); the row rule (a
        token's authorization, when there is one) decides which row images may be
        shown at all.
        """
        op = change.op
        if op not in self.events:
            return HIDDEN
        if self.horizon is not None and not self.horizon.is_after(change):
            return HIDDEN
        if op == "TRUNCATE":
            return FULL
        rule, conditions = self.rule, self.filter.conditions
        if rule is None:
            if not conditions:
                return FULL
            if op == "INSERT":
                return FULL if self.filter.matches(change.record) else HIDDEN
            if op == "DELETE":
                return FULL if self.filter.matches(change.old_record) else HIDDEN
            matched = self.filter.matches(change.record) or self.filter.matches(change.old_record)
            return FULL if matched else HIDDEN
        record, old_record = change.record, change.old_record
        record_visible = record is not None and rule.matches(record)
        old_visible = old_record is not None and rule.matches(old_record)
        record_selected = record_visible and (not conditions or self.filter.matches(record))
        old_selected = old_visible and (not conditions or self.filter.matches(old_record))
        if op == "INSERT":
            return FULL if record_selected else HIDDEN
        if op == "DELETE":
            return FULL if old_selected else HIDDEN
        if record_visible and old_visible:
            return FULL if record_selected or old_selected else HIDDEN
        if record_selected:
            return AS_INSERT  # the row came into view
        if old_selected:
            return AS_DELETE  # the row left view
        return HIDDEN

    def view_unread(self, change: ChangeEvent) -> View:
        """How this subscription sees ``change`` without reading its row images.

        For a change whose images cannot be read (RowImageError): FULL only where
        nothing has to be read (no filter, no row rule: the text is passed through
        as PostgreSQL wrote it); HIDDEN wherever a filter or a rule would have to
        decide (fail closed).
        """
        op = change.op
        if op not in self.events:
            return HIDDEN
        if self.horizon is not None and not self.horizon.is_after(change):
            return HIDDEN
        if op == "TRUNCATE" or (self.rule is None and not self.filter.conditions):
            return FULL
        return HIDDEN

    def wants(self, change: ChangeEvent) -> bool:
        """Whether this subscription receives ``change`` at all (replays, snapshots)."""
        return self.view(change) != HIDDEN

    def __repr__(self) -> str:
        target = self.channel or f"{self.schema}.{self.table}"
        return f"<Subscription {self.id!r} {target} {self.state.value}>"


class _TableIndex:
    __slots__ = ("by_value", "everything", "unindexed")

    def __init__(self) -> None:
        self.everything: set[Subscription] = set()
        self.unindexed: set[Subscription] = set()
        # column -> index key -> subscriptions whose first eq condition is on that column
        self.by_value: dict[str, dict[Any, set[Subscription]]] = {}


class Hub:
    """Routes changes and channel messages to subscriptions."""

    def __init__(self) -> None:
        self._tables: dict[TableKey, _TableIndex] = {}
        self._channels: dict[str, set[Subscription]] = {}

    # tables -----------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        """Index a table subscription."""
        index = self._tables.setdefault((sub.schema, sub.table), _TableIndex())
        index.everything.add(sub)
        condition = sub.filter.index_condition()
        if condition is None:
            index.unindexed.add(sub)
            return
        buckets = index.by_value.setdefault(condition.column, {})
        for key in condition.index_keys():
            buckets.setdefault(key, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        """Forget a table subscription (no error if it is unknown)."""
        key = (sub.schema, sub.table)
        index = self._tables.get(key)
        if index is None or sub not in index.everything:
            return
        index.everything.discard(sub)
        condition = sub.filter.index_condition()
        if condition is None:
            index.unindexed.discard(sub)
        else:
            buckets = index.by_value[condition.column]
            for value in condition.index_keys():
                bucket = buckets.get(value)
                if bucket is not None:
                    bucket.discard(sub)
                    if not bucket:
                        del buckets[value]
            if not buckets:
                del index.by_value[condition.column]
        if not index.everything:
            del self._tables[key]

    def match(self, change: ChangeEvent) -> list[tuple[Subscription, View]]:
        """The subscriptions that must receive ``change``, each with how it sees it.

        Raises RowImageError when a row image that a filter or rule must read cannot
        be read; route the change with ``match_unread`` then.
        """
        index = self._tables.get((change.schema, change.table))
        if index is None:
            return []
        routed: list[tuple[Subscription, View]] = []
        op = change.op
        if op == "TRUNCATE" or not index.by_value:
            for sub in index.everything:
                view = sub.view(change)
                if view:
                    routed.append((sub, view))
            return routed
        hits: list[set[Subscription]] = []
        for row in _rows(change):
            for column, buckets in index.by_value.items():
                key = value_key(row.get(column))
                if key is not None:
                    bucket = buckets.get(key)
                    if bucket:
                        hits.append(bucket)
        candidates: set[Subscription]
        if len(hits) == 1 and not index.unindexed:
            candidates = hits[0]
        else:
            candidates = set(index.unindexed).union(*hits)
        for sub in candidates:
            if sub.sole_eq and sub.rule is None and sub.horizon is None:
                # Found in its own eq bucket under the value of the new or old row:
                # value_key equality is exactly the eq condition's match (filters.py),
                # so the filter matches and an UPDATE matching either side is FULL.
                if op in sub.events:
                    routed.append((sub, FULL))
                continue
            view = sub.view(change)
            if view:
                routed.append((sub, view))
        return routed

    def match_unread(self, change: ChangeEvent) -> list[tuple[Subscription, View]]:
        """``match`` for a change whose row images cannot be read (never raises):
        only the subscriptions that need not read them (Subscription.view_unread)."""
        index = self._tables.get((change.schema, change.table))
        if index is None:
            return []
        routed = ((sub, sub.view_unread(change)) for sub in index.everything)
        return [(sub, view) for sub, view in routed if view]

    def tables(self) -> Iterator[TableKey]:
        return iter(self._tables)

    def table_counts(self) -> Iterator[tuple[TableKey, int]]:
        """Each subscribed table with its number of subscriptions."""
        return ((key, len(index.everything)) for key, index in self._tables.items())

    def subscription_count(self) -> int:
        tables = sum(len(index.everything) for index in self._tables.values())
        return tables + sum(len(subs) for subs in self._channels.values())

    # channels ---------------------------------------------------------------

    def add_channel(self, sub: Subscription) -> bool:
        """Index a channel subscription; True if it is the channel's first (LISTEN it)."""
        assert sub.channel is not None
        subs = self._channels.setdefault(sub.channel, set())
        subs.add(sub)
        return len(subs) == 1

    def remove_channel(self, sub: Subscription) -> bool:
        """Forget a channel subscription; True if it was the channel's last (UNLISTEN it)."""
        assert sub.channel is not None
        subs = self._channels.get(sub.channel)
        if subs is None or sub not in subs:
            return False
        subs.discard(sub)
        if subs:
            return False
        del self._channels[sub.channel]
        return True

    def channel_subscribers(self, channel: str) -> set[Subscription]:
        return self._channels.get(channel, set())

    def channels(self) -> list[str]:
        return list(self._channels)


def _rows(change: ChangeEvent) -> list[Row]:
    if change.op == "INSERT":
        rows = [change.record]
    elif change.op == "DELETE":
        rows = [change.old_record]
    else:
        rows = [change.record, change.old_record]
    return [row for row in rows if row is not None]
