"""The one exception tree of pgcast.

::

    PgcastError
    ├── ConfigError          bad flag, environment variable or pgcast.toml value
    ├── IdentifierError      a table or channel name that cannot be used safely
    ├── CaptureError         track / untrack / prune could not be applied
    ├── DatabaseUnavailable  no PostgreSQL reachable (or embedded one failed to start)
    ├── BrokerError          the NATS broker is unreachable, refuses us, or lacks the stream
    ├── RowImageError        a row image that cannot be read to evaluate a filter or rule
    ├── CatchUpAborted       a snapshot/replay stopped: its client was too slow or left
    ├── BusError             a message between gateway nodes could not be sent
    ├── AuthError            a connection's token is refused (carries a `close_code`)
    ├── ProtocolError        a client frame the gateway refuses (carries a wire `code`)
    │   └── FilterError      a subscription filter that cannot be parsed or applied
    └── ClientError          raised by the Python client (pgcast.client)
        ├── SubscriptionRefused   the gateway answered subscribe with error (not retried)
        ├── ConnectionRejected    close code 4500-4999 or HTTP 401/403: no reconnect
        ├── FrameTooBig           close 1009 while a subscribe was unanswered
        ├── ClientClosed          subscribing on a closed client
        └── TopicError            a topic message refused, or a broadcast not sent

Every error carries a message that says what went wrong and, where there is one,
a hint that says how to fix it.
"""

from __future__ import annotations


class PgcastError(Exception):
    """Base class of every error pgcast raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class ConfigError(PgcastError):
    """A configuration value (flag, environment variable, pgcast.toml) is invalid."""


class IdentifierError(PgcastError):
    """A table, schema, column or channel name is malformed or unsafe."""


class CaptureError(PgcastError):
    """Installing, removing or pruning change capture failed."""


class DatabaseUnavailable(PgcastError):
    """PostgreSQL could not be reached or started."""


class BrokerError(PgcastError):
    """The broker (NATS JetStream) is unreachable, refuses the credentials, lacks the
    stream, or sent a message pgcast cannot read."""


class RowImageError(PgcastError):
    """A row image (JSON text from the change log or a snapshot) cannot be read.

    The change or row is then withheld from every subscription whose filter or row
    rule would have to read it (fail closed), and counted.
    """


class CatchUpAborted(PgcastError):
    """A snapshot or replay stopped because its client was closed (slow: 4001) or left."""


class BusError(PgcastError):
    """A message between gateway nodes (pgcast.bus) is too large, or the bus is down."""


class ProtocolError(PgcastError):
    """A client message is refused; ``code`` is the machine-readable wire error code."""

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.sub_id: str | None = None  # the refused message's id, when it had a valid one
        self.topic: str | None = None  # the refused topic message's topic, when it had one


class FilterError(ProtocolError):
    """A filter expression is malformed or names an unknown column."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__("bad_filter", message, hint=hint)


# Close codes of AuthError (the values of pgcast.protocol.CloseCode, which imports this
# module): 4501 for a missing, malformed, forged or not-yet-valid token, 4503 expired.
_UNAUTHORIZED = 4501


class AuthError(PgcastError):
    """A connection's token is refused; ``close_code`` is the WebSocket close code to send.

    4501 (``UNAUTHORIZED``) for a missing, malformed, forged or not-yet-valid token,
    4503 (``TOKEN_EXPIRED``) for an expired one. The message never contains the token.
    """

    def __init__(
        self, message: str, *, close_code: int = _UNAUTHORIZED, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.close_code = close_code


# -- the Python client's errors (pgcast.client re-exports them) ----------------------

_CLOSE_MEANINGS = {
    4500: "protocol violation",
    4501: "unauthorized",
    4502: "forbidden",
    4503: "token expired",
}


class ClientError(PgcastError):
    """Base class of the errors the Python client raises."""


class SubscriptionRefused(ClientError):
    """The gateway answered a ``subscribe`` with ``error``; it is not retried."""

    def __init__(self, code: str, message: str, *, target: str) -> None:
        hint = {
            "bad_filter": "check the filter syntax, e.g. status=eq.pending&amount=gt.100",
            "forbidden": "the token does not allow this table or channel",
        }.get(code)
        super().__init__(f"subscription to {target} refused: {code}: {message}", hint=hint)
        self.code = code
        self.target = target


class ConnectionRejected(ClientError):
    """The gateway closed with a do-not-reconnect code (4500-4999) or refused the
    handshake (HTTP 401/403, reported as 4501/4502). The client is closed."""

    def __init__(self, code: int, reason: str, *, http_status: int | None = None) -> None:
        meaning = _CLOSE_MEANINGS.get(code, "do not reconnect")
        detail = f"HTTP {http_status}" if http_status is not None else f"close code {code}"
        message = f"gateway rejected the connection ({detail}, {meaning})"
        if reason:
            message += f": {reason}"
        hint = "pass a valid token" if code in (4501, 4503) else None
        super().__init__(message, hint=hint)
        self.code = code
        self.reason = reason
        self.http_status = http_status


class FrameTooBig(ClientError):
    """The gateway closed with 1009 while this subscribe was unanswered: the
    subscribe frame is too big and is not resent."""


class ClientClosed(ClientError):
    """The client was closed; it cannot subscribe any more."""


class TopicError(ClientError):
    """The gateway refused a topic message (``code``: its wire code), or a broadcast
    could not be sent (``offline``, ``closed``)."""

    def __init__(self, code: str, message: str, *, topic: str) -> None:
        super().__init__(f"topic {topic}: {code}: {message}")
        self.code = code
        self.topic = topic
