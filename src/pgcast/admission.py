"""Admission: may this connection open? Origin, token, per-IP and per-subject limits.

Returns data (:class:`pgcast.transports.Refusal`: status, code, message) that each
transport renders (an HTTP answer to an upgrade, an SSE error, an ASGI close), and
counts the open connections the limits apply to.
"""

from __future__ import annotations

import collections

from .auth import AuthConfig, Identity, extract_token
from .client_address import Network, client_address
from .exceptions import AuthError
from .transports import Connection, Refusal

__all__ = ["Admission"]


class Admission:
    """The node's connection limits and the identities of admitted, not yet opened, ones."""

    def __init__(self, auth: AuthConfig, trusted_proxies: tuple[Network, ...]) -> None:
        self.auth = auth
        self.trusted_proxies = trusted_proxies
        # Admitted upgrades until they open; None: must send an auth message first.
        self.admitted: dict[Connection, Identity | None] = {}
        self.per_subject: collections.Counter[str] = collections.Counter()
        self.per_ip: collections.Counter[str] = collections.Counter()

    def admit(self, conn: Connection) -> Refusal | None:
        """Vet a connection by its request head: origin, token, limits. None admits it."""
        head = conn.head
        limits = self.auth.limits
        if not limits.origin_allowed(head.header("Origin")):
            return Refusal(403, "forbidden", "this Origin may not connect")
        ip = self.address(conn)
        if limits.max_connections_per_ip and self.per_ip[ip] >= limits.max_connections_per_ip:
            return Refusal(429, "rate_limited", "too many connections")
        try:
            token = extract_token(head.target, head.headers)
            identity = (
                None if token is None and self.auth.required else self.auth.authenticate(token)
            )
        except AuthError as exc:
            return Refusal(401, "unauthorized", str(exc))
        if identity is not None and not self.subject_fits(identity):
            return Refusal(429, "rate_limited", "too many connections")
        self.admitted[conn] = identity
        return None

    def take(self, conn: Connection) -> Identity | None:
        """The identity ``conn`` was admitted with (None: it authenticates later)."""
        return self.admitted.pop(conn, None)

    def address(self, conn: Connection) -> str:
        """The address ``conn`` counts under: its peer, or the client its trusted proxy names."""
        return client_address(conn.peer, conn.head.headers, self.trusted_proxies)

    def subject_fits(self, identity: Identity) -> bool:
        limit = self.auth.limits.max_connections_per_subject
        return not (limit and identity.subject and self.per_subject[identity.subject] >= limit)

    def enter(self, counter: collections.Counter[str], key: str) -> None:
        counter[key] += 1

    def leave(self, counter: collections.Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]
