"""The eBay identity client: the ONE builder of the refresh request, and every identity call.

The client takes an ``aiohttp.ClientSession`` (see ``runtime.make_http_session``) and turns
every answer, and every transport failure, into a classified outcome plus a masked
:class:`~ebay_connector.core.exchange.ExchangeRecord`. Nothing above this module sees ``aiohttp``.

Why aiohttp itself and not httpx's API over it: the worker's refresh path is CPU-bound, and a
bare ``aiohttp.ClientSession`` costs a fraction of httpx's client CPU per request (see
docs/decisions.md, "aiohttp for eBay calls").
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from ebay_connector.core import masking
from ebay_connector.core.exchange import Action, ExchangeRecord
from ebay_connector.core.outcome import (
    Classified,
    Outcome,
    classify_identity_answer,
    classify_revoke_answer,
    classify_token_answer,
)
from ebay_connector.errors import DecryptFailed, DecryptReason, InvalidStoredToken
from ebay_connector.keys.crypto import PREFIX as CIPHERTEXT_PREFIX
from ebay_connector.settings import Endpoints

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_RECORDED_TEXT = 2_000  # characters of a non-JSON body kept in an exchange record
RECORDED_RESPONSE_HEADERS = frozenset(
    {"content-type", "content-length", "retry-after", "date", "x-ebay-request-id", "rlogid"}
)
# Every eBay OAuth string starts with this; anything else was never issued by eBay.
EBAY_TOKEN_PREFIX = "v^"
MIN_EBAY_TOKEN_LENGTH = 20
DEFAULT_DEADLINE_S = 30.0


# Bytes that urlencode(..., quote_via=quote) leaves as they are (urllib's "always safe").
_UNSAFE = re.compile(rb"[^A-Za-z0-9_.~-]")


def _percent(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


def form_encode(form: Mapping[str, str]) -> bytes:
    """``urlencode(form, quote_via=quote)``, byte for byte, without urllib's per-byte loop.

    A refresh token is ~2,000 characters of mostly safe ones, and urllib quotes each byte through
    a Python call (see docs/decisions.md, "Form bodies without urllib's per-byte loop").
    """
    return b"&".join(
        _UNSAFE.sub(_percent, name.encode()) + b"=" + _UNSAFE.sub(_percent, value.encode())
        for name, value in form.items()
    )


@dataclass(frozen=True)
class Answer:
    """What eBay sent back, read in full: the only shape of a response above ``_send``."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    content: bytes


@dataclass(frozen=True)
class AppCredentials:
    """The application's keyset: App ID, Cert ID and RuName."""

    client_id: str
    client_secret: str
    ru_name: str

    def basic_authorization(self) -> str:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready to send. ``secret`` is the token it carries (for the fingerprint)."""

    action: Action
    method: str
    url: str
    headers: Mapping[str, str]
    form: Mapping[str, str] | None
    secret: str | None


@dataclass(frozen=True)
class CallResult:
    classified: Classified
    exchange: ExchangeRecord


def looks_like_ebay_token(value: str) -> bool:
    return (
        value.startswith(EBAY_TOKEN_PREFIX)
        and len(value) >= MIN_EBAY_TOKEN_LENGTH
        and not any(ch.isspace() for ch in value)
    )


def build_refresh_request(
    stored_ciphertext: str | None,
    *,
    decrypt: Callable[[str], str],
    scopes: Sequence[str],
    app: AppCredentials,
    endpoints: Endpoints,
) -> PreparedRequest:
    """THE builder of the refresh-token request; every refresh path goes through it.

    Decrypts exactly once and refuses, before any HTTP, what must never reach eBay: an empty
    token, a still-encrypted (``ENC:``) one, anything not shaped like an eBay token.
    Raises ``DecryptFailed`` or ``InvalidStoredToken``.
    """
    if not stored_ciphertext:
        raise InvalidStoredToken("no refresh token is stored")
    token = decrypt(stored_ciphertext)
    if token.startswith(CIPHERTEXT_PREFIX):
        # ring.decrypt already refuses this; kept so the invariant holds for any decrypt given.
        raise DecryptFailed(
            "the decrypted refresh token is itself encrypted (double encryption)",
            reason=DecryptReason.DOUBLY_ENCRYPTED,
        )
    if not token.strip():
        raise InvalidStoredToken("the stored refresh token is empty")
    if not looks_like_ebay_token(token):
        raise InvalidStoredToken("the stored refresh token is not shaped like an eBay token")
    form = {"grant_type": "refresh_token", "refresh_token": token, "scope": " ".join(scopes)}
    return PreparedRequest(
        action=Action.REFRESH_TOKEN,
        method="POST",
        url=endpoints.token_url,
        headers=_token_headers(app),
        form=form,
        secret=token,
    )


def _token_headers(app: AppCredentials) -> dict[str, str]:
    return {
        "Content-Type": FORM_CONTENT_TYPE,
        "Authorization": app.basic_authorization(),
        "Accept": "application/json",
    }


class EbayClient:
    """Sends prepared requests to eBay and records each exchange, masked."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        app: AppCredentials,
        endpoints: Endpoints,
        fingerprinter: masking.Fingerprinter,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.http = http
        self.app = app
        self.endpoints = endpoints
        self.fp = fingerprinter
        # A whole-call deadline: aiohttp's read timeout is per socket read, so a server that
        # trickles bytes could otherwise hold a call (and its account's lease) indefinitely.
        self.deadline_s = deadline_s

    # Requests --------------------------------------------------------------------------------

    def code_exchange_request(self, code: str) -> PreparedRequest:
        """The authorization-code grant. ``code`` is the decoded value; the form encodes it once."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.app.ru_name}
        return PreparedRequest(
            Action.AUTHORIZATION_CODE,
            "POST",
            self.endpoints.token_url,
            _token_headers(self.app),
            form,
            code,
        )

    def application_token_request(self, scopes: Sequence[str]) -> PreparedRequest:
        form = {"grant_type": "client_credentials", "scope": " ".join(scopes)}
        return PreparedRequest(
            Action.CLIENT_CREDENTIALS,
            "POST",
            self.endpoints.token_url,
            _token_headers(self.app),
            form,
            None,
        )

    def revoke_request(self, refresh_token: str) -> PreparedRequest:
        """Revoke a grant at eBay (RFC 7009 form; eBay's support for it is unconfirmed)."""
        form = {"token": refresh_token, "token_type_hint": "refresh_token"}
        return PreparedRequest(
            Action.REVOKE,
            "POST",
            self.endpoints.revoke_url,
            _token_headers(self.app),
            form,
            refresh_token,
        )

    async def revoke(self, refresh_token: str) -> CallResult:
        return await self._call(
            self.revoke_request(refresh_token),
            lambda r: classify_revoke_answer(r.status_code, r.headers, r.content),
        )

    def consent_url(self, scopes: Sequence[str], state: str) -> str:
        query = urlencode(
            {
                "client_id": self.app.client_id,
                "redirect_uri": self.app.ru_name,
                "response_type": "code",
                "scope": " ".join(scopes),
                "state": state,
            },
            quote_via=quote,
        )
        return f"{self.endpoints.authorize_url}?{query}"

    async def open_consent_page(self, scopes: Sequence[str], state: str) -> Answer | str:
        """GET the authorize URL as a seller's browser would, without following redirects: the
        consent (or sign-in) page, or eBay's error page. Nothing is granted, nothing recorded."""
        request = PreparedRequest(
            Action.CONSENT_PAGE,
            "GET",
            self.consent_url(scopes, state),
            {"Accept": "text/html"},
            None,
            None,
        )
        return await self._send(request)

    # Sending ---------------------------------------------------------------------------------

    async def _send(self, request: PreparedRequest) -> Answer | str:
        """The one place HTTP happens: the answer, or why there is none (aiohttp stays here)."""
        body = None
        if request.form is not None:
            body = form_encode(request.form)
        try:
            async with asyncio.timeout(self.deadline_s):
                async with self.http.request(
                    request.method,
                    request.url,
                    data=body,
                    headers=request.headers,
                    allow_redirects=False,
                ) as response:
                    content = await response.read()
                    return Answer(response.status, response.headers, content)
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError is one too
            return f"timeout: {exc.__class__.__name__}"
        except aiohttp.ClientConnectionError as exc:
            return f"connection error: {exc.__class__.__name__}"
        except (aiohttp.ClientError, ValueError) as exc:
            # e.g. a body that does not decode as its Content-Encoding says, or a malformed URL.
            return f"unreadable answer: {exc.__class__.__name__}"

    async def _call(
        self, request: PreparedRequest, classify: Callable[[Answer], Classified]
    ) -> CallResult:
        started = time.perf_counter()
        response = await self._send(request)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        if isinstance(response, str):
            classified = Classified(Outcome.TRANSIENT, response)
            return CallResult(classified, self._record(request, classified, None, duration_ms))
        classified = classify(response)
        return CallResult(classified, self._record(request, classified, response, duration_ms))

    async def send_token_request(self, request: PreparedRequest) -> CallResult:
        """Send a token-endpoint request; classify the answer; record the exchange."""
        return await self._call(
            request, lambda r: classify_token_answer(r.status_code, r.headers, r.content)
        )

    async def get_user(self, access_token: str) -> tuple[dict[str, Any] | None, ExchangeRecord]:
        """Commerce Identity getUser: the eBay user id and username behind a user token."""
        request = PreparedRequest(
            Action.GET_USER,
            "GET",
            self.endpoints.identity_url,
            {"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            None,
            access_token,
        )
        call = await self._call(
            request, lambda r: classify_identity_answer(r.status_code, r.headers, r.content)
        )
        user = call.classified.body if call.classified.outcome is Outcome.OK else None
        return (user if isinstance(user, dict) else None), call.exchange

    # Notification API ------------------------------------------------------------------------

    def public_key_url(self, public_key_id: str) -> str:
        """getPublicKey lives on the token endpoint's host (api.ebay.com / api.sandbox…)."""
        base = self.endpoints.token_url.removesuffix(TOKEN_PATH)
        return f"{base}{PUBLIC_KEY_PATH}{quote(public_key_id, safe='')}"

    async def get_public_key(
        self, public_key_id: str, app_token: str
    ) -> tuple[PublicKeyAnswer, ExchangeRecord]:
        """Notification API getPublicKey with an application token (the key is not secret)."""
        request = PreparedRequest(
            Action.GET_PUBLIC_KEY,
            "GET",
            self.public_key_url(public_key_id),
            {"Authorization": f"Bearer {app_token}", "Accept": "application/json"},
            None,
            app_token,
        )

        def classify(response: Answer) -> Classified:
            answer = classify_public_key_answer(response.status_code, response.content)
            return Classified(answer.outcome, answer.message, body=answer.key)

        call = await self._call(request, classify)
        key = call.classified.body
        answer = PublicKeyAnswer(
            call.classified.outcome,
            call.classified.message,
            key if isinstance(key, Mapping) and call.classified.outcome is Outcome.OK else None,
        )
        return answer, call.exchange

    # Recording -------------------------------------------------------------------------------

    def _record(
        self,
        request: PreparedRequest,
        classified: Classified,
        response: Answer | None,
        duration_ms: float,
    ) -> ExchangeRecord:
        """The masked record of one exchange (``response`` None: no answer arrived)."""
        headers = masking.mask_headers(dict(request.headers), self.fp)
        form = masking.mask_form(dict(request.form), self.fp) if request.form else {}
        ok = classified.outcome is Outcome.OK
        answered: dict[str, Any] = {}
        if response is not None:
            answered = {
                "status": response.status_code,
                "response_headers": {
                    name.lower(): value
                    for name, value in response.headers.items()
                    if name.lower() in RECORDED_RESPONSE_HEADERS
                },
                "response_body": self._masked_body(response, request.secret),
            }
        return ExchangeRecord(
            action=request.action,
            method=request.method,
            url=request.url,
            request_headers=headers,
            request_body=form,
            sent=True,
            outcome=classified.outcome,
            duration_ms=duration_ms,
            error=None
            if ok
            else (classified.message if response is None else _error_text(response)),
            token_fingerprint=(
                None if request.secret is None else self.fp.fingerprint(request.secret)
            ),
            **answered,
        )

    def _masked_body(self, response: Answer, sent_secret: str | None) -> Any:
        try:
            parsed = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            text = response.content[:MAX_RECORDED_TEXT].decode("utf-8", "replace")
            known = [sent_secret] if sent_secret else []
            return {"text": masking.mask_text(text, known, self.fp)}
        return masking.mask_json(parsed, self.fp)


TOKEN_PATH = "/identity/v1/oauth2/token"
PUBLIC_KEY_PATH = "/commerce/notification/v1/public_key/"


@dataclass(frozen=True)
class PublicKeyAnswer:
    """getPublicKey, understood: ``key`` is ``{"key", "algorithm", "digest"}`` when OK."""

    outcome: Outcome
    message: str
    key: Mapping[str, str] | None


def classify_public_key_answer(status: int, body: bytes) -> PublicKeyAnswer:
    """200 with a PEM ``key`` is OK; 401/403 mean our application token; 404 an unknown id."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if status == 200:
        if isinstance(parsed, dict) and isinstance(parsed.get("key"), str):
            key = {name: str(parsed.get(name) or "") for name in ("key", "algorithm", "digest")}
            return PublicKeyAnswer(Outcome.OK, "ok", key)
        return PublicKeyAnswer(Outcome.MALFORMED_RESPONSE, "HTTP 200 without a key", None)
    if status in (401, 403):
        return PublicKeyAnswer(
            Outcome.INVALID_CLIENT, f"eBay refused the app token ({status})", None
        )
    if status == 404:
        return PublicKeyAnswer(Outcome.INVALID_REQUEST, "eBay knows no such public key", None)
    if status == 429 or status >= 500:
        return PublicKeyAnswer(Outcome.TRANSIENT, f"HTTP {status} from eBay", None)
    return PublicKeyAnswer(Outcome.MALFORMED_RESPONSE, f"HTTP {status} from getPublicKey", None)


def not_sent(
    action: Action, url: str, outcome: Outcome, error: str, fingerprint: str | None = None
) -> ExchangeRecord:
    """The record of a request refused before any HTTP (nothing reached eBay)."""
    return ExchangeRecord(
        action=action,
        method="POST",
        url=url,
        request_headers={},
        request_body={},
        sent=False,
        outcome=outcome,
        error=error,
        token_fingerprint=fingerprint,
    )


def _error_text(response: Answer) -> str:
    try:
        parsed = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return f"HTTP {response.status_code} (non-JSON body)"
    if isinstance(parsed, dict):
        if isinstance(parsed.get("error"), str):
            description = parsed.get("error_description")
            return f"{parsed['error']}: {description}" if description else str(parsed["error"])
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return f"HTTP {response.status_code}: {errors[0].get('message', 'error')}"
    return f"HTTP {response.status_code}"
