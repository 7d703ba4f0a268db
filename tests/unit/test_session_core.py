"""The session core: a client message in, actions out; no sockets, no event loop.

A ``FakeConnection`` stands for the client: the tests carry out ``Send`` actions on it
the way the node does, and answer the I/O actions (resolve, catch-up, listen,
publish) by calling the session back.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import orjson
import pytest

from pgcast.auth import AuthConfig, Identity, TokenVerifier, VerificationKey, parse_rules
from pgcast.catalog import TableInfo
from pgcast.exceptions import ProtocolError
from pgcast.filters import Condition
from pgcast.protocol import CloseCode
from pgcast.session import Session, SessionPolicy
from pgcast.session_actions import (
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
    Watch,
)

from .fakes import FakeConnection

SECRET = "session-core-" + "k" * 40
ORDERS = TableInfo("public", "orders", frozenset({"id", "merchant_id", "status"}))
RULES = {
    "tables": {"orders": {"read": "merchant_id = claims.merchant_id"}},
    "channels": {"read": ["news_*"], "publish": ["news_*"]},
}


def token(merchant: int, sub: str = "user-1", ttl: float = 3600) -> str:
    claims = {"sub": sub, "merchant_id": merchant, "exp": int(time.time() + ttl)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def policy(*, rules: dict[str, Any] | None = RULES, **kwargs: Any) -> SessionPolicy:
    verifier = TokenVerifier([VerificationKey.from_secret(SECRET)])
    auth = AuthConfig(required=True, verifier=verifier, rules=parse_rules(rules), mode="token")
    return SessionPolicy(auth, allows_channel=lambda name: name.startswith("news_"), **kwargs)


def session_for(conn: FakeConnection, **kwargs: Any) -> Session:
    return Session(conn, policy(**kwargs), max_subscriptions=10)


def carry_out(conn: FakeConnection, actions: list[Action]) -> list[Action]:
    """Do the Send and Close actions on the fake connection; return the others."""
    rest: list[Action] = []
    for action in actions:
        if isinstance(action, Send):
            conn.send(action.payload)
        elif isinstance(action, Close):
            conn.close(action.code, action.reason)
        else:
            rest.append(action)
    return rest


def message(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def authenticated(conn: FakeConnection, merchant: int = 7, **kwargs: Any) -> Session:
    session = session_for(conn, **kwargs)
    actions = session.receive(message(type="auth", token=token(merchant)))
    assert [type(action) for action in actions] == [Authenticated]
    return session


def test_anything_but_auth_or_ping_before_authenticating_closes_4501() -> None:
    conn = FakeConnection()
    session = session_for(conn)
    assert carry_out(conn, session.receive(message(type="ping", data=1))) == []
    assert conn.messages() == [{"type": "pong", "data": 1}]
    rest = carry_out(conn, session.receive(message(type="subscribe", id="o", table="orders")))
    assert rest == []
    assert conn.messages()[-1]["code"] == "unauthorized"
    assert conn.closed is not None and conn.closed[0] == CloseCode.UNAUTHORIZED
    assert session.subscriptions == {}


def test_a_bad_token_is_answered_and_closed_with_its_code() -> None:
    conn = FakeConnection()
    session = session_for(conn)
    carry_out(conn, session.receive(message(type="auth", token=token(7, ttl=-3600))))
    assert conn.closed is not None and conn.closed[0] == CloseCode.TOKEN_EXPIRED
    assert not session.authenticated


def test_subscribe_resolves_the_table_then_watches_with_the_tenant_condition_first() -> None:
    conn = FakeConnection()
    session = authenticated(conn, merchant=7)
    request = message(type="subscribe", id="o", table="orders", filter="status=eq.new")
    [resolve] = carry_out(conn, session.receive(request))
    assert isinstance(resolve, ResolveTable) and resolve.request.table == "orders"
    [watch] = carry_out(conn, session.table_resolved(resolve.request, ORDERS))
    assert isinstance(watch, Watch)
    sub = watch.sub
    assert sub.owner is conn
    assert sub.filter.conditions[0] == Condition("merchant_id", "eq", ("7",))
    assert sub.index_column == "merchant_id"
    assert conn.messages()[-1] == {
        "type": "subscribed",
        "id": "o",
        "schema": "public",
        "table": "orders",
    }


def test_a_forbidden_table_is_refused_before_the_catalog_is_asked() -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    rest = carry_out(conn, session.receive(message(type="subscribe", id="x", table="secrets")))
    assert rest == []  # no ResolveTable: the token learns nothing about "secrets"
    assert conn.messages()[-1]["code"] == "forbidden"
    assert conn.messages()[-1]["id"] == "x"


def test_unknown_columns_are_refused_after_resolving() -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    [resolve] = carry_out(
        conn, session.receive(message(type="subscribe", id="o", table="orders", columns=["nope"]))
    )
    assert isinstance(resolve, ResolveTable)
    assert carry_out(conn, session.table_resolved(resolve.request, ORDERS)) == []
    assert conn.messages()[-1]["code"] == "bad_request"
    assert session.subscriptions == {}


def test_snapshot_starts_a_catch_up_and_confirms_only_when_it_is_done() -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    [resolve] = carry_out(
        conn, session.receive(message(type="subscribe", id="o", table="orders", snapshot=True))
    )
    assert isinstance(resolve, ResolveTable)
    watch, catch_up = carry_out(conn, session.table_resolved(resolve.request, ORDERS))
    assert isinstance(watch, Watch) and isinstance(catch_up, CatchUp)
    assert catch_up.snapshot and catch_up.sub is watch.sub
    assert catch_up.sub.buffer is not None  # live changes wait while it catches up
    assert catch_up.keep == ORDERS.columns
    assert [m["type"] for m in conn.messages()] == []  # nothing promised yet
    carry_out(conn, session.caught_up(catch_up, {"snapshot_rows": 3, "position": "9"}))
    assert conn.messages()[-1]["type"] == "subscribed"
    assert conn.messages()[-1]["snapshot_rows"] == 3


def test_a_failed_catch_up_forgets_the_subscription_and_says_why() -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    [resolve] = carry_out(
        conn, session.receive(message(type="subscribe", id="o", table="orders", since="5"))
    )
    assert isinstance(resolve, ResolveTable)
    _, catch_up = carry_out(conn, session.table_resolved(resolve.request, ORDERS))
    assert isinstance(catch_up, CatchUp)
    failure = ProtocolError("unavailable", "could not read the change log")
    [forget] = carry_out(conn, session.catch_up_failed(catch_up.sub, failure))
    assert forget == Forget(catch_up.sub)
    assert conn.messages()[-1]["code"] == "unavailable"
    assert session.subscriptions == {}


def test_a_channel_is_confirmed_only_once_listen_took_effect() -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    watch, listen = carry_out(
        conn, session.receive(message(type="subscribe", id="c", channel="news_1"))
    )
    assert isinstance(watch, Watch) and isinstance(listen, Listen)
    assert conn.messages() == []
    assert carry_out(conn, session.listened(listen.sub, False)) == [Forget(listen.sub)]
    assert conn.messages()[-1]["code"] == "unavailable"
    # ...and a retry that LISTENs confirms.
    _, listen = carry_out(
        conn, session.receive(message(type="subscribe", id="c", channel="news_1"))
    )
    assert isinstance(listen, Listen)
    carry_out(conn, session.listened(listen.sub, True))
    assert conn.messages()[-1] == {"type": "subscribed", "id": "c", "channel": "news_1"}


@pytest.mark.parametrize("channel", ["pgcast", "other", "news_1"])
def test_publish_checks_channel_rights_and_size(channel: str) -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    actions = carry_out(
        conn, session.receive(message(type="publish", id="p", channel=channel, payload="hi"))
    )
    if channel == "news_1":
        assert [type(action) for action in actions] == [Publish]
    else:
        assert actions == []
        assert conn.messages()[-1]["code"] == "forbidden_channel"
    big = "x" * (session.policy.auth.limits.max_publish_bytes + 1)
    actions = carry_out(
        conn, session.receive(message(type="publish", id="q", channel="news_1", payload=big))
    )
    assert actions == []
    assert conn.messages()[-1]["code"] == "payload_too_large"


def test_a_refreshed_token_rebinds_subscriptions_to_its_claims() -> None:
    conn = FakeConnection()
    session = authenticated(conn, merchant=7)
    [resolve] = carry_out(conn, session.receive(message(type="subscribe", id="o", table="orders")))
    assert isinstance(resolve, ResolveTable)
    [watch] = carry_out(conn, session.table_resolved(resolve.request, ORDERS))
    assert isinstance(watch, Watch)
    actions = carry_out(conn, session.receive(message(type="auth", token=token(8))))
    authenticated_, refilter = actions
    assert isinstance(authenticated_, Authenticated) and isinstance(refilter, Refilter)
    assert refilter.sub is watch.sub
    assert refilter.filter.conditions == (Condition("merchant_id", "eq", ("8",)),)


def test_a_refreshed_token_of_another_subject_closes_the_connection() -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    assert carry_out(conn, session.receive(message(type="auth", token=token(7, sub="u2")))) == []
    assert conn.closed is not None and conn.closed[0] == CloseCode.UNAUTHORIZED


def test_a_refreshed_token_that_no_longer_allows_a_table_ends_that_subscription() -> None:
    conn = FakeConnection()
    session = authenticated(conn, merchant=7)
    [resolve] = carry_out(conn, session.receive(message(type="subscribe", id="o", table="orders")))
    assert isinstance(resolve, ResolveTable)
    [watch] = carry_out(conn, session.table_resolved(resolve.request, ORDERS))
    assert isinstance(watch, Watch)
    # The same subject without a merchant: the rule binds to nothing, the table is gone.
    anonymous = jwt.encode(
        {"sub": "user-1", "exp": int(time.time() + 60)}, SECRET, algorithm="HS256"
    )
    actions = carry_out(conn, session.receive(message(type="auth", token=anonymous)))
    assert Forget(watch.sub) in actions
    assert conn.messages()[-1] == {
        "type": "error",
        "code": "forbidden",
        "message": "the refreshed token may not read this",
        "id": "o",
    }
    assert session.subscriptions == {}


def test_subscribe_rate_limit_answers_rate_limited() -> None:
    now = [0.0]
    conn = FakeConnection()
    session = session_for(conn, clock=lambda: now[0])
    session.authenticate(Identity(claims={"merchant_id": 7}, subject="s"))
    codes = []
    for i in range(25):
        carry_out(conn, session.receive(message(type="subscribe", id=f"s{i}", table="orders")))
        codes.append(conn.messages()[-1]["code"] if conn.sent else None)
    assert codes[-1] == "rate_limited"  # 20 per second by default, no time has passed


def test_binary_frames_and_unknown_subscriptions_get_errors_not_closes() -> None:
    conn = FakeConnection()
    session = authenticated(conn)
    carry_out(conn, session.receive(b"\x00\x01"))
    assert conn.messages()[-1]["code"] == "bad_frame"
    carry_out(conn, session.receive(message(type="unsubscribe", id="nope")))
    assert conn.messages()[-1]["code"] == "unknown_subscription"
    assert conn.closed is None


def test_a_node_delivers_a_batch_to_fake_connections_with_one_flush_each() -> None:
    from pgcast.config import load_settings
    from pgcast.events import ChangeEvent
    from pgcast.node import Node

    node = Node(load_settings({}, env={}), "postgresql://unused/db", auth=policy().auth)
    conns = {merchant: FakeConnection() for merchant in (7, 8)}
    for merchant, conn in conns.items():
        session = authenticated(conn, merchant=merchant)
        [resolve] = carry_out(
            conn, session.receive(message(type="subscribe", id="o", table="orders"))
        )
        assert isinstance(resolve, ResolveTable)
        [watch] = carry_out(conn, session.table_resolved(resolve.request, ORDERS))
        assert isinstance(watch, Watch)
        node.watch(watch.sub)
        conn.sent.clear()
        conn.flushes = 0
    batch = [
        ChangeEvent.from_dicts(
            id=i, schema="public", table="orders", op="INSERT", record={"id": i, "merchant_id": m}
        )
        for i, m in enumerate([7, 8, 7], start=1)
    ]
    node.dispatch(batch)
    assert conns[7].flushes == 1 and conns[8].flushes == 1
    assert [m["id"] for m in conns[7].messages()] == ["1", "3"]
    assert [m["id"] for m in conns[8].messages()] == ["2"]
    assert node.deliveries_out == 3
