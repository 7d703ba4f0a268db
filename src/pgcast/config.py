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
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pgcast.broker.address import parse_broker, parse_stream_name
from pgcast.channels import channel_matches
from pgcast.client_address import Network
from pgcast.exceptions import ConfigError

from .config_values import (
    LOG_LEVELS,
    parse_admin_token,
    parse_buffer_limit,
    parse_capture,
    parse_channels,
    parse_database_url,
    parse_host,
    parse_log_level,
    parse_max_frame_bytes,
    parse_max_pending_per_ip,
    parse_max_subscriptions,
    parse_outbox_limit,
    parse_pool_size,
    parse_port,
    parse_retention,
    parse_seconds,
    parse_trusted_proxies,
    redact_url,
)

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

_Parser = Callable[[object, str], Any]

_PARSERS: dict[str, _Parser] = {
    "database_url": parse_database_url,
    "host": parse_host,
    "port": parse_port,
    "channels": parse_channels,
    "retention": parse_retention,
    "max_frame_bytes": parse_max_frame_bytes,
    "outbox_limit": parse_outbox_limit,
    "max_subscriptions": parse_max_subscriptions,
    "probe_interval": parse_seconds,
    "poll_interval": parse_seconds,
    "head_timeout": parse_seconds,
    "body_timeout": parse_seconds,
    "max_pending_per_ip": parse_max_pending_per_ip,
    "fast_poll_interval": parse_seconds,
    "log_level": parse_log_level,
    "trusted_proxies": parse_trusted_proxies,
    "capture": parse_capture,
    "pool_size": parse_pool_size,
    "catch_up_drain_timeout": parse_seconds,
    "catch_up_queue_timeout": parse_seconds,
    "catch_up_buffer_limit": parse_buffer_limit,
    "admin_token": parse_admin_token,
    "broker": parse_broker,
    "broker_stream": parse_stream_name,
    "presence_heartbeat": parse_seconds,
    "presence_timeout": parse_seconds,
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
