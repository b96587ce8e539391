"""The accounts page and the actions on one account."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from ebay_connector.core.exchange import Trigger
from ebay_connector.db.store import AccountToken
from ebay_connector.errors import NeedsReconnect, RateLimited
from ebay_connector.web import views
from ebay_connector.web.api.auth import Admin
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import (
    REFRESH_WARNING,
    AccountId,
    Cookie,
    back,
    badge,
    me_of,
    owned,
    page,
)

router = APIRouter(include_in_schema=False)

SORTS = {
    "label": ("Label", lambda a: a.label.lower()),
    "ebay_username": ("eBay username", lambda a: a.ebay_username.lower()),
    "state": ("State", lambda a: a.state.value),
    "access": ("Access token expires", lambda a: a.access_expires_at or datetime.min),
    "refresh": ("Refresh token expires", lambda a: a.refresh_expires_at or datetime.min),
    "failures": ("Failures in a row", lambda a: -a.failures_in_row),
    "last_attempt": ("Last attempt", lambda a: a.last_attempt_at or datetime.min),
    "last_used": ("Last used", lambda a: a.last_used_at or datetime.min),
}
BADGES = ("active", "expiring soon", "refresh failing", "needs reconnect")


@router.get("/")
async def accounts_page(
    request: Request, cookie: Cookie, state: str = "", sort: str = ""
) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    now = runtime.clock()
    rows = await runtime.store.accounts(me.organization_id)
    if sort in SORTS:
        rows.sort(key=SORTS[sort][1])
    shown = []
    for a in rows:
        text, kind = badge(a, now, runtime.settings.refresh_ahead)
        if state and not text.startswith(state):
            continue
        refresh_expires = a.refresh_expires_at
        shown.append(
            {
                "id": a.account_id,
                "label": a.label,
                "ebay_username": a.ebay_username,
                "badge": text,
                "badge_kind": kind,
                "access_in": views.relative(a.access_expires_at, now),
                "refresh_in": views.relative(refresh_expires, now),
                "refresh_warn": refresh_expires is not None
                and refresh_expires - now < REFRESH_WARNING,
                "failures_in_row": a.failures_in_row,
                "last_attempt": views.relative(a.last_attempt_at, now),
                "last_used": views.relative(a.last_used_at, now),
            }
        )
    columns = [(key, label) for key, (label, _) in SORTS.items()]
    return page(
        request,
        "accounts.html",
        me,
        accounts=shown,
        states=BADGES,
        state=state,
        sort=sort,
        columns=columns,
    )


def _refused(
    request: Request, account: AccountToken, exc: NeedsReconnect | RateLimited
) -> Response:
    if isinstance(exc, RateLimited):
        return back(
            request,
            "/",
            f"{account.label}: {exc.message}; try again in {exc.retry_after_seconds} s",
        )
    return back(request, "/", exc.message)


Force = Annotated[bool, Form()]


@router.post("/ui/accounts/{account_id}/refresh")
async def refresh(
    request: Request, account_id: AccountId, principal: Admin, force: Force = False
) -> Response:
    runtime = runtime_of(request)
    account = await owned(runtime, principal.organization_id, account_id)
    try:
        result = await runtime.manual.refresh(
            account, Trigger.ADMIN, actor=principal.actor, force=force
        )
    except (NeedsReconnect, RateLimited) as exc:
        return _refused(request, account, exc)
    return back(request, "/", f"{account.label}: {result.outcome.value} — {result.meaning}")


@router.post("/ui/accounts/{account_id}/disconnect")
async def disconnect(request: Request, account_id: AccountId, principal: Admin) -> Response:
    runtime = runtime_of(request)
    account = await owned(runtime, principal.organization_id, account_id)
    done = await runtime.connector.disconnect(account, actor=principal.actor)
    revoked = "revoked at eBay" if done.revoked_at_ebay else "not revoked at eBay"
    return back(request, "/", f"{account.label} disconnected ({revoked})")
