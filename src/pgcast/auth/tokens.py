"""Tokens: who is this client?

``TokenVerifier`` checks a JWT (PyJWT does the cryptography) against keys whose type
fixes the accepted algorithms: a secret accepts HS256/384/512 only, an RSA key RS*/PS*
only, an EC key the ES* algorithm of its curve only. ``alg: none`` and algorithm
confusion cannot pass. ``exp`` and ``nbf`` are checked here with an injectable clock.
``extract_token`` finds the token of a connection request. Pure.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import time
import types
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ..exactjson import loads_claims
from ..exceptions import AuthError, ConfigError
from ..protocol import MAX_TOKEN_LENGTH, CloseCode

MIN_SECRET_BYTES: Final = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
MIN_RSA_BITS: Final = 2048
DEFAULT_LEEWAY: Final = 30.0
NOTIFY_PAYLOAD_LIMIT: Final = 8000  # PostgreSQL refuses payloads of 8000 bytes or more
HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


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
