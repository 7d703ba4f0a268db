"""Client frame decoding: every malformed frame is a ProtocolError with a wire code."""

from __future__ import annotations

import contextlib
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcast import protocol
from pgcast.events import OPS
from pgcast.exceptions import ProtocolError
from pgcast.protocol import (
    Auth,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    decode_client_message,
)


def test_subscribe_with_every_option_decodes() -> None:
    message = decode_client_message(
        orjson.dumps(
            {
                "type": "subscribe",
                "id": "s1",
                "table": "orders",
                "schema": "public",
                "events": ["insert", "UPDATE"],
                "filter": "status=eq.pending",
                "columns": ["id", "status"],
                "since": "1042",
            }
        )
    )
    assert isinstance(message, Subscribe)
    assert message.events == {"INSERT", "UPDATE"}
    assert message.since == 1042
    assert message.columns == {"id", "status"}
    assert str(message.filter) == "status=eq.pending"


def test_defaults_and_other_messages() -> None:
    sub = decode_client_message('{"type":"subscribe","id":"a","table":"t"}')
    assert isinstance(sub, Subscribe) and sub.events == OPS and sub.since is None
    assert decode_client_message('{"type":"unsubscribe","id":"a"}') == Unsubscribe("a")
    assert decode_client_message('{"type":"ping","data":1}') == Ping(1)
    assert decode_client_message(
        '{"type":"publish","id":"p","channel":"c","payload":"x"}'
    ) == Publish("p", "c", "x")
    assert decode_client_message('{"type":"auth","token":"t"}') == Auth("t")
    channel = decode_client_message(
        '{"type":"subscribe","id":"c","channel":"system_notifications"}'
    )
    assert isinstance(channel, Subscribe) and channel.channel == "system_notifications"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_frame"),
        ("[1,2]", "bad_frame"),
        ('"subscribe"', "bad_frame"),
        ("{}", "unknown_type"),
        ('{"type":"drop_database"}', "unknown_type"),
        ('{"type":"subscribe","table":"t"}', "bad_request"),
        ('{"type":"subscribe","id":"","table":"t"}', "bad_request"),
        ('{"type":"subscribe","id":5,"table":"t"}', "bad_request"),
        ('{"type":"subscribe","id":"' + "x" * 200 + '","table":"t"}', "bad_request"),
        ('{"type":"subscribe","id":"a"}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","channel":"c"}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"' + "t" * 64 + '"}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t\\u0000"}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":7}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","events":["MERGE"]}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","events":[]}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","filter":"x"}', "bad_filter"),
        ('{"type":"subscribe","id":"a","table":"t","filter":5}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","since":"-1"}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","since":"1e9"}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","since":true}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","since":99999999999999999999}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","columns":[]}', "bad_request"),
        ('{"type":"subscribe","id":"a","table":"t","columns":[1]}', "bad_request"),
        ('{"type":"subscribe","id":"a","channel":"x; LISTEN y"}', "bad_request"),
        ('{"type":"subscribe","id":"a","channel":"c","filter":"a=eq.1"}', "bad_request"),
        ('{"type":"unsubscribe"}', "bad_request"),
        ('{"type":"publish","id":"p","channel":"a b","payload":"x"}', "bad_request"),
        ('{"type":"publish","id":"p","channel":"c","payload":5}', "bad_request"),
        ('{"type":"publish","channel":"c","payload":"x"}', "bad_request"),
        ('{"type":"auth"}', "unauthorized"),
        ('{"type":"auth","token":""}', "unauthorized"),
    ],
)
def test_malformed_frames_are_refused_with_a_code(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client_message(frame)
    assert caught.value.code == code


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_decoder_raises_only_protocol_errors_on_arbitrary_input(data: str | bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_client_message(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", "publish", "x"])},
        optional={
            "id": json_values,
            "table": json_values,
            "channel": json_values,
            "filter": json_values,
            "since": json_values,
            "events": json_values,
            "columns": json_values,
        },
    )
)
def test_decoder_raises_only_protocol_errors_on_structured_junk(message: dict[str, object]) -> None:
    with contextlib.suppress(ProtocolError):
        decode_client_message(json.dumps(message))


def test_server_messages_encode_as_documented() -> None:
    assert orjson.loads(protocol.welcome("pgcast/x", "7:9:")) == {
        "type": "welcome",
        "version": 1,
        "server": "pgcast/x",
        "position": "7:9:",
    }


def test_since_accepts_change_ids_and_exact_positions() -> None:
    from pgcast.events import Horizon

    def since(value: object) -> object:
        message = decode_client_message(
            json.dumps({"type": "subscribe", "id": "a", "table": "t", "since": value})
        )
        assert isinstance(message, Subscribe)
        return message.since

    assert since("1042") == 1042
    assert since("1041:88233:88230,88231") == Horizon(1041, frozenset({88230, 88231}), 88233)
    assert since("7:9:") == Horizon(7, frozenset(), 9)
    horizon = Horizon(5, frozenset({3, 4}), 6)
    assert Horizon.parse(horizon.encode()) == horizon
    for bad in ("1:2", "1:2:3:4", "a:b:", "1:2:,", "1:2:3,", "-1:2:"):
        with pytest.raises(ProtocolError):
            since(bad)
    assert orjson.loads(protocol.error("bad_filter", "nope", "s1")) == {
        "type": "error",
        "id": "s1",
        "code": "bad_filter",
        "message": "nope",
    }
    message = orjson.loads(
        protocol.channel_message_prefix("c1") + protocol.channel_message_body("chan", "hi")
    )
    assert message == {"type": "message", "sub": "c1", "channel": "chan", "payload": "hi"}
