"""Per-connection state: the subscriptions a client holds, and the rules on them.

Pure: the transport calls it with decoded messages; it never touches the network
or the hub. Wrong-state calls raise an error naming the expected state.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import ProtocolError
from .filters import Filter
from .hub import Subscription
from .protocol import ErrorCode, Subscribe

if TYPE_CHECKING:
    from .auth import Grants, Identity, RowRule


class RateLimit:
    """A token bucket: ``rate`` events per second, bursts up to ``rate`` (0 = unlimited)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = max(rate, 1.0)
        self.stamp = clock()

    def allow(self) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class SessionState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Session:
    """The subscriptions of one client connection."""

    def __init__(
        self,
        owner: Any,
        *,
        max_subscriptions: int,
        identity: Identity | None = None,
        grants: Grants | None = None,
        subscribe_rate: float = 0.0,
        publish_rate: float = 0.0,
    ) -> None:
        self.owner = owner
        self.max_subscriptions = max_subscriptions
        self.state = SessionState.OPEN
        self.subscriptions: dict[str, Subscription] = {}
        # None until the client authenticated (a first `auth` message, when required).
        self.identity = identity
        self.grants = grants
        self.subscribe_limit = RateLimit(subscribe_rate)
        self.publish_limit = RateLimit(publish_rate)

    @property
    def authenticated(self) -> bool:
        return self.identity is not None

    def open(
        self,
        request: Subscribe,
        *,
        schema: str = "",
        table: str = "",
        filter: Filter | None = None,
        rule: RowRule | None = None,
    ) -> Subscription:
        """Create the subscription ``request`` asks for, resolved to ``schema.table``.

        ``filter`` replaces the request's (the gateway prepends a row rule's conditions
        so the hub indexes on the tenant column); ``rule`` is the token's row rule.
        """
        self._expect_open()
        if request.id in self.subscriptions:
            raise ProtocolError(
                ErrorCode.DUPLICATE_ID,
                f"subscription id {request.id!r} is already in use on this connection",
                hint="unsubscribe it first or pick another id",
            )
        if len(self.subscriptions) >= self.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.max_subscriptions} subscriptions per connection",
            )
        sub = Subscription(
            request.id,
            self.owner,
            schema=schema,
            table=table,
            channel=request.channel,
            events=request.events,
            filter=request.filter if filter is None else filter,
            columns=request.columns,
            rule=rule,
        )
        self.subscriptions[request.id] = sub
        return sub

    def close_subscription(self, sub_id: str) -> Subscription:
        """Remove and return subscription ``sub_id``."""
        self._expect_open()
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_SUBSCRIPTION, f"no subscription with id {sub_id!r}"
            )
        sub.close()
        return sub

    def close(self) -> list[Subscription]:
        """Close the session; return every subscription it held (to remove from the hub)."""
        if self.state is SessionState.CLOSED:
            return []
        self.state = SessionState.CLOSED
        subs = list(self.subscriptions.values())
        self.subscriptions.clear()
        for sub in subs:
            sub.close()
        return subs

    def _expect_open(self) -> None:
        if self.state is not SessionState.OPEN:
            raise RuntimeError(f"session is {self.state.value}, expected open")
