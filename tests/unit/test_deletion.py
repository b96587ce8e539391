"""The pure protocol of Marketplace Account Deletion: challenge response, signature, payload;
and the application token's two decisions (usable? renew now?)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ebay_connector.core import deletion
from ebay_connector.ebay import app_token
from ebay_connector.errors import NotificationInvalid, NotificationRejected

pytestmark = pytest.mark.unit

SDK_TOKEN = "71745723-d031-455c-bfa5-f90d11b4f20a"
SDK_ENDPOINT = "http://www.testendpoint.com/webhook"

# eBay's SDK fixture message (docs/ebay-oauth.md §8).
MESSAGE = {
    "metadata": {
        "topic": "MARKETPLACE_ACCOUNT_DELETION",
        "schemaVersion": "1.0",
        "deprecated": False,
    },
    "notification": {
        "notificationId": (
            "49feeaeb-4982-42d9-a377-9645b8479411_33f7e043-fed8-442b-9d44-791923bd9a6d"
        ),
        "eventDate": "2021-03-19T20:43:59.462Z",
        "publishDate": "2021-03-19T20:43:59.679Z",
        "publishAttemptCount": 1,
        "data": {
            "username": "test_user",
            "userId": "ma8vp1jySJC",
            "eiasToken": "nY+sHZ2PrBmdj6wVnY+sEZ2PrA2dj6wJnY+gAZGEpwmdj6x9nY+seQ==",
        },
    },
}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (SDK_TOKEN, "048de9ffd0e35021fefc0388d5c52e0f475324f582f3778ca81a53354ccbbc97"),
        (
            "a8628072-3d33-45ee-9004-bee86830a22d",
            "ca527df75caa230092d7e90484071e8f05d63068f1317973d6a3a42593734bbb",
        ),
    ],
)
def test_challenge_response_matches_the_published_vectors(code: str, expected: str) -> None:
    assert deletion.challenge_response(code, SDK_TOKEN, SDK_ENDPOINT) == expected


def test_challenge_response_is_code_then_token_then_endpoint() -> None:
    """Computed independently; a different order (or a separator) gives another hash."""
    got = deletion.challenge_response("c0de", "t" * 32, "https://x.example/hook")
    assert (
        got == hashlib.sha256(("c0de" + "t" * 32 + "https://x.example/hook").encode()).hexdigest()
    )
    assert got != deletion.challenge_response("t" * 32, "c0de", "https://x.example/hook")


def test_endpoint_url_defaults_to_this_servers_route() -> None:
    assert deletion.endpoint_url(None, "https://c.example/") == (
        "https://c.example/api/ebay/notifications/account-deletion"
    )
    assert deletion.endpoint_url("https://reg.example/x", "https://c.example") == (
        "https://reg.example/x"
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _one_line_pem(key: ec.EllipticCurvePrivateKey) -> str:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "".join(pem.decode().splitlines())


def _header(signature: bytes, kid: str = "kid-1", digest: str = "SHA1", alg: str = "ecdsa") -> str:
    raw = {
        "alg": alg,
        "kid": kid,
        "signature": base64.b64encode(signature).decode(),
        "digest": digest,
    }
    return base64.b64encode(json.dumps(raw).encode()).decode()


def _body() -> bytes:
    return json.dumps(MESSAGE, separators=(",", ":")).encode()


def _sign(key: ec.EllipticCurvePrivateKey, body: bytes, digest: hashes.HashAlgorithm) -> bytes:
    return key.sign(body, ec.ECDSA(digest))


def test_a_correct_signature_verifies_with_a_one_line_pem() -> None:
    key, body = _key(), _body()
    signature = deletion.parse_signature_header(_header(_sign(key, body, hashes.SHA1())))
    assert signature.kid == "kid-1"
    deletion.verify(signature, deletion.load_public_key(_one_line_pem(key)), body)


def test_sha256_digest_is_accepted_when_the_header_names_it() -> None:
    key, body = _key(), _body()
    header = _header(_sign(key, body, hashes.SHA256()), digest="SHA256")
    deletion.verify(deletion.parse_signature_header(header), key.public_key(), body)


def test_signature_over_compact_json_verifies_a_pretty_printed_body() -> None:
    """eBay's Node SDK verifies JSON.stringify(parsed body): whitespace must not matter."""
    key = _key()
    signature = _sign(key, _body(), hashes.SHA1())
    pretty = json.dumps(MESSAGE, indent=2).encode()
    deletion.verify(deletion.parse_signature_header(_header(signature)), key.public_key(), pretty)


@pytest.mark.parametrize("case", ["other_key", "tampered", "digest_mismatch"])
def test_a_wrong_signature_is_rejected(case: str) -> None:
    key, body = _key(), _body()
    signer = _key() if case == "other_key" else key
    signature = _sign(signer, body, hashes.SHA1())
    header = _header(signature, digest="SHA256" if case == "digest_mismatch" else "SHA1")
    if case == "tampered":
        body = body.replace(b"ma8vp1jySJC", b"someoneElse")
    with pytest.raises(NotificationRejected):
        deletion.verify(deletion.parse_signature_header(header), key.public_key(), body)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "not base64!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"[1]").decode(),
        base64.b64encode(json.dumps({"alg": "ecdsa", "kid": "k"}).encode()).decode(),
        _header(b"sig", alg="rsa"),
        _header(b"sig", digest="MD5"),
        "A" * 5000,
    ],
)
def test_malformed_signature_headers_are_rejected(value: str | None) -> None:
    with pytest.raises(NotificationRejected) as caught:
        deletion.parse_signature_header(value)
    assert caught.value.code == "signature_invalid"


def test_a_non_ec_or_broken_key_is_rejected() -> None:
    with pytest.raises(NotificationRejected):
        deletion.load_public_key("-----BEGIN PUBLIC KEY-----AAAA-----END PUBLIC KEY-----")
    with pytest.raises(NotificationRejected):
        deletion.load_public_key("no pem here")


def test_the_sdk_fixture_parses_to_a_notice() -> None:
    notice = deletion.parse_notice(_body())
    assert notice is not None
    assert notice.user_id == "ma8vp1jySJC"
    assert notice.notification_id.startswith("49feeaeb-")
    assert notice.event_date == datetime(2021, 3, 19, 20, 43, 59, 462000, tzinfo=UTC)


def test_another_topic_is_not_a_deletion() -> None:
    other = {**MESSAGE, "metadata": {"topic": "AUTHORIZATION_REVOCATION"}}
    assert deletion.parse_notice(json.dumps(other).encode()) is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"metadata": MESSAGE["metadata"]}).encode(),
        json.dumps({**MESSAGE, "notification": {"notificationId": "n", "data": {}}}).encode(),
        json.dumps({**MESSAGE, "notification": {"data": {"userId": "u"}}}).encode(),
    ],
)
def test_unusable_payloads_are_invalid(body: bytes) -> None:
    with pytest.raises(NotificationInvalid):
        deletion.parse_notice(body)


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_app_token_is_usable_only_beyond_the_margin() -> None:
    margin = timedelta(minutes=5)
    assert app_token.usable(NOW + timedelta(minutes=6), NOW, margin)
    assert not app_token.usable(NOW + timedelta(minutes=5), NOW, margin)
    assert not app_token.usable(None, NOW, margin)


def test_app_token_is_renewed_ahead_only_while_in_use() -> None:
    ending = NOW + timedelta(minutes=10)
    assert app_token.renewal_due(ending, NOW - timedelta(minutes=30), NOW)
    assert not app_token.renewal_due(ending, None, NOW)  # never used: nothing spent
    assert not app_token.renewal_due(ending, NOW - timedelta(hours=3), NOW)  # idle
    assert not app_token.renewal_due(NOW + timedelta(hours=1), NOW, NOW)  # not due yet
