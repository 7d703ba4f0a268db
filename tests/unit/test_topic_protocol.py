"""The native topic messages (pure) and the Python client's presence bookkeeping."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from pgcast import protocol
from pgcast.broadcast import Broadcast
from pgcast.client import apply_presence_diff
from pgcast.exceptions import ProtocolError
from pgcast.topic_protocol import BroadcastRequest, Join, Track, topic_error
from pgcast.topic_requests import NativeSink


def test_join_defaults_and_options() -> None:
    assert protocol.decode_client_message('{"type":"join","topic":"room:1"}') == Join("room:1")
    joined = protocol.decode_client_message(
        '{"type":"join","topic":"r","presence":false,"self":true,"ack":true}'
    )
    assert joined == Join("r", presence=False, receive_own=True, ack=True)


def test_track_and_broadcast_decode() -> None:
    track = protocol.decode_client_message('{"type":"track","topic":"r","state":{"a":1}}')
    assert track == Track("r", None, {"a": 1})
    message = protocol.decode_client_message(
        '{"type":"broadcast","topic":"r","event":"e","payload":[1],"ref":"x"}'
    )
    assert message == BroadcastRequest("r", "e", [1], "x")


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "join", "topic": ""},
        {"type": "join", "topic": "a b"},
        {"type": "join", "topic": "r", "ack": 1},
        {"type": "track", "topic": "r"},
        {"type": "track", "topic": "r", "key": [], "state": {}},
        {"type": "broadcast", "topic": "r", "event": "e"},
        {"type": "broadcast", "topic": "r", "event": "e", "payload": 1, "ref": ""},
        {"type": "broadcast", "topic": "r", "event": "\x00", "payload": 1},
        {"type": "leave"},
    ],
)
def test_bad_topic_messages_are_refused_with_their_topic(frame: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_client_message(orjson.dumps(frame))
    assert refused.value.code == "bad_request"
    topic = frame.get("topic")
    expected = topic if isinstance(topic, str) and topic and " " not in topic else None
    assert refused.value.topic == expected


def test_topic_error_carries_topic_and_ref() -> None:
    body = orjson.loads(topic_error("rate_limited", "slow down", "r", "b1"))
    assert body == {
        "type": "error",
        "id": None,
        "topic": "r",
        "code": "rate_limited",
        "ref": "b1",
        "message": "slow down",
    }


def test_python_client_applies_diffs_by_ref() -> None:
    state = {"a": {"metas": [{"phx_ref": "1"}, {"phx_ref": "2"}]}}
    joined = apply_presence_diff(state, {"b": {"metas": [{"phx_ref": "3"}]}}, {})
    assert sorted(joined) == ["a", "b"]
    left = apply_presence_diff(joined, {}, {"a": {"metas": [{"phx_ref": "1"}, {"phx_ref": "2"}]}})
    assert left == {"b": {"metas": [{"phx_ref": "3"}]}}
    assert apply_presence_diff(left, {"b": {"metas": [{"phx_ref": "3"}]}}, {}) == left
    assert len(state["a"]["metas"]) == 2  # not changed in place


class _Sent:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.frames.append(payload)


def test_native_members_share_one_encoded_frame_per_broadcast_and_diff() -> None:
    conns = [_Sent() for _ in range(3)]
    sinks = [NativeSink(cast(Any, conn)) for conn in conns]
    message = Broadcast.build("room", "typing", {"who": "ann"}, max_bytes=1024)
    frames: dict[str, bytes] = {}
    for sink in sinks:
        sink.broadcast(message)
        sink.presence_diff("room", {"ann": {"metas": [{"phx_ref": "1"}]}}, {}, frames)
    first = conns[0].frames
    assert orjson.loads(first[0]) == {
        "type": "broadcast",
        "topic": "room",
        "event": "typing",
        "payload": {"who": "ann"},
    }
    assert orjson.loads(first[1])["type"] == "presence_diff"
    for conn in conns[1:]:  # the very same bytes objects: encoded once, not per member
        assert conn.frames[0] is first[0] and conn.frames[1] is first[1]
