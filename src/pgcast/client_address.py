"""Which address a connection counts under: its TCP peer, or the client a trusted proxy names.

Behind a reverse proxy every connection comes from the proxy, so per-address limits
would count the whole node as one client. When the peer is one of the configured
``trusted_proxies``, the client address is read from ``X-Forwarded-For`` and
``Forwarded: for=`` (RFC 7239), with the spoof-resistant rule: walk the list from
the right (the hop nearest to us) and take the first address that is not itself a
trusted proxy. Everything left of it was written by the client and is never read.

A trusted proxy appends to at least one of the two headers; a client may forge the
other one. So every header present must name the same client, else neither is
believed. Whatever goes wrong (garbage, obfuscated ``for=_hidden``, ``unknown``, a
list longer than ``MAX_HOPS``), the answer falls back to the peer: a hostile header
can only make a client count under its proxy's address, never under one it chose.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

__all__ = ["MAX_HOPS", "Network", "client_address", "parse_networks", "peer_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_HOPS = 32  # proxies we walk through at most; a longer list is not believed
_MAX_ITEM = 64  # characters in one list item (an IPv6 address with port and zone fits)

# RFC 7230 token and quoted-string, as RFC 7239 uses them: pair = token "=" value.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rf'[ \t]*({_TCHARS})=({_TCHARS}|"(?:[^"\\]|\\.)*")[ \t]*([;,]|$)')
_QUOTED_PAIR = re.compile(r"\\(.)")


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``10.0.0.0/8``, ``::1``) as networks; ValueError if not."""
    networks: list[Network] = []
    for item in items:
        network = ipaddress.ip_network(item.strip(), strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:  # ::ffff:10.0.0.1 is how a dual-stack socket shows 10.0.0.1
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
        if network not in networks:
            networks.append(network)
    return tuple(networks)


def peer_address(peer: str) -> str:
    """The address part of a transport's ``peer`` (``host:port``, ``[v6]:port``, ``v6:port``).

    Normalised when it is an IP address (``::ffff:1.2.3.4`` is ``1.2.3.4``); returned
    as given otherwise (``?`` for an unknown peer, a Unix socket path)."""
    host = peer
    if peer.startswith("["):
        host = peer[1:].partition("]")[0]
    elif ":" in peer:
        host = peer.rsplit(":", 1)[0]
    address = _address(host)
    return host if address is None else str(address)


def is_trusted_proxy(host: str, trusted: tuple[Network, ...]) -> bool:
    """Whether ``host`` (an address as :func:`peer_address` returns it) is a trusted proxy."""
    address = _address(host) if trusted else None
    return address is not None and _is_trusted(address, trusted)


def client_address(
    peer: str, headers: Iterable[tuple[str, str]], trusted: tuple[Network, ...]
) -> str:
    """The address ``peer``'s request counts under (limits, logs): see the module docstring.

    ``peer`` is the transport's ``host:port``; ``headers`` the request's (name, value)
    pairs, names case-insensitive, a header given several times read as one list.
    """
    host = peer_address(peer)
    if not trusted:
        return host
    peer_ip = _address(host)
    if peer_ip is None or not _is_trusted(peer_ip, trusted):
        return host
    forwarded_for: list[str] = []
    forwarded: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "x-forwarded-for":
            forwarded_for.append(value)
        elif lowered == "forwarded":
            forwarded.append(value)
    named: set[Address] = set()
    if forwarded_for:
        items = ",".join(forwarded_for).split(",")
        found = _rightmost_untrusted(items, trusted)
        if found is not None:
            named.add(found)
    if forwarded:
        items_for = _forwarded_for(",".join(forwarded))
        found = None if items_for is None else _rightmost_untrusted(items_for, trusted)
        if found is not None:
            named.add(found)
    if len(named) != 1:
        return host  # no header, none usable, or two that disagree (one of them forged)
    return str(named.pop())


def _rightmost_untrusted(items: list[str], trusted: tuple[Network, ...]) -> Address | None:
    """The first address from the right that is not a trusted proxy; the leftmost one if
    every hop is trusted; None when the walk meets something that is not an address."""
    complete = len(items) <= MAX_HOPS
    found: Address | None = None
    for item in reversed(items[-MAX_HOPS:]):
        address = _item_address(item)
        if address is None:
            return None
        found = address
        if not _is_trusted(address, trusted):
            return address
    # Every hop is a trusted proxy: the client is the leftmost, if the list was read whole.
    return found if complete else None


def _forwarded_for(value: str) -> list[str] | None:
    """The ``for=`` values of a ``Forwarded`` header, one per element (None: malformed).

    An element without ``for=`` yields ``""`` (which is no address)."""
    if len(value) > MAX_HOPS * 256:
        return None
    result: list[str] = []
    current: str | None = None
    position = 0
    while position < len(value):
        match = _PAIR.match(value, position)
        if match is None or match.end() == position:
            return None
        key, raw, separator = match.groups()
        if key.lower() == "for":
            if current is not None:
                return None  # two for= in one element
            current = _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
        if separator != ";":
            result.append(current or "")
            current = None
            if separator == ",":
                while position < len(value) and value[position] in " \t":
                    position += 1
                if position == len(value):
                    return None  # a trailing comma
    return result


def _item_address(item: str) -> Address | None:
    """One list item as an address: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``.

    None for anything else: ``unknown``, an obfuscated ``_hidden``, garbage."""
    text = item.strip()
    if not text or len(text) > _MAX_ITEM:
        return None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _is_port(rest)):
            return None
        return _ipv6(host)
    if text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        return _ipv4(host) if port.isdigit() and len(port) <= 5 else None
    return _address(text)


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


def _ipv4(text: str) -> Address | None:
    address = _address(text)
    return address if isinstance(address, ipaddress.IPv4Address) else None


def _ipv6(text: str) -> Address | None:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return _unmapped(address)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _unmapped(address)


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: Address, trusted: tuple[Network, ...]) -> bool:
    return any(address in network for network in trusted)
