"""Authentication and authorization: who is this client, and what may it see?

Pure (no sockets, no database; it reads the TOML, PEM and JWKS files named by the
configuration once, when the configuration is loaded). The gateway uses it like this::

    config = load_auth_config(flags, env=os.environ)      # once, at startup
    token = extract_token(request_target, headers)          # per connection
    identity = config.authenticate(token)                   # AuthError -> close 4501/4503
    grants = config.rules.bind(identity)                    # per connection (and per `auth`)
    rule = grants.table("public", "orders")                 # None -> forbidden
    rule.conditions()  # AND these into the subscription's filter, or call rule.matches(row)

Pieces:

* ``TokenVerifier`` checks a JWT (PyJWT does the cryptography) against keys whose type
  fixes the accepted algorithms: a secret accepts HS256/384/512 only, an RSA key RS*/PS*
  only, an EC key the ES* algorithm of its curve only. ``alg: none`` and algorithm
  confusion cannot pass. ``exp`` and ``nbf`` are checked here with an injectable clock.
* ``Rules`` are compiled once from ``[rules]``; ``Rules.bind(identity)`` gives ``Grants``;
  a table's bound ``RowRule`` folds claims-only terms to constants and, when it is a
  conjunction of equality terms, turns into ``pgcast.filters.Condition`` values the hub
  indexes, so authorization costs a hash lookup, not a query per event per subscriber.
* ``Limits`` parses the per-subject / per-IP / rate / size / origin limits the gateway
  enforces.

The rule grammar, the open / anonymous / token modes and the close codes are documented
in ``docs/security.md``.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import math
import os
import re
import time
import tomllib
import types
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .config import ENV_PREFIX, find_config_file
from .exactjson import loads_claims
from .exceptions import ConfigError, IdentifierError, PgcastError
from .filters import Condition
from .identifiers import parse_identifier, parse_table_name
from .protocol import CloseCode

__all__ = [
    "ANONYMOUS",
    "MAX_TOKEN_LENGTH",
    "AuthConfig",
    "AuthError",
    "Grants",
    "Identity",
    "Limits",
    "RowRule",
    "Rules",
    "TokenVerifier",
    "VerificationKey",
    "compile_rule",
    "extract_token",
    "load_auth_config",
    "load_jwks",
    "parse_rules",
]

MAX_TOKEN_LENGTH: Final = 8192
MIN_SECRET_BYTES: Final = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
MIN_RSA_BITS: Final = 2048
DEFAULT_LEEWAY: Final = 30.0
NOTIFY_PAYLOAD_LIMIT: Final = 8000  # PostgreSQL refuses payloads of 8000 bytes or more
HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class AuthError(PgcastError):
    """A connection's token is refused; ``close_code`` is the WebSocket close code to send.

    4501 (``UNAUTHORIZED``) for a missing, malformed, forged or not-yet-valid token,
    4503 (``TOKEN_EXPIRED``) for an expired one. The message never contains the token.
    """

    def __init__(
        self,
        message: str,
        *,
        close_code: CloseCode = CloseCode.UNAUTHORIZED,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.close_code = close_code


# --- identity and token verification ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a connection is: the verified claims of its token (empty when anonymous).

    ``expires_at`` is the token's ``exp`` (Unix seconds) as issued; the gateway closes the
    connection with 4503 once ``now > expires_at + leeway`` unless an ``auth`` message
    brought a fresh token.
    """

    claims: Mapping[str, Any]
    subject: str | None = None
    expires_at: float | None = None
    anonymous: bool = False


ANONYMOUS: Final = Identity(
    claims=types.MappingProxyType({}), subject=None, expires_at=None, anonymous=True
)


@dataclasses.dataclass(frozen=True)
class VerificationKey:
    """One key that may verify tokens, with the only algorithms its type allows."""

    algorithms: tuple[str, ...]
    key: Any = dataclasses.field(repr=False)  # secret bytes or a cryptography public key
    kid: str | None = None
    source: str = ""

    @classmethod
    def from_secret(cls, secret: str | bytes, *, source: str = "secret") -> VerificationKey:
        """An HMAC key; refused when shorter than 32 bytes or shaped like a PEM key."""
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(raw) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{source}: the JWT secret is {len(raw)} bytes; at least {MIN_SECRET_BYTES} "
                "are required",
                hint="generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
            )
        if b"-----BEGIN" in raw or raw.startswith(b"ssh-"):
            raise ConfigError(
                f"{source}: the JWT secret looks like a public/private key",
                hint="give a PEM public key with jwt_public_key, not jwt_secret",
            )
        # RFC 7518 3.2: an HMAC key at least as long as the hash; HS384/HS512 are accepted
        # only when the secret is long enough for them (else PyJWT warns on every token).
        algorithms = tuple(
            alg for alg, size in zip(HMAC_ALGORITHMS, (32, 48, 64), strict=True) if len(raw) >= size
        )
        return cls(algorithms=algorithms, key=raw, source=source)

    @classmethod
    def from_pem(
        cls, data: bytes, *, kid: str | None = None, source: str = "public key"
    ) -> VerificationKey:
        """A PEM public key (RSA >= 2048 bits, EC P-256/384/521, Ed25519/Ed448)."""
        if b"PRIVATE KEY" in data:
            raise ConfigError(
                f"{source} holds a private key; the gateway only needs the public key",
                hint="extract it with: openssl pkey -in private.pem -pubout -out public.pem",
            )
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as err:
            raise ConfigError(
                f"{source} is not a PEM public key ({err.__class__.__name__})",
                hint="expected a file starting with -----BEGIN PUBLIC KEY-----",
            ) from None
        return cls(algorithms=_algorithms_for(key, source), key=key, kid=kid, source=source)


def _algorithms_for(key: object, source: str) -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{source}: RSA key of {key.key_size} bits; at least 2048 required")
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ConfigError(f"{source}: unsupported elliptic curve {key.curve.name!r}")
        return (algorithm,)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise ConfigError(f"{source}: unsupported key type {type(key).__name__}")


def load_jwks(data: bytes | Mapping[str, Any], *, source: str = "JWKS") -> list[VerificationKey]:
    """The signing keys of a JWKS document (``{"keys": [...]}``).

    Keys with ``"use": "enc"`` are skipped. Symmetric (``oct``) keys and keys holding
    private parts are refused: a JWKS file is public, so either is a leak or a mistake.
    """
    document: object = data
    if isinstance(data, bytes | bytearray):
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as err:
            raise ConfigError(f"{source} is not valid JSON: {err}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ConfigError(f'{source} is not a JWKS document (expected {{"keys": [...]}})')
    keys: list[VerificationKey] = []
    for number, jwk in enumerate(document["keys"], 1):
        where = f"{source} key #{number}"
        if not isinstance(jwk, Mapping):
            raise ConfigError(f"{where} is not a JSON object")
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ConfigError(f"{where}: kid must be a string")
        where = f"{source} key {kid!r}" if kid else where
        if jwk.get("kty") == "oct":
            raise ConfigError(f"{where} is a symmetric (oct) key; use jwt_secret for HS256")
        if "d" in jwk:
            raise ConfigError(
                f"{where} holds a private key",
                hint="publish only public keys in a JWKS file (drop the 'd' member)",
            )
        try:
            parsed = jwt.PyJWK(dict(jwk))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"{where} cannot be used: {err}") from None
        allowed = _algorithms_for(parsed.key, where)
        if parsed.algorithm_name not in allowed:
            raise ConfigError(f"{where}: alg {parsed.algorithm_name!r} does not fit the key type")
        keys.append(_jwk_key(parsed.algorithm_name, parsed.key, kid, where))
    if not keys:
        raise ConfigError(f"{source} holds no signing key")
    kids = [key.kid for key in keys]
    if len(keys) > 1 and (None in kids or len(set(kids)) != len(kids)):
        raise ConfigError(f"{source}: with several keys, each needs a distinct kid")
    return keys


def _jwk_key(algorithm: str, key: Any, kid: str | None, source: str) -> VerificationKey:
    # A JWK with "alg" (or the default PyJWK infers) pins exactly one algorithm.
    return VerificationKey(algorithms=(algorithm,), key=key, kid=kid, source=source)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _utc(seconds: float) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _number_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, Decimal):
        value = float(value)  # seconds: a float is precise enough, and inf is refused below
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
        value = math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(f"token claim {name!r} is not a number of seconds since 1970")
    return float(value)


class _ExactClaims(jwt.PyJWT):
    """PyJWT reading the payload with exact numbers (see exactjson).

    PyJWT's json.loads makes 12345678901234567890.5 a float and refuses integers of
    more than 4,300 digits; a claim compared with a tenant column must be exact.
    """

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        try:
            payload = loads_claims(decoded["payload"])
        except (ValueError, RecursionError) as exc:
            raise jwt.DecodeError(f"Invalid payload string: {exc}") from exc
        if not isinstance(payload, dict):
            raise jwt.DecodeError("Invalid payload string: must be a json object")
        return payload


_JWT: Final = _ExactClaims()


class TokenVerifier:
    """Verifies JWTs against fixed keys; ``verify`` raises only ``AuthError``."""

    def __init__(
        self,
        keys: Sequence[VerificationKey],
        *,
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ConfigError("a token verifier needs at least one key")
        self.keys = tuple(keys)
        self.audience = [audience] if isinstance(audience, str) else audience
        self.issuer = issuer
        self.leeway = leeway
        self.clock = clock

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(alg for key in self.keys for alg in key.algorithms))

    def verify(self, token: str) -> Identity:
        """The identity a valid token carries; AuthError (4501, or 4503 expired) otherwise."""
        if not isinstance(token, str) or not token.strip():
            raise AuthError(
                "missing token",
                hint="send ?token=..., an 'Authorization: Bearer ...' header or an auth message",
            )
        token = token.strip()
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, RecursionError):
            raise AuthError(
                "token is not a JWT", hint="expected three base64url parts separated by dots"
            ) from None
        key = self._select_key(header)
        try:
            claims = _JWT.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                # exp / nbf / iat are checked below against self.clock; none is "required"
                # by PyJWT so that a missing one gets our message, not PyJWT's.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": [],
                },
            )
        except jwt.PyJWTError as err:
            raise self._explain(err) from None
        except (ValueError, TypeError, KeyError, RecursionError):
            raise AuthError("token is malformed") from None
        return self._check_times(claims)

    def _select_key(self, header: Mapping[str, Any]) -> VerificationKey:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthError("unsigned tokens (alg 'none') are not accepted")
        kid = header.get("kid")
        candidates = [key for key in self.keys if kid is not None and key.kid == kid]
        if not candidates:
            candidates = [key for key in self.keys if key.kid is None]
        if not candidates:
            if kid is None and len(self.keys) == 1:
                candidates = list(self.keys)
            elif kid is None:
                raise AuthError("token has no key id (kid); the JWKS holds several keys")
            else:
                raise AuthError(f"token key id (kid) {_short(kid)} is not a configured key")
        for key in candidates:
            if alg in key.algorithms:
                return key
        accepted = ", ".join(dict.fromkeys(a for key in candidates for a in key.algorithms))
        raise AuthError(
            f"token algorithm {_short(alg)} is not accepted; the configured key accepts {accepted}"
        )

    def _explain(self, err: jwt.PyJWTError) -> AuthError:
        # PyJWT's messages are not echoed: each type gets a message of ours.
        if isinstance(err, jwt.InvalidSignatureError):
            return AuthError("token signature is invalid", hint="was it signed with another key?")
        if isinstance(err, jwt.MissingRequiredClaimError):
            return AuthError(f"token has no {err.claim!r} claim; the gateway requires one")
        if isinstance(err, jwt.InvalidAudienceError):
            if self.audience is None:
                return AuthError(
                    "token has an audience (aud) but the gateway expects none",
                    hint="set jwt_audience (PGCAST_JWT_AUDIENCE) to the audience tokens carry",
                )
            return AuthError(f"token audience (aud) is not {' or '.join(self.audience)!r}")
        if isinstance(err, jwt.InvalidIssuerError):
            return AuthError(f"token issuer (iss) is not {self.issuer!r}")
        if isinstance(err, jwt.exceptions.InvalidSubjectError):
            return AuthError("token subject (sub) is not a string")
        if isinstance(err, jwt.InvalidAlgorithmError):
            return AuthError("token algorithm is not accepted")
        return AuthError("token is malformed or its signature cannot be checked")

    def _check_times(self, claims: dict[str, Any]) -> Identity:
        now = self.clock()
        expires_at = _number_claim(claims, "exp")
        not_before = _number_claim(claims, "nbf")
        if expires_at is not None and now > expires_at + self.leeway:
            raise AuthError(
                f"token expired at {_utc(expires_at)}",
                close_code=CloseCode.TOKEN_EXPIRED,
                hint="get a new token, then connect again",
            )
        if not_before is not None and now + self.leeway < not_before:
            raise AuthError(f"token is not valid before {_utc(not_before)}")
        subject = claims.get("sub")
        return Identity(
            claims=claims,
            subject=subject if isinstance(subject, str) else None,
            expires_at=expires_at,
        )


# --- token sources -----------------------------------------------------------------------


def extract_token(path_query: str, headers: Iterable[tuple[str, str]]) -> str | None:
    """The token of a connection request, or None when it carries none.

    ``path_query`` is the request target (``/ws?token=...``) or a bare query string
    (``token=...``); ``headers`` are (name, value) pairs (names case-insensitive). An
    ``Authorization: Bearer`` header wins over ``?token=`` (query strings end up in
    access logs, so the header is the recommended source). Other Authorization schemes
    are ignored (a proxy's Basic auth). Two different tokens from one source raise
    AuthError rather than guessing which one counts.
    """
    bearer: set[str] = set()
    for name, value in headers:
        if name.lower() != "authorization":
            continue
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            bearer.add(credentials.strip())
    if len(bearer) > 1:
        raise AuthError("several different Authorization: Bearer tokens were sent")
    if bearer:
        return bearer.pop()
    if "?" in path_query:
        query = path_query.split("?", 1)[1]
    elif path_query.startswith("/"):
        return None
    else:
        query = path_query
    query = query.split("#", 1)[0]
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    except ValueError:
        return None
    tokens = {value.strip() for key, value in pairs if key == "token" and value.strip()}
    if len(tokens) > 1:
        raise AuthError("several different ?token= parameters were sent")
    return tokens.pop() if tokens else None


# --- rules: grammar ----------------------------------------------------------------------

MAX_RULE_LENGTH: Final = 4096
MAX_RULE_TOKENS: Final = 512
MAX_RULE_DEPTH: Final = 16

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<claim>claims(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|"(?:[^"]|"")+"))+)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<qident>"(?:[^"]|"")+")
    | (?P<number>-?[0-9]+(?:\.[0-9]+)?(?![A-Za-z0-9_.]))
    | (?P<string>'(?:[^']|'')*')
    | (?P<punct>[(),=])
    )""",
    re.VERBOSE,
)
_CLAIM_SEGMENT = re.compile(r'\.(?:([A-Za-z_][A-Za-z0-9_]*)|"((?:[^"]|"")+)")')
_KEYWORDS = frozenset({"and", "or", "in", "true", "false", "not", "null"})
_SQL_WORDS = frozenset(
    {"select", "from", "where", "union", "drop", "insert", "update", "delete", "exists", "like"}
)
_GRAMMAR_HINT = (
    "a rule is true, false, or terms like merchant_id = claims.merchant_id, "
    "id in claims.ids, status = 'open', claims.role in (admin, auditor), "
    "joined with and / or and grouped with parentheses"
)

ClaimPath = tuple[str, ...]


class _Fail(Protocol):
    def __call__(self, problem: str, column: int, hint: str | None = None) -> ConfigError: ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # claim ident qident number string punct end
    text: str
    at: int  # 1-based column in the rule text


@dataclasses.dataclass(frozen=True, slots=True)
class _Const:
    value: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _ColumnClaim:
    """``column = claims.x`` (op eq) or ``column in claims.xs`` (op in)."""

    column: str
    op: str
    path: ClaimPath


@dataclasses.dataclass(frozen=True, slots=True)
class _ColumnLiteral:
    column: str
    op: str
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _ClaimLiteral:
    """``claims.x = lit`` / ``claims.x in (lit, ...)``: decided at bind time."""

    path: ClaimPath
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _And:
    items: tuple[_Expr, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Or:
    items: tuple[_Expr, ...]


_Expr = _Const | _ColumnClaim | _ColumnLiteral | _ClaimLiteral | _And | _Or


def _tokenize(text: str, fail: _Fail) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            tokens.append(_Token("end", "", i + 1))
            return tokens
        match = _TOKEN.match(text, i)
        if match is None or match.lastgroup is None:
            raise _unexpected(text, i, tokens, fail)
        start = match.start(match.lastgroup)
        tokens.append(_Token(match.lastgroup, match.group(match.lastgroup), start + 1))
        if len(tokens) > MAX_RULE_TOKENS:
            raise fail(f"has more than {MAX_RULE_TOKENS} tokens", start + 1)
        i = match.end()


def _unexpected(text: str, i: int, tokens: list[_Token], fail: _Fail) -> ConfigError:
    char = text[i]
    previous = tokens[-1] if tokens else None
    if char == "." and previous is not None and previous.kind == "ident":
        if previous.text == "claims":
            return fail("expects a claim name after 'claims.'", i + 1)
        return fail(
            f"has {previous.text + '.'!r}: claims are written claims.<name>, and columns "
            "are written without a table or schema",
            i + 1,
        )
    if char == "'":
        return fail("has an unterminated 'string'", i + 1)
    if char in "<>!~":
        return fail(f"has {char!r}: rules compare only with = and in", i + 1)
    if char == ";" or text.startswith("--", i):
        return fail(f"has {char!r}: rules are not SQL", i + 1)
    return fail(f"has unexpected {char!r}", i + 1)


class _Parser:
    def __init__(self, text: str, fail: _Fail) -> None:
        self.fail = fail
        self.tokens = _tokenize(text, fail)
        self.pos = 0
        self.depth = 0

    def parse(self) -> _Expr:
        expr = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise self.fail(f"has unexpected {token.text!r} after a complete term", token.at)
        return expr

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "ident" and token.text.lower() == word:
            self.pos += 1
            return True
        return False

    def expect(self, text: str, after: str) -> None:
        token = self.take()
        if token.kind != "punct" or token.text != text:
            raise self.fail(f"expects {text!r} after {after}, found {_found(token)}", token.at)

    def parse_or(self) -> _Expr:
        items = [self.parse_and()]
        while self.keyword("or"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else _Or(tuple(items))

    def parse_and(self) -> _Expr:
        items = [self.parse_term()]
        while self.keyword("and"):
            items.append(self.parse_term())
        return items[0] if len(items) == 1 else _And(tuple(items))

    def parse_term(self) -> _Expr:
        token = self.take()
        if token.kind == "punct" and token.text == "(":
            self.depth += 1
            if self.depth > MAX_RULE_DEPTH:
                raise self.fail(f"nests parentheses deeper than {MAX_RULE_DEPTH}", token.at)
            expr = self.parse_or()
            self.expect(")", "a parenthesized term")
            self.depth -= 1
            return expr
        if token.kind == "ident" and token.text.lower() in ("true", "false"):
            return _Const(token.text.lower() == "true")
        if token.kind == "claim":
            return self.claim_term(token)
        if token.kind == "ident" and token.text.lower() in _KEYWORDS:
            raise self.fail(f"expects a term, found {_found(token)}", token.at)
        if token.kind == "ident" and token.text.lower() in _SQL_WORDS:
            raise self.fail(f"has {token.text!r}: rules are not SQL", token.at)
        if token.kind in ("ident", "qident"):
            return self.column_term(token)
        raise self.fail(f"expects a term, found {_found(token)}", token.at)

    def claim_term(self, claim: _Token) -> _Expr:
        path = _claim_path(claim.text)
        if self.keyword("in"):
            self.expect("(", f"'{claim.text} in'")
            return _ClaimLiteral(path, self.literal_list(bare=True))
        token = self.peek()
        if token.kind == "punct" and token.text == "=":
            self.take()
            return _ClaimLiteral(path, (self.literal(bare=True),))
        raise self.fail(f"expects '=' or 'in' after {claim.text}, found {_found(token)}", token.at)

    def column_term(self, token: _Token) -> _Expr:
        try:
            column = parse_identifier(token.text, "column name")
        except IdentifierError as err:
            raise self.fail(f"has a bad column name: {err.message}", token.at) from None
        if self.keyword("in"):
            nxt = self.take()
            if nxt.kind == "claim":
                return _ColumnClaim(column, "in", _claim_path(nxt.text))
            if nxt.kind == "punct" and nxt.text == "(":
                return _ColumnLiteral(column, "in", self.literal_list(bare=False))
            raise self.fail(
                f"expects claims.<name> or a (list) after '{token.text} in', found {_found(nxt)}",
                nxt.at,
            )
        op = self.take()
        if op.kind != "punct" or op.text != "=":
            raise self.fail(
                f"expects '=' or 'in' after column {token.text!r}, found {_found(op)}", op.at
            )
        nxt = self.peek()
        if nxt.kind == "claim":
            self.take()
            return _ColumnClaim(column, "eq", _claim_path(nxt.text))
        return _ColumnLiteral(column, "eq", (self.literal(bare=False),))

    def literal_list(self, *, bare: bool) -> tuple[str, ...]:
        values = [self.literal(bare=bare)]
        while True:
            token = self.take()
            if token.kind == "punct" and token.text == ")":
                return tuple(dict.fromkeys(values))
            if token.kind != "punct" or token.text != ",":
                raise self.fail(f"expects ',' or ')' in a list, found {_found(token)}", token.at)
            values.append(self.literal(bare=bare))

    def literal(self, *, bare: bool) -> str:
        token = self.take()
        if token.kind == "number":
            return token.text
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "ident" and token.text.lower() in ("true", "false"):
            return token.text.lower()
        if token.kind == "ident" and token.text.lower() in _SQL_WORDS:
            raise self.fail(f"has {token.text!r}: rules are not SQL", token.at)
        if token.kind == "ident" and bare and token.text.lower() not in _KEYWORDS:
            return token.text
        if token.kind == "ident":
            raise self.fail(
                f"compares a column with the bare word {token.text!r}",
                token.at,
                hint=f"compare with a claim: claims.{token.text}; or quote text: '{token.text}'",
            )
        raise self.fail(f"expects a value, found {_found(token)}", token.at)


def _found(token: _Token) -> str:
    return "the end of the rule" if token.kind == "end" else repr(token.text)


def _claim_path(text: str) -> ClaimPath:
    return tuple(
        plain if plain else quoted.replace('""', '"')
        for plain, quoted in _CLAIM_SEGMENT.findall(text[len("claims") :])
    )


# --- rules: binding and evaluation -------------------------------------------------------

_MISSING: Final = object()
_CHANNEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TEMPLATE_VALUE = re.compile(r"[A-Za-z0-9_]{1,63}")


def _claim(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    value: Any = claims
    for name in path:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _literal(value: Any) -> str | None:
    """A claim value as a filter literal, or None when it cannot equal a column value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)  # exact; a Decimal's str is a JSON number ("1E+400")
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return None


def _claim_equals(value: Any, literals: tuple[str, ...]) -> bool:
    # Same comparison as a filter (number with number, text with text): a claim is the row.
    items = value if isinstance(value, list) else [value]
    probe = Condition("claim", "in", literals)
    return any(probe.matches({"claim": item}) for item in items)


@dataclasses.dataclass(frozen=True, slots=True)
class _All:
    items: tuple[_Bound, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Any:
    items: tuple[_Bound, ...]


_Bound = bool | Condition | _All | _Any


def _bind(expr: _Expr, claims: Mapping[str, Any]) -> _Bound:
    if isinstance(expr, _Const):
        return expr.value
    if isinstance(expr, _ColumnLiteral):
        return Condition(expr.column, expr.op, expr.values)
    if isinstance(expr, _ClaimLiteral):
        value = _claim(claims, expr.path)
        return value is not _MISSING and _claim_equals(value, expr.values)
    if isinstance(expr, _ColumnClaim):
        return _bind_column_claim(expr, _claim(claims, expr.path))
    if isinstance(expr, _And):
        return _fold_all([_bind(item, claims) for item in expr.items])
    return _fold_any([_bind(item, claims) for item in expr.items])


def _bind_column_claim(expr: _ColumnClaim, value: Any) -> _Bound:
    if value is _MISSING or value is None:
        return False  # a missing claim matches nothing
    if expr.op == "eq":
        literal = _literal(value)  # a list or object never equals a column value
        return False if literal is None else Condition(expr.column, "eq", (literal,))
    items = value if isinstance(value, list) else [value]
    literals = tuple(dict.fromkeys(lit for lit in map(_literal, items) if lit is not None))
    if not literals:
        return False
    if len(literals) == 1:  # an eq condition is indexed by the hub; an in condition is not
        return Condition(expr.column, "eq", literals)
    return Condition(expr.column, "in", literals)


def _fold_all(items: list[_Bound]) -> _Bound:
    flat: list[_Bound] = []
    for item in items:
        if item is False:
            return False
        if item is True:
            continue
        flat.extend(item.items if isinstance(item, _All) else (item,))
    if not flat:
        return True
    return flat[0] if len(flat) == 1 else _All(tuple(dict.fromkeys(flat)))


def _fold_any(items: list[_Bound]) -> _Bound:
    flat: list[_Bound] = []
    for item in items:
        if item is True:
            return True
        if item is False:
            continue
        flat.extend(item.items if isinstance(item, _Any) else (item,))
    if not flat:
        return False
    return flat[0] if len(flat) == 1 else _Any(tuple(dict.fromkeys(flat)))


def _evaluate(expr: _Bound, row: Mapping[str, Any]) -> bool:
    if isinstance(expr, bool):
        return expr
    if isinstance(expr, Condition):
        return expr.matches(row)
    if isinstance(expr, _All):
        return all(_evaluate(item, row) for item in expr.items)
    return any(_evaluate(item, row) for item in expr.items)


def _render(expr: _Bound) -> str:
    if isinstance(expr, bool):
        return "true" if expr else "false"
    if isinstance(expr, Condition):
        return str(expr)
    joiner = " and " if isinstance(expr, _All) else " or "
    return "(" + joiner.join(_render(item) for item in expr.items) + ")"


@dataclasses.dataclass(frozen=True)
class RowRule:
    """A table's row rule bound to one identity's claims. Compare with ``==``."""

    expr: _Bound

    def matches(self, row: Mapping[str, Any] | None) -> bool:
        """Whether the identity may see ``row``; False for None or a non-mapping."""
        if not isinstance(row, Mapping):
            return False
        return _evaluate(self.expr, row)

    def conditions(self) -> tuple[Condition, ...] | None:
        """Filter conditions equivalent to ``matches`` (``()`` = every row), or None.

        None when the rule has an ``or`` that binding did not fold away; the hub then
        calls ``matches``. Put these first in the subscription's filter so that the
        hub indexes the subscription by the tenant column.
        """
        if self.expr is True:
            return ()
        if isinstance(self.expr, Condition):
            return (self.expr,)
        if isinstance(self.expr, _All) and all(isinstance(i, Condition) for i in self.expr.items):
            return tuple(item for item in self.expr.items if isinstance(item, Condition))
        return None

    @property
    def allows_all(self) -> bool:
        return self.expr is True

    def columns(self) -> frozenset[str]:
        """Columns the rule reads (check them against the table: a missing one is NULL)."""
        found: set[str] = set()
        stack: list[_Bound] = [self.expr]
        while stack:
            item = stack.pop()
            if isinstance(item, Condition):
                found.add(item.column)
            elif isinstance(item, _All | _Any):
                stack.extend(item.items)
        return frozenset(found)

    def __str__(self) -> str:
        return _render(self.expr)


ALLOW_ALL: Final = RowRule(True)


def _channel_matches(pattern: str, name: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name) is not None


_TEMPLATE = re.compile(r"\{claims((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\}")
_PATTERN_TEXT = re.compile(r"[A-Za-z0-9_*]+")


def _bind_pattern(pattern: str, claims: Mapping[str, Any]) -> str | None:
    """``pattern`` with each ``{claims.x}`` replaced; None when a claim cannot fill it."""
    failed = False

    def fill(match: re.Match[str]) -> str:
        nonlocal failed
        literal = _literal(_claim(claims, tuple(match.group(1)[1:].split("."))))
        # Only [A-Za-z0-9_]: a claim can never smuggle a '*' (or anything else) in.
        if literal is None or not _TEMPLATE_VALUE.fullmatch(literal):
            failed = True
            return ""
        return literal

    bound = _TEMPLATE.sub(fill, pattern)
    return None if failed else bound


class Grants:
    """What one identity may read and publish; bind once per connection (and per ``auth``)."""

    def __init__(self, rules: Rules, identity: Identity) -> None:
        self.rules = rules
        self.identity = identity
        self._tables: dict[tuple[str, str], RowRule | None] = {}
        claims = identity.claims
        self._read = [p for p in (_bind_pattern(p, claims) for p in rules.channel_read) if p]
        self._publish = [p for p in (_bind_pattern(p, claims) for p in rules.channel_publish) if p]

    def table(self, schema: str, table: str) -> RowRule | None:
        """The row rule for ``schema.table``, or None when the table is forbidden."""
        if not self.rules.configured:
            return ALLOW_ALL
        key = (schema, table)
        if key not in self._tables:
            expr = self.rules.tables.get(key)
            bound = False if expr is None else _bind(expr, self.identity.claims)
            self._tables[key] = None if bound is False else RowRule(bound)
        return self._tables[key]

    def can_read_channel(self, name: str) -> bool:
        """Whether the identity may subscribe to raw channel ``name``.

        The gateway also checks ``Settings.channels`` (what is relayed at all): a
        channel must pass both.
        """
        if not isinstance(name, str) or not _CHANNEL_NAME.fullmatch(name):
            return False
        if not self.rules.configured:
            return True
        return any(_channel_matches(pattern, name) for pattern in self._read)

    def can_publish(self, name: str) -> bool:
        """Whether the identity may publish (NOTIFY) to raw channel ``name``."""
        if not isinstance(name, str) or not _CHANNEL_NAME.fullmatch(name):
            return False
        if not self.rules.configured:
            return True
        return any(_channel_matches(pattern, name) for pattern in self._publish)


@dataclasses.dataclass(frozen=True)
class Rules:
    """Compiled ``[rules]``; ``configured=False`` (no ``[rules]`` at all) allows everything."""

    configured: bool = False
    tables: Mapping[tuple[str, str], _Expr] = dataclasses.field(default_factory=dict)
    channel_read: tuple[str, ...] = ()
    channel_publish: tuple[str, ...] = ()

    def bind(self, identity: Identity) -> Grants:
        return Grants(self, identity)


_RULES_KEYS = ("tables", "channels")
_TABLE_KEYS = ("read",)
_CHANNEL_KEYS = ("read", "publish")


def _unknown(key: object, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return ConfigError(f"{where}: unknown key {key!r}", hint=hint)


def compile_rule(text: str, *, where: str = "rule") -> _Expr:
    """Compile one row rule (see the grammar in docs/security.md); ConfigError if bad."""

    def fail(problem: str, column: int, hint: str | None = None) -> ConfigError:
        return ConfigError(
            f"{where}: {text!r} {problem} (at column {column})", hint=hint or _GRAMMAR_HINT
        )

    if len(text) > MAX_RULE_LENGTH:
        raise ConfigError(f"{where}: rule is longer than {MAX_RULE_LENGTH} characters")
    if not text.strip():
        raise ConfigError(f"{where}: rule is empty", hint=_GRAMMAR_HINT)
    return _Parser(text, fail).parse()


def parse_rules(table: Mapping[str, Any] | None, *, source: str = "[rules]") -> Rules:
    """Compile a ``[rules]`` table (None or absent: no rules, everything allowed)."""
    if table is None:
        return Rules()
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source} must be a table")
    for key in table:
        if key not in _RULES_KEYS:
            raise _unknown(key, _RULES_KEYS, source)
    tables_table = table.get("tables", {})
    if not isinstance(tables_table, Mapping):
        raise ConfigError(f"{source}.tables must be a table of [rules.tables.<name>] tables")
    tables: dict[tuple[str, str], _Expr] = {}
    for name, spec in tables_table.items():
        where = f"{source}.tables.{name}"
        try:
            parsed = parse_table_name(name)
        except IdentifierError as err:
            raise ConfigError(f"{where}: {err}") from None
        table_key = (parsed.schema or "public", parsed.name)
        if table_key in tables:
            raise ConfigError(f"{where}: a rule for {'.'.join(table_key)} is already given")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a table with a read rule", hint='read = "true"')
        for spec_key in spec:
            if spec_key not in _TABLE_KEYS:
                raise _unknown(spec_key, _TABLE_KEYS, where)
        read = spec.get("read")
        if isinstance(read, bool):
            tables[table_key] = _Const(read)
        elif isinstance(read, str):
            tables[table_key] = compile_rule(read, where=f"{where}.read")
        else:
            raise ConfigError(f"{where} needs a read rule (a string)", hint='read = "true"')
    channels = table.get("channels", {})
    if not isinstance(channels, Mapping):
        raise ConfigError(f"{source}.channels must be a table with read / publish lists")
    for key in channels:
        if key not in _CHANNEL_KEYS:
            raise _unknown(key, _CHANNEL_KEYS, f"{source}.channels")
    return Rules(
        configured=True,
        tables=tables,
        channel_read=_patterns(channels.get("read", []), f"{source}.channels.read"),
        channel_publish=_patterns(channels.get("publish", []), f"{source}.channels.publish"),
    )


def _patterns(value: object, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a list of channel patterns")
    patterns: list[str] = []
    for item in items:
        static = _TEMPLATE.sub("x", item) if isinstance(item, str) else ""
        if not isinstance(item, str) or not _PATTERN_TEXT.fullmatch(static) or len(static) > 63:
            raise ConfigError(
                f"{where}: {item!r} is not a channel pattern",
                hint="letters, digits, '_', '*' and {claims.<name>}, at most 63 characters",
            )
        patterns.append(item)
    return tuple(dict.fromkeys(patterns))


# --- limits ------------------------------------------------------------------------------


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
}


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


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None


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
        document = _read_document(path)
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
    for name in _AUTH_KEYS + _LIMIT_KEYS:
        var = ENV_PREFIX + name.upper()
        if environ.get(var):
            chosen[name] = (environ[var], var)
    for name, value in (flags or {}).items():
        if name not in _AUTH_KEYS + _LIMIT_KEYS:
            raise _unknown(name, _AUTH_KEYS + _LIMIT_KEYS, "flags")
        if value is not None:
            chosen[name] = (value, "--" + name.replace("_", "-"))

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
