"""One exception tree, one token length limit, one channel matcher (issue 12)."""

from __future__ import annotations

import inspect

import pytest

import pgcast.auth
import pgcast.client
import pgcast.exceptions
from pgcast import protocol
from pgcast.channels import channel_matches
from pgcast.config import load_settings
from pgcast.exceptions import PgcastError, ProtocolError


def _public_errors(module: object) -> set[type[BaseException]]:
    return {
        value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__.startswith("pgcast")
    }


def test_every_public_error_is_in_the_exception_tree_module() -> None:
    errors = _public_errors(pgcast.auth) | _public_errors(pgcast.client)
    assert {error.__name__ for error in errors} >= {"AuthError", "ClientError", "FrameTooBig"}
    for error in errors:
        assert issubclass(error, PgcastError)
        assert error.__module__ == "pgcast.exceptions", error
        assert error.__name__ in (pgcast.exceptions.__doc__ or ""), error


def test_an_auth_message_token_has_the_verifiers_length_limit() -> None:
    limit = pgcast.auth.MAX_TOKEN_LENGTH
    assert limit is protocol.MAX_TOKEN_LENGTH
    protocol.decode_client_message('{"type":"auth","token":"%s"}' % ("a" * limit))
    with pytest.raises(ProtocolError, match=f"at most {limit}"):
        protocol.decode_client_message('{"type":"auth","token":"%s"}' % ("a" * (limit + 1)))


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("orders_*", "orders_1", True),
        ("orders_*", "Orders_1", False),
        ("*", "anything", True),
        ("a*b*c", "aXbYc", True),
        ("a.b", "aXb", False),
    ],
)
def test_settings_and_rules_share_one_channel_matcher(
    pattern: str, name: str, matches: bool
) -> None:
    assert channel_matches(pattern, name) is matches
    settings = load_settings({"channels": pattern if "." not in pattern else "a_b"}, env={})
    if "." not in pattern:
        assert settings.allows_channel(name) is matches
    rules = (
        pgcast.auth.parse_rules({"channels": {"read": [pattern]}}) if "." not in pattern else None
    )
    if rules is not None:
        grants = rules.bind(pgcast.auth.ANONYMOUS)
        assert grants.can_read_channel(name) is matches
