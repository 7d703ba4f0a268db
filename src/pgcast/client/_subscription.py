"""A subscription of the Python client: its state, its queue and its resume position."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pgcast.client._protocol import (
    Position,
    RecentIds,
    subscribe_frame,
)
from pgcast.exceptions import (
    ClientClosed,
    ClientError,
)

if TYPE_CHECKING:
    from pgcast.client._core import ClientCore

logger = logging.getLogger("pgcast.client")


class SubscriptionState(enum.StrEnum):
    NEW = "new"
    """Created, not entered yet."""
    PENDING = "pending"
    """Entered; the gateway has not accepted it yet."""
    LIVE = "live"
    """Accepted (``subscribed``, or a replayed change/resync arrived first)."""
    SUSPENDED = "suspended"
    """The consumer fell behind: unsubscribed until it drains half of its queue."""
    CLOSED = "closed"
    """Exited, or the client closed. Final."""
    FAILED = "failed"
    """Refused or the connection was rejected; iteration raises. Final."""


# -- subscriptions ------------------------------------------------------------------


class Subscription:
    """One table or channel subscription: ``async with`` it, then ``async for`` it.

    Iteration yields the frames addressed to this subscription, as dicts exactly
    as received: ``change`` frames for a table (``message`` frames for a channel)
    and ``resync`` frames, which mean the gateway's change log no longer covers the
    resume position: refetch the table, then keep consuming. Check ``frame["type"]``.

    Slow consumers: at most ``queue_size`` frames are buffered. When a table
    subscription's buffer is full it is *suspended*: further changes are dropped
    and it is unsubscribed; once the consumer has drained half of the buffer it
    resubscribes with ``since`` = the last buffered id, so nothing is lost and
    memory stays bounded. Raw channel messages cannot be replayed (NOTIFY has no
    log): when the buffer is full new messages are dropped and counted in
    :attr:`dropped`. Channel messages sent while disconnected are lost too.
    """

    def __init__(
        self,
        client: ClientCore,
        key: str,
        request: dict[str, Any],
        *,
        since: str | None,
        queue_size: int,
        dedupe_window: int,
    ) -> None:
        self._client = client
        self.id = key
        """Client-side id; wire ids are ``id``, then ``id-2``, ``id-3``... per resubscribe."""
        self._request = request
        self.is_channel = "channel" in request
        self.target = (
            f"channel {request['channel']}"
            if self.is_channel
            else f"{request.get('schema') or 'public'}.{request['table']}"
        )
        self.state = SubscriptionState.NEW
        self.last_id: str | None = None
        """The id of the last change this subscription delivered (buffered)."""
        self.resume_from: str | None = since
        """Where to resume when no change was delivered yet: ``since``, else the
        ``welcome`` position of the connection it was first sent on."""
        self.dropped = 0
        """Channel messages dropped because the consumer was too slow."""
        self.duplicates = 0
        """Replayed changes dropped: their id was already delivered, or they predate
        the snapshot (or ``since`` position) the subscription started from."""
        self.wire_id: str | None = None
        self._attempt = 0
        self._seen = RecentIds(dedupe_window)
        # The exact position this subscription's state starts from (its snapshot's,
        # or a position given as ``since``): changes it holds are never applied.
        self._start = None if since is None else Position.parse(since)
        self._retry_delays: Iterator[float] | None = None  # while the gateway says unavailable
        self._buffer: deque[dict[str, Any]] = deque()
        self._queue_size = queue_size
        self._wakeup = asyncio.Event()
        self._accepted = asyncio.Event()
        self._error: ClientError | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.target} {self.state.value}>"

    # -- caller side

    async def __aenter__(self) -> Self:
        if self.state is not SubscriptionState.NEW:
            raise ClientError(f"subscription {self.id} is {self.state.value}; expected new")
        self.state = SubscriptionState.PENDING
        await self._client._register(self)
        await self._accepted.wait()
        if self._error is not None:
            raise self._error
        if self.state is SubscriptionState.CLOSED:
            raise ClientClosed(f"the client closed before {self.target} was subscribed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client._unregister(self)
        self._end(SubscriptionState.CLOSED)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.state is SubscriptionState.NEW:
            raise ClientError(
                f"subscription {self.id} is new; expected entered",
                hint="use `async with client.subscribe(...) as sub:` before iterating",
            )
        while True:
            if self._buffer:
                frame = self._buffer.popleft()
                if (
                    self.state is SubscriptionState.SUSPENDED
                    and len(self._buffer) <= self._queue_size // 2
                ):
                    self.state = SubscriptionState.LIVE
                    await self._client._resubscribe(self)
                return frame
            if self._error is not None:
                raise self._error
            if self.state is SubscriptionState.CLOSED:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    # -- client side (called by the reader)

    def _next_wire_id(self) -> str:
        self._attempt += 1
        self.wire_id = self.id if self._attempt == 1 else f"{self.id}-{self._attempt}"
        return self.wire_id

    def _subscribe_frame(self, wire_id: str) -> dict[str, Any]:
        since = None if self.is_channel else (self.last_id or self.resume_from)
        return subscribe_frame(wire_id, **self._request, since=since)

    def _accept(self) -> None:
        self._retry_delays = None
        if self.state is SubscriptionState.PENDING:
            self.state = SubscriptionState.LIVE
        self._accepted.set()

    def _push(self, frame: dict[str, Any]) -> None:
        self._buffer.append(frame)
        self._wakeup.set()

    def _on_change(self, frame: dict[str, Any]) -> bool:
        """Buffer a change unless already seen; True if the buffer overflowed."""
        if self.state is SubscriptionState.SUSPENDED:
            return False  # will be replayed after the resubscribe
        self._accept()
        raw_id = frame.get("id")
        change_id = str(raw_id) if raw_id is not None else None
        if (change_id is not None and change_id in self._seen) or (
            self._start is not None and self._start.holds(frame)
        ):
            self.duplicates += 1
            return False
        if len(self._buffer) >= self._queue_size:
            self.state = SubscriptionState.SUSPENDED
            return True
        if change_id is not None:
            self._seen.add(change_id)
            self.last_id = change_id
        self._push(frame)
        return False

    def _on_message(self, frame: dict[str, Any]) -> None:
        self._accept()
        if len(self._buffer) >= self._queue_size:
            if self.dropped == 0:
                logger.warning("%s: consumer too slow, dropping channel messages", self.target)
            self.dropped += 1
            return
        self._push(frame)

    def _on_snapshot(self, frame: dict[str, Any]) -> None:
        self._accept()
        if frame.get("done") and self.last_id is None and frame.get("position") is not None:
            # Resume from the snapshot's position on any later resubscribe.
            self.resume_from = str(frame["position"])
            self._start = Position.parse(self.resume_from)
            self._request["snapshot"] = False
        # Beyond queue_size on purpose: snapshot chunks are bounded by the table.
        self._push(frame)

    def _on_resync(self, frame: dict[str, Any]) -> None:
        if self.state is SubscriptionState.SUSPENDED:
            return  # the resubscribe will get its own resync
        self._accept()
        if frame.get("position") is not None:
            # The old position is gone for good: a resubscribe before the next change
            # resumes where the stream now continues, not with another resync.
            self.resume_from = str(frame["position"])
            self._start = Position.parse(self.resume_from)
            self.last_id = None
        # Beyond queue_size on purpose: a resync must never be lost, and there is
        # at most one per subscribe.
        self._push(frame)

    def _fail(self, error: ClientError) -> None:
        if self.state in (SubscriptionState.CLOSED, SubscriptionState.FAILED):
            return
        self._error = error
        self.state = SubscriptionState.FAILED
        self._accepted.set()
        self._wakeup.set()

    def _end(self, state: SubscriptionState) -> None:
        if self.state is not SubscriptionState.FAILED:
            self.state = state
        self._accepted.set()
        self._wakeup.set()
