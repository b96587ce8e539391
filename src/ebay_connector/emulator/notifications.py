"""eBay's Notification API side of Marketplace Account Deletion, emulated (docs/ebay-oauth.md §8).

* ``GET /commerce/notification/v1/public_key/{public_key_id}`` — getPublicKey. Needs a live
  *application* token (401 errorId 1001 without one, 403 errorId 1100 for a user token);
  answers ``{"key": "-----BEGIN PUBLIC KEY-----…-----END PUBLIC KEY-----", "algorithm":
  "ECDSA", "digest": "SHA1"}`` with the PEM on one line, as eBay's SDK fixture shows (clients
  must re-wrap it). An unknown id answers 404 (our choice of body: eBay's REST envelope).
* ``POST /_emulator/notifications/account-deletion`` — control: send a signed
  MARKETPLACE_ACCOUNT_DELETION notification to ``endpoint`` for ``username`` or ``user_id``.
  ``signature`` picks what eBay would never do, to test the receiver: ``valid`` (default),
  ``missing``, ``wrong_key`` (signed by another key under our kid), ``tampered`` (body changed
  after signing), ``unknown_kid``. Answers the receiver's status and the notification id.
* ``GET /_emulator/notifications`` — control: the key id, how often getPublicKey was served,
  and the notifications sent.

The signing key is an ECDSA P-256 key made when the app is built; signatures are DER, base64,
over the compact JSON body, with the digest named in the header (SHA1, as eBay's SDKs use).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ebay_connector.emulator import wire
from ebay_connector.emulator.state import Emulator
from ebay_connector.emulator.wire import Answer

PUBLIC_KEY_PATH = "/commerce/notification/v1/public_key/{public_key_id}"
CONTROL_SEND = "/_emulator/notifications/account-deletion"
CONTROL_STATE = "/_emulator/notifications"
TOPIC: Final = "MARKETPLACE_ACCOUNT_DELETION"
DIGEST: Final = "SHA1"
SEND_TIMEOUT_S = 10.0
SIGNATURE_MODES = frozenset({"valid", "missing", "wrong_key", "tampered", "unknown_kid"})
# Our choice: eBay's REST envelope for an unknown public key id (eBay's body is UNCONFIRMED).
KEY_NOT_FOUND: Final[wire.JSONBody] = {
    "errors": [
        {
            "errorId": 195000,
            "domain": "API_NOTIFICATION",
            "category": "REQUEST",
            "message": "Resource not found: no public key with this id.",
        }
    ]
}


def _one_line_pem(key: ec.EllipticCurvePublicKey) -> str:
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return "".join(pem.splitlines())


def signature_header(kid: str, signature: bytes, digest: str = DIGEST) -> str:
    """The ``X-EBAY-SIGNATURE`` value: base64 of the JSON eBay's SDKs decode."""
    header = {
        "alg": "ecdsa",
        "kid": kid,
        "signature": base64.b64encode(signature).decode("ascii"),
        "digest": digest,
    }
    return base64.b64encode(json.dumps(header).encode()).decode("ascii")


def sign(key: ec.EllipticCurvePrivateKey, body: bytes) -> bytes:
    # SHA1 because eBay signs with it (its SDKs' fixtures and the digest field say so).
    return key.sign(body, ec.ECDSA(hashes.SHA1()))  # noqa: S303


@dataclass(frozen=True)
class Sent:
    notification_id: str
    user_id: str
    endpoint: str
    signature: str
    status: int | None


class Notifications:
    """The emulator's notification signer: one key, the sends and the key fetches it served."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = str(uuid.uuid4())
        self.key_fetches = 0
        self.sent: list[Sent] = []
        self._lock = threading.Lock()

    def public_key(self, public_key_id: str, authorization: str | None) -> Answer:
        if not _is_application_token(self.emulator, authorization):
            kind = _token_kind(self.emulator, authorization)
            if kind == "user":
                return Answer(403, wire.ACCESS_DENIED)
            return Answer(401, wire.INVALID_ACCESS_TOKEN)
        with self._lock:
            self.key_fetches += 1
        if public_key_id != self.kid:
            return Answer(404, KEY_NOT_FOUND)
        body = {"key": _one_line_pem(self.key.public_key()), "algorithm": "ECDSA", "digest": DIGEST}
        return Answer(200, body)

    def notification(self, user_id: str, username: str, notification_id: str) -> bytes:
        """The body eBay sends (the SDK fixture's shape), as compact JSON."""
        now = self.emulator.now()
        stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        published = (now + timedelta(milliseconds=217)).isoformat(timespec="milliseconds")
        eias = base64.b64encode(secrets.token_bytes(36)).decode("ascii")
        body = {
            "metadata": {"topic": TOPIC, "schemaVersion": "1.0", "deprecated": False},
            "notification": {
                "notificationId": notification_id,
                "eventDate": stamp,
                "publishDate": published.replace("+00:00", "Z"),
                "publishAttemptCount": 1,
                "data": {"username": username, "userId": user_id, "eiasToken": eias},
            },
        }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    def signed(self, body: bytes, mode: str) -> tuple[bytes, dict[str, str]]:
        """The body to send and its headers, signed (or mis-signed) as ``mode`` says."""
        headers = {"Content-Type": "application/json"}
        if mode == "missing":
            return body, headers
        kid = self.kid if mode != "unknown_kid" else str(uuid.uuid4())
        key = self.key if mode != "wrong_key" else ec.generate_private_key(ec.SECP256R1())
        headers["X-EBAY-SIGNATURE"] = signature_header(kid, sign(key, body))
        if mode == "tampered":
            body = body.replace(b'"publishAttemptCount":1', b'"publishAttemptCount":2')
        return body, headers

    async def send(self, data: dict[str, Any]) -> dict[str, Any]:
        registered = self.emulator.notification_endpoints()
        endpoint = data.get("endpoint", registered[0] if len(registered) == 1 else None)
        if not isinstance(endpoint, str) or endpoint not in registered:
            # Like eBay, the emulator notifies only the endpoint the application registered.
            raise ValueError(
                "endpoint must be the registered account-deletion endpoint "
                f"({', '.join(registered) or 'none registered'})"
            )
        mode = data.get("signature", "valid")
        if mode not in SIGNATURE_MODES:
            raise ValueError(f"signature must be one of {sorted(SIGNATURE_MODES)}")
        user_id, username = self._user(data)
        notification_id = data.get("notification_id") or f"{uuid.uuid4()}_{uuid.uuid4()}"
        if not isinstance(notification_id, str):
            raise ValueError("notification_id must be a string")
        body, headers = self.signed(self.notification(user_id, username, notification_id), mode)
        status: int | None
        try:
            async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S) as client:
                answer = await client.post(endpoint, content=body, headers=headers)
            status, text = answer.status_code, answer.text[:2000]
        except httpx.HTTPError as exc:
            status, text = None, f"not delivered: {exc.__class__.__name__}"
        with self._lock:
            self.sent.append(Sent(notification_id, user_id, endpoint, mode, status))
        return {
            "notification_id": notification_id,
            "user_id": user_id,
            "signature": mode,
            "status": status,
            "response": text,
        }

    def _user(self, data: dict[str, Any]) -> tuple[str, str]:
        username, user_id = data.get("username"), data.get("user_id")
        if isinstance(username, str) and username:
            known = {u.username: u for u in self.emulator.users()}
            if username not in known:
                raise LookupError(f"unknown user {username!r}")
            return known[username].user_id, username
        if isinstance(user_id, str) and user_id:
            by_id = {u.user_id: u for u in self.emulator.users()}
            return user_id, by_id[user_id].username if user_id in by_id else user_id
        raise ValueError("give username or user_id")

    def state(self) -> dict[str, Any]:
        with self._lock:
            sent = [s.__dict__.copy() for s in self.sent]
            return {"kid": self.kid, "public_key_fetches": self.key_fetches, "sent": sent}


def _token_kind(emulator: Emulator, authorization: str | None) -> str | None:
    """The kind of live token ``authorization`` carries: application, user, or None.

    Reads the emulator's store under its lock, as every method of state.py does.
    """
    token = wire.bearer_token(authorization)
    with emulator._lock:
        access = emulator._store.bearer(token, emulator._now())
    if access is None:
        return None
    return "application" if access.username is None else "user"


def _is_application_token(emulator: Emulator, authorization: str | None) -> bool:
    return _token_kind(emulator, authorization) == "application"


def routes(emulator: Emulator) -> list[Route]:
    """The routes to register in the emulator app (see the module docstring)."""
    from ebay_connector.emulator.app import _control, _object, render

    center = Notifications(emulator)

    async def public_key(request: Request) -> Response:
        kid = request.path_params["public_key_id"]
        return render(center.public_key(kid, request.headers.get("authorization")))

    async def send(request: Request) -> Response:
        return JSONResponse(await center.send(await _object(request)))

    async def state(request: Request) -> Response:
        return JSONResponse(center.state())

    return [
        Route(PUBLIC_KEY_PATH, public_key, methods=["GET"]),
        Route(CONTROL_SEND, _control(send), methods=["POST"]),
        Route(CONTROL_STATE, _control(state), methods=["GET"]),
    ]
