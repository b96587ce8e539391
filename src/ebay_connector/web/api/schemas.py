"""Request and response bodies of the HTTP API (they make the OpenAPI document complete)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ebay_connector.core import destination


def printable(text: str) -> bool:
    """No control characters (NUL, ESC, CR/LF, …) and no lone surrogates (not encodable)."""
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def _one_line(value: str) -> str:
    bad = destination.unreadable_character(value)
    if bad is not None:
        raise ValueError(f"must not contain {bad} (a control or invisible formatting character)")
    return value


# Every free-text field of a request: refused (422) with a NUL, a control character, a line
# separator, a lone surrogate or a bidi override, before any database sees it.
OneLine = AfterValidator(_one_line)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)

    @field_validator("email")
    @classmethod
    def _printable(cls, value: str) -> str:
        # A NUL or a lone surrogate cannot even be compared in PostgreSQL: refuse it here.
        if not printable(value):
            raise ValueError("contains control characters or invalid unicode")
        return value


class SessionInfo(BaseModel):
    user_id: int
    email: str
    role: str
    organization_id: int
    csrf_token: str


class AccountRef(Strict):
    ebay_account_id: int = Field(ge=1, le=2**31 - 1)


class ManualRefresh(AccountRef):
    force: bool = Field(
        default=False, description="refresh even an account that needs reconnecting"
    )


class Account(BaseModel):
    id: int
    label: str
    ebay_username: str
    ebay_user_id: str
    environment: str
    state: str
    reason: str | None
    display_state: str
    access_expires_at: str | None
    refresh_expires_at: str | None
    failures_in_row: int
    last_error_code: str | None
    last_error_message: str | None
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_success_at: str | None
    last_used_at: str | None
    refresh_policy: str
    scopes: list[str]
    end_user_id: str | None = None
    end_user_label: str | None = None


class ConnectSessionRequest(Strict):
    end_user_id: str = Field(min_length=1, max_length=200)
    end_user_label: str | None = Field(default=None, max_length=200)
    return_url: str = Field(min_length=1, max_length=2048)
    account_id: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @field_validator("end_user_id", "end_user_label")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not printable(value):
            raise ValueError("contains control characters or invalid unicode")
        return value


class ConnectSessionCreated(BaseModel):
    id: str
    url: str
    expires_at: datetime


class ProxyError(BaseModel):
    status: int
    api: str
    at: str | None


class ProxyCalls(BaseModel):
    account_id: int
    day: str
    calls: int
    last_error: ProxyError | None


class AccountList(BaseModel):
    accounts: list[Account]


class AccessToken(BaseModel):
    access_token: str
    expires_at: datetime
    # Seconds left by the connector's clock: a program caches by it, whatever its own clock says.
    expires_in: int
    token_type: str


class Exchange(BaseModel):
    """A masked exchange with eBay: no secret appears in it."""

    model_config = ConfigDict(extra="allow")

    action: str
    outcome: str
    sent: bool
    status: int | None
    duration_ms: float | None
    error: str | None
    token_fingerprint: str | None
    request: dict[str, Any]
    response: dict[str, Any] | None


class RefreshOutcome(BaseModel):
    account_id: int
    trigger: str
    outcome: str
    meaning: str
    message: str
    called_ebay: bool
    joined: bool
    state: str
    state_reason: str | None
    access_expires_at: datetime | None
    next_attempt_at: datetime | None
    exchange_id: int | None
    exchange: Exchange | None


class TerminalEntry(Exchange):
    id: int
    created_at: str
    account_id: int | None
    account_label: str | None
    trigger: str
    meaning: str
    environment: str


class TerminalPage(BaseModel):
    entries: list[TerminalEntry]
    next_cursor: int | None = Field(description="pass as `cursor` for older entries")


class Worker(BaseModel):
    instance_id: str
    host: str
    pid: int
    version: str
    status: str
    reported_status: str
    started_at: datetime
    last_cycle_started_at: datetime | None
    last_cycle_finished_at: datetime | None
    next_cycle_before: datetime | None
    cycles: int
    counts: dict[str, Any]
    last_error: str | None


class Workers(BaseModel):
    workers: list[Worker]
    versions: list[str]
    mixed_versions: bool
    quota: dict[str, Any]


class CycleOutcome(BaseModel):
    status: str
    counts: dict[str, Any]
    error: str | None


class Disconnected(BaseModel):
    account_id: int
    deleted: bool
    revoked_at_ebay: bool


class Connected(BaseModel):
    account_id: int
    created: bool
    ebay_username: str
    reconnected_account: int | None


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


def _digits(value: object) -> object:
    """Ids in the path and query are plain ASCII digits: no sign, spaces, '_' or '1.0'.

    (Pydantic's lax int would read ``%201`` as account 1 — surprising for a DELETE.)"""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a positive whole number written with digits 0-9")
    return value


DIGITS = BeforeValidator(_digits)  # put on every id taken from a path or query string
