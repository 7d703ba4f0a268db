"""The Phoenix session (pgcast.supabase.channel) and bindings (pgcast.supabase.changes):
frames in, pgcast messages and Phoenix frames out, without sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pgcast.events import ChangeEvent, subscription_prefix
from pgcast.supabase import changes
from pgcast.supabase.channel import (
    MAX_BAD_FRAMES,
    MAX_CHANNELS,
    Action,
    Authenticate,
    Close,
    Extension,
    Forward,
    Joined,
    Left,
    PhoenixSession,
    Reply,
)
from pgcast.supabase.frames import Vsn

COLUMNS = b'[{"name":"id","type":"int4"},{"name":"status","type":"text"}]'
JWT = "aaa.bbb.ccc"


def session(**kwargs: Any) -> PhoenixSession:
    options: dict[str, Any] = {
        "apikey": JWT,
        "columns": lambda schema, table: COLUMNS,
        "tables": lambda schema: [("public", "orders"), ("public", "items")],
        "join_rate": 0,
    }
    return PhoenixSession(Vsn.V2, **{**options, **kwargs})


def frame(*parts: Any) -> str:
    return orjson.dumps(list(parts)).decode()


def sent(actions: list[Action]) -> list[list[Any]]:
    return [orjson.loads(a.frame) for a in actions if isinstance(a, Reply)]


def forwarded(actions: list[Action]) -> list[dict[str, Any]]:
    found = []
    for action in actions:
        if isinstance(action, Authenticate):
            found += forwarded(action.then)
        elif isinstance(action, Forward):
            found.append(action.message)
    return found


def join(s: PhoenixSession, topic: str, bindings: list[Any], **payload: Any) -> list[Action]:
    config = {"broadcast": {"self": False}, "postgres_changes": bindings}
    actions = s.receive(frame("1", "1", topic, "phx_join", {"config": config, **payload}))
    if actions and isinstance(actions[-1], Authenticate):
        s.authenticated = True
        return [*actions[:-1], *actions[-1].then]
    return actions


def subscribed(s: PhoenixSession, sub_id: str) -> list[Action]:
    return s.from_gateway(orjson.dumps({"type": "subscribed", "id": sub_id}))


def test_heartbeat_is_answered_on_topic_phoenix() -> None:
    assert sent(session().receive(frame(None, "5", "phoenix", "heartbeat", {}))) == [
        [None, "5", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
    ]


def test_first_join_authenticates_with_the_access_token_else_the_apikey() -> None:
    s = session()
    [auth] = s.receive(frame("1", "1", "realtime:a", "phx_join", {"access_token": "x.y.z"}))
    assert isinstance(auth, Authenticate) and auth.token == "x.y.z"
    assert sent(auth.then) == [
        [
            "1",
            "1",
            "realtime:a",
            "phx_reply",
            {"status": "ok", "response": {"postgres_changes": []}},
        ]
    ]
    [auth] = session().receive(frame("1", "1", "realtime:a", "phx_join", {}))
    assert isinstance(auth, Authenticate) and auth.token == JWT
    [auth] = session(apikey="sb_publishable_x").receive(
        frame("1", "1", "realtime:a", "phx_join", {})
    )
    assert isinstance(auth, Authenticate) and auth.token is None


def test_join_is_answered_once_every_binding_is_live_then_subscribed_to_postgresql() -> None:
    s = session()
    bindings = [
        {"event": "*", "schema": "public", "table": "orders"},
        {
            "event": "INSERT",
            "schema": "public",
            "table": "orders",
            "filter": "id=gt.0,status=in.(a,b)",
        },
    ]
    actions = join(s, "realtime:room", bindings)
    assert sent(actions) == []  # not before the subscriptions are live
    subs = forwarded(actions)
    assert subs == [
        {
            "type": "subscribe",
            "id": "sb1",
            "table": "orders",
            "events": ["INSERT", "UPDATE", "DELETE"],
            "schema": "public",
        },
        {
            "type": "subscribe",
            "id": "sb2",
            "table": "orders",
            "events": ["INSERT"],
            "schema": "public",
            "filter": "id=gt.0&status=in.(a,b)",
        },
    ]
    assert subscribed(s, "sb1") == []
    reply, system = sent(subscribed(s, "sb2"))
    ids = [changes.binding_id(b) for b in bindings]
    assert reply == [
        "1",
        "1",
        "realtime:room",
        "phx_reply",
        {
            "status": "ok",
            "response": {
                "postgres_changes": [{**b, "id": i} for b, i in zip(bindings, ids, strict=True)]
            },
        },
    ]
    assert system == [
        "1",
        None,
        "realtime:room",
        "system",
        {
            "extension": "postgres_changes",
            "status": "ok",
            "message": "Subscribed to PostgreSQL",
            "channel": "room",
        },
    ]


def test_equal_bindings_share_an_id_and_one_subscription() -> None:
    s = session()
    binding = {"event": "*", "schema": "public", "table": "orders"}
    subs = forwarded(join(s, "realtime:room", [binding, dict(binding)]))
    assert len(subs) == 1
    [reply, _] = sent(subscribed(s, subs[0]["id"]))
    first, second = reply[4]["response"]["postgres_changes"]
    assert first["id"] == second["id"]


def test_a_binding_without_table_covers_every_tracked_table_of_its_schema() -> None:
    subs = forwarded(join(session(), "realtime:room", [{"event": "*", "schema": "public"}]))
    assert [(m["schema"], m["table"]) for m in subs] == [("public", "orders"), ("public", "items")]
    refused = session(tables=lambda schema: [])
    [reply] = sent(join(refused, "realtime:room", [{"event": "*", "schema": "nope"}]))
    assert reply[4]["status"] == "error"
    assert "tracks no table in schema 'nope'" in reply[4]["response"]["reason"]


def test_pgcast_since_resumes_and_does_not_change_the_binding_id() -> None:
    binding = {"event": "*", "schema": "public", "table": "orders"}
    resumed = {**binding, "pgcast_since": "pgcast:1042"}
    [sub] = forwarded(join(session(), "realtime:room", [resumed]))
    assert sub["since"] == "1042"
    assert changes.binding_id(binding) == changes.binding_id(resumed)
    [sub] = forwarded(join(session(), "realtime:room", [{**binding, "pgcast_since": 7}]))
    assert sub["since"] == "7"


@pytest.mark.parametrize(
    "binding",
    [
        "not a map",
        {"event": "TRUNCATE", "schema": "public", "table": "t"},
        {"event": "*", "table": "t"},
        {"event": "*", "schema": "s" * 64, "table": "t"},
        {"event": "*", "schema": "public", "table": 7},
        {"event": "*", "schema": "public", "table": "t", "filter": ["x"]},
        {"event": "*", "schema": "public", "table": "t", "select": []},
        {"event": "*", "schema": "public", "table": "t", "pgcast_since": {"a": 1}},
    ],
)
def test_bad_bindings_refuse_the_join(binding: Any) -> None:
    [reply] = sent(join(session(), "realtime:room", [binding]))
    assert reply[4]["status"] == "error"
    assert reply[4]["response"]["reason"].startswith("InvalidJoinPayload")


def test_too_many_bindings_refuse_the_join() -> None:
    bindings = [{"event": "*", "schema": "public", "table": f"t{i}"} for i in range(33)]
    [reply] = sent(join(session(), "realtime:room", bindings))
    assert "at most 32" in reply[4]["response"]["reason"]


def test_a_subscription_refused_before_the_reply_refuses_the_join() -> None:
    s = session()
    bindings = [{"event": "*", "schema": "public", "table": t} for t in ("orders", "secret")]
    join(s, "realtime:room", bindings)
    error = {"type": "error", "id": "sb2", "code": "forbidden", "message": "no"}
    actions = s.from_gateway(orjson.dumps(error))
    assert forwarded(actions) == [{"type": "unsubscribe", "id": "sb1"}]
    [reply] = sent(actions)
    assert reply[4] == {"status": "error", "response": {"reason": "forbidden: no"}}
    assert "realtime:room" not in s.channels
    assert subscribed(s, "sb1") == []  # late answers about a refused join are dropped


def test_errors_and_resyncs_after_the_reply_are_system_messages() -> None:
    s = session()
    join(s, "realtime:room", [{"event": "*", "schema": "public", "table": "orders"}])
    subscribed(s, "sb1")
    gone = {"type": "error", "id": "sb1", "code": "table_gone", "message": "dropped"}
    [system] = sent(s.from_gateway(orjson.dumps(gone)))
    assert system[3:] == [
        "system",
        {
            "extension": "postgres_changes",
            "status": "error",
            "message": "table_gone: dropped",
            "channel": "room",
        },
    ]
    s2 = session()
    join(s2, "realtime:room", [{"event": "*", "schema": "public", "table": "orders"}])
    subscribed(s2, "sb1")
    [system] = sent(
        s2.from_gateway(orjson.dumps({"type": "resync", "sub": "sb1", "reason": "pruned"}))
    )
    assert system[4]["message"] == "ResyncRequired: pruned"


def change_body(**fields: Any) -> bytes:
    change = ChangeEvent(
        id=fields.get("id", 42),
        schema="public",
        table="orders",
        op=fields.get("op", "INSERT"),
        record_json=fields.get("record", '{"id": 1, "amount": 12345678901234567890.50}'),
        old_record_json=fields.get("old"),
        changed=None,
        txid=9,
        committed_at="2026-11-21T12:00:00.123456Z",
    )
    return change.body()


def test_changes_are_shaped_as_the_supabase_server_sends_them() -> None:
    s = session()
    join(s, "realtime:room", [{"event": "*", "schema": "public", "table": "orders"}])
    subscribed(s, "sb1")
    [message] = [
        a.frame for a in s.change(subscription_prefix("sb1"), change_body()) if isinstance(a, Reply)
    ]
    # Numbers pass digit for digit (no float on the way).
    assert b'"amount":12345678901234567890.50' in message
    join_ref, ref, topic, event, payload = orjson.loads(message)
    assert (join_ref, ref, topic, event) == (None, "pgcast:42", "realtime:room", "postgres_changes")
    binding_id = changes.binding_id({"event": "*", "schema": "public", "table": "orders"})
    assert payload["ids"] == [binding_id]
    data = payload["data"]
    assert set(data) == {
        "columns",
        "commit_timestamp",
        "errors",
        "schema",
        "table",
        "type",
        "record",
    }
    assert data["columns"] == [{"name": "id", "type": "int4"}, {"name": "status", "type": "text"}]
    assert data["commit_timestamp"] == "2026-11-21T12:00:00.123Z"
    assert (data["errors"], data["schema"], data["table"], data["type"]) == (
        None,
        "public",
        "orders",
        "INSERT",
    )
    update = change_body(op="UPDATE", record='{"id": 1}', old='{"id": 1, "status": "a"}')
    [reply] = sent(s.change(subscription_prefix("sb1"), update))
    assert reply[4]["data"]["old_record"] == {"id": 1, "status": "a"}
    delete = change_body(op="DELETE", record=None, old='{"id": 1}')
    [reply] = sent(s.change(subscription_prefix("sb1"), delete))
    assert "record" not in reply[4]["data"] and reply[4]["data"]["old_record"] == {"id": 1}


def test_a_resumed_change_before_the_subscription_is_live_is_preceded_by_the_reply() -> None:
    s = session()
    join(
        s,
        "realtime:room",
        [{"event": "*", "schema": "public", "table": "orders", "pgcast_since": "1"}],
    )
    reply, change = sent(s.change(subscription_prefix("sb1"), change_body()))
    assert reply[3] == "phx_reply" and change[3] == "postgres_changes"
    [system] = sent(subscribed(s, "sb1"))  # no second reply
    assert system[3] == "system"


def test_leave_unsubscribes_and_later_changes_are_dropped() -> None:
    s = session()
    join(s, "realtime:room", [{"event": "*", "schema": "public", "table": "orders"}])
    subscribed(s, "sb1")
    actions = s.receive(frame("1", "9", "realtime:room", "phx_leave", {}))
    assert forwarded(actions) == [{"type": "unsubscribe", "id": "sb1"}]
    assert sent(actions) == [
        ["1", "9", "realtime:room", "phx_reply", {"status": "ok", "response": {}}]
    ]
    assert s.change(subscription_prefix("sb1"), change_body()) == []


def test_a_rejoin_of_the_same_topic_replaces_the_channel() -> None:
    s = session()
    join(s, "realtime:room", [{"event": "*", "schema": "public", "table": "orders"}])
    actions = join(s, "realtime:room", [{"event": "*", "schema": "public", "table": "orders"}])
    assert forwarded(actions)[0] == {"type": "unsubscribe", "id": "sb1"}
    assert forwarded(actions)[1]["id"] == "sb2"


def test_access_token_refreshes_once_per_new_token() -> None:
    s = session()
    join(s, "realtime:room", [], access_token="a.b.c")
    refresh = frame("1", "3", "realtime:room", "access_token", {"access_token": "d.e.f"})
    assert forwarded(s.receive(refresh)) == [{"type": "auth", "token": "d.e.f"}]
    assert s.receive(refresh) == []  # the same token again: nothing new
    sb = frame("1", "4", "realtime:room", "access_token", {"access_token": "sb_secret"})
    assert s.receive(sb) == []
    assert s.receive(frame("1", "5", "realtime:room", "access_token", {"access_token": None})) == []


def test_messages_to_topics_not_joined_and_unknown_events_get_error_replies() -> None:
    s = session()
    [reply] = sent(s.receive(frame("1", "2", "realtime:nope", "broadcast", {})))
    assert reply[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
    [reply] = sent(s.receive(frame("1", "2", "elsewhere", "phx_join", {})))
    assert reply[4]["response"]["reason"] == "unmatched topic"
    [reply] = sent(s.receive(frame("1", "2", "realtime:", "phx_join", {})))
    assert reply[4]["response"]["reason"].startswith("TopicNameRequired")
    [reply] = sent(s.receive(frame(None, "2", "phoenix", "bogus", {})))
    assert reply[4]["status"] == "error"
    join(s, "realtime:room", [])
    [reply] = sent(s.receive(frame("1", "3", "realtime:room", "bogus", {})))
    assert reply[4]["response"]["reason"] == "unknown event 'bogus'"
    [reply] = sent(s.receive(frame("1", "3", "realtime:room", "phx_join", "not a map")))
    assert reply[4]["response"]["reason"].startswith("InvalidJoinPayload")


def test_broadcast_and_presence_go_to_the_extension() -> None:
    s = session()
    join(s, "realtime:room", [])
    [action] = s.receive(
        frame(
            "1",
            "3",
            "realtime:room",
            "broadcast",
            {"type": "broadcast", "event": "e", "payload": {}},
        )
    )
    assert isinstance(action, Extension) and action.config["broadcast"] == {"self": False}
    [reply] = sent(s.receive(frame("1", "3", "realtime:room", "presence", [1])))
    assert reply[4]["status"] == "error"


def test_malformed_frames_get_phx_error_then_a_close() -> None:
    s = session()
    for _ in range(MAX_BAD_FRAMES):
        [reply] = sent(s.receive("{nope"))
        assert reply[2:4] == ["phoenix", "phx_error"]
    [close] = s.receive("{nope")
    assert isinstance(close, Close) and close.code == 4500


def test_join_floods_and_channel_counts_are_bounded() -> None:
    clock = [0.0]
    s = session(join_rate=5, clock=lambda: clock[0])
    replies = [sent(join(s, f"realtime:r{i}", []))[0][4]["status"] for i in range(10)]
    assert replies.count("ok") == 5 and replies.count("error") == 5
    s = session()
    for i in range(MAX_CHANNELS):
        join(s, f"realtime:r{i}", [])
    [reply] = sent(join(s, "realtime:one-more", []))
    assert reply[4]["response"]["reason"].startswith("ChannelRateLimitReached")


@pytest.mark.parametrize(
    ("supabase", "pgcast"),
    [
        ("id=eq.1", "id=eq.1"),
        ("id=gt.0,id=lt.100", "id=gt.0&id=lt.100"),
        ("status=in.(a,b),id=eq.2", "status=in.(a,b)&id=eq.2"),
        ('name=eq."a,b",id=eq.1', 'name=eq."a,b"&id=eq.1'),
        ("status=not.in.(draft,archived)", "status=not.in.(draft,archived)"),
    ],
)
def test_filters_are_translated(supabase: str, pgcast: str) -> None:
    assert changes.supabase_filter(supabase) == pgcast


def test_presence_and_broadcast_start_after_the_join_reply_and_stop_at_leave() -> None:
    s = session()
    actions = join(s, "realtime:room", [{"event": "*", "schema": "public", "table": "orders"}])
    assert not any(isinstance(a, Joined) for a in actions)  # not before the reply
    reply, joined, _system = subscribed(s, "sb1")
    assert isinstance(reply, Reply) and isinstance(joined, Joined)
    assert (joined.topic, joined.join_ref) == ("realtime:room", "1")
    actions = s.receive(frame("1", "9", "realtime:room", "phx_leave", {}))
    assert any(isinstance(a, Left) and a.topic == "realtime:room" for a in actions)
    # A join refused before its reply never joined: nothing to leave.
    s = session()
    join(s, "realtime:other", [{"event": "*", "schema": "public", "table": "orders"}])
    error = {"type": "error", "id": "sb1", "code": "forbidden", "message": "no"}
    assert not any(isinstance(a, Left) for a in s.from_gateway(orjson.dumps(error)))


def test_a_join_needing_more_subscriptions_than_the_connection_may_hold_sends_none() -> None:
    """Attack: 32 schema-wide bindings over many tracked tables made one join frame
    thousands of subscribe messages, each refused in turn (CPU and memory per frame)."""
    many = [("public", f"t{i}") for i in range(300)]
    s = session(tables=lambda schema: many, max_subscriptions=100)
    bindings = [{"event": "*", "schema": "public", "filter": f"v=eq.{i}"} for i in range(32)]
    actions = join(s, "realtime:x", bindings)
    assert forwarded(actions) == []
    [reply] = sent(actions)
    assert reply[4]["status"] == "error"
    assert reply[4]["response"]["reason"].startswith("too_many_subscriptions")
    assert s.channels == {} and s.by_sub == {}
    # Within the bound, a join goes on; the next one counts what is open.
    few = session(tables=lambda schema: many[:60], max_subscriptions=100)
    assert len(forwarded(join(few, "realtime:a", [{"event": "*", "schema": "public"}]))) == 60
    refused = sent(join(few, "realtime:b", [{"event": "*", "schema": "public"}]))
    assert refused[-1][4]["response"]["reason"].startswith("too_many_subscriptions")


def test_a_change_too_deep_for_the_json_parser_is_split_without_recursion() -> None:
    from pgcast.supabase.changes import _shallow_change, change_data

    record = (
        '{"id": 7, "doc": {"a": [1, {"b": "x\\"]}:,"}], "c": null}, "n": 1.50, '
        '"t": "{[,:]}", "e": {}, "k\\u00e9": true}'
    )
    body = (
        '"id":"42","schema":"public","table":"orders","op":"UPDATE","record":'
        + record
        + ',"old_record":{"id": 7},"changed":["doc"],"txid":"9",'
        + '"committed_at":"2026-01-01T00:00:00.123456Z"}'
    ).encode()
    shallow = _shallow_change(b"{" + body)
    assert orjson.loads(orjson.dumps(shallow["record"])) == orjson.loads(record)
    assert orjson.dumps(shallow["record"]["n"]) == b"1.50"  # as written
    assert shallow["old_record"] is not None and shallow["changed"] == ["doc"]
    assert shallow["id"] == "42" and shallow["committed_at"].endswith("Z")
    deep = "[" * 3000 + "]" * 3000
    deep_body = body.replace(b'"e": {}', f'"e": {deep}'.encode())
    change_id, data = change_data(deep_body, lambda schema, table: COLUMNS)
    assert change_id == "42" and data["type"] == "UPDATE"
    assert orjson.dumps(data["record"]["e"]).decode() == deep


def test_a_channel_keeps_only_its_options_and_each_binding_only_its_keys() -> None:
    s = session()
    junk = [{}] * 1000
    binding = {"event": "*", "schema": "public", "table": "orders", "junk": junk}
    config = {"junk": junk, "presence": {"key": "k" * 10_000, "enabled": True, "x": junk}}
    config["broadcast"] = {"self": True, "ack": "yes", "x": junk}
    s.receive(
        frame(
            "1",
            "1",
            "realtime:a",
            "phx_join",
            {"config": {**config, "postgres_changes": [binding]}},
        )
    )
    channel = s.channels["realtime:a"]
    assert channel.config == {
        "broadcast": {"self": True},
        "presence": {"enabled": True, "key": "k" * 256},
    }
    [kept] = channel.bindings
    assert set(kept.echo) == {"event", "schema", "table", "id"}
    too_wide = {"event": "*", "schema": "public", "table": "orders", "select": ["c"] * 1601}
    refused = sent(
        s.receive(
            frame("1", "2", "realtime:b", "phx_join", {"config": {"postgres_changes": [too_wide]}})
        )
    )
    assert refused[0][4]["status"] == "error" and "realtime:b" not in s.channels


def test_bindings_a_channel_would_keep_are_bounded_in_bytes() -> None:
    """Attack: 32 bindings over tables the token may not read (left out silently), each
    with a `select` of 400 distinct long names, kept per channel, 100 channels."""
    s = session()
    names = [f"c{i:060d}" for i in range(400)]  # 32 of them: a 0.83 MB frame
    bindings = [{"event": "*", "schema": "public", "select": names} for _ in range(32)]
    refused = sent(join(s, "realtime:a", bindings))
    assert "bindings over 65536 bytes" in refused[0][4]["response"]["reason"]
    assert s.channels == {}
