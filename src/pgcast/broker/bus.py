"""The NATS bus: presence and broadcast between nodes over core NATS subjects.

When a broker is configured it replaces the PostgreSQL bus (pgcast.bus_postgres),
so presence and broadcast no longer cost the database a NOTIFY each. Core NATS,
not JetStream: the bus promises order per publisher and whole-or-nothing messages
(pgcast.bus), which core subjects give; a node that was away repairs its presence
itself (pgcast.tracker). Subjects are ``<stream>.bus.<subject>``: the stream name
is per database, so only the nodes of one database meet. It shares the node's
NATS connection (the link reconnects; nats-py subscribes again by itself).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pgcast.bus import Bus, BusCallback, check_subject
from pgcast.exceptions import BusError

from .link import NATS_ERRORS, BrokerLink

__all__ = ["NatsBus"]

logger = logging.getLogger("pgcast.bus")


class NatsBus:
    """A :class:`pgcast.bus.Bus` over core NATS subjects."""

    def __init__(self, link: BrokerLink, *, max_message_bytes: int = 1 << 20) -> None:
        self.link = link
        self.max_message_bytes = max_message_bytes
        self._callbacks: dict[str, list[BusCallback]] = {}
        self._subscriptions: list[Any] = []

    def _subject(self, subject: str) -> str:
        return f"{self.link.stream}.bus.{subject}"

    @property
    def connected(self) -> bool:
        return self.link.connected

    def subscribe(self, subject: str, callback: BusCallback) -> None:
        self._callbacks.setdefault(check_subject(subject), []).append(callback)

    async def start(self) -> None:
        """Subscribe on the node's NATS connection (connected by the broker tier)."""
        if self.link.nc is None:
            raise BusError("the NATS bus needs the broker link connected first")
        for subject, callbacks in self._callbacks.items():
            for callback in callbacks:
                self._subscriptions.append(
                    await self.link.nc.subscribe(self._subject(subject), cb=_deliver(callback))
                )
        # The server has the subscriptions once it answered a PING sent after them:
        # only then does "subscribers receive what others publish" hold.
        try:
            await self.link.nc.flush(timeout=5)
        except NATS_ERRORS as exc:
            raise BusError(f"NATS did not confirm the bus subscriptions: {exc}") from None

    async def publish(self, subject: str, data: bytes) -> None:
        check_subject(subject)
        limit = self.max_message_bytes
        nc = self.link.nc
        if nc is not None and nc.max_payload:
            limit = min(limit, int(nc.max_payload))
        if len(data) > limit:
            raise BusError(f"bus message is {len(data)} bytes; at most {limit}")
        if nc is None or not self.link.connected:
            raise BusError("the NATS bus is not connected")
        try:
            await nc.publish(self._subject(subject), data)
        except NATS_ERRORS as exc:
            raise BusError(f"NATS refused the bus message: {exc}") from None

    async def close(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
        self._callbacks.clear()


def _deliver(callback: BusCallback) -> Any:
    async def on_msg(msg: Any) -> None:
        try:
            callback(msg.data)
        except Exception:
            logger.exception("a bus subscriber failed")

    return on_msg


def _implements_the_contract(bus: NatsBus) -> Bus:
    return bus  # mypy checks NatsBus against the Bus protocol here
