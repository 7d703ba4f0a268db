"""Presence and broadcast on one topic, for the Python client.

A :class:`Topic` is joined when it is made (and again after every reconnect, with
the last tracked state re-sent, so presence survives a gateway restart). Its
``presence`` is kept current whatever the consumer does; ``async for frame in
topic`` yields the ``broadcast``, ``presence_state``, ``presence_diff`` and
``error`` frames from a bounded queue (frames that do not fit are dropped and
counted in ``dropped``: they are ephemeral, and ``presence`` stays exact).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..exceptions import TopicError

__all__ = ["Topic", "TopicError", "TopicState", "apply_presence_diff"]

TOPIC_FRAMES = frozenset(
    {"joined", "left", "presence_state", "presence_diff", "broadcast", "ack", "error"}
)
ACK_TIMEOUT = 10.0


class TopicState(enum.StrEnum):
    JOINING = "joining"
    JOINED = "joined"
    CLOSED = "closed"


def apply_presence_diff(
    state: dict[str, Any], joins: dict[str, Any], leaves: dict[str, Any]
) -> dict[str, Any]:
    """``state`` (``{key: {"metas": [...]}}``) after a ``presence_diff``; a new dict."""
    result = {key: {"metas": list(value["metas"])} for key, value in state.items()}
    for key, value in leaves.items():
        if key in result:
            gone = {meta.get("phx_ref") for meta in value["metas"]}
            result[key]["metas"] = [m for m in result[key]["metas"] if m.get("phx_ref") not in gone]
            if not result[key]["metas"]:
                del result[key]
    for key, value in joins.items():
        metas = result.setdefault(key, {"metas": []})["metas"]
        known = {meta.get("phx_ref") for meta in metas}
        metas.extend(meta for meta in value["metas"] if meta.get("phx_ref") not in known)
    return result


Send = Callable[[dict[str, Any]], Awaitable[bool]]


class Topic:
    """One joined topic; make it with :meth:`pgcast.client.Client.topic`."""

    def __init__(
        self,
        name: str,
        send: Send,
        *,
        presence: bool = True,
        receive_own: bool = False,
        ack: bool = False,
        queue_size: int = 1000,
    ) -> None:
        self.name = name
        self._send = send
        self.options = {"presence": presence, "self": receive_own, "ack": ack}
        self.state = TopicState.JOINING
        self.presence: dict[str, Any] = {}
        self.rights: dict[str, bool] = {"track": False, "broadcast": False}
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._tracked: dict[str, Any] | None = None
        self._changed = asyncio.Event()
        self._acks: dict[str, asyncio.Future[None]] = {}
        self._refs = 0

    async def track(self, state: dict[str, Any], *, key: str | None = None) -> None:
        """Track ``state`` under ``key`` (default: the token's subject, else an id of
        this connection); kept and re-sent after a reconnect."""
        if not isinstance(state, dict):
            raise TypeError("presence state must be a dict")
        self._tracked = {"type": "track", "topic": self.name, "state": state}
        if key is not None:
            self._tracked["key"] = key
        await self._send(self._tracked)

    async def untrack(self) -> None:
        self._tracked = None
        await self._send({"type": "untrack", "topic": self.name})

    async def broadcast(self, event: str, payload: Any = None) -> None:
        """Send ``event`` with ``payload`` to the topic's members. With ``ack=True``
        waits for the gateway's ``ack`` (TopicError if refused or not sent)."""
        if self.state is not TopicState.JOINED:
            raise TopicError("offline", "not joined: the broadcast was not sent", topic=self.name)
        self._refs += 1
        ref = f"b{self._refs}"
        frame = {"type": "broadcast", "topic": self.name, "event": event, "payload": payload}
        frame["ref"] = ref
        if not self.options["ack"]:
            if not await self._send(frame):
                raise TopicError("offline", "not connected: not sent", topic=self.name)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[ref] = waiter
        try:
            if not await self._send(frame):
                raise TopicError("offline", "not connected: not sent", topic=self.name)
            async with asyncio.timeout(ACK_TIMEOUT):
                await waiter
        finally:
            self._acks.pop(ref, None)

    async def wait_presence(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait until ``check(presence)`` holds; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not check(self.presence):
                self._changed.clear()
                await self._changed.wait()
        return self.presence

    async def leave(self) -> None:
        """Leave the topic (this client's presence on it leaves too). Final."""
        if self.state is TopicState.CLOSED:
            return
        await self._send({"type": "leave", "topic": self.name})
        self._end()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[dict[str, Any]]:
        while self.state is not TopicState.CLOSED or not self._queue.empty():
            yield await self._queue.get()

    # -- what the client calls

    async def _rejoin(self) -> None:
        if self.state is TopicState.CLOSED:
            return
        self.state = TopicState.JOINING
        await self._send({"type": "join", "topic": self.name, **self.options})
        if self._tracked is not None:
            await self._send(self._tracked)

    def _disconnected(self) -> None:
        if self.state is not TopicState.CLOSED:
            self.state = TopicState.JOINING
        self._fail_acks(TopicError("offline", "the connection dropped", topic=self.name))

    def _end(self) -> None:
        self.state = TopicState.CLOSED
        self._fail_acks(TopicError("closed", "the topic is closed", topic=self.name))

    def _receive(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "joined":
            self.state = TopicState.JOINED
            self.rights = {
                "track": bool(frame.get("track")),
                "broadcast": bool(frame.get("broadcast")),
            }
            return
        if kind == "ack" or (kind == "error" and frame.get("ref") is not None):
            waiter = self._acks.get(str(frame.get("ref")))
            if waiter is not None and not waiter.done():
                if kind == "ack":
                    waiter.set_result(None)
                else:
                    code, message = str(frame.get("code")), str(frame.get("message"))
                    waiter.set_exception(TopicError(code, message, topic=self.name))
            if kind == "ack":
                return
        if kind == "presence_state":
            self.presence = dict(frame.get("state") or {})
            self._changed.set()
        elif kind == "presence_diff":
            joins, leaves = frame.get("joins") or {}, frame.get("leaves") or {}
            self.presence = apply_presence_diff(self.presence, joins, leaves)
            self._changed.set()
        elif kind not in ("broadcast", "error"):
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += 1

    def _fail_acks(self, error: TopicError) -> None:
        for waiter in self._acks.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._acks.clear()
