"""Plain-text and JSON renderings of exchanges, attempts and accounts for the CLI, API and UI.

Each document has a TypedDict, so the CLI, the API and the UI read typed keys, not ``Any``.
Everything rendered here comes from masked records: no function in this module ever sees a
secret, except :func:`access_token_dict`, whose whole purpose is to hand one over.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from ebay_connector.core.exchange import ExchangeRecord, RequestDoc, ResponseDoc
from ebay_connector.core.outcome import MEANINGS, Outcome
from ebay_connector.db.heartbeats import HeartbeatRow
from ebay_connector.db.journal import AttemptRow, ExchangeRow
from ebay_connector.db.store import AccountToken

if TYPE_CHECKING:
    from ebay_connector.service.refresh import AccessToken, RefreshResult


class ExchangeRowDoc(TypedDict):
    """An exchange read back from the journal (terminal entries, a joined refresh's exchange)."""

    id: int
    created_at: str
    account_id: int | None
    account_label: str | None
    organization_id: int | None
    environment: str
    action: str
    trigger: str
    actor: str | None
    outcome: str
    meaning: str
    sent: bool
    status: int | None
    duration_ms: float | None
    error: str | None
    token_fingerprint: str | None
    request: dict[str, Any]  # stored JSON: RequestDoc when written by this version
    response: dict[str, Any] | None


class RecordDoc(TypedDict):
    """A fresh exchange, as the eBay client recorded it (not yet read back)."""

    action: str
    outcome: str
    sent: bool
    status: int | None
    duration_ms: float | None
    error: str | None
    token_fingerprint: str | None
    request: RequestDoc
    response: ResponseDoc | None


ExchangeDoc = RecordDoc | ExchangeRowDoc


class AccountDoc(TypedDict):
    id: int
    organization_id: int
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
    scopes: list[str]
    refresh_policy: str
    end_user_id: str | None
    end_user_label: str | None


class RefreshResultDoc(TypedDict):
    account_id: int
    trigger: str
    outcome: str
    meaning: str
    message: str
    called_ebay: bool
    joined: bool
    state: str
    state_reason: str | None
    access_expires_at: str | None
    next_attempt_at: str | None
    exchange_id: int | None
    exchange: ExchangeDoc | None


class HeartbeatDoc(TypedDict):
    """A worker's heartbeat as ``inspect runtime`` shows it (``status`` includes ``stale``)."""

    instance_id: str
    host: str
    pid: int
    version: str
    status: str
    reported_status: str
    started_at: str | None
    last_cycle_started_at: str | None
    last_cycle_finished_at: str | None
    cycles: int
    counts: dict[str, Any]
    last_error: str | None
    updated_at: str | None


class AttemptDoc(TypedDict):
    id: int
    trigger: str
    actor: str | None
    started_at: str | None
    finished_at: str | None
    outcome: str
    error_code: str | None
    error_message: str | None
    old_expires_at: str | None
    new_expires_at: str | None


class AccountAttemptsDoc(TypedDict):
    id: int
    label: str
    state: str
    reason: str | None
    attempts: list[AttemptDoc]


class RuntimeDoc(TypedDict):
    """What ``inspect runtime --json`` prints."""

    heartbeats: list[HeartbeatDoc]
    accounts_by_state: dict[str, int]
    due_now: int
    quota: dict[str, Any]
    accounts: list[AccountAttemptsDoc]


class AccessTokenDoc(TypedDict):
    account_id: int
    access_token: str  # the secret itself
    expires_at: str | None
    token_type: str


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def relative(value: datetime | None, now: datetime) -> str:
    """``in 1h 45m`` / ``12m ago`` — what an operator reads at a glance."""
    if value is None:
        return "-"
    delta = value - now
    future = delta >= timedelta(0)
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes}m"
    elif minutes:
        text = f"{minutes}m"
    else:
        text = f"{seconds}s"
    return f"in {text}" if future else f"{text} ago"


def meaning(outcome: Outcome) -> str:
    return MEANINGS[outcome]


def _form_line(name: str, value: Any) -> str:
    if isinstance(value, dict) and value.get("masked"):
        return (
            f"{name}={value.get('prefix')}…(len {value.get('length')}, "
            f"fp {value.get('fingerprint')})"
        )
    return f"{name}={value}"


def exchange_lines(
    request: Mapping[str, Any], response: Mapping[str, Any] | None, error: str | None
) -> list[str]:
    """The exchange as a terminal would show it: ``>`` request lines, ``<`` response lines."""
    lines: list[str] = []
    if not request.get("sent", True):
        lines.append(f"  (no request was sent: {error})")
        return lines
    lines.append(f"> {request.get('method')} {request.get('url')}")
    for name, value in (request.get("headers") or {}).items():
        lines.append(f"> {name}: {value}")
    body = request.get("body") or {}
    if body:
        lines.append(">")
        lines.extend(f"> {_form_line(name, value)}" for name, value in body.items())
    if response is None:
        lines.append(f"< (no response: {error})")
        return lines
    lines.append(f"< HTTP {response.get('status')}")
    for name, value in (response.get("headers") or {}).items():
        lines.append(f"< {name}: {value}")
    lines.append("<")
    lines.append("< " + json.dumps(response.get("body"), ensure_ascii=False))
    return lines


def exchange_head(row: ExchangeRow) -> str:
    account = f"#{row.account_id} {row.account_label}" if row.account_id else "-"
    status = row.status if row.status is not None else "not sent"
    duration = f"{row.duration_ms:.0f} ms" if row.duration_ms is not None else "-"
    return (
        f"{row.created_at:%Y-%m-%d %H:%M:%S} · {account} · {row.trigger.value} · "
        f"{row.action.value} · {row.outcome.value} · {status} · {duration} · "
        f"fp {row.token_fingerprint or '-'}"
    )


def exchange_row_dict(row: ExchangeRow) -> ExchangeRowDoc:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "account_id": row.account_id,
        "account_label": row.account_label,
        "organization_id": row.organization_id,
        "environment": row.environment,
        "action": row.action.value,
        "trigger": row.trigger.value,
        "actor": row.actor,
        "outcome": row.outcome.value,
        "meaning": meaning(row.outcome),
        "sent": row.sent,
        "status": row.status,
        "duration_ms": row.duration_ms,
        "error": row.error,
        "token_fingerprint": row.token_fingerprint,
        "request": row.request,
        "response": row.response,
    }


def record_dict(record: ExchangeRecord) -> RecordDoc:
    return {
        "action": record.action.value,
        "outcome": record.outcome.value,
        "sent": record.sent,
        "status": record.status,
        "duration_ms": record.duration_ms,
        "error": record.error,
        "token_fingerprint": record.token_fingerprint,
        "request": record.request_dict(),
        "response": record.response_dict(),
    }


PLAIN_REASONS = {
    "invalid_grant": "the seller's eBay grant was revoked or has expired",
    "decrypt_failed": "the stored token cannot be decrypted",
    "invalid_stored_token": "no usable refresh token is stored",
    "no_refresh_token": "no refresh token is stored",
    "refresh_token_expired": "the 18-month eBay grant has ended",
}


def badge(account: AccountToken, now: datetime, refresh_ahead: timedelta) -> tuple[str, str]:
    """The state an operator reads — ``active``, ``expiring soon``, ``refresh failing`` or
    ``needs reconnect`` — and its kind (``ok``/``warn``/``bad``). An expired token of an idle
    account is ``active``: its grant works and it is refreshed when a program asks."""
    if account.state.value == "needs_reconnect":
        return "needs reconnect", "bad"
    if account.failures_in_row > 0:
        return "refresh failing", "bad"
    expires = account.access_expires_at
    if expires is not None and now < expires <= now + refresh_ahead:
        return "expiring soon", "warn"
    return "active", "ok"


def display_state(account: AccountToken, now: datetime, refresh_ahead: timedelta) -> str:
    """The badge with its machine reason, e.g. ``needs reconnect (decrypt_failed)``."""
    text, _ = badge(account, now, refresh_ahead)
    return f"{text} ({account.state_reason})" if account.state_reason else text


def account_dict(account: AccountToken, now: datetime, refresh_ahead: timedelta) -> AccountDoc:
    return {
        "id": account.account_id,
        "organization_id": account.organization_id,
        "label": account.label,
        "ebay_username": account.ebay_username,
        "ebay_user_id": account.ebay_user_id,
        "environment": account.environment,
        "state": account.state.value,
        "reason": account.state_reason,
        "display_state": display_state(account, now, refresh_ahead),
        "access_expires_at": iso(account.access_expires_at),
        "refresh_expires_at": iso(account.refresh_expires_at),
        "failures_in_row": account.failures_in_row,
        "last_error_code": account.last_error_code,
        "last_error_message": account.last_error_message,
        "next_attempt_at": iso(account.next_attempt_at),
        "last_attempt_at": iso(account.last_attempt_at),
        "last_success_at": iso(account.last_success_at),
        "last_used_at": iso(account.last_used_at),
        "scopes": list(account.scopes),
        "refresh_policy": account.refresh_policy or "default",
        "end_user_id": account.end_user_id,
        "end_user_label": account.end_user_label,
    }


def exchange_dict(exchange: ExchangeRecord | ExchangeRow | None) -> ExchangeDoc | None:
    """A result's masked exchange as a document, whether fresh or read back from the journal."""
    if exchange is None:
        return None
    if isinstance(exchange, ExchangeRecord):
        return record_dict(exchange)
    return exchange_row_dict(exchange)


def refresh_result_dict(result: RefreshResult, exchange: ExchangeDoc | None) -> RefreshResultDoc:
    """A refresh's outcome as JSON (CLI ``refresh --json`` and the admin API)."""
    return {
        "account_id": result.account_id,
        "trigger": result.trigger.value,
        "outcome": result.outcome.value,
        "meaning": result.meaning,
        "message": result.message,
        "called_ebay": result.called_ebay,
        "joined": result.joined,
        "state": result.state.value,
        "state_reason": result.state_reason,
        "access_expires_at": iso(result.access_expires_at),
        "next_attempt_at": iso(result.next_attempt_at),
        "exchange_id": result.exchange_id,
        "exchange": exchange,
    }


def heartbeat_dict(beat: HeartbeatRow, now: datetime) -> HeartbeatDoc:
    return {
        "instance_id": beat.instance_id,
        "host": beat.host,
        "pid": beat.pid,
        "version": beat.version,
        "status": beat.status_at(now),
        "reported_status": beat.status,
        "started_at": iso(beat.started_at),
        "last_cycle_started_at": iso(beat.last_cycle_started_at),
        "last_cycle_finished_at": iso(beat.last_cycle_finished_at),
        "cycles": beat.cycles,
        "counts": beat.counts,
        "last_error": beat.last_error,
        "updated_at": iso(beat.updated_at),
    }


def attempt_dict(attempt: AttemptRow) -> AttemptDoc:
    return {
        "id": attempt.id,
        "trigger": attempt.trigger.value,
        "actor": attempt.actor,
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at),
        "outcome": attempt.outcome.value,
        "error_code": attempt.error_code,
        "error_message": attempt.error_message,
        "old_expires_at": iso(attempt.old_expires_at),
        "new_expires_at": iso(attempt.new_expires_at),
    }


def access_token_dict(token: AccessToken) -> AccessTokenDoc:
    """The one document that carries a secret: what ``ebay-connector token`` prints."""
    return {
        "account_id": token.account_id,
        "access_token": token.access_token,
        "expires_at": iso(token.expires_at),
        "token_type": token.token_type,
    }
