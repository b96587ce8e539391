"""eBay Marketplace Account Deletion notifications: the pure protocol (no I/O).

eBay validates the endpoint with ``GET ?challenge_code=…`` and expects
``{"challengeResponse": hex(SHA-256(challenge_code + verification_token + endpoint_url))}``;
each notification is a ``POST`` whose ``X-EBAY-SIGNATURE`` header is base64 JSON
``{"alg": "ecdsa", "kid": …, "signature": <base64 DER>, "digest": "SHA1"}``, verified with the
public key eBay's Notification API returns for ``kid`` (docs/ebay-oauth.md §8; eBay's
event-notification SDKs). Everything here is a function of values; fetching keys and deleting
live elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ebay_connector.errors import NotificationInvalid, NotificationRejected

PATH = "/api/ebay/notifications/account-deletion"
TOPIC = "MARKETPLACE_ACCOUNT_DELETION"
SIGNATURE_HEADER = "X-EBAY-SIGNATURE"
MAX_SIGNATURE_HEADER_CHARS = 4096
# eBay's SDK fixtures say SHA1; eBay's 2021 slides show SHA256: accept both, nothing else.
_DIGESTS: Mapping[str, type[hashes.HashAlgorithm]] = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256}
_PEM_BODY = re.compile(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.S)


def endpoint_url(configured: str | None, public_url: str) -> str:
    """The endpoint URL as registered at eBay: the setting, else this server's own route."""
    return configured or public_url.rstrip("/") + PATH


def challenge_response(challenge_code: str, verification_token: str, endpoint: str) -> str:
    """Lowercase hex SHA-256 of ``challenge_code + verification_token + endpoint`` (UTF-8)."""
    digest = hashlib.sha256()
    for part in (challenge_code, verification_token, endpoint):
        digest.update(part.encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True)
class Signature:
    """The decoded ``X-EBAY-SIGNATURE`` header."""

    alg: str
    kid: str
    signature: bytes
    digest: str


def parse_signature_header(value: str | None) -> Signature:
    """Decode the header; ``NotificationRejected`` when it is missing or malformed."""
    if not value or not value.strip():
        raise NotificationRejected("the notification carries no X-EBAY-SIGNATURE header")
    if len(value) > MAX_SIGNATURE_HEADER_CHARS:
        raise NotificationRejected("the X-EBAY-SIGNATURE header is too long")
    try:
        decoded = json.loads(base64.b64decode(value.strip(), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise NotificationRejected("the X-EBAY-SIGNATURE header is not base64 JSON") from exc
    if not isinstance(decoded, dict):
        raise NotificationRejected("the X-EBAY-SIGNATURE header is not a JSON object")
    fields = {name: decoded.get(name) for name in ("alg", "kid", "signature", "digest")}
    if not all(isinstance(v, str) and v for v in fields.values()):
        raise NotificationRejected(
            "the X-EBAY-SIGNATURE header lacks alg, kid, signature or digest"
        )
    if str(fields["alg"]).lower() != "ecdsa":
        raise NotificationRejected(f"unsupported signature algorithm {fields['alg']!r:.40}")
    if str(fields["digest"]).upper() not in _DIGESTS:
        raise NotificationRejected(f"unsupported signature digest {fields['digest']!r:.40}")
    try:
        raw = base64.b64decode(str(fields["signature"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotificationRejected("the signature is not base64") from exc
    return Signature(
        alg="ecdsa", kid=str(fields["kid"]), signature=raw, digest=str(fields["digest"]).upper()
    )


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """eBay's key: a PEM, sometimes on one line (``-----BEGIN PUBLIC KEY-----MFkw…-----END…``)."""
    found = _PEM_BODY.search(pem)
    if found is None:
        raise NotificationRejected("eBay's public key is not a PEM public key")
    body = "".join(found.group(1).split())
    normal = "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n".format(
        "\n".join(textwrap.wrap(body, 64))
    )
    try:
        key = serialization.load_pem_public_key(normal.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise NotificationRejected("eBay's public key does not load") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise NotificationRejected("eBay's public key is not an elliptic-curve key")
    return key


def signed_forms(body: bytes) -> list[bytes]:
    """What eBay may have signed: the body as received, and its compact JSON re-serialization
    (eBay's Node SDK verifies ``JSON.stringify(parsedBody)``)."""
    forms = [body]
    try:
        compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        return forms
    if compact.encode("utf-8") != body:
        forms.append(compact.encode("utf-8"))
    return forms


def verify(signature: Signature, key: ec.EllipticCurvePublicKey, body: bytes) -> None:
    """Raise ``NotificationRejected`` unless ``signature`` signs ``body`` under ``key``."""
    algorithm = ec.ECDSA(_DIGESTS[signature.digest]())
    for form in signed_forms(body):
        try:
            key.verify(signature.signature, form, algorithm)
        except InvalidSignature:
            continue
        return
    raise NotificationRejected("the X-EBAY-SIGNATURE does not verify against eBay's public key")


@dataclass(frozen=True)
class DeletionNotice:
    """The part of a MARKETPLACE_ACCOUNT_DELETION notification we act on."""

    notification_id: str
    user_id: str
    event_date: datetime | None


def parse_notice(body: bytes) -> DeletionNotice | None:
    """The notice in a (verified) body; None for another topic; ``NotificationInvalid`` if
    the body is not a usable notification."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotificationInvalid("the notification is not JSON") from exc
    metadata = parsed.get("metadata") if isinstance(parsed, dict) else None
    notification = parsed.get("notification") if isinstance(parsed, dict) else None
    if not isinstance(metadata, dict) or not isinstance(notification, dict):
        raise NotificationInvalid("the notification lacks metadata or notification")
    if metadata.get("topic") != TOPIC:
        return None
    notification_id = notification.get("notificationId")
    data = notification.get("data")
    user_id = data.get("userId") if isinstance(data, dict) else None
    if not isinstance(notification_id, str) or not notification_id or len(notification_id) > 200:
        raise NotificationInvalid("the notification has no usable notificationId")
    if not isinstance(user_id, str) or not user_id or len(user_id) > 100:
        raise NotificationInvalid("the notification has no usable data.userId")
    return DeletionNotice(notification_id, user_id, _when(notification.get("eventDate")))


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
