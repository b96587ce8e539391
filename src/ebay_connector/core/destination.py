"""Where the product may send a request on a user's behalf: the rules, without the network.

A webhook URL is chosen by an organization's admin, but the request leaves from the server, inside
the operator's network. So an address is refused when it belongs to the server's own side of the
world — loopback, link-local (cloud metadata at 169.254.169.254), private and unique-local
networks, multicast, unspecified and reserved ranges — unless the operator opted that network in
(``EBAY_CONNECTOR_WEBHOOK_ALLOWED_NETWORKS``). The same rule is applied when an endpoint is added
and again to the address actually connected to, so a name that later resolves elsewhere (DNS
rebinding) does not pass.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never in a one-line text: controls (NUL, escapes), line and paragraph separators, surrogates,
# and the bidi controls that make text read differently from what it is (U+202E).
_TEXT_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = (
    frozenset("\u200e\u200f\u061c")
    | {chr(c) for c in range(0x202A, 0x202F)}
    | {chr(c) for c in range(0x2066, 0x206A)}
)
# A URL also refuses every other format character and every space: what is read must be what
# is connected to.
_URL_CATEGORIES = _TEXT_CATEGORIES | {"Cf", "Zs"}
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma- or space-separated CIDRs (a bare address is its own /32 or /128)."""
    networks = []
    for part in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not an IP address or network") from exc
    return tuple(networks)


def unreadable_character(text: str, *, url: bool = False) -> str | None:
    """The first character with no business in a one-line text (or a URL), as ``U+XXXX``."""
    refused = _URL_CATEGORIES if url else _TEXT_CATEGORIES
    for ch in text:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in refused:
            return f"U+{ord(ch):04X}"
    return None


def numeric_host(host: str) -> Address | None:
    """The address a host written as a number means, in every form a resolver accepts.

    ``2852039166``, ``0``, ``127.1``, ``0x7f.0.0.1`` and ``[::ffff:127.0.0.1]`` are addresses,
    not names: they must be judged as the address they connect to.
    """
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        labels = bare.split(".")
        if not 1 <= len(labels) <= 4 or not all(_NUMERIC_LABEL.fullmatch(x) for x in labels):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return unmapped(address)


def ip_of(text: str) -> Address:
    """An address as a resolver writes it (an IPv6 zone such as ``%eth0`` dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def unmapped(address: Address) -> Address:
    """An IPv4-mapped or NAT64-free IPv6 address judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refusal(address: Address, allowed: Iterable[Network] = ()) -> str | None:
    """Why the product must not connect to ``address`` (None: it may)."""
    address = unmapped(address)
    if any(address in network for network in allowed):
        return None
    for kind, flag in (
        ("a loopback", address.is_loopback),
        ("an unspecified", address.is_unspecified),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
        ("a non-global", not address.is_global),
    ):
        if flag:
            return f"{kind} address ({address})"
    return None


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address: reachable from this machine only."""
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
