"""A node's live feed from the stream: every message after the point it started, in
stream order, handed to the node in batches.

An ordered consumer (ephemeral, in-memory on the server, flow-controlled, no acks):
nats-py recreates it from the next stream sequence when heartbeats stop or a
sequence is skipped, and this feed recreates it itself when the subscription or the
connection fails. Either way it continues from ``last_seq + 1``: a node that loses
NATS resumes where it was. A consumer that skips sequences (nats-py resets it under
load) is subscribed again from the last one received; only when the stream itself
no longer holds them (its limits, a purge) does the node tell its subscribers to
resync, as for a pruned log.

Starting point: the stream's last message when the feed starts. Every change at or
before it was read by the reader before this node's first catch-up took its horizon,
so the catch-ups cover those, and the feed every later one (catch_up.py's hand-over
argument holds with the stream in the listener's place).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import nats.js.errors
from nats.js import api

from pgcast.backoff import backoff
from pgcast.events import Horizon
from pgcast.exceptions import BrokerError
from pgcast.startup import one_line

from . import codec
from .codec import StreamEntry
from .link import NATS_ERRORS, BrokerLink

__all__ = ["StreamFeed"]

logger = logging.getLogger("pgcast.broker")

HEARTBEAT = 2.0
CHECK_EVERY = 1.0
STALL_AFTER = 5.0


class StreamFeed:
    """Consumes the stream and calls ``on_entries`` with each batch of messages."""

    def __init__(
        self,
        link: BrokerLink,
        *,
        on_entries: Callable[[list[StreamEntry]], None],
        on_gap: Callable[[int], None],
    ) -> None:
        self.link = link
        self._on_entries = on_entries
        self._on_gap = on_gap
        self.last_seq = 0  # stream sequence of the last message handed to the node
        self.pending = 0  # messages in the stream after it, as of the last delivery
        self.position: Horizon | None = None  # where the node stands (see Node.position)
        self.received = 0
        self.last_msg_id: str | None = None
        self.stream_last_seq = 0
        self.resubscribes = 0
        self.bad_messages = 0
        self.last_error: str | None = None
        self._batch: list[StreamEntry] = []
        self._skipped = False  # a sequence was skipped: resubscribe before taking more
        self._flush_scheduled = False
        self._sub: Any = None
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._started.is_set()

    async def start(self) -> None:
        """Start consuming; return once subscribed (waiting for NATS and the stream)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pgcast-stream-feed")
        waiter = asyncio.ensure_future(self._started.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()  # raises what ended it

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        await self._unsubscribe()

    async def _run(self) -> None:
        delays = backoff(initial=0.5, maximum=10.0)
        reported: str | None = None
        while True:
            try:
                await self._subscribe()
                delays = backoff(initial=0.5, maximum=10.0)
                reported = None
                self._started.set()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except NATS_ERRORS as exc:
                self.last_error = one_line(exc)
                if self.last_error != reported:  # one line per distinct problem
                    logger.warning("stream feed: %s; retrying", self.last_error)
                    reported = self.last_error
            await self._unsubscribe()
            await asyncio.sleep(next(delays))

    async def _subscribe(self) -> None:
        link = self.link
        if not link.connected:
            raise BrokerError(f"not connected to NATS at {link.where}")
        info = await link.stream_info()
        if self.last_seq == 0:
            await self._start_at_tail(info)
        else:
            self.resubscribes += 1
            first = info.state.first_seq
            if first > self.last_seq + 1:  # gone from the stream (limits, a purge)
                logger.error(
                    "stream %r no longer holds sequences %d-%d (limits or a purge): resync",
                    link.stream,
                    self.last_seq + 1,
                    first - 1,
                )
                self._on_gap(self.position.head if self.position else 0)
                self.last_seq = first - 1
        self._skipped = False
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.last_seq + 1,
        )
        self._sub = await link.js.subscribe(
            link.subject,
            stream=link.stream,
            cb=self._on_msg,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT,
            config=config,
            pending_msgs_limit=100_000,
        )
        logger.info("consuming stream %r from sequence %d", link.stream, self.last_seq + 1)

    async def _start_at_tail(self, info: Any) -> None:
        last_seq = info.state.last_seq
        if last_seq:
            try:
                last = await self.link.js.get_msg(self.link.stream, last_seq)
                self.position = codec.decode(last.data or b"", last.headers).position
                self.last_msg_id = (last.headers or {}).get(codec.MSG_ID)
            except nats.js.errors.NotFoundError:
                self.position = None
        self.last_seq = last_seq

    async def _watch(self) -> None:
        """Return when the subscription must be made again: the stream holds messages
        this node has not received and none came for ``STALL_AFTER`` seconds (the
        consumer vanished with a restarted server, say), or the stream was reset."""
        progress_at, seen = time.monotonic(), self.received
        while True:
            await asyncio.sleep(CHECK_EVERY)
            if not self.link.connected:
                progress_at = time.monotonic()
                continue
            info = await self.link.stream_info()
            self.stream_last_seq = info.state.last_seq
            if self.stream_last_seq < self.last_seq and not await self._holds_last():
                logger.error(
                    "stream %r was reset (last sequence %d < %d): resync",
                    self.link.stream,
                    self.stream_last_seq,
                    self.last_seq,
                )
                self._on_gap(self.position.head if self.position else 0)
                self.last_seq = 0
                raise BrokerError(f"stream {self.link.stream!r} was reset")
            if self._skipped:
                raise BrokerError("the consumer skipped messages: subscribing again")
            if self.received != seen or self.stream_last_seq == self.last_seq:
                progress_at, seen = time.monotonic(), self.received
            elif time.monotonic() - progress_at > STALL_AFTER:
                raise BrokerError(
                    f"no message from stream {self.link.stream!r} for {STALL_AFTER:g} s "
                    f"while {self.stream_last_seq - self.last_seq} wait: resubscribing"
                )

    async def _holds_last(self) -> bool:
        """Whether the stream still holds the last message this node received (the
        stream's state may simply predate the messages received since it was read)."""
        # Both read before the await: messages keep arriving meanwhile.
        seq, msg_id = self.last_seq, self.last_msg_id
        try:
            msg = await self.link.js.get_msg(self.link.stream, seq)
        except nats.js.errors.NotFoundError:
            return False
        return bool((msg.headers or {}).get(codec.MSG_ID) == msg_id)

    @property
    def lag(self) -> int:
        """Messages in the stream this node has not received yet (as of the last check)."""
        return max(0, self.stream_last_seq - self.last_seq, self.pending)

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                async with asyncio.timeout(2):
                    await sub.unsubscribe()
            except NATS_ERRORS:
                pass

    # messages (the subscription's task calls _on_msg for each, in order) -------------

    async def _on_msg(self, msg: Any) -> None:
        try:
            meta = msg.metadata
            seq = meta.sequence.stream
        except (nats.errors.Error, AttributeError, ValueError):
            return  # not a stream message (a status the client did not consume)
        if seq <= self.last_seq:
            return  # redelivered after a consumer reset: already handed over
        if seq != self.last_seq + 1 or self._skipped:
            # The consumer skipped messages (nats-py reset it under load, say): they
            # are still in the stream. Take nothing more until _watch subscribes
            # again from last_seq + 1.
            if not self._skipped:
                logger.warning(
                    "stream %r: consumer skipped from %d to %d; subscribing again",
                    self.link.stream,
                    self.last_seq,
                    seq,
                )
            self._skipped = True
            return
        self.last_seq = seq
        self.last_msg_id = (msg.headers or {}).get(codec.MSG_ID)
        self.pending = meta.num_pending
        self.received += 1
        try:
            entry = codec.decode(msg.data, msg.headers)
        except BrokerError as exc:
            self.bad_messages += 1
            logger.error("stream %r message %d skipped: %s", self.link.stream, seq, exc)
            return
        self._batch.append(entry)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            self._on_entries(batch)
        except Exception:
            logger.exception("delivering %d stream messages failed", len(batch))
