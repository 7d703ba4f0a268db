"""The hub routes each change to exactly the subscriptions that want it."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pgcast.events import OPS, ChangeEvent
from pgcast.filters import parse_filter
from pgcast.hub import Hub, Subscription, SubscriptionState


def sub(
    sid: str, table: str = "orders", flt: str = "", events: frozenset[str] = OPS
) -> Subscription:
    return Subscription(
        sid, owner=None, schema="public", table=table, events=events, filter=parse_filter(flt)
    )


def change(
    op: str,
    record: dict[str, object] | None,
    old: dict[str, object] | None = None,
    table: str = "orders",
) -> ChangeEvent:
    return ChangeEvent.from_dicts(
        id=1, schema="public", table=table, op=op, record=record, old_record=old
    )


def ids(routed: list[tuple[Subscription, int]]) -> set[str]:
    return {s.id for s, _ in routed}


def test_routes_by_table_filter_and_event() -> None:
    hub = Hub()
    for s in [
        sub("all"),
        sub("pending", flt="status=eq.pending"),
        sub("big", flt="amount=gt.100"),
        sub("deletes", events=frozenset({"DELETE"})),
        sub("other", table="invoices"),
    ]:
        hub.add(s)
    assert ids(hub.match(change("INSERT", {"status": "pending", "amount": 5}))) == {
        "all",
        "pending",
    }
    assert ids(hub.match(change("INSERT", {"status": "x", "amount": 500}))) == {"all", "big"}
    assert ids(hub.match(change("DELETE", None, {"status": "pending", "amount": 1}))) == {
        "all",
        "pending",
        "deletes",
    }
    assert ids(hub.match(change("INSERT", {"a": 1}, table="unknown"))) == set()


def test_update_matches_when_row_enters_or_leaves_the_filter() -> None:
    hub = Hub()
    hub.add(sub("pending", flt="status=eq.pending"))
    leaving = change("UPDATE", {"status": "shipped"}, {"status": "pending"})
    entering = change("UPDATE", {"status": "pending"}, {"status": "new"})
    elsewhere = change("UPDATE", {"status": "shipped"}, {"status": "new"})
    assert ids(hub.match(leaving)) == {"pending"}
    assert ids(hub.match(entering)) == {"pending"}
    assert ids(hub.match(elsewhere)) == set()


def test_truncate_reaches_filtered_subscribers() -> None:
    hub = Hub()
    hub.add(sub("pending", flt="status=eq.pending"))
    hub.add(sub("no_truncate", events=frozenset({"INSERT"})))
    assert ids(hub.match(change("TRUNCATE", None))) == {"pending"}


def test_remove_forgets_subscription_and_cleans_index() -> None:
    hub = Hub()
    a, b = sub("a", flt="status=eq.x"), sub("b")
    hub.add(a)
    hub.add(b)
    hub.remove(a)
    hub.remove(a)  # twice is harmless
    assert ids(hub.match(change("INSERT", {"status": "x"}))) == {"b"}
    hub.remove(b)
    assert list(hub.tables()) == []
    assert hub.subscription_count() == 0


def test_channels_report_first_and_last_subscriber() -> None:
    hub = Hub()
    a = Subscription("a", None, channel="chan")
    b = Subscription("b", None, channel="chan")
    assert hub.add_channel(a) is True
    assert hub.add_channel(b) is False
    assert hub.channel_subscribers("chan") == {a, b}
    assert hub.remove_channel(a) is False
    assert hub.remove_channel(b) is True
    assert hub.remove_channel(b) is False
    assert hub.channels() == []


def test_catch_up_buffers_then_returns_only_unreplayed_changes() -> None:
    s = sub("a")
    s.begin_catch_up()
    assert s.state is SubscriptionState.CATCHING_UP
    first = ChangeEvent.from_dicts(id=5, schema="public", table="orders", op="INSERT", record={})
    second = ChangeEvent.from_dicts(id=6, schema="public", table="orders", op="INSERT", record={})
    assert s.buffer is not None
    s.buffer += [first, second]
    assert s.finish_catch_up({5}) == [second]
    assert s.state is SubscriptionState.LIVE and s.buffer is None


def test_wrong_state_transition_names_expected_state() -> None:
    s = sub("a")
    try:
        s.finish_catch_up(set())
    except RuntimeError as exc:
        assert "expected catching_up" in str(exc)
    else:
        raise AssertionError("finish_catch_up on a live subscription must fail")


def test_change_body_is_encoded_once_per_projection() -> None:
    c = ChangeEvent.from_dicts(
        id=42,
        schema="public",
        table="orders",
        op="UPDATE",
        record={"id": 1, "status": "b", "note": "n"},
        old_record={"id": 1, "status": "a", "note": "n"},
        changed=["status"],
        txid=9,
        committed_at="2026-11-21T12:00:00.000000Z",
    )
    assert c.body() is c.body()
    message = c.to_message("s1")
    assert message == {
        "type": "change",
        "sub": "s1",
        "id": "42",
        "schema": "public",
        "table": "orders",
        "op": "UPDATE",
        "record": {"id": 1, "status": "b", "note": "n"},
        "old_record": {"id": 1, "status": "a", "note": "n"},
        "changed": ["status"],
        "txid": "9",
        "committed_at": "2026-11-21T12:00:00.000000Z",
    }
    projected = orjson.loads(b"{" + c.body(frozenset({"id", "status"})))
    assert projected["record"] == {"id": 1, "status": "b"}


rows = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["a", "b", "c", None]),
        "amount": st.integers(-3, 3),
        "tenant": st.integers(1, 3),
    }
)
filters = st.lists(
    st.sampled_from(
        [
            "status=eq.a",
            "status=eq.b",
            "amount=gt.0",
            "amount=eq.1",
            "tenant=in.(1,2)",
            "status=is.null",
            "tenant=eq.3",
            "status=neq.a",
            "amount=not.eq.0",
        ]
    ),
    max_size=3,
).map("&".join)


@settings(max_examples=200)
@given(
    st.lists(filters, min_size=1, max_size=12),
    st.sampled_from(["INSERT", "UPDATE", "DELETE"]),
    rows,
    rows,
)
def test_indexed_match_equals_brute_force(
    flts: list[str], op: str, new: dict[str, object], old: dict[str, object]
) -> None:
    hub = Hub()
    subs = [sub(f"s{i}", flt=f) for i, f in enumerate(flts)]
    for s in subs:
        hub.add(s)
    c = change(op, None if op == "DELETE" else new, None if op == "INSERT" else old)
    expected = {s.id for s in subs if s.wants(c)}
    assert ids(hub.match(c)) == expected


class TenantRule:
    """A stand-in for auth.RowRule: rows of one tenant."""

    def __init__(self, tenant: int) -> None:
        self.tenant = tenant

    def matches(self, row: dict[str, object] | None) -> bool:
        return row is not None and row.get("tenant") == self.tenant


def test_row_rules_never_show_another_tenants_row_image() -> None:
    from pgcast.events import AS_DELETE, AS_INSERT, FULL

    sub = Subscription("a", None, schema="public", table="orders", events=OPS, rule=TenantRule(1))  # type: ignore[arg-type]
    moved_in = change("UPDATE", {"id": 7, "tenant": 1}, {"id": 7, "tenant": 2})
    moved_out = change("UPDATE", {"id": 7, "tenant": 2}, {"id": 7, "tenant": 1})
    stays = change("UPDATE", {"id": 7, "tenant": 1, "v": 2}, {"id": 7, "tenant": 1, "v": 1})
    elsewhere = change("UPDATE", {"id": 7, "tenant": 2}, {"id": 7, "tenant": 3})
    assert sub.view(moved_in) == AS_INSERT
    assert sub.view(moved_out) == AS_DELETE
    assert sub.view(stays) == FULL
    assert sub.view(elsewhere) == 0
    shown_in = orjson.loads(b"{" + moved_in.body(None, AS_INSERT))
    assert shown_in["op"] == "INSERT" and shown_in["old_record"] is None
    assert shown_in["record"] == {"id": 7, "tenant": 1} and shown_in["changed"] is None
    shown_out = orjson.loads(b"{" + moved_out.body(None, AS_DELETE))
    assert shown_out["op"] == "DELETE" and shown_out["record"] is None
    assert shown_out["old_record"] == {"id": 7, "tenant": 1}


def test_a_change_the_snapshot_already_holds_is_never_delivered_live() -> None:
    """A lagging listener may dispatch, after the subscription went live, a change
    committed before its snapshot: the subscription's horizon hides it."""
    from pgcast.events import Horizon

    hub = Hub()
    s = sub("s")
    hub.add(s)
    s.horizon = Horizon(head=100, pending=frozenset({7}), xmax=9)

    def at(change_id: int, txid: int) -> ChangeEvent:
        return ChangeEvent.from_dicts(
            id=change_id, schema="public", table="orders", op="INSERT", record={}, txid=txid
        )

    assert ids(hub.match(at(99, 5))) == set()  # committed before the snapshot
    assert ids(hub.match(at(98, 7))) == {"s"}  # its transaction was still open then
    assert ids(hub.match(at(97, 9))) == {"s"}  # at or above xmax: open then too
    assert ids(hub.match(at(101, 5))) == {"s"}  # after the snapshot's head
