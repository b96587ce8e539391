"""One exchange with eBay at its own URL, and the debug refresh that leads to one.

The debug refresh is a POST that calls eBay; its answer is a redirect to ``/exchanges/{id}``, the
journal's record of what was sent, so reloading the result reads it again and never refreshes
again. A refresh that sent nothing (a token that cannot be decrypted) is journalled too, as an
exchange with ``sent`` false: its page exists like any other.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from ebay_connector.core.exchange import Trigger
from ebay_connector.db.store import MAX_ID
from ebay_connector.errors import ExchangeNotFound, NeedsReconnect, QuotaExhausted, RateLimited
from ebay_connector.web import views
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import Admin
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import AccountId, Cookie, back, me_of, owned, page

router = APIRouter(include_in_schema=False)

ExchangeId = Annotated[int, PathParam(ge=1, le=MAX_ID), schemas.DIGITS]


def exchange_path(exchange_id: int) -> str:
    return f"/exchanges/{exchange_id}"


@router.post("/ui/accounts/{account_id}/debug")
async def debug(request: Request, account_id: AccountId, principal: Admin) -> Response:
    runtime = runtime_of(request)
    account = await owned(runtime, principal.organization_id, account_id)
    try:
        result = await runtime.manual.refresh(account, Trigger.DEBUG, actor=principal.actor)
    except (RateLimited, QuotaExhausted) as exc:
        notice = f"{account.label}: {exc.message}; try again in {exc.retry_after_seconds} s"
        return back(request, "/", notice)
    except NeedsReconnect as exc:
        return back(request, "/", exc.message)
    if result.exchange_id is None:
        # Joined another caller's refresh that left no exchange behind: nothing to show here.
        return back(request, "/", f"{account.label}: {result.outcome.value} — {result.meaning}")
    return RedirectResponse(exchange_path(result.exchange_id), status_code=303)


@router.get("/exchanges/{exchange_id}")
async def exchange_page(request: Request, exchange_id: ExchangeId, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    row = await runtime.journal.exchange(exchange_id)
    if row is None or row.organization_id != me.organization_id:
        # Another organization's exchange is as unknown as a missing one.
        raise ExchangeNotFound(f"no exchange {exchange_id}")
    exchange = views.exchange_row_dict(row)
    account: dict[str, Any] | None = None
    if row.account_id is not None:
        current = await runtime.store.account_token(row.account_id)
        if current is not None and current.organization_id == me.organization_id:
            account = {
                "id": current.account_id,
                "label": current.label,
                "ebay_username": current.ebay_username,
                "state": current.state.value,
                "state_reason": current.state_reason,
            }
    lines = "\n".join(views.exchange_lines(row.request, row.response, row.error))
    return page(request, "exchange.html", me, exchange=exchange, account=account, lines=lines)
