"""How each setting's value is read and checked: ``(value, label) -> typed value``.

``label`` names the source (a flag, ``PGCAST_PORT``, a TOML key) in error messages;
every failure is a ``ConfigError`` that says what is wrong and, where it helps, how
to fix it. Passwords never appear in a message (``redact_url``).
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Iterable

from pgcast.channels import CHANNEL_PATTERN, MAX_CHANNEL_LENGTH
from pgcast.client_address import Network, parse_networks
from pgcast.exceptions import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")

_DURATION = re.compile(r"(?:\d+[dhms])+")
_DURATION_PART = re.compile(r"(\d+)([dhms])")
_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_MAX_RETENTION = datetime.timedelta(days=36500)
_INTEGER = re.compile(r"[+-]?[0-9]+")


# --- parsers: (value, label) -> typed value; label names the source in error messages ---


def _fail(label: str, value: object, problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{label}={value!r} {problem}", hint=hint)


def _parse_int(value: object, label: str, problem: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise _fail(label, value, problem)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise _fail(label, value, problem)
    if not low <= number <= high:
        raise _fail(label, value, problem)
    return number


def parse_seconds(value: object, label: str) -> float:
    problem = "is not a valid interval (seconds, greater than 0 and at most 3600)"
    if isinstance(value, bool):
        raise _fail(label, value, problem)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            raise _fail(label, value, problem) from None
    else:
        raise _fail(label, value, problem)
    if not math.isfinite(seconds) or not 0 < seconds <= 3600:
        raise _fail(label, value, problem)
    return seconds


def redact_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` query) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            query = "&".join(
                f"{key}=***" if key == "password" else f"{key}={val}" for key, val in pairs
            )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_database_url(value: object, label: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(label, value, "is not a PostgreSQL URL")
    url = value.strip()
    scheme = url.partition("://")[0].lower()
    if scheme not in ("postgres", "postgresql") or not url.partition("://")[2]:
        raise _fail(
            label,
            redact_url(url),
            "is not a PostgreSQL URL",
            hint="use postgresql://user:password@host:port/database",
        )
    if any(ch.isspace() for ch in url):
        raise _fail(label, redact_url(url), "contains whitespace")
    return url


def parse_host(value: object, label: str) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or any(ch.isspace() or not ch.isprintable() for ch in value.strip())
    ):
        raise _fail(label, value, "is not a valid host (an address or host name to listen on)")
    return value.strip()


def parse_port(value: object, label: str) -> int:
    # 0 asks the OS for a free port (tests, ephemeral gateways).
    return _parse_int(value, label, "is not a valid port (0-65535)", 0, 65535)


def parse_channels(value: object, label: str) -> tuple[str, ...]:
    items: Iterable[object]
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        items = [item for item in items if item]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise _fail(label, value, "is not a list of channel patterns")
    patterns: list[str] = []
    for item in items:
        if not isinstance(item, str) or not CHANNEL_PATTERN.fullmatch(item):
            raise _fail(
                label,
                value,
                f"contains an invalid channel pattern {item!r}",
                hint="channel patterns may only contain letters, digits, '_' and '*'",
            )
        if len(item) > MAX_CHANNEL_LENGTH:
            raise _fail(
                label,
                value,
                f"contains a channel pattern longer than {MAX_CHANNEL_LENGTH} characters",
            )
        if item not in patterns:
            patterns.append(item)
    return tuple(patterns)


def parse_retention(value: object, label: str) -> datetime.timedelta:
    problem = "is not a valid retention"
    hint = 'write a positive duration such as "7d", "12h", "30m", "3600s" or "1d12h"'
    if isinstance(value, datetime.timedelta):
        retention = value
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _INTEGER.fullmatch(text):
            if int(text) <= 0:
                raise _fail(label, value, "is not a valid retention: it must be positive", hint)
            raise _fail(label, value, f"{problem}: the number needs a unit", hint)
        if not _DURATION.fullmatch(text):
            raise _fail(label, value, problem, hint)
        seconds = sum(
            int(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(text)
        )
        if seconds > _MAX_RETENTION.total_seconds():
            raise _fail(label, value, f"{problem}: at most {_MAX_RETENTION.days} days", hint)
        retention = datetime.timedelta(seconds=seconds)
    else:
        raise _fail(label, value, problem, hint)
    if retention <= datetime.timedelta(0):
        raise _fail(label, value, f"{problem}: it must be positive", hint)
    if retention > _MAX_RETENTION:
        raise _fail(label, value, f"{problem}: at most {_MAX_RETENTION.days} days", hint)
    return retention


def parse_max_frame_bytes(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid frame size (1024 to 1073741824 bytes)", 1024, 1 << 30
    )


def parse_outbox_limit(value: object, label: str) -> int:
    return _parse_int(value, label, "is not a valid outbox limit (1-1000000 frames)", 1, 1_000_000)


def parse_max_subscriptions(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid subscription limit (1-100000 per connection)", 1, 100_000
    )


def parse_trusted_proxies(value: object, label: str) -> tuple[Network, ...]:
    items: Iterable[object]
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise _fail(label, value, "is not a list of proxy addresses or networks")
    texts: list[str] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            item = str(item)
        if not isinstance(item, str):
            raise _fail(label, value, f"contains {item!r}, which is not an address or network")
        texts.append(item)
    try:
        return parse_networks(texts)
    except ValueError as err:
        raise _fail(
            label,
            value,
            f"is not a list of proxy addresses or networks ({err})",
            hint='write addresses or CIDR networks, comma-separated: "10.0.0.5,192.168.0.0/16"',
        ) from None


def parse_max_pending_per_ip(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid limit (1-1000000 unfinished requests per IP)", 1, 1_000_000
    )


def parse_pool_size(value: object, label: str) -> int:
    # Two at least: catch-ups may use all but one, which publishes and catalog reads keep.
    return _parse_int(value, label, "is not a valid pool size (2-1000 connections)", 2, 1000)


def parse_buffer_limit(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid catch-up buffer limit (1-1000000 changes)", 1, 1_000_000
    )


def parse_log_level(value: object, label: str) -> str:
    choices = ", ".join(LOG_LEVELS)
    if not isinstance(value, str):
        raise _fail(label, value, f"is not a log level ({choices})")
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        close = difflib.get_close_matches(level, LOG_LEVELS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        raise _fail(label, value, f"is not a log level ({choices})", hint)
    return level


# An admin token guards the operator's console (pgcast.console); long enough that
# guessing it over HTTP is hopeless, short enough for a header.
ADMIN_TOKEN_MIN = 16
ADMIN_TOKEN_MAX = 512


def parse_admin_token(value: object, label: str) -> str | None:
    if value is None:
        return None
    # Never echo the value: it is a secret.
    hint = "use a random string, e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`"
    if not isinstance(value, str):
        raise ConfigError(f"{label} is not a string", hint=hint)
    token = value.strip()
    if not ADMIN_TOKEN_MIN <= len(token) <= ADMIN_TOKEN_MAX:
        raise ConfigError(
            f"{label} must be {ADMIN_TOKEN_MIN} to {ADMIN_TOKEN_MAX} characters long", hint=hint
        )
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise ConfigError(f"{label} may only contain printable ASCII without spaces", hint=hint)
    return token


CAPTURE_MODES = ("trigger", "wal")


def parse_capture(value: object, label: str) -> str:
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in CAPTURE_MODES:
        raise _fail(
            label,
            value,
            "is not a capture mode (trigger or wal)",
            "trigger: capture triggers on the table; wal: decoded from the WAL "
            "(needs wal_level = logical)",
        )
    return str(mode)
