"""The destination rule: which addresses the product may connect to on a user's behalf."""

from __future__ import annotations

import ipaddress

import pytest

from ebay_connector.core import destination


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2852039166", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("[::ffff:10.0.0.1]", "10.0.0.1"),
        ("fd00::1", "fd00::1"),
    ],
)
def test_numeric_hosts_are_read_as_the_address_they_connect_to(host: str, address: str) -> None:
    assert destination.numeric_host(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "0x7f.example", "1.2.3.4.5", "bücher.de"])
def test_names_are_not_numeric(host: str) -> None:
    assert destination.numeric_host(host) is None


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.0.1", "fd00::1",
     "::1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "100.64.0.1", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_the_servers_own_networks_are_refused(address: str) -> None:
    assert destination.refusal(ipaddress.ip_address(address)) is not None


def test_public_addresses_and_opted_in_networks_pass() -> None:
    assert destination.refusal(ipaddress.ip_address("93.184.216.34")) is None
    allowed = destination.parse_networks("127.0.0.0/8, fd00::/8")
    assert destination.refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert destination.refusal(ipaddress.ip_address("fd12::1"), allowed) is None
    assert destination.refusal(ipaddress.ip_address("10.0.0.1"), allowed) is not None
    with pytest.raises(ValueError, match="'nope'"):
        destination.parse_networks("10.0.0.0/8,nope")


def test_unreadable_characters_are_named() -> None:
    assert destination.unreadable_character("http://\u202e.com/", url=True) == "U+202E"
    assert destination.unreadable_character("ops\x00") == "U+0000"
    assert destination.unreadable_character("café hooks — prod") is None
    assert destination.unreadable_character("a b", url=True) == "U+0020"
