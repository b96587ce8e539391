"""What the emulator says on the wire: eBay's exact strings and bodies, fault knobs, call log.

Section marks (§5.1, …) cite docs/ebay-oauth.md, whose §5.1 strings are copied here verbatim;
anything marked "our choice" is unconfirmed at eBay and listed in docs/emulator.md.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal, get_args
from urllib.parse import quote, urlencode

from ebay_connector.emulator import tokens

JSONBody = dict[str, object]


class GrantType(StrEnum):
    AUTHORIZATION_CODE = "authorization_code"
    REFRESH_TOKEN = "refresh_token"
    CLIENT_CREDENTIALS = "client_credentials"


class Endpoint(StrEnum):
    """Names used in the call log."""

    TOKEN = "token"  # POST /identity/v1/oauth2/token
    REVOKE = "revoke"  # POST /identity/v1/oauth2/token/revoke
    USER = "user"  # GET /commerce/identity/v1/user/
    AUTHORIZE = "authorize"  # POST /oauth2/authorize (the consent decision)
    SELL = "sell"  # the Sell APIs (sell.py)


USER_TOKEN_TYPE: Final = "User Access Token"
APPLICATION_TOKEN_TYPE: Final = "Application Access Token"

# §5.1, verbatim (note the lower case and the trailing period of REQUEST_MALFORMED).
REFRESH_INVALID: Final = (
    "the provided authorization refresh token is invalid or was issued to another client"
)
CODE_INVALID: Final = (
    "the provided authorization grant code is invalid or was issued to another client"
)
CLIENT_AUTH_FAILED: Final = "client authentication failed"
SCOPE_INVALID: Final = (
    "The requested scope is invalid, unknown, malformed, or exceeds the scope granted to the client"
)
REQUEST_MALFORMED: Final = "request is missing a required parameter or malformed."
# Our choice: eBay's wording was never observed; this is RFC 6749's sentence in eBay's casing.
GRANT_TYPE_UNSUPPORTED: Final = (
    "the authorization grant type is not supported by the authorization server"
)

# §4.1: the authorize page's own error shape (error_id + http_status_code, not error).
AUTHORIZE_ERROR: Final[JSONBody] = {
    "error_id": "invalid_request",
    "error_description": "Input request parameters are invalid.",
    "http_status_code": 400,
}
# §5.2 REST envelopes.
INVALID_ACCESS_TOKEN: Final[JSONBody] = {
    "errors": [
        {
            "errorId": 1001,
            "domain": "OAuth",
            "category": "REQUEST",
            "message": "Invalid access token",
            "longMessage": "Invalid access token. Check the value of the Authorization HTTP "
            "request header.",
        }
    ]
}
ACCESS_DENIED: Final[JSONBody] = {
    "errors": [
        {
            "errorId": 1100,
            "domain": "ACCESS",
            "category": "REQUEST",
            "message": "Access denied",
            "longMessage": "Insufficient permissions to fulfill the request.",
        }
    ]
}
# Our choice: eBay's generic REST throttling error (errorId 2001), as eBay's REST APIs answer
# it; the OAuth endpoint's exact 429 body is UNCONFIRMED beyond "an errors array".
TOO_MANY_REQUESTS: Final[JSONBody] = {
    "errors": [
        {
            "errorId": 2001,
            "domain": "ACCESS",
            "category": "REQUEST",
            "message": "Too many requests. The request limit has been reached for the resource.",
        }
    ]
}
# Our choice for injected 5xx on the token/revoke endpoints (RFC 6749 error code).
SERVER_ERROR: Final[JSONBody] = {
    "error": "server_error",
    "error_description": "the authorization server encountered an unexpected condition",
}
# The identity spec's declared 500 (errorId 140000, domain API_IDENTITY, APPLICATION).
IDENTITY_ERROR: Final[JSONBody] = {
    "errors": [
        {
            "errorId": 140000,
            "domain": "API_IDENTITY",
            "category": "APPLICATION",
            "message": "There was a problem with an eBay internal system or process. Contact "
            "eBay developer support for assistance.",
        }
    ]
}
BAD_GATEWAY_HTML: Final = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response from an "
    "upstream server.</p></body></html>\n"
)

# Our choice for injected 5xx on the Sell APIs: eBay's REST internal error (errorId 2003).
SELL_ERROR: Final[JSONBody] = {
    "errors": [
        {
            "errorId": 2003,
            "domain": "ACCESS",
            "category": "APPLICATION",
            "message": "Internal error",
            "longMessage": "There was a problem with an eBay internal system or process. "
            "Contact eBay developer support for assistance",
        }
    ]
}
# Scopes only a seller can grant: a client-credentials request for one is invalid_scope at eBay.
USER_ONLY_SCOPE_PREFIXES: Final = (
    "https://api.ebay.com/oauth/api_scope/sell.",
    "https://api.ebay.com/oauth/api_scope/commerce.identity.",
)

IDENTITY_SCOPE_ROOT: Final = "https://api.ebay.com/oauth/api_scope/commerce.identity."
IDENTITY_SCOPES: Final = frozenset(
    IDENTITY_SCOPE_ROOT + name
    for name in (
        "readonly",
        "name.readonly",
        "address.readonly",
        "email.readonly",
        "phone.readonly",
        "status.readonly",
    )
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: a dict is sent as JSON, a str as-is with ``media_type``, None empty."""

    status: int
    body: Mapping[str, object] | str | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def oauth_error(status: int, error: str, description: str) -> Answer:
    return Answer(status, {"error": error, "error_description": description})


Malformed = Literal["json", "html", "missing_access_token"]
MALFORMED_KINDS: Final = get_args(Malformed)
HANG_LIMIT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Faults:
    """Knobs that make the emulator misbehave; the defaults mean "behave like eBay".

    ``latency_ms``, ``hang``, ``reset``, ``rate_limited`` and ``error_rate`` apply to the token,
    revoke and getUser endpoints; ``invalid_grant`` and ``malformed`` only to the token endpoint.
    A faulted answer changes no state (a code stays usable, no token is minted); only a forced
    ``invalid_grant``, decided after the quota check, counts against the quota like a real one.
    """

    latency_ms: int = 0
    error_rate: float = 0.0  # probability of answering error_status, from a seeded Random
    error_status: int = 500
    rate_limited: bool = False  # 429 with the REST errors envelope
    retry_after_s: int | None = None  # Retry-After header on the rate_limited 429
    hang: bool = False  # no answer until the client gives up, hang_s passes or shutdown
    hang_s: float = HANG_LIMIT_S
    reset: bool = False  # drop the connection with a TCP RST instead of answering
    invalid_grant: bool = False  # refresh_token/authorization_code answer invalid_grant
    malformed: Malformed | None = None

    def __post_init__(self) -> None:
        def number(value: object) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        for name in ("rate_limited", "hang", "reset", "invalid_grant"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean")
        if (
            not (isinstance(self.latency_ms, int) and number(self.latency_ms))
            or self.latency_ms < 0
        ):
            raise ValueError("latency_ms must be an integer >= 0")
        if not number(self.error_rate) or not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if not isinstance(self.error_status, int) or not 400 <= self.error_status <= 599:
            raise ValueError("error_status must be an HTTP error status (400-599)")
        if self.retry_after_s is not None and (
            not isinstance(self.retry_after_s, int) or self.retry_after_s < 0
        ):
            raise ValueError("retry_after_s must be null or an integer >= 0")
        if not number(self.hang_s) or not 0 < self.hang_s <= HANG_LIMIT_S:
            raise ValueError(f"hang_s must be in (0, {HANG_LIMIT_S:g}]")
        if self.malformed is not None and self.malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed must be null or one of {', '.join(MALFORMED_KINDS)}")


def malformed(kind: Malformed, grant_type: str | None, ttl_s: int) -> Answer:
    """The broken answer a ``malformed`` fault sends instead of the real one."""
    if kind == "json":
        # A 200 whose JSON is cut off mid-string, as behind a proxy that dropped the connection.
        return Answer(200, '{"access_token":"' + tokens.USER_ACCESS_HEADER + "AAAA")
    if kind == "html":
        return Answer(502, BAD_GATEWAY_HTML, media_type="text/html; charset=utf-8")
    user = grant_type != GrantType.CLIENT_CREDENTIALS
    token_type = USER_TOKEN_TYPE if user else APPLICATION_TOKEN_TYPE
    return Answer(200, {"expires_in": ttl_s, "token_type": token_type})


def parse_scopes(raw: str) -> tuple[str, ...]:
    """Split a form-decoded scope list; order kept, duplicates dropped.

    ``+`` and ``%20`` on the wire both arrive here as spaces. eBay's node client joins with a
    literal ``%20`` and then form-encodes again, and eBay accepts it, so a literal ``%20`` left
    after decoding is a separator too.
    """
    return tuple(dict.fromkeys(raw.replace("%20", " ").split()))


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(client_id, client_secret) from ``Authorization: Basic …``, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    """Append query pairs to a redirect URL.

    ``quote`` with ``safe=""`` (not quote_plus) so ``/ + ^ # =`` in a code are %-encoded exactly
    once, as in eBay's callback (``code=v%5E1.1%23…%3D``).
    """
    return url + ("&" if "?" in url else "?") + urlencode(pairs, quote_via=quote, safe="")


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded call; ``status`` None means a ``hang`` fault never answered it."""

    endpoint: Endpoint
    grant_type: str | None
    client_id: str | None
    username: str | None
    status: int | None
    at: datetime

    def as_json(self) -> JSONBody:
        return {
            "endpoint": str(self.endpoint),
            "grant_type": self.grant_type,
            "client_id": self.client_id,
            "username": self.username,
            "status": self.status,
            "at": self.at.isoformat(),
        }


MAX_RECORDED_CALLS: Final = 100_000
_Key = tuple[str, str | None, str | None, int | None]


class CallLog:
    """The most recent calls (bounded) plus exact counters over every call ever recorded.

    Thread-safe on its own: tests read it while the server thread appends.
    """

    def __init__(self, max_recorded: int = MAX_RECORDED_CALLS) -> None:
        self._lock = threading.Lock()
        self._recent: deque[Call] = deque(maxlen=max_recorded)
        self._counts: Counter[_Key] = Counter()

    def add(self, call: Call) -> None:
        with self._lock:
            self._recent.append(call)
            self._counts[(call.endpoint, call.grant_type, call.username, call.status)] += 1

    def clear(self) -> None:
        with self._lock:
            self._recent.clear()
            self._counts.clear()

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self._recent)

    def __len__(self) -> int:
        with self._lock:
            return len(self._recent)

    def __iter__(self) -> Iterator[Call]:
        return iter(self.snapshot())

    def __getitem__(self, index: int) -> Call:
        with self._lock:
            return self._recent[index]

    def count(
        self,
        endpoint: str | None = None,
        grant_type: str | None = None,
        username: str | None = None,
        status: int | None = None,
    ) -> int:
        """Exact number of calls matching every filter given (None = any)."""
        with self._lock:
            items = list(self._counts.items())
        return sum(
            n
            for (e, g, u, s), n in items
            if (endpoint is None or e == endpoint)
            and (grant_type is None or g == grant_type)
            and (username is None or u == username)
            and (status is None or s == status)
        )
