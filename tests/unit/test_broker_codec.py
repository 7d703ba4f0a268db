"""The broker's pure parts: stream messages and positions in and out, hostile
messages refused with BrokerError, broker settings validated."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcast.broker import codec
from pgcast.config import Settings, load_settings
from pgcast.events import ChangeEvent, Horizon
from pgcast.exceptions import BrokerError, ConfigError


def change(**fields: object) -> ChangeEvent:
    values: dict[str, object] = {
        "id": 42,
        "schema": "public",
        "table": "my.table *>",
        "op": "UPDATE",
        "record_json": '{"id": 1, "n": 1.000000000000000000001, "s": "\\u2028"}',
        "old_record_json": '{"id": 1}',
        "changed": ["n"],
        "txid": 900,
        "committed_at": "2026-11-30T00:00:00.000001Z",
    }
    values.update(fields)
    return ChangeEvent(**values)  # type: ignore[arg-type]


def test_a_change_round_trips_with_its_row_images_byte_for_byte() -> None:
    original = change()
    at = Horizon(41, frozenset({899, 897}), 901)
    entry = codec.decode(codec.encode_change(original), codec.headers("42", position=at, last=True))
    got = entry.change
    assert got is not None and entry.exact and entry.position == at
    for name in ("id", "schema", "table", "op", "record_json", "old_record_json"):
        assert getattr(got, name) == getattr(original, name)
    assert (got.changed, got.txid, got.committed_at) == (["n"], 900, original.committed_at)


def test_a_message_in_the_middle_of_a_read_carries_where_the_read_began() -> None:
    at = Horizon(10, frozenset(), 5)
    headers = codec.headers("11", position=at, last=False)
    assert codec.FROM in headers and codec.POSITION not in headers
    entry = codec.decode(codec.encode_change(change(id=11)), headers)
    assert entry.position == at and not entry.exact


def test_a_gap_marker_says_through_which_id_the_log_was_pruned() -> None:
    at = Horizon(500, frozenset(), 9)
    entry = codec.decode(
        b"", codec.headers(codec.gap_id(500), position=at, last=True, gap_through=500)
    )
    assert entry.change is None and entry.gap_through == 500


HOSTILE = [
    b"",
    b"not json",
    b"{}",
    b"[1,2,3]",
    orjson.dumps([0, 1, "s", "t", "INSERT", None, None, None, "x"]),  # id 0
    orjson.dumps([2**63, 1, "s", "t", "INSERT", None, None, None, "x"]),  # id too big
    orjson.dumps([True, 1, "s", "t", "INSERT", None, None, None, "x"]),  # bool id
    orjson.dumps([1, 1, "s", "t", "MERGE", None, None, None, "x"]),
    orjson.dumps([1, 1, "s", "t", ["INSERT"], None, None, None, "x"]),  # unhashable op
    orjson.dumps([1, 1, "s", "t", "INSERT", {"id": 1}, None, None, "x"]),  # not text
    orjson.dumps([1, 1, "s", "t", "INSERT", None, None, "n", "x"]),
    orjson.dumps([1, 1, "s", "t", "INSERT", None, None, [1], "x"]),
    orjson.dumps([1, 1, None, "t", "INSERT", None, None, None, "x"]),
]


@pytest.mark.parametrize("payload", HOSTILE)
def test_a_message_pgcast_did_not_write_is_refused_with_a_clear_error(payload: bytes) -> None:
    with pytest.raises(BrokerError, match="stream message"):
        codec.decode(payload, {})


@pytest.mark.parametrize(
    "headers",
    [
        {codec.POSITION: "x"},
        {codec.FROM: "1:2:3,"},
        {codec.POSITION: "9" * 30 + ":1:"},
        {codec.GAP: "-1"},
        {codec.GAP: "9" * 30},
    ],
)
def test_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(BrokerError, match="malformed"):
        codec.decode(codec.encode_change(change()), headers)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_broker_error(data: bytes) -> None:
    with contextlib.suppress(BrokerError):
        codec.decode(data, None)


def test_broker_settings_are_validated_without_leaking_the_password() -> None:
    assert Settings(broker="nats://127.0.0.1:4222").broker == "nats://127.0.0.1:4222"
    assert Settings(broker="").broker is None
    both = "nats://a:1,tls://b:2"
    assert Settings(broker=both).broker == both
    for bad in ("http://x:1", "nats://", "redis://h", "nats://h:0", "nats://h:99999"):
        with pytest.raises(ConfigError) as info:
            Settings(broker=bad)
        assert "secret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PGCAST_BROKER": "amqp://u:secret@h"})
    assert "PGCAST_BROKER" in str(info.value) and "secret" not in str(info.value)
    shown = Settings(broker="nats://u:secret@h:4222").redacted()["broker"]
    assert shown == "nats://u:***@h:4222"
    for stream in ("a.b", "a*", "a>", "", "x" * 33, "a b", "../x"):
        with pytest.raises(ConfigError, match="not a stream name"):
            Settings(broker_stream=stream)
    assert load_settings(env={"PGCAST_BROKER_STREAM": "orders_db"}).broker_stream == "orders_db"
