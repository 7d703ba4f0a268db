"""Presence and broadcast on one gateway node: topics, limits, the bus, the timers.

:class:`Realtime` is what every transport calls (the native protocol's session, the
Phoenix/Supabase endpoint, the HTTP ``POST /api/broadcast`` route, the Python API).
A transport decides who may do what (``pgcast.auth.Grants.topic_rights``) and says
so in the :class:`pgcast.topics.Member` it joins; this module enforces the rights and
the limits (``pgcast.auth.Limits``) the same way for all of them, and raises
:class:`pgcast.exceptions.ProtocolError` with the wire code of each refusal.

Across nodes it goes through a :class:`pgcast.bus.Bus`: presence with
:class:`pgcast.tracker.Tracker` (subject ``presence``), broadcasts as they are
(subject ``broadcast``). Bus messages leave through one queue in order; it holds at
most ``OUTGOING_LIMIT`` messages (a presence diff dropped on overflow is repaired by
the peers' sync; a broadcast is refused with ``unavailable``).

Bound on a dead node: its peers drop its entries ``node_timeout`` seconds after its
last heartbeat, checked every ``sweep_interval`` seconds; with the defaults (4 s
heartbeats, 12 s timeout, 1 s sweep) entries of a node that died leave everywhere
within 13 s. A connection that closes, or leaves its topic, leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson

from . import broadcast as broadcast_
from .auth.limits import Limits
from .broadcast import Broadcast
from .bus import Bus, LocalBus
from .exceptions import BusError, ProtocolError
from .metrics import Registry
from .presence import Diff, Presence
from .protocol import ErrorCode
from .rate_limit import RateLimit
from .topics import Member, Topics
from .tracker import SUBJECT as PRESENCE_SUBJECT
from .tracker import Tracker

__all__ = ["MAX_KEY_LENGTH", "OUTGOING_LIMIT", "Realtime"]

logger = logging.getLogger("pgcast.realtime")

OUTGOING_LIMIT: Final = 10_000
MAX_KEY_LENGTH: Final = 255
_RESERVED_META = ("phx_ref", "phx_ref_prev")


class _Rates:
    __slots__ = ("broadcast", "presence")

    def __init__(self, limits: Limits, clock: Callable[[], float]) -> None:
        self.presence = RateLimit(limits.presence_rate, clock=clock)
        self.broadcast = RateLimit(limits.broadcast_rate, clock=clock)


class Realtime:
    """Topics, presence and broadcast of one node (see the module docstring)."""

    def __init__(
        self,
        bus: Bus | None = None,
        limits: Limits | None = None,
        *,
        node: str | None = None,
        heartbeat_interval: float = 4.0,
        node_timeout: float = 12.0,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus: Bus = bus if bus is not None else LocalBus()
        self.limits = limits if limits is not None else Limits()
        self.node = node or uuid.uuid4().hex[:12]
        self.clock = clock
        self.topics = Topics()
        self.presence = Presence(self.node)
        self.tracker = Tracker(
            self.presence,
            heartbeat_interval=heartbeat_interval,
            node_timeout=node_timeout,
            clock=clock,
        )
        self.sweep_interval = sweep_interval
        self._rates: dict[object, _Rates] = {}
        self._outgoing: asyncio.Queue[tuple[str, bytes, asyncio.Future[None] | None]] | None
        self._outgoing = None
        self._tasks: list[asyncio.Task[None]] = []
        self.broadcasts_in = 0  # broadcasts accepted on this node (clients, HTTP, API)
        self.bus_errors = 0
        self.bus.subscribe(PRESENCE_SUBJECT, self._on_presence)
        self.bus.subscribe(broadcast_.SUBJECT, self._on_broadcast)

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the bus, ask the peers for their state, start heartbeats."""
        self._outgoing = asyncio.Queue(OUTGOING_LIMIT)
        await self.bus.start()
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="pgcast-realtime-send"),
            asyncio.create_task(self._heartbeat_loop(), name="pgcast-realtime-heartbeat"),
        ]
        for task in self._tasks:
            task.add_done_callback(_log_failure)
        self._enqueue(PRESENCE_SUBJECT, self.tracker.hello())

    async def stop(self, *, timeout: float = 2.0) -> None:
        """Say goodbye (peers drop this node's entries at once), then disconnect."""
        if self._outgoing is not None and self._tasks:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            with contextlib.suppress(asyncio.QueueFull):
                self._outgoing.put_nowait((PRESENCE_SUBJECT, self.tracker.goodbye(), done))
                with contextlib.suppress(TimeoutError, BusError):
                    async with asyncio.timeout(timeout):
                        await done
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while self._outgoing is not None and not self._outgoing.empty():
            _, _, waiter = self._outgoing.get_nowait()
            if waiter is not None and not waiter.done():
                waiter.set_exception(BusError("the gateway is stopping"))
        await self.bus.close()

    def register_metrics(self, registry: Registry) -> None:
        registry.gauge(
            "pgcast_topics", "Topics with members on this node.", lambda: len(self.topics)
        )
        registry.gauge(
            "pgcast_presence_entries",
            "Presence entries this node knows, of every node.",
            lambda: len(self.presence),
        )
        registry.gauge(
            "pgcast_presence_peers",
            "Other gateway nodes heard on the bus.",
            lambda: len(self.tracker.peers),
        )
        registry.counter(
            "pgcast_broadcasts_total",
            "Broadcasts accepted on this node.",
            lambda: self.broadcasts_in,
        )
        registry.counter(
            "pgcast_bus_errors_total",
            "Bus messages that could not be sent (bus down or backed up).",
            lambda: self.bus_errors,
        )

    def health(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "peers": len(self.tracker.peers),
            "topics": len(self.topics),
            "presence_entries": len(self.presence),
            "bus_errors": self.bus_errors,
        }

    # memberships ---------------------------------------------------------------------------

    def join(self, member: Member, *, announce: Callable[[], None] | None = None) -> None:
        """Add ``member``; it receives the topic's presence state at once (if it asked
        for presence), after ``announce()`` (the transport's "joined" reply).
        ProtocolError ``too_many_topics`` / ``duplicate_id``."""
        limit = self.limits.max_topics
        already = self.topics.get(member.owner, member.topic) is not None
        if limit and not already and self.topics.joined(member.owner) >= limit:
            raise ProtocolError(ErrorCode.TOO_MANY_TOPICS, f"at most {limit} topics per connection")
        self.topics.add(member)
        if announce is not None:
            announce()
        if member.options.presence:
            member.sink.presence_state(member.topic, self.presence.state(member.topic))

    def leave(self, owner: object, topic: str) -> None:
        """``owner`` leaves ``topic`` (its presence there leaves too)."""
        self._member(owner, topic)
        self._local_diffs([self.presence.untrack(owner, topic)])
        self.topics.remove(owner, topic)

    def closed(self, owner: object) -> None:
        """``owner``'s connection closed: it leaves every topic, its presence at once."""
        self._rates.pop(owner, None)
        self._local_diffs(self.presence.untrack_owner(owner))
        self.topics.remove_owner(owner)

    # presence ------------------------------------------------------------------------------

    def track(self, owner: object, topic: str, key: str, state: Any) -> None:
        """``owner`` tracks ``state`` (a JSON object) under ``key`` on a joined ``topic``."""
        member = self._member(owner, topic)
        if not member.can_track:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"this token may not track presence on {topic!r}"
            )
        if not self._rate(owner).presence.allow():
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many presence updates; slow down")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"presence key must be 1 to {MAX_KEY_LENGTH} printable characters",
            )
        if not isinstance(state, dict):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "presence state must be a JSON object")
        state = {name: value for name, value in state.items() if name not in _RESERVED_META}
        try:
            size = len(orjson.dumps(state))
        except TypeError as exc:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"presence state is not JSON: {exc}"
            ) from None
        limit = self.limits.max_presence_bytes
        if size > limit:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"presence state is {size} bytes; at most {limit}"
            )
        members = self.limits.max_topic_members
        if (
            members
            and self.presence.tracked(owner, topic) is None
            and self.presence.count(topic) >= members
        ):
            raise ProtocolError(
                ErrorCode.TOPIC_FULL, f"topic {topic!r} has {members} presences, the most allowed"
            )
        self._local_diffs([self.presence.track(owner, topic, key, state)])

    def untrack(self, owner: object, topic: str) -> None:
        """``owner`` stops tracking on ``topic`` (nothing happens if it did not track)."""
        self._member(owner, topic)
        if not self._rate(owner).presence.allow():
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many presence updates; slow down")
        self._local_diffs([self.presence.untrack(owner, topic)])

    def presence_left(self, owner: object, topic: str) -> None:
        """Remove ``owner``'s presence on ``topic`` (no rate limit: the gateway's
        decision, e.g. a refreshed token that may no longer track there)."""
        self._local_diffs([self.presence.untrack(owner, topic)])

    def state(self, topic: str) -> dict[str, Any]:
        """The presence of ``topic`` on every node, in Phoenix's shape."""
        return self.presence.state(topic)

    # broadcast -----------------------------------------------------------------------------

    async def broadcast(
        self, topic: str, event: str, payload: Any, *, sender: object = None
    ) -> None:
        """Send ``event`` with ``payload`` to every member of ``topic`` on every node.

        ``sender``: the connection that sends it (it must have joined the topic with
        the right to broadcast; it receives its own broadcast only if it asked to);
        None: the server. Returns once the bus took the message (what an ``ack``
        means); ProtocolError ``unavailable`` when the other nodes could not be reached
        (this node's members got it)."""
        if sender is not None:
            member = self._member(sender, topic)
            if not member.can_broadcast:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN, f"this token may not broadcast on {topic!r}"
                )
            if not self._rate(sender).broadcast.allow():
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many broadcasts; slow down")
        message = Broadcast.build(
            topic, event, payload, max_bytes=self.limits.max_broadcast_bytes, sender=sender
        )
        self.broadcasts_in += 1
        self._deliver(message)
        done = asyncio.get_running_loop().create_future()
        if not self._enqueue(broadcast_.SUBJECT, message.to_bus(self.node), done):
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, "the bus to the other gateways is backed up; retry later"
            )
        try:
            await done
        except BusError as exc:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                f"delivered on this gateway only: the other gateways are unreachable ({exc})",
            ) from None

    # internals -----------------------------------------------------------------------------

    def _member(self, owner: object, topic: str) -> Member:
        member = self.topics.get(owner, topic)
        if member is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TOPIC, f"join topic {topic!r} first")
        return member

    def _rate(self, owner: object) -> _Rates:
        rates = self._rates.get(owner)
        if rates is None:
            rates = self._rates[owner] = _Rates(self.limits, self.clock)
        return rates

    def _deliver(self, message: Broadcast) -> None:
        for member in self.topics.members(message.topic):
            if (
                message.sender is not None
                and member.owner == message.sender
                and not member.options.receive_own
            ):
                continue
            try:
                member.sink.broadcast(message)
            except Exception:
                logger.exception("delivering a broadcast to %r failed", member)

    def _local_diffs(self, diffs: Iterable[Diff]) -> None:
        """This node's entries changed: tell the peers, then the local members."""
        for diff in diffs:
            data = self.tracker.publish_diff(diff)
            if data is not None:
                self._enqueue(PRESENCE_SUBJECT, data)
                self._deliver_diff(diff)

    def _deliver_diff(self, diff: Diff) -> None:
        if not diff or diff.topic not in self.topics:
            return
        joins, leaves = diff.joins_payload(), diff.leaves_payload()
        frames: dict[str, bytes] = {}
        for member in self.topics.members(diff.topic):
            if member.options.presence:
                try:
                    member.sink.presence_diff(diff.topic, joins, leaves, frames)
                except Exception:
                    logger.exception("delivering a presence diff to %r failed", member)

    def _enqueue(self, subject: str, data: bytes, done: asyncio.Future[None] | None = None) -> bool:
        if self._outgoing is None:  # not started: a single node without peers
            if done is not None:
                done.set_result(None)
            return True
        try:
            self._outgoing.put_nowait((subject, data, done))
        except asyncio.QueueFull:
            self.bus_errors += 1
            return False
        return True

    async def _send_loop(self) -> None:
        assert self._outgoing is not None
        while True:
            subject, data, done = await self._outgoing.get()
            try:
                await self.bus.publish(subject, data)
            except asyncio.CancelledError:
                if done is not None and not done.done():
                    done.set_exception(BusError("the gateway is stopping"))
                raise
            except BusError as exc:
                self.bus_errors += 1
                logger.warning("bus publish on %r failed: %s", subject, exc)
                if done is not None and not done.done():
                    done.set_exception(exc)
                continue
            if done is not None and not done.done():
                done.set_result(None)

    async def _heartbeat_loop(self) -> None:
        next_beat = self.clock()
        while True:
            if self.clock() >= next_beat:
                next_beat = self.clock() + self.tracker.heartbeat_interval
                self._enqueue(PRESENCE_SUBJECT, self.tracker.heartbeat())
            for diff in self.tracker.expire():
                self._deliver_diff(diff)
            await asyncio.sleep(self.sweep_interval)

    def _on_presence(self, data: bytes) -> None:
        diffs, replies = self.tracker.receive(data)
        for diff in diffs:
            self._deliver_diff(diff)
        for reply in replies:
            self._enqueue(PRESENCE_SUBJECT, reply)

    def _on_broadcast(self, data: bytes) -> None:
        decoded = Broadcast.from_bus(data)
        if decoded is None or decoded[0] == self.node:
            return  # malformed, or our own (delivered when it was sent)
        self._deliver(decoded[1])


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("task %s failed", task.get_name(), exc_info=task.exception())
