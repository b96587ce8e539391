"""Masking: every helper shows prefix, length and fingerprint, and never the secret."""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import quote, quote_plus

import pytest

from ebay_connector.core import masking
from ebay_connector.core.masking import Masked
from ebay_connector.keys import crypto
from ebay_connector.keys.crypto import KeyRing, TokenField

pytestmark = pytest.mark.unit

EBAY_PREFIX = "v^1.1#i^1#"
TAIL = secrets.token_urlsafe(72)  # random: no window of it can appear by accident
CANARY = f"{EBAY_PREFIX}p^3#r^1#I^3#f^0#t^{TAIL}"
RING = KeyRing({"k1": crypto.generate_key()}, "k1", secrets.token_bytes(32))


def assert_hidden(output: object, secret: str = CANARY) -> None:
    """Neither the secret nor any 8-character window of its random tail shows anywhere."""
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    assert secret not in text
    tail = secret[-len(TAIL) :] if secret == CANARY else secret[len(secret) // 4 :]
    leaked = [tail[i : i + 8] for i in range(len(tail) - 7) if tail[i : i + 8] in text]
    assert not leaked


def test_mask_shows_prefix_length_and_fingerprint() -> None:
    masked = masking.mask(CANARY, RING)
    assert masked == Masked(EBAY_PREFIX, len(CANARY), RING.fingerprint(CANARY))
    assert str(masked) == f"{EBAY_PREFIX}…(len {len(CANARY)}, fp {RING.fingerprint(CANARY)})"
    assert masked.to_dict() == {
        "prefix": EBAY_PREFIX,
        "length": len(CANARY),
        "fingerprint": RING.fingerprint(CANARY),
    }
    assert_hidden(str(masked))
    assert_hidden(masked.to_dict())


@pytest.mark.parametrize(
    ("secret", "prefix"),
    [("", ""), ("abc", ""), ("abcdefgh", "ab"), ("x" * 39, "x" * 9), ("y" * 400, "y" * 10)],
)
def test_prefix_is_at_most_ten_chars_and_a_quarter_of_the_secret(secret: str, prefix: str) -> None:
    assert masking.mask(secret, RING).prefix == prefix


def test_mask_tells_a_ciphertext_from_a_token_at_a_glance() -> None:
    """The field-report diagnostic: ``ENC:`` where ``v^`` belongs is visible in every record."""
    ciphertext = RING.encrypt(CANARY, account_id=1, field=TokenField.ACCESS_TOKEN)
    assert str(masking.mask(ciphertext, RING)).startswith("ENC:v1:k1")
    assert str(masking.mask(CANARY, RING)).startswith("v^1.1#")


def test_equal_secrets_compare_equal_when_masked() -> None:
    assert masking.mask(CANARY, RING) == masking.mask(CANARY, RING)
    assert masking.mask(CANARY, RING) != masking.mask(CANARY + "x", RING)


def test_mask_form_masks_secret_fields_only() -> None:
    form = {"grant_type": "refresh_token", "refresh_token": CANARY, "scope": "https://api"}
    out = masking.mask_form(form, RING)
    assert out["grant_type"] == "refresh_token"
    assert out["scope"] == "https://api"
    assert out["refresh_token"] == {"masked": True, **masking.mask(CANARY, RING).to_dict()}
    assert_hidden(out)


def test_mask_headers_keeps_scheme_and_masks_credentials() -> None:
    basic = base64.b64encode(f"my-client-id:{CANARY}".encode()).decode()
    out = masking.mask_headers(
        [
            ("authorization", f"Basic {basic}"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Set-Cookie", f"s={CANARY}; Path=/"),
            ("set-cookie", f"t={CANARY}"),
        ],
        RING,
    )
    assert out["authorization"] == f"Basic {masking.mask(basic, RING)}"
    assert out["Content-Type"] == "application/x-www-form-urlencoded"
    assert out["Set-Cookie"].count("fp ") == 2
    assert basic not in json.dumps(out)
    assert_hidden(out)
    assert_hidden(out, basic)


def test_mask_headers_bearer_from_a_mapping_any_case() -> None:
    out = masking.mask_headers({"AUTHORIZATION": f"Bearer {CANARY}", "Cookie": CANARY}, RING)
    assert out["AUTHORIZATION"] == f"Bearer {masking.mask(CANARY, RING)}"
    assert out["Cookie"] == str(masking.mask(CANARY, RING))
    assert_hidden(out)


def test_mask_headers_unknown_scheme_masks_the_whole_value() -> None:
    out = masking.mask_headers({"Authorization": f"Token {CANARY}"}, RING)
    assert out["Authorization"].startswith("Token ")  # prefix shows a quarter at most
    assert_hidden(out)


def test_mask_json_masks_secret_keys_at_any_depth() -> None:
    body = {
        "access_token": CANARY,
        "expires_in": 7200,
        "accounts": [{"id": 1, "tokens": {"refresh_token": CANARY, "code": None}}],
        "nested": ({"Password": CANARY},),
    }
    out = masking.mask_json(body, RING)
    assert isinstance(out, dict)
    assert out["expires_in"] == 7200
    assert out["access_token"] == masking.mask_field(CANARY, RING)
    assert out["accounts"][0]["tokens"]["refresh_token"]["fingerprint"] == RING.fingerprint(CANARY)
    assert out["accounts"][0]["tokens"]["code"] is None
    assert out["nested"][0]["Password"]["masked"] is True
    assert body["access_token"] == CANARY  # a copy: the input is untouched
    assert_hidden(out)


def test_mask_url_masks_secret_query_and_fragment_parameters() -> None:
    url = f"https://app.example/callback?state=abc&code={quote(CANARY, safe='')}&x=1"
    out = masking.mask_url(url + f"#access_token={quote_plus(CANARY)}", RING)
    assert out.startswith("https://app.example/callback?state=abc&code=v^1.1#i^1#…(len ")
    assert out.count(f"fp {RING.fingerprint(CANARY)}") == 2  # decoded before fingerprinting
    assert "&x=1#access_token=" in out
    assert_hidden(out)
    assert_hidden(out, quote(CANARY, safe=""))
    assert masking.mask_url("https://a.example/p?state=1", RING) == "https://a.example/p?state=1"


def test_mask_text_replaces_known_secrets_also_when_percent_encoded() -> None:
    other = secrets.token_urlsafe(40)
    text = (
        f"refresh failed for {CANARY}: body refresh_token={quote_plus(CANARY)}"
        f"&x={quote(CANARY, safe='')} and {other}"
    )
    out = masking.mask_text(text, [CANARY, "", other], RING)
    assert out.count(str(masking.mask(CANARY, RING))) == 3
    assert str(masking.mask(other, RING)) in out
    assert out.startswith("refresh failed for v^1.1#i^1#…")
    assert_hidden(out)
    assert_hidden(out, other)
    assert masking.mask_text("nothing secret", [], RING) == "nothing secret"


def test_mask_text_replaces_a_longer_secret_whole() -> None:
    short = secrets.token_urlsafe(24)
    long = short + secrets.token_urlsafe(24)
    out = masking.mask_text(f"a {long} b {short}", [short, long], RING)
    assert out == f"a {masking.mask(long, RING)} b {masking.mask(short, RING)}"
