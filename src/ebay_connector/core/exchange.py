"""One HTTP exchange with eBay, as recorded: masked request and response, status, duration.

What an operator reads to learn what was really sent and answered. Every call the eBay client
makes produces exactly one :class:`ExchangeRecord`; a refresh that is refused before any HTTP
produces one with ``sent=False`` so the terminal can show that nothing reached eBay, and why.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ebay_connector.core.outcome import Outcome


class Trigger(enum.StrEnum):
    """Who asked for the call."""

    SCHEDULED = "scheduled"
    ADMIN = "admin"
    DEBUG = "debug"
    ON_DEMAND = "on_demand"
    CONNECT = "connect"


class Action(enum.StrEnum):
    """Which eBay operation the exchange is."""

    REFRESH_TOKEN = "refresh_token"
    AUTHORIZATION_CODE = "authorization_code"
    CLIENT_CREDENTIALS = "client_credentials"
    GET_USER = "get_user"
    REVOKE = "revoke"
    GET_PUBLIC_KEY = "get_public_key"  # Notification API, to verify a deletion notification
    CONSENT_PAGE = "consent_page"  # the authorize page, opened as a browser would (doctor)


class RequestDoc(TypedDict):
    """The masked request as stored in the journal's ``request`` column."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    sent: bool


class ResponseDoc(TypedDict):
    """The masked answer as stored in the journal's ``response`` column."""

    status: int
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class ExchangeRecord:
    """A masked, storable account of one exchange. Holds no secret in clear."""

    action: Action
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: dict[str, Any]
    sent: bool
    outcome: Outcome
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: Any = None
    duration_ms: float | None = None
    error: str | None = None
    token_fingerprint: str | None = None  # fingerprint of the token sent (refresh token or code)

    def request_dict(self) -> RequestDoc:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.request_headers,
            "body": self.request_body,
            "sent": self.sent,
        }

    def response_dict(self) -> ResponseDoc | None:
        if self.status is None:
            return None
        return {"status": self.status, "headers": self.response_headers, "body": self.response_body}
