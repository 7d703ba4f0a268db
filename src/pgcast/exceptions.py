"""The one exception tree of pgcast.

::

    PgcastError
    ├── ConfigError          bad flag, environment variable or pgcast.toml value
    ├── IdentifierError      a table or channel name that cannot be used safely
    ├── CaptureError         track / untrack / prune could not be applied
    ├── DatabaseUnavailable  no PostgreSQL reachable (or embedded one failed to start)
    ├── RowImageError        a row image that cannot be read to evaluate a filter or rule
    ├── CatchUpAborted       a snapshot/replay stopped: its client was too slow or left
    └── ProtocolError        a client frame the gateway refuses (carries a wire `code`)
        └── FilterError      a subscription filter that cannot be parsed or applied

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


class RowImageError(PgcastError):
    """A row image (JSON text from the change log or a snapshot) cannot be read.

    The change or row is then withheld from every subscription whose filter or row
    rule would have to read it (fail closed), and counted.
    """


class CatchUpAborted(PgcastError):
    """A snapshot or replay stopped because its client was closed (slow: 4001) or left."""


class ProtocolError(PgcastError):
    """A client message is refused; ``code`` is the machine-readable wire error code."""

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.sub_id: str | None = None  # the refused message's id, when it had a valid one


class FilterError(ProtocolError):
    """A filter expression is malformed or names an unknown column."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__("bad_filter", message, hint=hint)
