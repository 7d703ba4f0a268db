"""pgcast settings: one frozen ``Settings`` value and the loader that builds it.

Sources, highest precedence first:

1. flags (``load_settings(flags)``; a value of ``None`` means "not given"),
2. ``PGCAST_<FIELD>`` environment variables (``PGCAST_PORT``, ``PGCAST_CHANNELS`` ...),
3. ``DATABASE_URL`` (``database_url`` only),
4. the ``[pgcast]`` table of a TOML file (``config_file``, else ``$PGCAST_CONFIG``,
   else ``./pgcast.toml`` when it exists),
5. the defaults declared on ``Settings``.

Every value, whatever its source, goes through the same parser; a bad one raises
``ConfigError`` naming the source and the value (passwords redacted). This module
does no I/O beyond reading the TOML file; the embedded database lives in
``pgcast.embedded``.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pgcast.broker.address import parse_broker, parse_stream_name
from pgcast.channels import CHANNEL_PATTERN, MAX_CHANNEL_LENGTH, channel_matches
from pgcast.client_address import Network, parse_networks
from pgcast.exceptions import ConfigError

__all__ = [
    "ENV_PREFIX",
    "LOG_LEVELS",
    "TOML_TABLE",
    "Settings",
    "find_config_file",
    "load_settings",
    "redact_url",
]

ENV_PREFIX = "PGCAST_"
TOML_TABLE = "pgcast"
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


def _parse_seconds(value: object, label: str) -> float:
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


def _parse_database_url(value: object, label: str) -> str | None:
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


def _parse_host(value: object, label: str) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or any(ch.isspace() or not ch.isprintable() for ch in value.strip())
    ):
        raise _fail(label, value, "is not a valid host (an address or host name to listen on)")
    return value.strip()


def _parse_port(value: object, label: str) -> int:
    # 0 asks the OS for a free port (tests, ephemeral gateways).
    return _parse_int(value, label, "is not a valid port (0-65535)", 0, 65535)


def _parse_channels(value: object, label: str) -> tuple[str, ...]:
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


def _parse_retention(value: object, label: str) -> datetime.timedelta:
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


def _parse_max_frame_bytes(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid frame size (1024 to 1073741824 bytes)", 1024, 1 << 30
    )


def _parse_outbox_limit(value: object, label: str) -> int:
    return _parse_int(value, label, "is not a valid outbox limit (1-1000000 frames)", 1, 1_000_000)


def _parse_max_subscriptions(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid subscription limit (1-100000 per connection)", 1, 100_000
    )


def _parse_trusted_proxies(value: object, label: str) -> tuple[Network, ...]:
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


def _parse_max_pending_per_ip(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid limit (1-1000000 unfinished requests per IP)", 1, 1_000_000
    )


def _parse_pool_size(value: object, label: str) -> int:
    # Two at least: catch-ups may use all but one, which publishes and catalog reads keep.
    return _parse_int(value, label, "is not a valid pool size (2-1000 connections)", 2, 1000)


def _parse_buffer_limit(value: object, label: str) -> int:
    return _parse_int(
        value, label, "is not a valid catch-up buffer limit (1-1000000 changes)", 1, 1_000_000
    )


def _parse_log_level(value: object, label: str) -> str:
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


def _parse_admin_token(value: object, label: str) -> str | None:
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


def _parse_capture(value: object, label: str) -> str:
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


_Parser = Callable[[object, str], Any]

_PARSERS: dict[str, _Parser] = {
    "database_url": _parse_database_url,
    "host": _parse_host,
    "port": _parse_port,
    "channels": _parse_channels,
    "retention": _parse_retention,
    "max_frame_bytes": _parse_max_frame_bytes,
    "outbox_limit": _parse_outbox_limit,
    "max_subscriptions": _parse_max_subscriptions,
    "probe_interval": _parse_seconds,
    "poll_interval": _parse_seconds,
    "head_timeout": _parse_seconds,
    "body_timeout": _parse_seconds,
    "max_pending_per_ip": _parse_max_pending_per_ip,
    "fast_poll_interval": _parse_seconds,
    "log_level": _parse_log_level,
    "trusted_proxies": _parse_trusted_proxies,
    "capture": _parse_capture,
    "pool_size": _parse_pool_size,
    "catch_up_drain_timeout": _parse_seconds,
    "catch_up_queue_timeout": _parse_seconds,
    "catch_up_buffer_limit": _parse_buffer_limit,
    "admin_token": _parse_admin_token,
    "broker": parse_broker,
    "broker_stream": parse_stream_name,
    "presence_heartbeat": _parse_seconds,
    "presence_timeout": _parse_seconds,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated pgcast settings. Constructing one directly validates it too."""

    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    channels: tuple[str, ...] = ("query_results_*", "table_updates_*", "system_notifications")
    retention: datetime.timedelta = datetime.timedelta(days=7)
    max_frame_bytes: int = 1_048_576
    outbox_limit: int = 1000
    max_subscriptions: int = 100
    probe_interval: float = 5.0
    poll_interval: float = 1.0
    # A connection's request head must arrive this long after its accept, a plain
    # request's body this long after its head (else 408); at most max_pending_per_ip
    # unfinished requests per client IP (else 429). See pgcast.transports.pending.
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_pending_per_ip: int = 1000
    # Re-read delay while changes flow (the trigger does not notify per commit; see
    # wakeup.py): commit-to-read latency is about half of it plus one read.
    fast_poll_interval: float = 0.001
    log_level: str = "info"
    # Peers whose X-Forwarded-For / Forwarded name the client (see pgcast.client_address).
    trusted_proxies: tuple[Network, ...] = ()
    capture: str = "trigger"  # default of `pgcast track`: "trigger" or "wal"
    # PostgreSQL connections for snapshots, replays, publishes and catalog reads (the
    # listener has its own). Catch-ups may hold at most pool_size - 1 of them at once.
    pool_size: int = 4
    # Seconds a catching-up client has to take each snapshot chunk or replay page
    # before it is closed with 4001 (a snapshot's transaction is open meanwhile).
    catch_up_drain_timeout: float = 15.0
    # Seconds a snapshot or replay may wait for a free slot before `unavailable`.
    catch_up_queue_timeout: float = 10.0
    # Live changes held for one catching-up subscription; past it the catch-up goes
    # back to the log for them (see pgcast.catch_up).
    catch_up_buffer_limit: int = 10_000
    # Bearer token of the operator's console at /console (pgcast.console); None: the
    # console is off (404).
    admin_token: str | None = None
    # NATS server URL(s): one elected reader publishes the log to a JetStream stream
    # and every node consumes it (docs/scaling.md). None: each node reads the log.
    broker: str | None = None
    broker_stream: str = "PGCAST"  # the JetStream stream; one per database
    # Presence across nodes (pgcast.tracker): each node sends a heartbeat every
    # presence_heartbeat seconds; a node silent for presence_timeout seconds has its
    # presence entries removed everywhere (within presence_timeout + 1 s).
    presence_heartbeat: float = 4.0
    presence_timeout: float = 12.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            parsed = _PARSERS[field.name](getattr(self, field.name), f"Settings.{field.name}")
            # Normalise (list -> tuple, "INFO" -> "info") without giving up frozenness.
            object.__setattr__(self, field.name, parsed)
        if self.presence_timeout <= self.presence_heartbeat:
            raise ConfigError(
                f"presence_timeout={self.presence_timeout} must be longer than "
                f"presence_heartbeat={self.presence_heartbeat}",
                hint="a node is dropped after missing heartbeats: use about 3 heartbeats",
            )

    def redacted(self) -> dict[str, object]:
        """The settings as a dict that is safe to log: the database password is ``***``."""
        values = dataclasses.asdict(self)
        if self.database_url is not None:
            values["database_url"] = redact_url(self.database_url)
        if self.admin_token is not None:
            values["admin_token"] = "***"  # noqa: S105 - the redaction mark, not a secret
        if self.broker is not None:
            values["broker"] = ",".join(redact_url(url) for url in self.broker.split(","))
        return values

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.redacted().items())
        return f"Settings({fields})"

    def allows_channel(self, channel: str) -> bool:
        """Whether raw NOTIFY ``channel`` matches one of the allowed ``channels`` patterns."""
        return any(channel_matches(pattern, channel) for pattern in self.channels)


_FIELDS = tuple(_PARSERS)


def parse_setting(name: str, value: object, label: str) -> Any:
    """Validate one setting given under another name (a command's own flag): errors
    name ``label``, e.g. ``--older-than``, not the setting."""
    return _PARSERS[name](value, label)


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, _FIELDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(_FIELDS)}"
    return ConfigError(f"unknown setting {key!r} in {where}", hint=hint)


def find_config_file(
    config_file: Path | None = None, *, env: Mapping[str, str] | None = None
) -> Path | None:
    """The TOML file to read: ``config_file``, else ``$PGCAST_CONFIG``, else ``./pgcast.toml``.

    An explicitly named file that does not exist is an error; a missing ``./pgcast.toml`` is not.
    """
    environ = os.environ if env is None else env
    if config_file is not None:
        path, label = Path(config_file), "config file"
    elif environ.get("PGCAST_CONFIG"):
        path, label = Path(environ["PGCAST_CONFIG"]), "PGCAST_CONFIG"
    else:
        default = Path("pgcast.toml")
        return default if default.is_file() else None
    if not path.is_file():
        raise ConfigError(f"{label} {str(path)!r} does not exist or is not a file")
    return path


Chosen = dict[str, tuple[object, str]]
"""Setting name -> (raw value, the label naming its source in error messages)."""


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path`` (pgcast.toml); ConfigError naming the file if bad."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as err:
        # The message ends with "(at line N, column M)".
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 ({err.reason})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None


def overlay(
    chosen: Chosen,
    names: Iterable[str],
    flags: Mapping[str, object | None] | None,
    environ: Mapping[str, str],
    unknown: Callable[[str, str], ConfigError],
) -> Chosen:
    """Lay ``PGCAST_<NAME>`` variables, then flags, over ``chosen`` (the file's values).

    An empty variable counts as unset, a flag of None as not given; a flag that is not
    one of ``names`` raises ``unknown(name, "flags")``.
    """
    known = tuple(names)
    for name in known:
        var = ENV_PREFIX + name.upper()
        if environ.get(var):
            chosen[name] = (environ[var], var)
    for name, value in (flags or {}).items():
        if name not in known:
            raise unknown(name, "flags")
        if value is not None:
            chosen[name] = (value, "--" + name.replace("_", "-"))
    return chosen


def _read_toml(path: Path) -> dict[str, object]:
    document = read_toml(path)
    for key, value in document.items():
        # Other top-level tables ([auth], ...) belong to other parts of pgcast.
        if key != TOML_TABLE and not isinstance(value, dict):
            hint = f"put settings under a [{TOML_TABLE}] table"
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            if close:
                hint = f"put {close[0]!r} under a [{TOML_TABLE}] table"
            raise ConfigError(f"{path}: top-level key {key!r} is not a setting", hint=hint)
    table = document.get(TOML_TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {TOML_TABLE!r} must be a table ([{TOML_TABLE}])")
    for key in table:
        if key not in _PARSERS:
            raise _unknown_key(key, f"{path} [{TOML_TABLE}]")
    return dict(table)


def load_settings(
    flags: Mapping[str, object | None] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build ``Settings`` from flags > ``PGCAST_*`` env > ``DATABASE_URL`` > TOML > defaults.

    ``flags`` keys are ``Settings`` field names (an unknown key is a ``ConfigError``); a value
    of ``None`` means the flag was not given. ``env`` defaults to ``os.environ``; an empty
    environment variable counts as unset. Raises ``ConfigError`` for any invalid value.
    """
    environ = os.environ if env is None else env
    chosen: dict[str, tuple[object, str]] = {}  # field -> (raw value, label for errors)

    path = find_config_file(config_file, env=environ)
    if path is not None:
        for key, value in _read_toml(path).items():
            chosen[key] = (value, f"{path}: {key}")

    if environ.get("DATABASE_URL"):
        chosen["database_url"] = (environ["DATABASE_URL"], "DATABASE_URL")

    overlay(chosen, _FIELDS, flags, environ, _unknown_key)

    parsed = {name: _PARSERS[name](value, label) for name, (value, label) in chosen.items()}
    return Settings(**parsed)
