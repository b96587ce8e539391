"""The page an admin's connect or reconnect ends on when it stored nothing: what happened, whom
eBay saw, and the next step. The callback (web/api) redirects here with the ending signed in a
cookie; reloading shows the same page for a while and never repeats anything."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ebay_connector.core.connect_ending import Reconnecting, ending_of
from ebay_connector.web.api.auth import ENDING_COOKIE, ENDING_PATH
from ebay_connector.web.ui.pages import Cookie, me_of, page

router = APIRouter(include_in_schema=False)


@router.get(ENDING_PATH)
async def connect_ended(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    seen = request.app.state.sessions.read_ending(request.cookies.get(ENDING_COOKIE)) or {}
    code = str(seen.get("code") or "invalid_state")
    account_id, label, username = (
        seen.get("account_id"),
        seen.get("label"),
        seen.get("ebay_username"),
    )
    target = (
        Reconnecting(account_id, str(label), str(username))
        if isinstance(account_id, int) and label and username
        else None
    )
    signed_in = seen.get("signed_in")
    ending = ending_of(code, signed_in=str(signed_in) if signed_in else None, target=target)
    status = seen.get("status")
    response = page(request, "connect_ended.html", me, ending=ending, target=target)
    response.status_code = status if isinstance(status, int) and 400 <= status < 600 else 400
    response.headers["Cache-Control"] = "no-store"
    return response
