"""What an answer from eBay means: every token-endpoint answer is classified once, here.

Pure functions of values: status, headers and body in; a typed :class:`Classified` out. The rest of
the product acts on the classification, never on raw HTTP.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime


class Outcome(enum.StrEnum):
    """The outcome of one refresh (or other token) attempt. Values are stable machine codes."""

    OK = "ok"
    INVALID_GRANT = "invalid_grant"
    INVALID_CLIENT = "invalid_client"
    INVALID_SCOPE = "invalid_scope"
    INVALID_REQUEST = "invalid_request"
    CONFIGURATION_ERROR = "configuration_error"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    MALFORMED_RESPONSE = "malformed_response"
    # Decided before any HTTP: the stored token cannot be sent.
    DECRYPT_FAILED = "decrypt_failed"
    INVALID_STORED_TOKEN = "invalid_stored_token"
    NO_REFRESH_TOKEN = "no_refresh_token"
    REFRESH_TOKEN_EXPIRED = "refresh_token_expired"


class Disposition(enum.StrEnum):
    """What an outcome means for the account's token."""

    SUCCESS = "success"
    PERMANENT = "permanent"  # only a new consent helps: needs_reconnect
    CONFIGURATION = "configuration"  # the application is misconfigured: not the account's fault
    TRANSIENT = "transient"  # try again later with backoff


DISPOSITIONS: Mapping[Outcome, Disposition] = {
    Outcome.OK: Disposition.SUCCESS,
    Outcome.INVALID_GRANT: Disposition.PERMANENT,
    Outcome.DECRYPT_FAILED: Disposition.PERMANENT,
    Outcome.INVALID_STORED_TOKEN: Disposition.PERMANENT,
    Outcome.NO_REFRESH_TOKEN: Disposition.PERMANENT,
    Outcome.REFRESH_TOKEN_EXPIRED: Disposition.PERMANENT,
    Outcome.INVALID_CLIENT: Disposition.CONFIGURATION,
    Outcome.INVALID_SCOPE: Disposition.CONFIGURATION,
    Outcome.INVALID_REQUEST: Disposition.CONFIGURATION,
    Outcome.CONFIGURATION_ERROR: Disposition.CONFIGURATION,
    Outcome.RATE_LIMITED: Disposition.TRANSIENT,
    Outcome.TRANSIENT: Disposition.TRANSIENT,
    Outcome.MALFORMED_RESPONSE: Disposition.TRANSIENT,
}

MEANINGS: Mapping[Outcome, str] = {
    Outcome.OK: "eBay issued a new access token.",
    Outcome.INVALID_GRANT: (
        "eBay refused the refresh token (revoked by the seller or eBay, expired, or issued to "
        "another application): the seller must connect the account again."
    ),
    Outcome.INVALID_CLIENT: (
        "eBay refused the application's client id / secret: fix the application credentials; "
        "no account is at fault."
    ),
    Outcome.INVALID_SCOPE: "eBay refused the requested scopes for this application.",
    Outcome.INVALID_REQUEST: "eBay says the request is malformed: a configuration or code error.",
    Outcome.CONFIGURATION_ERROR: "The application is not configured correctly for eBay.",
    Outcome.RATE_LIMITED: "eBay is rate limiting the token endpoint: retried after its pause.",
    Outcome.TRANSIENT: "eBay or the network failed temporarily: retried later with backoff.",
    Outcome.MALFORMED_RESPONSE: "eBay answered something that is not a usable token response.",
    Outcome.DECRYPT_FAILED: (
        "The stored refresh token cannot be decrypted with the key ring; no request was sent. "
        "The seller must connect the account again (or the right key be restored)."
    ),
    Outcome.INVALID_STORED_TOKEN: (
        "The stored refresh token is empty or not shaped like an eBay token; no request was sent."
    ),
    Outcome.NO_REFRESH_TOKEN: "No refresh token is stored for this account; no request was sent.",
    Outcome.REFRESH_TOKEN_EXPIRED: (
        "The refresh token has passed its 18-month lifetime; no request was sent."
    ),
}


def disposition(outcome: Outcome) -> Disposition:
    return DISPOSITIONS[outcome]


@dataclass(frozen=True)
class TokenGrant:
    """The useful part of a successful token answer."""

    access_token: str
    expires_in: int
    token_type: str
    refresh_token: str | None = None
    refresh_token_expires_in: int | None = None


@dataclass(frozen=True)
class Classified:
    """One eBay answer, understood."""

    outcome: Outcome
    message: str
    grant: TokenGrant | None = None
    retry_after: timedelta | None = None
    body: object = None  # the parsed JSON body (may hold secrets: mask before storing)


_ERROR_CODES: Mapping[str, Outcome] = {
    "invalid_grant": Outcome.INVALID_GRANT,
    "invalid_client": Outcome.INVALID_CLIENT,
    "unauthorized_client": Outcome.INVALID_CLIENT,
    "invalid_scope": Outcome.INVALID_SCOPE,
    "invalid_request": Outcome.INVALID_REQUEST,
    "unsupported_grant_type": Outcome.CONFIGURATION_ERROR,
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> timedelta | None:
    """``Retry-After`` as seconds or an HTTP date; ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - (now or datetime.now(UTC))
    return max(delta, timedelta(0))


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _grant(body: object) -> TokenGrant | None:
    if not isinstance(body, dict):
        return None
    access = body.get("access_token")
    expires = body.get("expires_in")
    if not isinstance(access, str) or not access:
        return None
    # eBay sends an integer; bool is an int in Python and never a valid lifetime.
    if isinstance(expires, bool) or not isinstance(expires, int) or expires <= 0:
        return None
    refresh = body.get("refresh_token")
    refresh_expires = body.get("refresh_token_expires_in")
    return TokenGrant(
        access_token=access,
        expires_in=expires,
        token_type=str(body.get("token_type", "")),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        refresh_token_expires_in=(
            refresh_expires
            if isinstance(refresh_expires, int) and not isinstance(refresh_expires, bool)
            else None
        ),
    )


def classify_token_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> Classified:
    """Classify one answer of the token endpoint (any grant type)."""
    parsed = _json(body)
    if status == 200:
        grant = _grant(parsed)
        if grant is None:
            what = "not JSON" if parsed is None else "JSON without a usable access_token"
            return Classified(Outcome.MALFORMED_RESPONSE, f"HTTP 200 but {what}", body=parsed)
        return Classified(Outcome.OK, "ok", grant=grant, body=parsed)
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        return Classified(
            Outcome.RATE_LIMITED, "HTTP 429 Too Many Requests", retry_after=retry_after, body=parsed
        )
    if status >= 500 or status in (408, 425):
        return Classified(Outcome.TRANSIENT, f"HTTP {status} from eBay", body=parsed)
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        code = parsed["error"]
        description = parsed.get("error_description")
        text = f"{code}: {description}" if isinstance(description, str) else code
        outcome = _ERROR_CODES.get(code)
        if outcome is not None:
            return Classified(outcome, text, body=parsed)
        return Classified(Outcome.CONFIGURATION_ERROR, f"HTTP {status} {text}", body=parsed)
    if status == 401:
        return Classified(Outcome.INVALID_CLIENT, "HTTP 401 without an error body", body=parsed)
    return Classified(
        Outcome.MALFORMED_RESPONSE, f"HTTP {status} with an unrecognised body", body=parsed
    )


def classify_identity_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> Classified:
    """Classify an answer of Commerce Identity getUser (eBay's REST error envelope)."""
    parsed = _json(body)
    if status == 200:
        if isinstance(parsed, dict) and isinstance(parsed.get("userId"), str):
            return Classified(Outcome.OK, "ok", body=parsed)
        return Classified(Outcome.MALFORMED_RESPONSE, "HTTP 200 without a userId", body=parsed)
    if status == 401:
        return Classified(Outcome.INVALID_GRANT, "eBay refused the access token (401)")
    if status == 403:
        return Classified(
            Outcome.INVALID_SCOPE, "the token lacks a commerce.identity scope (403)", body=parsed
        )
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        return Classified(Outcome.RATE_LIMITED, "HTTP 429", retry_after=retry_after)
    if status >= 500:
        return Classified(Outcome.TRANSIENT, f"HTTP {status} from eBay", body=parsed)
    return Classified(Outcome.MALFORMED_RESPONSE, f"HTTP {status} from getUser", body=parsed)


def classify_revoke_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> Classified:
    """Token revocation answers 200 with an empty body; errors look like the token endpoint's."""
    if status == 200:
        return Classified(Outcome.OK, "revoked")
    return classify_token_answer(status, headers, body, now=now)
