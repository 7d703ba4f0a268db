"""A fake client connection: the transport contract with no socket and no event loop."""

from __future__ import annotations

import orjson

from pgcast.transports import Connection, RequestHead


class FakeConnection:
    """Records what the gateway sends; ``paused`` makes it back up like a full socket."""

    def __init__(self, target: str = "/ws", headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.peer = "192.0.2.1:5000"
        self.head = RequestHead(target, headers)
        self.max_buffered_bytes = 32 * 1024 * 1024
        self.queued: list[bytes] = []
        self.sent: list[bytes] = []  # every message written, in order
        self.flushes = 0
        self.closed: tuple[int, str] | None = None
        self.reading = True

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None:
        self.queued.append(prefix + body)

    def queue_message(self, prefix: bytes, body: bytes) -> None:
        self.queued.append(prefix + body)

    def flush(self) -> None:
        self.flushes += 1
        self.sent += self.queued
        self.queued.clear()

    def send(self, payload: bytes) -> None:
        self.queued.append(payload)
        self.flush()

    def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.closed = self.closed or (1006, "aborted")

    async def drained(self) -> None:
        return None

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def messages(self) -> list[dict[str, object]]:
        return [orjson.loads(data) for data in self.sent]


def _implements_the_contract(conn: FakeConnection) -> Connection:
    return conn  # mypy checks FakeConnection against the Connection protocol here
