"""The one implementation of the client's logic, without I/O: the requests to make, how answers
are read, and the token cache. :mod:`.sync` and :mod:`.aio` only send what this builds."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from ebay_connector_client.errors import (
    ConnectorError,
    NeedsReconnect,
    NotFound,
    PermissionDenied,
    RetryLater,
)

DEFAULT_MARGIN_SECONDS = 120.0
DEFAULT_TIMEOUT_SECONDS = 30.0
_RETRY_LATER = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Account:
    id: int
    label: str
    ebay_username: str
    state: str
    reason: str | None
    end_user_id: str | None
    end_user_label: str | None
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class AccessToken:
    access_token: str = field(repr=False)
    expires_at: datetime
    expires_in: float  # seconds left when the connector answered (its clock, not ours)


@dataclass(frozen=True)
class ConnectSession:
    id: str
    url: str
    expires_at: datetime


def headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def accounts_request(end_user_id: str | None) -> tuple[str, str, dict[str, Any]]:
    params = {} if end_user_id is None else {"end_user_id": end_user_id}
    return "GET", "/api/v1/accounts", {"params": params}


def token_request(account_id: int, rejected: str | None = None) -> tuple[str, str, dict[str, Any]]:
    params = {} if rejected is None else {"rejected": digest(rejected)}
    return "GET", f"/api/v1/accounts/{int(account_id)}/access-token", {"params": params}


def session_request(
    end_user_id: str, return_url: str, end_user_label: str | None, account_id: int | None
) -> tuple[str, str, dict[str, Any]]:
    body: dict[str, Any] = {"end_user_id": end_user_id, "return_url": return_url}
    if end_user_label is not None:
        body["end_user_label"] = end_user_label
    if account_id is not None:
        body["account_id"] = int(account_id)
    return "POST", "/api/v1/connect-sessions", {"json": body}


def proxy_base(base_url: str, account_id: int) -> str:
    return f"{base_url.rstrip('/')}/api/v1/accounts/{int(account_id)}/proxy/"


def digest(access_token: str) -> str:
    """A rejected token is reported by its SHA-256, never sent back itself."""
    return hashlib.sha256(access_token.encode()).hexdigest()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def connector_error(response: httpx.Response) -> ConnectorError | None:
    """The typed error of an answer ebay-connector gave itself (``{"error": {"code", …}}``);
    None for success, or for an answer that is not the connector's (eBay's, through the proxy)."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None
    code, message, status = error["code"], str(error.get("message", "")), response.status_code
    if code == "needs_reconnect":
        return NeedsReconnect(message, reason=str(error.get("reason", code)), status=status)
    if status in _RETRY_LATER:
        return RetryLater(message, retry_after=_retry_after(response), status=status, code=code)
    if status in (401, 403):
        return PermissionDenied(message, status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    return ConnectorError(message, status=status, code=code)


def checked(response: httpx.Response) -> Any:
    """The JSON of a successful answer, or the typed error."""
    error = connector_error(response)
    if error is not None:
        raise error
    if response.status_code >= 400:
        message = f"unexpected answer {response.status_code}"
        if response.status_code in _RETRY_LATER:
            raise RetryLater(
                message,
                retry_after=_retry_after(response),
                status=response.status_code,
                code="unavailable",
            )
        raise ConnectorError(message, status=response.status_code, code="http_error")
    return response.json()


def parse_accounts(response: httpx.Response) -> list[Account]:
    return [
        Account(
            id=int(a["id"]),
            label=str(a["label"]),
            ebay_username=str(a["ebay_username"]),
            state=str(a["state"]),
            reason=a.get("reason"),
            end_user_id=a.get("end_user_id"),
            end_user_label=a.get("end_user_label"),
            raw=a,
        )
        for a in checked(response)["accounts"]
    ]


def parse_token(response: httpx.Response) -> AccessToken:
    body = checked(response)
    return AccessToken(
        str(body["access_token"]),
        datetime.fromisoformat(body["expires_at"]),
        float(body["expires_in"]),
    )


def parse_session(response: httpx.Response) -> ConnectSession:
    body = checked(response)
    return ConnectSession(
        str(body["id"]), str(body["url"]), datetime.fromisoformat(body["expires_at"])
    )


class TokenCache:
    """Tokens by account, served until they are within ``margin`` seconds of expiry.

    Expiry is counted on this process's monotonic clock from the connector's ``expires_in``, so a
    program whose wall clock is off still renews in time."""

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self._tokens: dict[int, tuple[str, float]] = {}

    def get(self, account_id: int) -> str | None:
        found = self._tokens.get(account_id)
        if found is None or found[1] - self.margin <= time.monotonic():
            return None
        return found[0]

    def put(self, account_id: int, token: AccessToken) -> str:
        self._tokens[account_id] = (token.access_token, time.monotonic() + token.expires_in)
        return token.access_token
