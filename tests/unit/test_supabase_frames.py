"""Phoenix frames (pgcast.supabase.frames): both serializers, binary broadcasts, bad input."""

from __future__ import annotations

import struct

import orjson
import pytest

from pgcast.exceptions import ProtocolError
from pgcast.supabase import frames
from pgcast.supabase.frames import Encoding, Message, Vsn


def test_v2_frames_are_arrays_and_round_trip() -> None:
    raw = '["1","2","realtime:room","phx_join",{"config":{}}]'
    message = frames.decode(raw, Vsn.V2)
    assert message == Message("realtime:room", "phx_join", {"config": {}}, "2", "1")
    assert orjson.loads(frames.encode(message, Vsn.V2)) == orjson.loads(raw)


def test_v1_frames_are_objects_and_round_trip() -> None:
    raw = {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "7", "join_ref": None}
    message = frames.decode(orjson.dumps(raw).decode(), Vsn.V1)
    assert message == Message("phoenix", "heartbeat", {}, "7", None)
    assert orjson.loads(frames.encode(message, Vsn.V1)) == raw


def test_integer_refs_are_read_as_strings() -> None:
    message = frames.decode('[1, 2, "t", "e", {}]', Vsn.V2)
    assert (message.join_ref, message.ref) == ("1", "2")


@pytest.mark.parametrize(
    ("raw", "vsn", "why"),
    [
        ("not json", Vsn.V2, "not valid JSON"),
        ("{}", Vsn.V2, "JSON array"),
        ('["1","2","t","e"]', Vsn.V2, "JSON array"),
        ('[null,null,"","e",{}]', Vsn.V2, "topic must be"),
        ('[null,null,"t","",{}]', Vsn.V2, "event must be"),
        ('[null,null,7,"e",{}]', Vsn.V2, "topic must be"),
        ('[null,null,"t",["e"],{}]', Vsn.V2, "event must be"),
        ('[{"a":1},null,"t","e",{}]', Vsn.V2, "join_ref must be"),
        ('[null,true,"t","e",{}]', Vsn.V2, "ref must be"),
        ("[" + '"x",' * 4 + '"y"' + "]", Vsn.V1, "JSON object"),
        ("[]", Vsn.V1, "JSON object"),
        ('{"topic":"t"}', Vsn.V1, "event must be"),
        (f'[null,null,"{"t" * 256}","e",{{}}]', Vsn.V2, "longer than 255"),
        (f'[null,"{"1" * 256}","t","e",{{}}]', Vsn.V2, "longer than 255"),
        ("[" * 100_000, Vsn.V2, "not valid JSON"),
    ],
)
def test_malformed_text_frames_are_refused_with_the_reason(raw: str, vsn: Vsn, why: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        frames.decode(raw, vsn)
    assert caught.value.code == "bad_frame"
    assert why in str(caught.value)


def push(
    topic: str = "realtime:room",
    event: str = "cursor",
    payload: bytes = b'{"x":1}',
    *,
    encoding: int = 1,
    meta: bytes = b"",
    join_ref: bytes = b"1",
    ref: bytes = b"2",
    kind: int = 3,
) -> bytes:
    """A user broadcast push laid out as realtime-js's serializer writes it."""
    t, e = topic.encode(), event.encode()
    header = bytes((kind, len(join_ref), len(ref), len(t), len(e), len(meta), encoding))
    return header + join_ref + ref + t + e + meta + payload


def test_binary_broadcast_push_decodes_to_a_broadcast_message() -> None:
    message = frames.decode(push(meta=b'{"persist":true}'), Vsn.V2)
    assert message.topic == "realtime:room"
    assert message.event == "broadcast"
    assert (message.join_ref, message.ref) == ("1", "2")
    assert message.payload == {
        "type": "broadcast",
        "event": "cursor",
        "payload": {"x": 1},
        "persist": True,
    }
    raw = frames.decode(push(payload=b"\x00\xff", encoding=0), Vsn.V2)
    assert raw.payload["payload"] == b"\x00\xff"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than its 7-byte header"),
        (b"\x03\x00", "shorter than its 7-byte header"),
        (push(kind=4), "only user broadcast pushes"),
        (push(kind=1), "only user broadcast pushes"),
        (push(encoding=9), "unknown payload encoding"),
        (push()[:12], "shorter than its header says"),
        (bytes((3, 0, 0, 200, 1, 0, 1)) + b"abc", "shorter than its header says"),
        (push(topic="", event="e"), "topic must be"),
        (push(payload=b"{nope"), "not valid JSON"),
        (push(meta=b"[1]"), "metadata must be a JSON object"),
        (push(meta=b"{bad"), "metadata is not valid JSON"),
        (bytes((3, 0, 0, 2, 1, 0, 1)) + b"\xff\xfee{}", "not UTF-8"),
    ],
)
def test_malformed_binary_frames_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        frames.decode(data, Vsn.V2)
    assert why in str(caught.value)


def test_binary_frames_need_the_v2_serializer() -> None:
    with pytest.raises(ProtocolError, match=r"2\.0\.0"):
        frames.decode(push(), Vsn.V1)


def test_server_broadcast_frame_is_laid_out_as_realtime_js_reads_it() -> None:
    data = frames.encode_user_broadcast("realtime:room", "cursor", b'{"x":1}', Encoding.JSON)
    kind, topic_size, event_size, meta_size, encoding = struct.unpack("!5B", data[:5])
    assert (kind, topic_size, event_size, meta_size, encoding) == (4, 13, 6, 0, 1)
    assert data[5:] == b'realtime:roomcursor{"x":1}'
    with pytest.raises(ValueError):
        frames.encode_user_broadcast("t" * 256, "e", b"", Encoding.JSON)


@pytest.mark.parametrize(
    ("query", "vsn"),
    [
        ("apikey=k", Vsn.V1),
        ("apikey=k&vsn=1.0.0", Vsn.V1),
        ("vsn=2.0.0&apikey=k", Vsn.V2),
        ("vsn=3.0.0", None),
        ("vsn=", None),
        ("vsn=1.0.0&vsn=2.0.0", None),
    ],
)
def test_vsn_comes_from_the_query(query: str, vsn: Vsn | None) -> None:
    assert frames.vsn_from_query(query) == vsn
