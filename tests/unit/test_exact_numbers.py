"""Numbers beyond a float: exact parsing, comparison, routing, projection and claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from decimal import Decimal
from typing import Any

import jwt
import pytest

from pgcast.auth import Identity, TokenVerifier, VerificationKey, parse_rules
from pgcast.events import FULL, HIDDEN, ChangeEvent
from pgcast.exactjson import dumps, parse_row, project_row
from pgcast.exceptions import RowImageError
from pgcast.filters import parse_filter
from pgcast.hub import Hub, Subscription

BIG = 2**64
HUGE = "9" * 5000  # beyond Python's 4,300-digit int limit
DEEP = "[" * 3000 + "]" * 3000  # beyond orjson's and Python's nesting limits
SECRET = "exact-numbers-secret-" + "s" * 40


def change(record_json: str, *, id: int = 1, op: str = "INSERT") -> ChangeEvent:
    return ChangeEvent(
        id=id,
        schema="public",
        table="t",
        op=op,
        record_json=record_json,
        old_record_json=None,
        changed=None,
        txid=1,
        committed_at="2026-01-01T00:00:00.000000Z",
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f'{{"a": {BIG + 1}}}', BIG + 1),
        ('{"a": -9223372036854775809}', -(2**63) - 1),
        ('{"a": 0.1000000000000000001}', Decimal("0.1000000000000000001")),
        ('{"a": 1e400}', Decimal("1e400")),
        ('{"a": 1' + "0" * 400 + "}", 10**400),
        ('{"a": 0.' + "0" * 399 + "1}", Decimal("1e-400")),
        (f'{{"a": {HUGE}}}', Decimal(HUGE)),
        ('{"a": 7, "b": "x"}', 7),
    ],
)
def test_row_numbers_are_parsed_exactly(text: str, value: Any) -> None:
    parsed = parse_row(text)["a"]
    assert parsed == value
    assert not isinstance(parsed, float)


def test_an_unreadable_row_image_raises_row_image_error() -> None:
    with pytest.raises(RowImageError):
        parse_row('{"a": ' + DEEP + "}")
    with pytest.raises(RowImageError):
        parse_row('{"a": NaN}')  # not JSON; PostgreSQL writes "NaN" as a string


def test_projection_keeps_every_number_as_postgresql_wrote_it() -> None:
    text = (
        '{"id": 1, "a": 1e400, "b": 0.10, "c": {"d": 1.0000000000000000001}, '
        f'"e": {HUGE}, "f": "x"}}'
    )
    assert project_row(text, {"a", "b", "c", "e"}) == (
        f'{{"a":1e400,"b":0.10,"c":{{"d":1.0000000000000000001}},"e":{HUGE}}}'
    )
    event = change(text)
    body = event.body(frozenset({"id", "b"})).decode()
    assert '"record":{"id":1,"b":0.10}' in body


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        (f"m=eq.{BIG}", {"m": BIG + 1}, False),
        (f"m=eq.{BIG + 1}", {"m": BIG + 1}, True),
        (f"m=gt.{BIG}", {"m": BIG + 1}, True),
        (f"m=in.({BIG},{BIG + 2})", {"m": BIG + 1}, False),
        ("m=eq.0.1", {"m": Decimal("0.1000000000000000001")}, False),
        ("m=lt.0.1000000000000000001", {"m": Decimal("0.1")}, True),
        ("m=eq.0.10", {"m": Decimal("0.1")}, True),
        ("m=eq.1", {"m": Decimal("1.0")}, True),
        ("m=gt.1e399", {"m": 10**400}, True),
        ("m=eq.1e400", {"m": 10**400}, True),
        ("m=lt.1e-399", {"m": Decimal("1e-400")}, True),
        (f"m=lt.{'9' * 4090}", {"m": Decimal(HUGE)}, False),
        ("m=gt.1e99999999999999999999", {"m": 1}, False),  # beyond Decimal: no number
        # numeric NaN and Infinity arrive as strings; ordered as PostgreSQL orders them
        ("m=gt.1e400", {"m": "Infinity"}, True),
        ("m=lt.-1e400", {"m": "-Infinity"}, True),
        ("m=lt.-5", {"m": "-Infinity"}, True),
        ("m=gt.5", {"m": "NaN"}, True),
        ("m=eq.5", {"m": "NaN"}, False),
        ("m=eq.NaN", {"m": "NaN"}, True),
        ("m=lt.NaN", {"m": "Infinity"}, True),
    ],
)
def test_filters_compare_numbers_exactly(text: str, row: dict[str, Any], expected: bool) -> None:
    assert parse_filter(text).matches(row) is expected


def test_hub_routes_by_exact_value_beyond_64_bits() -> None:
    hub = Hub()
    subs = []
    for i in range(4):
        sub = Subscription(f"s{i}", None, schema="public", table="t", events=frozenset({"INSERT"}))
        sub.set_filter(parse_filter(f"m=eq.{BIG + i}"))
        hub.add(sub)
        subs.append(sub)
    for i in range(4):
        routed = hub.match(change(f'{{"id": {i}, "m": {BIG + i}}}'))
        assert [sub.id for sub, _ in routed] == [f"s{i}"]


def test_an_unreadable_change_goes_only_where_nothing_must_be_read() -> None:
    hub = Hub()
    events = frozenset({"INSERT"})
    plain = Subscription("plain", None, schema="public", table="t", events=events)
    filtered = Subscription("filtered", None, schema="public", table="t", events=events)
    filtered.set_filter(parse_filter("m=eq.1"))
    for sub in (plain, filtered):
        hub.add(sub)
    bad = change('{"m": 1, "doc": ' + DEEP + "}")
    with pytest.raises(RowImageError):
        hub.match(bad)
    assert hub.match_unread(bad) == [(plain, FULL)]
    assert filtered.view_unread(bad) == HIDDEN


def verify(claims: dict[str, Any]) -> Identity:
    verifier = TokenVerifier([VerificationKey.from_secret(SECRET)], clock=time.time)
    encoded = jwt.encode({"exp": time.time() + 60, **claims}, SECRET, "HS256")
    return verifier.verify(encoded)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(payload: str) -> str:
    # PyJWT would write a float claim through a float: sign a payload text as it is.
    header = b64(b'{"alg":"HS256"}')
    signing_input = f"{header}.{b64(payload.encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_token_claims_are_read_exactly_and_bind_rules_exactly() -> None:
    rules = parse_rules({"tables": {"t": {"read": "m = claims.m"}}})
    verifier = TokenVerifier([VerificationKey.from_secret(SECRET)], clock=time.time)
    for claim, own, other in [
        (str(BIG), BIG, BIG + 1),
        ("0.1000000000000000001", Decimal("0.1000000000000000001"), Decimal("0.1")),
        (HUGE, Decimal(HUGE), Decimal(HUGE) - 1),
    ]:
        identity = verifier.verify(hand_signed(f'{{"sub": "u", "m": {claim}}}'))
        rule = rules.bind(identity).table("public", "t")
        assert rule is not None
        assert rule.matches({"m": own})
        assert not rule.matches({"m": other})
        # Claims are written back exactly (row-level security's request.jwt.claims).
        assert f'"m":{claim}'.encode() in dumps(dict(identity.claims)).lower()
    assert verify({"m": BIG}).claims["m"] == BIG


def test_python_client_and_hooks_read_numbers_beyond_a_float() -> None:
    from pgcast.client._link import decode as _decode
    from pgcast.hooks import decode

    frame = _decode('{"type": "change", "record": {"a": 1e400, "b": ' + HUGE + "}}")
    assert frame is not None
    assert frame["record"] == {"a": Decimal("1e400"), "b": Decimal(HUGE)}
    assert decode(change('{"a": 1e400}'))["record"] == {"a": Decimal("1e400")}
