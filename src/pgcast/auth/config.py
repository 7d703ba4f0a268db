"""How connections authenticate: ``AuthConfig`` and its loader.

The loader is ``pgcast.config``'s (flags > ``PGCAST_*`` env > pgcast.toml > defaults);
this module only names the keys of ``[auth]`` and ``[limits]`` and builds the pieces.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import find_config_file, overlay, read_toml
from ..exceptions import AuthError, ConfigError
from .limits import _LIMIT_PARSERS, Limits, _limit_rate
from .rules import Rules, _unknown, parse_rules
from .tokens import ANONYMOUS, DEFAULT_LEEWAY, Identity, TokenVerifier, VerificationKey, load_jwks

# --- configuration -----------------------------------------------------------------------

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_AUTH_KEYS = (
    "jwt_secret",
    "jwt_public_key",
    "jwks_file",
    "jwt_audience",
    "jwt_issuer",
    "jwt_leeway",
    "anonymous",
    "rls_role",
)
_LIMIT_KEYS = tuple(_LIMIT_PARSERS)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    """How connections authenticate and what they may see.

    ``required``: a valid token is needed to connect. It is True exactly when a key is
    configured and ``anonymous`` is not set. With ``required`` False a connection
    without a token gets ``ANONYMOUS`` (empty claims); a token that is sent is still
    verified when a key is configured (a bad token is refused, never downgraded).

    ``mode`` is ``"token"`` (required), ``"anonymous"`` (explicitly allowed) or
    ``"open"`` (nothing about auth configured: every client sees everything; the
    gateway logs ``warning()`` loudly at startup).
    """

    required: bool = False
    anonymous: bool = False
    verifier: TokenVerifier | None = None
    rules: Rules = dataclasses.field(default_factory=Rules)
    limits: Limits = dataclasses.field(default_factory=Limits)
    mode: str = "open"
    # Snapshots read as this role with the token's claims in `request.jwt.claims`, so
    # the table's row-level-security policies decide which rows are in them.
    rls_role: str | None = None

    @property
    def leeway(self) -> float:
        return self.verifier.leeway if self.verifier else DEFAULT_LEEWAY

    def authenticate(self, token: str | None) -> Identity:
        """The identity of a connection that sent ``token`` (None: it sent none)."""
        if token is None or (isinstance(token, str) and not token.strip()):
            if self.required:
                raise AuthError(
                    "this gateway requires a token",
                    hint="send ?token=..., an 'Authorization: Bearer ...' header "
                    "or an auth message first",
                )
            return ANONYMOUS
        if self.verifier is None:
            return ANONYMOUS  # open or anonymous without a key: nothing to check it against
        return self.verifier.verify(token)

    def warning(self) -> str | None:
        """A startup warning for the modes that let clients in without a token."""
        if self.mode == "open":
            return (
                "AUTHENTICATION IS OFF: no JWT key, rules or anonymous setting is configured, "
                "so every client can read every tracked table and allowed channel. Set "
                "PGCAST_JWT_SECRET (or jwt_public_key / jwks_file) to require tokens, or "
                "PGCAST_ANONYMOUS=true to keep this on purpose. See docs/security.md."
            )
        if self.anonymous and not self.rules.configured:
            return (
                "anonymous access is on and no [rules] are configured: clients without a "
                "token can read every tracked table and allowed channel"
            )
        return None


def _parse_bool(value: object, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{label}={value!r} is not true or false")


def _parse_text(value: object, label: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{label} must be a non-empty string")
    return value.strip()


def _parse_leeway(value: object, label: str) -> float:
    seconds = _limit_rate(value, label) if not isinstance(value, bool) else -1.0
    if not 0 <= seconds <= 300:
        raise ConfigError(f"{label}={value!r} is not a leeway from 0 to 300 seconds")
    return seconds


def _read_file(path: Path, label: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{label}: cannot read {str(path)!r}: {err.strerror or err}") from None
    if len(data) > 1_048_576:
        raise ConfigError(f"{label}: {str(path)!r} is larger than 1 MiB")
    return data


def load_auth_config(
    flags: Mapping[str, object | None] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> AuthConfig:
    """Build ``AuthConfig`` from flags > ``PGCAST_*`` env > pgcast.toml > defaults.

    Flag keys are the names below (``None`` = not given); each has the environment
    variable ``PGCAST_<NAME>`` and the TOML key ``<name>`` (``[auth]`` for the JWT keys
    and ``anonymous``, ``[limits]`` for limits). ``[rules]`` comes from TOML only.
    File paths in the TOML file are relative to that file.

    JWT: jwt_secret, jwt_public_key (PEM file), jwks_file, jwt_audience (comma-separated
    for several), jwt_issuer, jwt_leeway (seconds, default 30), anonymous (true/false).
    Limits: see ``Limits``.

    Raises ConfigError for a bad value and for a configuration that would refuse every
    connection (auth configured, or ``anonymous = false``, without any key).
    """
    environ = os.environ if env is None else env
    chosen: dict[str, tuple[object, str]] = {}
    rules_table: Mapping[str, Any] | None = None
    path = find_config_file(config_file, env=environ)
    if path is not None:
        document = read_toml(path)
        for name, known in (("auth", _AUTH_KEYS), ("limits", _LIMIT_KEYS)):
            section = document.get(name, {})
            if not isinstance(section, Mapping):
                raise ConfigError(f"{path}: {name!r} must be a table ([{name}])")
            for key, value in section.items():
                if key not in known:
                    raise _unknown(key, known, f"{path} [{name}]")
                if key in ("jwt_public_key", "jwks_file") and isinstance(value, str):
                    value = str(path.parent / value)
                chosen[key] = (value, f"{path} [{name}] {key}")
        if "rules" in document:
            rules_table = document["rules"]
    names = _AUTH_KEYS + _LIMIT_KEYS
    overlay(chosen, names, flags, environ, lambda key, where: _unknown(key, names, where))

    rules = parse_rules(rules_table, source=f"{path} [rules]")
    limits = Limits(
        **{
            name: _LIMIT_PARSERS[name](value, label)
            for name, (value, label) in chosen.items()
            if name in _LIMIT_KEYS
        }
    )
    keys = _keys(chosen)
    anonymous_given = "anonymous" in chosen
    anonymous = anonymous_given and _parse_bool(*chosen["anonymous"])
    verifier = None
    if keys:
        audience = None
        if "jwt_audience" in chosen:
            value, label = chosen["jwt_audience"]
            raw = value if isinstance(value, list) else _parse_text(value, label).split(",")
            audience = [_parse_text(item, label) for item in raw] or None
        issuer = _parse_text(*chosen["jwt_issuer"]) if "jwt_issuer" in chosen else None
        leeway = DEFAULT_LEEWAY
        if "jwt_leeway" in chosen:
            leeway = _parse_leeway(*chosen["jwt_leeway"])
        verifier = TokenVerifier(keys, audience=audience, issuer=issuer, leeway=leeway, clock=clock)
    elif anonymous:
        pass
    elif anonymous_given or rules.configured or set(chosen) & set(_AUTH_KEYS):
        configured = sorted(set(chosen) & set(_AUTH_KEYS)) + (["[rules]"] if rules_table else [])
        raise ConfigError(
            "no JWT key is configured, so no connection could be accepted"
            + (f" (configured: {', '.join(configured)})" if configured else ""),
            hint="set PGCAST_JWT_SECRET, jwt_public_key or jwks_file; or anonymous = true",
        )
    required = bool(keys) and not anonymous
    mode = "token" if required else ("anonymous" if anonymous else "open")
    rls_role = None
    if "rls_role" in chosen:
        value, label = chosen["rls_role"]
        rls_role = _parse_text(value, label)
        if not _ROLE_NAME.fullmatch(rls_role):
            raise ConfigError(f"{label}={rls_role!r} is not a role name ([a-z_][a-z0-9_]*)")
    return AuthConfig(
        required=required,
        anonymous=anonymous,
        verifier=verifier,
        rules=rules,
        limits=limits,
        mode=mode,
        rls_role=rls_role,
    )


def _keys(chosen: Mapping[str, tuple[object, str]]) -> list[VerificationKey]:
    keys: list[VerificationKey] = []
    if "jwt_secret" in chosen:
        value, label = chosen["jwt_secret"]
        keys.append(VerificationKey.from_secret(_parse_text(value, label), source=label))
    if "jwt_public_key" in chosen:
        value, label = chosen["jwt_public_key"]
        data = _read_file(Path(_parse_text(value, label)), label)
        keys.append(VerificationKey.from_pem(data, source=f"{label} ({value})"))
    if "jwks_file" in chosen:
        value, label = chosen["jwks_file"]
        data = _read_file(Path(_parse_text(value, label)), label)
        keys.extend(load_jwks(data, source=f"{label} ({value})"))
    return keys
