"""The session core: one client connection's state machine, a message in, actions out.

Pure: no sockets, no event loop, no hub, no database. The node hands it each client
message (``receive``) and carries out the actions it returns
(:mod:`pgcast.session_actions`): send, close, resolve a table, start a catch-up,
publish, listen, watch or forget a subscription in the hub. An action that waits for
I/O is answered by calling the session back (``table_resolved``, ``caught_up``,
``catch_up_failed``, ``listened``, ``refused``), which returns the next actions.

It decides: authentication and token refresh (same subject only; the grants of a
refreshed token are re-applied to every open subscription, and one it no longer
allows is ended), subscribe (rights before the catalog, so a token cannot probe
which tables exist; row rules folded into the filter so the hub indexes tenants),
unsubscribe, publish (rate, channel rights, size) and whether a subscription
starts with a catch-up. Wrong-state calls raise an error naming the expected state.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import exactjson, protocol
from .exceptions import AuthError, ProtocolError
from .filters import MATCH_ALL, Filter
from .hub import Subscription
from .protocol import CloseCode, ErrorCode, Subscribe, Unsubscribe
from .rate_limit import RateLimit
from .session_actions import (
    Action,
    Authenticated,
    CatchUp,
    Close,
    Forget,
    Listen,
    Publish,
    Refilter,
    ResolveTable,
    Send,
    TopicRequest,
    Watch,
)
from .topic_protocol import BroadcastRequest, Join, Leave, Track, Untrack

if TYPE_CHECKING:
    from .auth import AuthConfig, Grants, Identity, RowRule
    from .catalog import TableInfo

__all__ = ["RateLimit", "Session", "SessionPolicy", "SessionState", "restrict"]


TOPIC_MESSAGES = (Join, Leave, Track, Untrack, BroadcastRequest)
_INTERNAL_CHANNELS = frozenset({"pgcast", "pgcast_bus"})


def _always(identity: Identity) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class SessionPolicy:
    """What a node's sessions share: authentication, limits and the channel setting.

    ``subject_fits`` says whether one more connection of the identity's subject is
    allowed (the node counts them); ``allows_channel`` is ``Settings.allows_channel``.
    """

    auth: AuthConfig
    allows_channel: Callable[[str], bool]
    channel_patterns: tuple[str, ...] = ()
    catch_up_buffer_limit: int = 1_000_000
    subject_fits: Callable[[Identity], bool] = _always
    clock: Callable[[], float] = time.monotonic


class SessionState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Session:
    """The subscriptions, identity and rights of one client connection."""

    def __init__(
        self,
        owner: Any,
        policy: SessionPolicy | None = None,
        *,
        max_subscriptions: int,
    ) -> None:
        if policy is None:
            from .auth import AuthConfig  # the open default: everything allowed

            policy = SessionPolicy(AuthConfig(), allows_channel=lambda channel: True)
        self.owner = owner  # the connection: subscriptions deliver to it
        self.policy = policy
        self.max_subscriptions = max_subscriptions
        self.state = SessionState.OPEN
        self.subscriptions: dict[str, Subscription] = {}
        self.filters: dict[str, Filter] = {}  # each subscription's filter as the client sent it
        # None until the client authenticated (a first `auth` message, when required).
        self.identity: Identity | None = None
        self.grants: Grants | None = None
        self.presence_key: str | None = None  # of a `track` without a key, made once
        limits = policy.auth.limits
        self.subscribe_limit = RateLimit(limits.subscribe_rate, clock=policy.clock)
        self.publish_limit = RateLimit(limits.publish_rate, clock=policy.clock)

    @property
    def authenticated(self) -> bool:
        return self.identity is not None

    # messages ---------------------------------------------------------------------------

    def authenticate(self, identity: Identity) -> list[Action]:
        """Take ``identity`` (admitted with a token, or an `auth` message): bind its grants."""
        self._expect_open()
        self.identity = identity
        self.grants = self.policy.auth.rules.bind(identity)
        return [Authenticated(identity)]

    def receive(self, data: str | bytes) -> list[Action]:
        """One client message (text frame: str; binary: bytes) in, actions out."""
        self._expect_open()
        sub_id: str | None = None
        try:
            if isinstance(data, bytes):
                raise ProtocolError(
                    ErrorCode.BAD_FRAME, "binary frames are not supported; send JSON text frames"
                )
            message = protocol.decode_client_message(data)
            if isinstance(message, protocol.Auth):
                return self._refresh(message.token)
            if isinstance(message, protocol.Ping):
                return [Send(protocol.pong(message.data))]
            if not self.authenticated:
                return [
                    Send(protocol.error(ErrorCode.UNAUTHORIZED, "authenticate first", None)),
                    Close(CloseCode.UNAUTHORIZED, "authenticate first: send an auth message"),
                ]
            if isinstance(message, TOPIC_MESSAGES):
                return [TopicRequest(message)]
            sub_id = message.id
            if isinstance(message, Subscribe):
                return self._subscribe(message)
            if isinstance(message, Unsubscribe):
                sub = self.close_subscription(message.id)
                return [Forget(sub), Send(protocol.unsubscribed(message.id))]
            return self._publish(message)
        except ProtocolError as exc:
            # A malformed `auth` message too: the connection stays (docs/close-codes.md);
            # one that never authenticates is still closed by the node's auth timer.
            return self.refused(sub_id, exc)

    def refused(self, sub_id: str | None, exc: ProtocolError) -> list[Action]:
        """The ``error`` answering a refused message (or a failed resolve / publish)."""
        return [Send(protocol.error(exc.code, str(exc), sub_id or exc.sub_id, exc.topic))]

    def _refresh(self, token: str) -> list[Action]:
        """An `auth` message: authenticate, or swap in a fresh token for the same subject."""
        try:
            identity = self.policy.auth.authenticate(token)
        except AuthError as exc:
            return [
                Send(protocol.error(ErrorCode.UNAUTHORIZED, str(exc), None)),
                Close(exc.close_code, exc.message[:120]),
            ]
        previous = self.identity
        if previous is not None and previous.subject != identity.subject:
            return [Close(CloseCode.UNAUTHORIZED, "a refreshed token must have the same subject")]
        if previous is None and not self.policy.subject_fits(identity):
            return [Close(CloseCode.FORBIDDEN, "too many connections for this subject")]
        return self.authenticate(identity) + self._rebind()

    def _rebind(self) -> list[Action]:
        """Re-apply the (possibly changed) grants to the open subscriptions."""
        grants = self.grants
        assert grants is not None
        actions: list[Action] = []
        for sub in list(self.subscriptions.values()):
            if sub.channel is not None:
                allowed = grants.can_read_channel(sub.channel)
            else:
                rule = grants.table(sub.schema, sub.table)
                allowed = rule is not None
                if rule is not None:
                    # Same subject, maybe other claims: rebuild from the client's own filter.
                    kept, filter_ = restrict(rule, self.filters.get(sub.id, MATCH_ALL))
                    actions.append(Refilter(sub, kept, filter_))
            if not allowed:
                self.close_subscription(sub.id)
                error = protocol.error(
                    ErrorCode.FORBIDDEN, "the refreshed token may not read this", sub.id
                )
                actions += [Forget(sub), Send(error)]
        return actions

    def _publish(self, message: protocol.Publish) -> list[Action]:
        grants = self.grants
        assert grants is not None
        if not self.publish_limit.allow():
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many publish messages; slow down")
        channel = message.channel
        if not self._channel_allowed(channel) or not grants.can_publish(channel):
            raise ProtocolError(
                ErrorCode.FORBIDDEN_CHANNEL, f"this token may not publish to {channel!r}"
            )
        size = len(message.payload.encode())
        limit = self.policy.auth.limits.max_publish_bytes
        if size > limit:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"payload is {size} bytes; at most {limit}"
            )
        return [Publish(message)]

    def _channel_allowed(self, channel: str) -> bool:
        # The gateway's own channels (wake-up, bus between nodes): never relayed, never
        # published to, whatever the channel patterns allow.
        return channel not in _INTERNAL_CHANNELS and self.policy.allows_channel(channel)

    # subscribe --------------------------------------------------------------------------

    def _subscribe(self, request: Subscribe) -> list[Action]:
        if not self.subscribe_limit.allow():
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many subscribe messages; slow down")
        grants = self.grants
        assert grants is not None
        if request.channel is not None:
            channel = request.channel
            if not self._channel_allowed(channel) or not grants.can_read_channel(channel):
                raise ProtocolError(
                    ErrorCode.FORBIDDEN_CHANNEL,
                    f"channel {channel!r} is not allowed",
                    hint="allowed patterns: " + ", ".join(self.policy.channel_patterns),
                )
            sub = self.open(request)
            # `subscribed` promises a live stream: only once LISTEN is in effect.
            return [Watch(sub), Listen(sub)]
        # Rights first: a token must not learn which tables are tracked, or their
        # columns, from the errors of tables it may not read.
        if grants.rules.configured and not any(
            table == request.table
            and (request.schema is None or schema == request.schema)
            and grants.table(schema, table) is not None
            for schema, table in grants.rules.tables
        ):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not read {request.table!r}")
        return [ResolveTable(request)]

    def table_resolved(self, request: Subscribe, info: TableInfo) -> list[Action]:
        """``request``'s table is ``info``: open the subscription, live or catching up."""
        try:
            return self._open_table(request, info)
        except ProtocolError as exc:
            return self.refused(request.id, exc)

    def _open_table(self, request: Subscribe, info: TableInfo) -> list[Action]:
        grants = self.grants
        assert grants is not None
        rule = grants.table(info.schema, info.name)
        if rule is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not read {request.table!r}")
        request.filter.check_columns(info.columns, info.name, info.types)
        if request.columns is not None and not request.columns <= info.columns:
            unknown = ", ".join(sorted(request.columns - info.columns))
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"unknown columns for table {info.name!r}: {unknown}"
            )
        kept, filter_ = restrict(rule, request.filter)
        sub = self.open(request, schema=info.schema, table=info.name, filter=filter_, rule=kept)
        self.filters[sub.id] = request.filter
        fields: dict[str, object] = {"schema": info.schema, "table": info.name}
        if not request.snapshot and request.since is None:
            return [Watch(sub), Send(protocol.subscribed(sub.id, **fields))]
        # Project snapshot rows like the log does (tracked columns), then as asked; a
        # table tracked whole is sent as it is now (a column added since the catalog
        # was read included).
        keep: frozenset[str] | None = sub.columns
        if not info.whole:
            keep = info.columns if sub.columns is None else info.columns & sub.columns
        sub.begin_catch_up(self.policy.catch_up_buffer_limit)
        catch_up = CatchUp(sub, request.snapshot, request.since, keep, self._rls(), fields)
        return [Watch(sub), catch_up]

    def table_gone(self, schema: str, table: str, reason: str) -> list[Action]:
        """``schema.table`` was dropped or renamed: end its subscriptions, saying why."""
        actions: list[Action] = []
        for sub in list(self.subscriptions.values()):
            if sub.channel is None and (sub.schema, sub.table) == (schema, table):
                self.close_subscription(sub.id)
                message = protocol.error(ErrorCode.TABLE_GONE, reason, sub.id)
                actions += [Forget(sub), Send(message)]
        return actions

    def caught_up(self, catch_up: CatchUp, fields: dict[str, object]) -> list[Action]:
        """The catch-up is done and the subscription live: confirm it."""
        sub = catch_up.sub
        return [Send(protocol.subscribed(sub.id, **(catch_up.fields | fields)))]

    def catch_up_failed(self, sub: Subscription, exc: ProtocolError | None) -> list[Action]:
        """The catch-up failed (``exc``) or its client was closed or left (None)."""
        self.close_subscription(sub.id)
        actions: list[Action] = [Forget(sub)]
        if exc is not None:
            actions += self.refused(sub.id, exc)
        return actions

    def listened(self, sub: Subscription, ok: bool) -> list[Action]:
        """LISTEN on ``sub``'s channel took effect (``ok``), or PostgreSQL was unreachable."""
        assert sub.channel is not None
        if ok:
            return [Send(protocol.subscribed(sub.id, channel=sub.channel))]
        self.close_subscription(sub.id)
        exc = ProtocolError(
            ErrorCode.UNAVAILABLE,
            f"cannot LISTEN on {sub.channel!r} now: PostgreSQL is unreachable",
            hint="retry the subscription later",
        )
        return [Forget(sub), *self.refused(sub.id, exc)]

    def _rls(self) -> tuple[str, str] | None:
        """(role, claims JSON) when snapshots defer to row-level security."""
        role = self.policy.auth.rls_role
        if role is None or self.identity is None:
            return None
        return role, exactjson.dumps(dict(self.identity.claims)).decode()

    # subscriptions ----------------------------------------------------------------------

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

        ``filter`` replaces the request's (a row rule's conditions come first so the
        hub indexes on the tenant column); ``rule`` is the token's row rule.
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
        self.filters.pop(sub_id, None)
        sub.close()
        return sub

    def close(self) -> list[Subscription]:
        """Close the session; return every subscription it held (to remove from the hub)."""
        if self.state is SessionState.CLOSED:
            return []
        self.state = SessionState.CLOSED
        subs = list(self.subscriptions.values())
        self.subscriptions.clear()
        self.filters.clear()
        for sub in subs:
            sub.close()
        return subs

    def _expect_open(self) -> None:
        if self.state is not SessionState.OPEN:
            raise RuntimeError(f"session is {self.state.value}, expected open")


def restrict(rule: RowRule, requested: Filter) -> tuple[RowRule | None, Filter]:
    """The rule a subscription keeps (None: all rows) and its filter.

    The rule's bound conditions (merchant_id = 7...) are prepended to the client's
    filter so the hub indexes the subscription on the tenant column; the rule itself
    still decides which row images may be shown (Subscription.view).
    """
    if rule.allows_all:
        return None, requested
    conditions = rule.conditions()
    if conditions:
        return rule, Filter(conditions + requested.conditions)
    return rule, requested
