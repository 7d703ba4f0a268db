"""A plain HTTP answer as data (status, body, content type, headers), which the native
server and the ASGI app each send their own way (see :mod:`pgcast.routes`)."""

from __future__ import annotations

import dataclasses
from typing import Final

__all__ = ["JSON", "Answer", "not_found"]

JSON: Final = "application/json"


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A plain HTTP answer: status, body, content type and any other headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def not_found() -> Answer:
    return Answer(404, b'{"error":"not found"}')
