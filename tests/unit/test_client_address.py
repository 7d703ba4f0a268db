"""The client address behind trusted proxies: the rightmost untrusted hop, else the peer."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pgcast.client_address import (
    MAX_HOPS,
    client_address,
    is_trusted_proxy,
    parse_networks,
    peer_address,
)
from pgcast.config import Settings, load_settings
from pgcast.exceptions import ConfigError
from pgcast.transports.pending import PendingRequests

PROXY = "10.0.0.5:41000"  # the TCP peer: a trusted proxy
TRUSTED = parse_networks(["10.0.0.0/24", "2001:db8:ffff::/48"])


def via_proxy(*headers: tuple[str, str], peer: str = PROXY) -> str:
    return client_address(peer, headers, TRUSTED)


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("203.0.113.7:5000", "203.0.113.7"),
        ("::1:5000", "::1"),  # the native transport writes an IPv6 peer without brackets
        ("[2001:db8::1]:443", "2001:db8::1"),  # the ASGI transport writes brackets
        ("::ffff:192.0.2.1:80", "192.0.2.1"),  # a dual-stack socket's IPv4 client
        ("?", "?"),
    ],
)
def test_peer_address_is_the_normalised_host(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_headers_are_ignored_without_trusted_proxies() -> None:
    headers = [("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=198.51.100.2")]
    assert client_address("203.0.113.7:5000", headers, ()) == "203.0.113.7"


def test_headers_from_a_peer_that_is_not_a_trusted_proxy_are_ignored() -> None:
    spoofed = ("X-Forwarded-For", "198.51.100.1")
    assert via_proxy(spoofed, peer="203.0.113.7:5000") == "203.0.113.7"
    assert via_proxy(("Forwarded", "for=198.51.100.1"), peer="10.0.1.5:1") == "10.0.1.5"


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        ([("X-Forwarded-For", "198.51.100.1")], "198.51.100.1"),
        ([("x-forwarded-for", " 198.51.100.1 ")], "198.51.100.1"),
        # The client wrote the left part; the proxy appended the address it saw.
        ([("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 198.51.100.1")], "198.51.100.1"),
        # Proxies of our own on the right are skipped.
        ([("X-Forwarded-For", "198.51.100.1, 10.0.0.9, 10.0.0.7")], "198.51.100.1"),
        # The same list over several header lines.
        ([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "198.51.100.1")], "198.51.100.1"),
        # Every hop is ours: the client is the leftmost (an internal caller).
        ([("X-Forwarded-For", "10.0.0.8, 10.0.0.9")], "10.0.0.8"),
        ([("X-Forwarded-For", "198.51.100.1:52000")], "198.51.100.1"),
        ([("X-Forwarded-For", "2001:db8::7")], "2001:db8::7"),
        ([("X-Forwarded-For", "[2001:db8::7]:443")], "2001:db8::7"),
        ([("X-Forwarded-For", "::ffff:198.51.100.1")], "198.51.100.1"),
        ([("Forwarded", "for=198.51.100.1")], "198.51.100.1"),
        ([("Forwarded", "For=198.51.100.1;proto=https;by=10.0.0.5")], "198.51.100.1"),
        ([("Forwarded", 'for="[2001:db8::7]:4711"')], "2001:db8::7"),
        ([("Forwarded", 'for="198.51.100.1:80"')], "198.51.100.1"),
        ([("Forwarded", "for=1.1.1.1, for=198.51.100.1, for=10.0.0.9")], "198.51.100.1"),
        # Both headers naming the same client.
        ([("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=198.51.100.1")], "198.51.100.1"),
        # A proxy in a trusted IPv6 network.
        ([("X-Forwarded-For", "198.51.100.1, 2001:db8:ffff::2")], "198.51.100.1"),
    ],
)
def test_the_rightmost_address_that_is_not_a_trusted_proxy_is_the_client(
    headers: list[tuple[str, str]], client: str
) -> None:
    assert via_proxy(*headers) == client


def test_a_trusted_ipv6_peer_and_a_mapped_ipv4_peer_are_trusted() -> None:
    header = ("X-Forwarded-For", "198.51.100.1")
    assert via_proxy(header, peer="[2001:db8:ffff::1]:80") == "198.51.100.1"
    assert via_proxy(header, peer="::ffff:10.0.0.5:80") == "198.51.100.1"


HOSTILE = [
    [("X-Forwarded-For", "")],
    [("X-Forwarded-For", "garbage")],
    [("X-Forwarded-For", "198.51.100.1, garbage")],  # the hop nearest us is unreadable
    [("X-Forwarded-For", "198.51.100.1,")],
    [("X-Forwarded-For", "unknown")],
    [("X-Forwarded-For", "198.51.100.1:port")],
    [("X-Forwarded-For", "198.51.100.1:123456")],
    [("X-Forwarded-For", "[2001:db8::7")],
    [("X-Forwarded-For", "[2001:db8::7]x")],
    [("X-Forwarded-For", "[198.51.100.1]:80")],  # brackets are for IPv6
    [("X-Forwarded-For", "999.1.1.1")],
    [("X-Forwarded-For", "1" * 10_000)],
    [("X-Forwarded-For", "\x00\r\n198.51.100.1")],
    [("X-Forwarded-For", "198.51.100.1\u200b")],
    [("Forwarded", "for=_hidden")],  # obfuscated identifier (RFC 7239 section 6.3)
    [("Forwarded", "for=unknown")],
    [("Forwarded", 'for="_gazonk"')],
    [("Forwarded", "for=")],
    [("Forwarded", "for")],
    [("Forwarded", "proto=https")],
    [("Forwarded", "for=198.51.100.1;for=198.51.100.2")],
    [("Forwarded", 'for="198.51.100.1')],
    [("Forwarded", 'for="[2001:db8::7]:4711", ')],
    [("Forwarded", 'for="1.1.1.1, for=198.51.100.1"')],  # a comma inside a quoted string
    [("Forwarded", "for=198.51.100.1 junk")],
    [("Forwarded", ";" * 10_000)],
    [("Forwarded", "for=198.51.100.1," * 5000)],
    # Two headers naming two different clients: one of them is forged.
    [("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=198.51.100.2")],
    # More hops than we walk, all of them ours: the client is out of sight.
    [("X-Forwarded-For", ", ".join(["198.51.100.1"] + ["10.0.0.9"] * MAX_HOPS))],
]


@pytest.mark.parametrize("headers", HOSTILE)
def test_hostile_header_values_fall_back_to_the_peer(headers: list[tuple[str, str]]) -> None:
    assert via_proxy(*headers) == "10.0.0.5"


def test_a_huge_list_costs_only_its_last_hops() -> None:
    # The client wrote 100,000 items; the proxy appended the real address.
    header = ("X-Forwarded-For", "1.1.1.1, " * 100_000 + "198.51.100.1")
    assert via_proxy(header) == "198.51.100.1"


def test_an_unusable_header_does_not_outvote_a_usable_one() -> None:
    # nginx appends to X-Forwarded-For; the client sent a Forwarded header of its own
    # that names nobody: the proxy's header still counts.
    headers = (("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=_hidden"))
    assert via_proxy(*headers) == "198.51.100.1"


def test_settings_parse_trusted_proxies_from_env_toml_and_python(tmp_path: Path) -> None:
    env = {"PGCAST_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,::1"}
    settings = load_settings(env=env, config_file=None)
    assert settings.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    toml = tmp_path / "pgcast.toml"
    toml.write_text('[pgcast]\ntrusted_proxies = ["192.168.0.0/16"]\n')
    from_file = load_settings(env={}, config_file=toml)
    assert from_file.trusted_proxies == (ipaddress.ip_network("192.168.0.0/16"),)
    assert Settings(trusted_proxies=("::ffff:10.1.2.3",)).trusted_proxies == (
        ipaddress.ip_network("10.1.2.3/32"),
    )
    assert Settings().trusted_proxies == ()
    assert load_settings({"trusted_proxies": "10.0.0.1"}, env={}).trusted_proxies == (
        ipaddress.ip_network("10.0.0.1/32"),
    )


@pytest.mark.parametrize("value", ["nginx.local", "10.0.0.0/33", "10.0.0.1,,x", 5, [5]])
def test_bad_trusted_proxies_are_refused_with_the_source_named(value: object) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Settings(trusted_proxies=value)  # type: ignore[arg-type]
    if isinstance(value, str):
        with pytest.raises(ConfigError, match="PGCAST_TRUSTED_PROXIES"):
            load_settings(env={"PGCAST_TRUSTED_PROXIES": value})


def test_serve_takes_trusted_proxies_from_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgcast.cli import _settings, build_parser

    monkeypatch.delenv("PGCAST_TRUSTED_PROXIES", raising=False)
    args = build_parser().parse_args(["serve", "--trusted-proxies", "10.0.0.0/8,::1"])
    settings = _settings(args, trusted_proxies=args.trusted_proxies)
    assert settings.trusted_proxies == parse_networks(["10.0.0.0/8", "::1"])


def test_a_trusted_proxy_is_not_capped_by_the_unfinished_request_limit() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    pending = PendingRequests(
        max_per_ip=2,
        head_timeout=1.0,
        body_timeout=1.0,
        uncapped=lambda ip: is_trusted_proxy(ip, trusted),
    )
    assert [pending.enter("10.1.2.3") for _ in range(5)] == [True] * 5
    assert [pending.enter("192.0.2.7") for _ in range(3)] == [True, True, False]
    assert not is_trusted_proxy("?", trusted)
    assert not is_trusted_proxy("10.1.2.3", ())
