"""One account's page: its state in plain words, its tokens (masked), its recent exchanges, the
actions on it, and the rename of its label. Another organization's account is as unknown as a
missing one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from ebay_connector.core import masking
from ebay_connector.db.store import AccountToken
from ebay_connector.errors import AccountNotFound, DecryptFailed, InvalidLabel
from ebay_connector.keys.crypto import KeyRing, TokenField
from ebay_connector.runtime import Runtime
from ebay_connector.web import views
from ebay_connector.web.api.auth import Admin
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import (
    REFRESH_WARNING,
    AccountId,
    Cookie,
    Me,
    back,
    me_of,
    owned,
    page,
)

router = APIRouter(include_in_schema=False)
HISTORY = 20
# Longer than any label accepted, so an over-long one reaches the rule that says why.
TYPED_MAX = 1000


def token_facts(ring: KeyRing, account: AccountToken) -> list[dict[str, Any]]:
    """Each stored token by its keyed fingerprint and length: enough to tell tokens apart and
    to match an exchange, never a character of the token."""
    facts = []
    for name, field, ciphertext in (
        ("Refresh token", TokenField.REFRESH_TOKEN, account.refresh_token_ciphertext),
        ("Access token", TokenField.ACCESS_TOKEN, account.access_token_ciphertext),
    ):
        fact: dict[str, Any] = {"name": name, "field": field.value}
        if ciphertext is None:
            fact["text"] = "none stored"
        else:
            try:
                plain = ring.decrypt(ciphertext, account_id=account.account_id, field=field)
            except DecryptFailed as exc:
                fact["text"] = f"does not decrypt ({exc.reason.value})"
            else:
                masked = masking.mask(plain, ring)
                fact["fingerprint"] = masked.fingerprint
                fact["text"] = f"fingerprint {masked.fingerprint} · {masked.length} characters"
        facts.append(fact)
    return facts


def when(value: datetime | None, now: datetime) -> dict[str, str | None]:
    return {
        "relative": views.relative(value, now),
        "utc": f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else None,
    }


async def render(
    request: Request,
    me: Me,
    runtime: Runtime,
    account: AccountToken,
    *,
    typed: str | None = None,
    error: str | None = None,
) -> Response:
    now = runtime.clock()
    text, kind = views.badge(account, now, runtime.settings.refresh_ahead)
    reason = account.state_reason
    history = await runtime.journal.exchanges(
        organization_id=me.organization_id, account_id=account.account_id, limit=HISTORY
    )
    refresh_expires = account.refresh_expires_at
    view = {
        "id": account.account_id,
        "label": account.label,
        "ebay_username": account.ebay_username,
        "environment": account.environment,
        "badge": text,
        "badge_kind": kind,
        "reason": views.PLAIN_REASONS.get(reason, reason) if reason else None,
        "needs_reconnect": account.state.value == "needs_reconnect",
        "failures_in_row": account.failures_in_row,
        "last_error": (
            f"{account.last_error_code}: {account.last_error_message}"
            if account.last_error_code
            else None
        ),
        "next_attempt": when(account.next_attempt_at, now),
        "policy": account.refresh_policy or "default",
        "access_expires": when(account.access_expires_at, now),
        "refresh_expires": when(refresh_expires, now),
        "refresh_warn": refresh_expires is not None and refresh_expires - now < REFRESH_WARNING,
        "last_used": when(account.last_used_at, now),
        "last_attempt": when(account.last_attempt_at, now),
        "last_success": when(account.last_success_at, now),
        "end_user": account.end_user_label or account.end_user_id,
        "tokens": token_facts(runtime.connector.keyring, account),
    }
    entries = [
        {
            "id": row.id,
            "at": f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC",
            "action": row.action.value,
            "trigger": row.trigger.value,
            "outcome": row.outcome.value,
            "ok": row.outcome.value == "ok",
            "status": row.status if row.status is not None else "not sent",
            "meaning": views.meaning(row.outcome),
        }
        for row in history
    ]
    response = page(
        request,
        "account.html",
        me,
        account=view,
        history=entries,
        typed=account.label if typed is None else typed,
        error=error,
    )
    if error is not None:
        response.status_code = 422
    return response


def missing(request: Request, me: Me, account_id: int) -> Response:
    response = page(request, "account_missing.html", me, account_id=account_id)
    response.status_code = 404
    return response


@router.get("/accounts/{account_id}")
async def account_page(request: Request, account_id: AccountId, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    try:
        account = await owned(runtime, me.organization_id, account_id)
    except AccountNotFound:
        return missing(request, me, account_id)
    return await render(request, me, runtime, account)


@router.post("/ui/accounts/{account_id}/label")
async def rename(
    request: Request,
    account_id: AccountId,
    principal: Admin,
    cookie: Cookie,
    label: Annotated[str, Form(max_length=TYPED_MAX)] = "",
) -> Response:
    me = await me_of(request, cookie)
    assert me is not None  # Admin: a signed-in admin's session
    runtime = runtime_of(request)
    try:
        account = await owned(runtime, principal.organization_id, account_id)
    except AccountNotFound:
        return missing(request, me, account_id)
    try:
        stored = await runtime.connector.rename(account, label, actor=principal.actor)
    except InvalidLabel as exc:
        return await render(request, me, runtime, account, typed=label, error=exc.message)
    return back(request, f"/accounts/{account_id}", f"Renamed to {stored}.")
