"""The accounts page and the actions on one account.

The list is one page of a view (filter, search, sort, direction, page) that its URL names; the
database filters, counts, sorts and pages it (``db/account_list.py``). An action posts, then
sends the person back to the view they acted from, at the row they acted on.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ebay_connector.core import account_list
from ebay_connector.core.account_list import ListQuery, Status
from ebay_connector.core.exchange import Trigger
from ebay_connector.db.account_list import Listing
from ebay_connector.db.store import AccountToken
from ebay_connector.errors import NeedsReconnect, QuotaExhausted, RateLimited
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
    templates,
)

router = APIRouter(include_in_schema=False)

Back = Annotated[str, Form(max_length=2000)]
LIVE_INTERVAL_MS = 5000


def _reason(account: AccountToken, status: Status) -> str | None:
    """The muted second line: why the account is in its state, in plain words."""
    if status is Status.NEEDS_RECONNECT:
        reason = account.state_reason or account.last_error_code
        return views.PLAIN_REASONS.get(reason or "", reason or "eBay no longer accepts its grant")
    if status is Status.FAILING:
        return account.last_error_message or account.last_error_code or "the last refresh failed"
    return None


def _row(account: AccountToken, status: Status, now: datetime) -> dict[str, Any]:
    refresh_expires = account.refresh_expires_at
    row = {
        "id": account.account_id,
        "label": account.label,
        "ebay_username": account.ebay_username,
        "status": status.value,
        "badge": status.badge,
        "badge_kind": status.kind,
        "reason": _reason(account, status),
        "retry": account_list.retry_text(account.next_attempt_at, now)
        if status is Status.FAILING
        else None,
        "action": account_list.primary_action(status).value,
        "access_in": views.relative(account.access_expires_at, now),
        "refresh_in": views.relative(refresh_expires, now),
        "refresh_warn": refresh_expires is not None and refresh_expires - now < REFRESH_WARNING,
        "failures_in_row": account.failures_in_row,
        "last_attempt": views.relative(account.last_attempt_at, now),
        "last_used": views.relative(account.last_used_at, now),
    }
    # What the live update compares: a row is replaced only when what it shows has changed.
    row["sig"] = hashlib.blake2s(repr(sorted(row.items())).encode(), digest_size=8).hexdigest()
    return row


async def _listing(runtime: Runtime, me: Me, view: ListQuery) -> Listing:
    return await runtime.account_list.page(
        me.organization_id,
        view,
        now=runtime.clock(),
        refresh_ahead=runtime.settings.refresh_ahead,
    )


def _context(listing: Listing, view: ListQuery, now: datetime) -> dict[str, Any]:
    pages = listing.pages
    shown = view.on_page(pages.number)
    summary = [
        {
            "status": status.value,
            "count": count,
            "text": f"{count:,} {status.counted}",
            "href": shown.with_status(status).path(),
            "current": view.status is status,
        }
        for status, count in account_list.summary(listing.counts)
    ]
    columns = [
        {
            "key": key.value,
            "label": label,
            "href": shown.sorted_by(key).path(),
            "sort": ("descending" if view.descending else "ascending")
            if view.sort is key
            else None,
        }
        for key, label in account_list.COLUMNS
    ]
    return {
        "accounts": [_row(account, status, now) for account, status in listing.rows],
        "summary": summary,
        "everything": listing.everything,
        "all_href": shown.with_status(None).path(),
        "view": shown,
        "back_query": shown.path().removeprefix("/").removeprefix("?"),
        "pages": pages,
        "previous_href": shown.on_page(pages.number - 1).path() if pages.number > 1 else None,
        "next_href": shown.on_page(pages.number + 1).path() if pages.number < pages.count else None,
        "columns": columns,
        "statuses": [(s.value, s.badge) for s in Status],
        "sorts": [(key.value, label) for key, label in account_list.COLUMNS],
    }


@router.get("/")
async def accounts_page(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    view = account_list.parse(request.query_params)
    listing = await _listing(runtime, me, view)
    return page(
        request,
        "accounts.html",
        me,
        managers=await runtime.users.managers(me.organization_id),
        live_interval_ms=LIVE_INTERVAL_MS,
        **_context(listing, view, runtime.clock()),
    )


@router.get("/ui/accounts/live")
async def accounts_live(request: Request, cookie: Cookie) -> Response:
    """The rows and the summary of a view, as HTML the page's script puts in place."""
    me = await me_of(request, cookie)
    if me is None:
        return HTMLResponse("", status_code=401)
    runtime = runtime_of(request)
    view = account_list.parse(request.query_params)
    listing = await _listing(runtime, me, view)
    return templates.TemplateResponse(
        request,
        "accounts_live.html",
        {
            "me": me,
            "managers": await runtime.users.managers(me.organization_id),
            **_context(listing, view, runtime.clock()),
        },
    )


Refusal = NeedsReconnect | RateLimited | QuotaExhausted


def _refused(request: Request, account: AccountToken, exc: Refusal, to: str = "/") -> Response:
    if isinstance(exc, NeedsReconnect):
        return back(request, to, f"{account.label}: {exc.message}")
    now = runtime_of(request).clock()
    when = views.relative(now + timedelta(seconds=exc.retry_after_seconds), now)
    return back(request, to, f"{account.label}: {exc.message}; try again {when}")


Force = Annotated[bool, Form()]


@router.post("/ui/accounts/{account_id}/refresh")
async def refresh(
    request: Request,
    account_id: AccountId,
    principal: Admin,
    force: Force = False,
    view: Back = "",
) -> Response:
    runtime = runtime_of(request)
    account = await owned(runtime, principal.organization_id, account_id)
    to = account_list.return_path(view, account.account_id)
    try:
        result = await runtime.manual.refresh(
            account, Trigger.ADMIN, actor=principal.actor, force=force
        )
    except (NeedsReconnect, RateLimited, QuotaExhausted) as exc:
        return _refused(request, account, exc, to)
    return back(request, to, f"{account.label}: {result.outcome.value} — {result.meaning}")


@router.post("/ui/accounts/{account_id}/disconnect")
async def disconnect(
    request: Request, account_id: AccountId, principal: Admin, view: Back = ""
) -> Response:
    runtime = runtime_of(request)
    account = await owned(runtime, principal.organization_id, account_id)
    done = await runtime.connector.disconnect(account, actor=principal.actor)
    revoked = "revoked at eBay" if done.revoked_at_ebay else "not revoked at eBay"
    # The row is gone: back to the same view, where it was.
    return back(
        request, account_list.return_path(view), f"{account.label} disconnected ({revoked})"
    )
