"""The bus between gateway nodes: the seam presence and broadcast cross nodes through.

A :class:`Bus` publishes opaque messages (bytes) on a subject and calls back every
node's subscribers of that subject, this node's included (the echo is expected: the
receivers skip their own node's messages). Two promises matter to its users:

* messages one node publishes arrive at each node in the order they were published;
* a message is either delivered whole or not at all (a node that lost its bus
  connection misses messages; presence repairs that itself, see pgcast.tracker).

Implementations: :class:`LocalBus` (one process: one node, or several nodes in tests
sharing a :class:`LocalNetwork`), :class:`pgcast.bus_postgres.PostgresBus` (the
default between nodes: LISTEN/NOTIFY on the database the nodes already share, no
extra dependency), and a NATS bus, which replaces the PostgreSQL one when
configured. Subjects are short ASCII words (``presence``, ``broadcast``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Final, Protocol

from .exceptions import BusError

__all__ = ["SUBJECT_NAME", "Bus", "BusCallback", "LocalBus", "LocalNetwork", "check_subject"]

logger = logging.getLogger("pgcast.bus")

BusCallback = Callable[[bytes], None]
SUBJECT_NAME: Final = re.compile(r"[a-z][a-z0-9_.]{0,31}")


def check_subject(subject: str) -> str:
    if not SUBJECT_NAME.fullmatch(subject):
        raise BusError(f"bus subject {subject!r} is not a short lowercase word")
    return subject


class Bus(Protocol):
    """Messages between gateway nodes."""

    #: The largest message ``publish`` takes (a larger one raises BusError).
    max_message_bytes: int

    async def start(self) -> None:
        """Connect; after it returns, subscribers receive what others publish."""
        ...

    async def publish(self, subject: str, data: bytes) -> None:
        """Send ``data`` to every node's subscribers of ``subject``.

        Raises BusError when the message is too large or the bus is unreachable."""
        ...

    def subscribe(self, subject: str, callback: BusCallback) -> None:
        """Call ``callback(data)`` (on the event loop; it must not block) for each
        message on ``subject``. Subscribe before ``start``."""
        ...

    async def close(self) -> None:
        """Disconnect; no callback runs after it returns."""
        ...


class LocalNetwork:
    """The buses of the nodes running in one process (one, or several in tests)."""

    def __init__(self) -> None:
        self.buses: list[LocalBus] = []


class LocalBus:
    """A bus that reaches the buses on the same :class:`LocalNetwork` (one process)."""

    def __init__(
        self, network: LocalNetwork | None = None, *, max_message_bytes: int = 1 << 20
    ) -> None:
        self.network = network if network is not None else LocalNetwork()
        self.max_message_bytes = max_message_bytes
        self._callbacks: dict[str, list[BusCallback]] = {}
        self.connected = False  # a test cuts a node off by setting this False

    async def start(self) -> None:
        if self not in self.network.buses:
            self.network.buses.append(self)
        self.connected = True

    async def publish(self, subject: str, data: bytes) -> None:
        check_subject(subject)
        if len(data) > self.max_message_bytes:
            raise BusError(f"bus message is {len(data)} bytes; at most {self.max_message_bytes}")
        if not self.connected:
            raise BusError("the bus is not connected")
        loop = asyncio.get_running_loop()
        for bus in list(self.network.buses):
            if bus.connected:
                for callback in bus._callbacks.get(subject, ()):
                    # Later, like a real bus: never inside the publisher's call.
                    loop.call_soon(_call, callback, data)

    def subscribe(self, subject: str, callback: BusCallback) -> None:
        self._callbacks.setdefault(check_subject(subject), []).append(callback)

    async def close(self) -> None:
        self.connected = False
        if self in self.network.buses:
            self.network.buses.remove(self)


def _call(callback: BusCallback, data: bytes) -> None:
    try:
        callback(data)
    except Exception:
        logger.exception("a bus subscriber failed")


def _implements_the_contract(bus: LocalBus) -> Bus:
    return bus  # mypy checks LocalBus against the Bus protocol here
