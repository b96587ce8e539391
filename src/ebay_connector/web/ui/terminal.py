"""The token refresh terminal: every exchange with eBay, live."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db.journal import ExchangeRow
from ebay_connector.db.store import MAX_ID
from ebay_connector.web import views
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import Cookie, me_of, page, templates

router = APIRouter(include_in_schema=False)

TERMINAL_PAGE = 100


def _terminal_filters(account: str, trigger: str, outcome: str) -> dict[str, Any]:
    return {
        "account_id": int(account) if account.isdigit() and len(account) < 10 else None,
        "trigger": trigger if trigger in {t.value for t in Trigger} else None,
        "outcome": outcome if outcome in {o.value for o in Outcome} else None,
    }


def _entry_view(row: ExchangeRow) -> dict[str, Any]:
    lines = "\n".join(views.exchange_lines(row.request, row.response, row.error))
    return {**views.exchange_row_dict(row), "lines": lines}


@router.get("/terminal")
async def terminal_page(
    request: Request, cookie: Cookie, account: str = "", trigger: str = "", outcome: str = ""
) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    filters = _terminal_filters(account, trigger, outcome)
    rows = await runtime.journal.exchanges(
        organization_id=me.organization_id, limit=TERMINAL_PAGE, **filters
    )
    query = urlencode(
        {k: v for k, v in (("account", account), ("trigger", trigger), ("outcome", outcome)) if v}
    )
    return page(
        request,
        "terminal.html",
        me,
        entries=[_entry_view(r) for r in rows],
        newest_id=rows[0].id if rows else 0,
        query=query,
        accounts=await runtime.store.accounts(me.organization_id),
        account=filters["account_id"],
        trigger=filters["trigger"],
        outcome=filters["outcome"],
        triggers=[t.value for t in Trigger],
        outcomes=[o.value for o in Outcome],
    )


@router.get("/ui/terminal/entries")
async def terminal_entries(
    request: Request,
    cookie: Cookie,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    account: str = "",
    trigger: str = "",
    outcome: str = "",
) -> Response:
    """New entries (newer than ``after``) as HTML list items, newest first: the live feed."""
    me = await me_of(request, cookie)
    if me is None:
        return Response(status_code=401)
    runtime = runtime_of(request)
    rows = await runtime.journal.exchanges(
        organization_id=me.organization_id,
        after_id=after,
        limit=TERMINAL_PAGE,
        **_terminal_filters(account, trigger, outcome),
    )
    html = "".join(templates.get_template("entry.html").render(e=_entry_view(row)) for row in rows)
    return HTMLResponse(html)
