"""Limits: the per-subject / per-IP / rate / size / origin limits the gateway enforces."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

from ..exceptions import ConfigError


@dataclasses.dataclass(frozen=True)
class Limits:
    """Limits the gateway enforces; 0 means unlimited for counts and rates.

    ``max_subscriptions`` and ``max_frame_bytes`` live in ``Settings``.
    """

    max_connections_per_subject: int = 100
    max_connections_per_ip: int = 1000
    subscribe_rate: float = 20.0  # subscribe messages per second per connection
    publish_rate: float = 10.0  # publish messages per second per connection
    max_publish_bytes: int = 7900
    allowed_origins: tuple[str, ...] = ()  # empty: any Origin (and none)
    # Presence and broadcast (pgcast.realtime): per topic, per state, per connection.
    max_topic_members: int = 1000  # presence entries on one topic (all nodes)
    max_presence_bytes: int = 4096  # one tracked state, encoded as JSON
    presence_rate: float = 5.0  # track / untrack messages per second per connection
    max_broadcast_bytes: int = 65_536  # one broadcast payload, encoded as JSON
    broadcast_rate: float = 50.0  # broadcasts per second per connection
    max_topics: int = 100  # topics one connection may join

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            parsed = _LIMIT_PARSERS[field.name](getattr(self, field.name), f"Limits.{field.name}")
            object.__setattr__(self, field.name, parsed)

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a browser ``Origin`` header may connect (no header: not a browser)."""
        if not self.allowed_origins or origin is None or "*" in self.allowed_origins:
            return True
        return origin.strip().rstrip("/").lower() in self.allowed_origins


def _limit_count(value: object, label: str, high: int = 1_000_000) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ConfigError(f"{label}={value!r} is not a count from 0 (unlimited) to {high}")
    return value


def _limit_rate(value: object, label: str) -> float:
    rate: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        try:
            rate = float(value.strip())
        except ValueError:
            rate = None
    if rate is None or not math.isfinite(rate) or not 0 <= rate <= 1_000_000:
        raise ConfigError(f"{label}={value!r} is not a rate per second (0 = unlimited)")
    return rate


def _limit_payload(value: object, label: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 8000:
        raise ConfigError(
            f"{label}={value!r} is not a payload size from 1 to 7999 bytes",
            hint="PostgreSQL refuses NOTIFY payloads of 8000 bytes or more",
        )
    return value


def _limit_bytes(value: object, label: str, high: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= high:
        raise ConfigError(f"{label}={value!r} is not a size from 2 to {high} bytes")
    return value


_ORIGIN = re.compile(r"https?://[a-z0-9.\-\[\]:]+")


def _limit_origins(value: object, label: str) -> tuple[str, ...]:
    items = (
        [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, str)
        else value
    )
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{label} must be a list of origins like 'https://app.example.com'")
    origins: list[str] = []
    for item in items:
        origin = item.strip().rstrip("/").lower() if isinstance(item, str) else None
        if origin is None or (origin != "*" and not _ORIGIN.fullmatch(origin)):
            raise ConfigError(
                f"{label}: {item!r} is not an origin",
                hint="write scheme://host[:port], e.g. 'https://app.example.com', or '*'",
            )
        origins.append(origin)
    return tuple(dict.fromkeys(origins))


_LIMIT_PARSERS: dict[str, Callable[[object, str], Any]] = {
    "max_connections_per_subject": _limit_count,
    "max_connections_per_ip": _limit_count,
    "subscribe_rate": _limit_rate,
    "publish_rate": _limit_rate,
    "max_publish_bytes": _limit_payload,
    "allowed_origins": _limit_origins,
    "max_topic_members": _limit_count,
    "max_presence_bytes": lambda value, label: _limit_bytes(value, label, 65_536),
    "presence_rate": _limit_rate,
    "max_broadcast_bytes": lambda value, label: _limit_bytes(value, label, 1_000_000),
    "broadcast_rate": _limit_rate,
    "max_topics": _limit_count,
}
