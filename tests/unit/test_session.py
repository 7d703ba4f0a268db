"""Session bookkeeping: ids, limits and state."""

from __future__ import annotations

import pytest

from pgcast.exceptions import ProtocolError
from pgcast.protocol import Subscribe
from pgcast.session import Session, SessionState


def test_duplicate_ids_and_limit_are_refused_with_codes() -> None:
    session = Session(owner=None, max_subscriptions=2)
    session.open(Subscribe(id="a", table="t"), schema="public", table="t")
    with pytest.raises(ProtocolError) as dup:
        session.open(Subscribe(id="a", table="t"))
    assert dup.value.code == "duplicate_id"
    session.open(Subscribe(id="b", table="t"))
    with pytest.raises(ProtocolError) as limit:
        session.open(Subscribe(id="c", table="t"))
    assert limit.value.code == "too_many_subscriptions"


def test_unknown_unsubscribe_and_close() -> None:
    session = Session(owner=None, max_subscriptions=5)
    with pytest.raises(ProtocolError) as unknown:
        session.close_subscription("nope")
    assert unknown.value.code == "unknown_subscription"
    session.open(Subscribe(id="a", table="t"))
    assert [s.id for s in session.close()] == ["a"]
    assert session.state is SessionState.CLOSED
    assert session.close() == []
    with pytest.raises(RuntimeError, match="expected open"):
        session.open(Subscribe(id="b", table="t"))
