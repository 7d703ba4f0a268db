"""Resume from the stream: a ``subscribe`` with ``since`` served from JetStream while
the stream still holds the position, so a fleet of reconnecting clients does not
read the log (a ``since`` change id costs one point lookup of its transaction id).

Where to start. Every stream message carries a position G (codec.py): the reader's
cursor after its read (exact, on a read's last message; every change *not after* G
is at or before the message) or before its read (every change not after G is
before it). Positions grow with the stream sequence, so the last message whose G
is "before" the client's position is found by binary search (``get_msg``, about
log2(messages) requests), and the replay starts right after it (or at it).

* ``since`` an exact position P (a welcome's or snapshot's): G is before P when
  every change after P is after G: ``G.head <= P.head``, ``G.xmax <= P.xmax``, and
  every transaction open in P is open in G or younger than G. The replay sends
  exactly the changes after P (a snapshot's rows must not move back).
* ``since`` a change id X: the client holds X, hence every change of the reads
  before the one that read X (a change committed after a replay's horizon but read
  before X would have made that read see X too). G is before when X is after G;
  the replay sends every change from there on, and the client drops the few of X's
  own read it already holds, as it does the log replay's window.

Where to stop: at the last sequence the node had received when the replay began;
its position is the replay's horizon, and the live feed owes everything after it
(catch_up.py). If the stream does not reach back far enough, or anything fails
before the first page, the caller replays from the log instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence

import nats.js.errors
from nats.js import api

from pgcast.events import ChangeEvent, Horizon
from pgcast.exceptions import BrokerError
from pgcast.log_replay import Acquire

from . import codec
from .feed import StreamFeed
from .link import NATS_ERRORS

__all__ = ["ResumePoint", "stream_replay"]

logger = logging.getLogger("pgcast.broker")

PAGE = 500
_ANCHOR = "SELECT txid::text::bigint FROM pgcast.changes WHERE id = $1"


class ResumePoint:
    """Which changes a client at ``since`` lacks, and which stream positions are
    before it (see the module doc)."""

    def __init__(self, exact: Horizon | None, change_id: int = 0, txid: int = 0) -> None:
        self.exact = exact
        self.change_id = change_id
        self.txid = txid
        self.head = exact.head if exact is not None else change_id

    def lacks(self, change: ChangeEvent) -> bool:
        return self.exact is None or self.exact.is_after(change)

    def follows(self, g: Horizon) -> bool:
        """Whether every change this client lacks is after position ``g``."""
        p = self.exact
        if p is None:  # the change X is after g: read after g, as is all that follows
            return self.change_id > g.head or self.txid >= g.xmax or self.txid in g.pending
        return (
            g.head <= p.head
            and g.xmax <= p.xmax
            and all(x in g.pending or x >= g.xmax for x in p.pending)
        )


async def resume_point(acquire: Acquire, since: int | Horizon) -> ResumePoint | None:
    if isinstance(since, Horizon):
        return ResumePoint(since)
    async with acquire() as conn:
        txid = await conn.fetchval(_ANCHOR, since)
    if txid is None:  # pruned, or never written: the log's replay decides
        return None
    return ResumePoint(None, since, int(txid))


async def stream_replay(
    feed: StreamFeed,
    acquire: Acquire,
    *,
    since: int | Horizon,
    schema: str,
    table: str,
    events: Sequence[str],
) -> AsyncGenerator[list[ChangeEvent] | Horizon, None] | None:
    """The replay's items (its horizon first, then pages), or None: use the log."""
    horizon, end = feed.position, feed.last_seq
    if horizon is None or not feed.started:
        return None
    point = await resume_point(acquire, since)
    if point is None or point.head > horizon.head:
        # Unknown, or ahead of what this node has: the log's checks apply.
        return None
    try:
        start = await _start_seq(feed, point, end)
    except NATS_ERRORS:
        return None
    if start is None:
        return None
    return _pages(feed, start, end, horizon, point, schema, table, frozenset(events))


async def _position_at(feed: StreamFeed, seq: int) -> tuple[Horizon, bool] | None:
    msg = await feed.link.js.get_msg(feed.link.stream, seq)
    entry = codec.decode(msg.data or b"", msg.headers)
    return None if entry.position is None else (entry.position, entry.exact)


async def _start_seq(feed: StreamFeed, point: ResumePoint, end: int) -> int | None:
    """The first sequence that may hold a change the client lacks (None: not held)."""
    info = await feed.link.stream_info()
    low: int = info.state.first_seq
    high: int = min(end, info.state.last_seq)
    if high < low:
        return None
    try:
        first = await _position_at(feed, low)
    except (nats.js.errors.NotFoundError, BrokerError):
        return None
    if first is None or not point.follows(first[0]):
        return None  # the stream begins after the position: it does not hold it
    best = low + 1 if first[1] else low
    while low < high:
        middle = (low + high + 1) // 2
        at = await _position_at(feed, middle)
        if at is not None and point.follows(at[0]):
            low = middle
            best = middle + 1 if at[1] else middle
        else:
            high = middle - 1
    return best


async def _pages(
    feed: StreamFeed,
    start: int,
    end: int,
    horizon: Horizon,
    point: ResumePoint,
    schema: str,
    table: str,
    events: frozenset[str],
) -> AsyncGenerator[list[ChangeEvent] | Horizon, None]:
    yield horizon
    if start > end:
        return
    link = feed.link
    sub = None
    try:
        sub = await link.js.subscribe(
            link.subject,
            stream=link.stream,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )
        page: list[ChangeEvent] = []
        seq = start - 1
        while seq < end:
            msg = await sub.next_msg(timeout=10)
            got = msg.metadata.sequence.stream
            if got != seq + 1:  # a consumer reset skipped some: the caller retries
                raise BrokerError(f"stream replay skipped from {seq} to {got}")
            seq = got
            change = codec.decode(msg.data, msg.headers).change
            if (
                change is not None
                and change.table == table
                and change.schema == schema
                and change.op in events
                and point.lacks(change)
            ):
                page.append(change)
                if len(page) >= PAGE:
                    yield page
                    page = []
        if page:
            yield page
    except NATS_ERRORS as exc:
        if isinstance(exc, BrokerError):
            raise
        raise BrokerError(f"stream replay failed: {exc}") from None
    finally:
        if sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
