"""Parsing of the broker settings: ``broker`` (server URLs) and ``broker_stream``."""

from __future__ import annotations

import re
import urllib.parse

from pgcast.exceptions import ConfigError

__all__ = ["BROKER_SCHEMES", "parse_broker", "parse_stream_name"]

BROKER_SCHEMES = ("nats", "tls")
# A JetStream stream name that is also one subject token: no '.', '*', '>', space
# or path separator (NATS refuses those), and short enough for a file-store directory.
_STREAM = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_broker(value: object, label: str) -> str | None:
    """``nats://host:port`` (several, comma-separated, for a cluster), or None (off)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected a nats:// URL, got {type(value).__name__}")
    text = value.strip()
    if not text:
        return None
    for url in text.split(","):
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{label}: not a broker URL ({exc})") from None
        if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
            raise ConfigError(
                f"{label}: {parts.scheme or 'no'} scheme is not a broker (nats:// or tls://)",
                hint="e.g. PGCAST_BROKER=nats://127.0.0.1:4222",
            )
        if port == 0:
            raise ConfigError(f"{label}: port 0 is not a broker's port")
    return text


def parse_stream_name(value: object, label: str) -> str:
    if not isinstance(value, str) or not _STREAM.fullmatch(value):
        raise ConfigError(
            f"{label}: {value!r} is not a stream name",
            hint="1-32 letters, digits, '_' or '-' (one stream per database)",
        )
    return value
