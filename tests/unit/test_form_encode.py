"""form_encode must be byte-for-byte what urllib's urlencode(..., quote_via=quote) produces.

The eBay client's form body used to come from urllib; exchange records, the emulator and eBay
must not see a difference, only the CPU does.
"""

from __future__ import annotations

import random
from urllib.parse import quote, urlencode

import pytest

from ebay_connector.ebay.client import form_encode

pytestmark = pytest.mark.unit

ALPHABET = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    "_.-~ ^#=/+&%?:;,@!$'()*[]{}<>\"\\|`\t\n\r\x00\x7fé€😀"
)


def reference(form: dict[str, str]) -> bytes:
    return urlencode(form, quote_via=quote).encode("ascii")


def test_a_refresh_form_encodes_as_urllib_does() -> None:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "v^1.1#i^1#p^3#r^1#I^3#f^0#t^Ul4xMF8xOjREQ0Y=" * 40,
        "scope": "https://api.ebay.com/oauth/api_scope https://api.ebay.com/oauth/x.readonly",
    }
    assert form_encode(form) == reference(form)


@pytest.mark.parametrize("seed", range(20))
def test_random_forms_encode_as_urllib_does(seed: int) -> None:
    rng = random.Random(seed)

    def text() -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 60)))

    form = {text(): text() for _ in range(rng.randrange(1, 5))}
    assert form_encode(form) == reference(form)


def test_an_empty_form_is_empty() -> None:
    assert form_encode({}) == reference({}) == b""
