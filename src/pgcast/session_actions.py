"""What the session core asks its node to do: the actions a client message turns into.

A :class:`pgcast.session.Session` never touches a socket, the hub or the database: it
returns these, in order, and the node carries them out (``pgcast.connections``). The
ones that wait for I/O (resolve a table, catch up, publish, listen) are answered by
calling the session back with the result, which returns the next actions.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .filters import Filter

if TYPE_CHECKING:
    from .auth import Identity, RowRule
    from .events import Horizon
    from .hub import Subscription
    from .protocol import Publish as PublishMessage
    from .protocol import Subscribe
    from .topic_protocol import TopicMessage

__all__ = [
    "Action",
    "Authenticated",
    "CatchUp",
    "Close",
    "Forget",
    "Listen",
    "Publish",
    "Refilter",
    "ResolveTable",
    "Send",
    "TopicRequest",
    "Watch",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """Send one encoded message to the client."""

    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with ``code`` (see docs/close-codes.md)."""

    code: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Authenticated:
    """The connection now has ``identity``: count its subject, arm its expiry timer."""

    identity: Identity


@dataclasses.dataclass(frozen=True, slots=True)
class Watch:
    """Add ``sub`` to the hub (a table's index, or a channel's subscribers)."""

    sub: Subscription


@dataclasses.dataclass(frozen=True, slots=True)
class Forget:
    """Remove ``sub`` from the hub (and UNLISTEN its channel if it was the last)."""

    sub: Subscription


@dataclasses.dataclass(frozen=True, slots=True)
class Refilter:
    """Re-index ``sub`` under a new row rule and filter (a refreshed token's claims)."""

    sub: Subscription
    rule: RowRule | None
    filter: Filter


@dataclasses.dataclass(frozen=True, slots=True)
class ResolveTable:
    """Look ``request``'s table up in the catalog; answer with ``Session.table_resolved``
    (or ``Session.refused``)."""

    request: Subscribe


@dataclasses.dataclass(frozen=True, slots=True)
class CatchUp:
    """Run ``sub``'s snapshot and/or replay; answer with ``Session.caught_up`` (or
    ``Session.catch_up_failed``). ``fields`` go into its ``subscribed`` message."""

    sub: Subscription
    snapshot: bool
    since: int | Horizon | None
    keep: frozenset[str] | None  # None: every column, as the table has them now
    rls: tuple[str, str] | None
    fields: dict[str, object]


@dataclasses.dataclass(frozen=True, slots=True)
class Publish:
    """NOTIFY the vetted message's channel; a failure is answered with ``Session.refused``."""

    message: PublishMessage


@dataclasses.dataclass(frozen=True, slots=True)
class Listen:
    """LISTEN on ``sub``'s channel; answer with ``Session.listened``."""

    sub: Subscription


@dataclasses.dataclass(frozen=True, slots=True)
class TopicRequest:
    """A presence or broadcast message (pgcast.topic_requests carries it out with the
    session's grants)."""

    message: TopicMessage


Action = (
    (Send | Close | Authenticated | Watch | Forget | Refilter | ResolveTable | CatchUp | Publish)
    | Listen
    | TopicRequest
)
