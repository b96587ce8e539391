"""The seller's pages of a connect session: no login, one button, always HTML.

A seller arrives from a program's link; whatever happens, they end on the program's return URL
(on its organization's allow-list) or on a page of ours — never on a JSON error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ebay_connector.service.connect_sessions import SellerPage
from ebay_connector.web.api.state import runtime_of

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
SessionId = Annotated[str, PathParam(max_length=64)]
# The seller's pages must not be framed (clickjacking the button) nor cached (single use).
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _unknown(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "connect_unknown.html", {"me": None}, status_code=404, headers=HEADERS
    )


def _go(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


@router.get("/connect/{session_id}", response_class=HTMLResponse)
async def seller_page(request: Request, session_id: SessionId) -> Response:
    shown = await runtime_of(request).connect_sessions.page(session_id)
    if shown is None:
        return _unknown(request)
    if not isinstance(shown, SellerPage):
        return _go(shown)
    return templates.TemplateResponse(
        request,
        "connect_session.html",
        {
            "me": None,
            "organization": shown.organization,
            "end_user_label": shown.session.end_user_label,
            "reconnect": shown.reconnect,
            "session_id": shown.session.id,
            "csrf_token": shown.csrf_token,
            "expires_at": shown.session.expires_at.strftime("%Y-%m-%d %H:%M"),
        },
        headers=HEADERS,
    )


@router.post("/connect/{session_id}")
async def seller_start(
    request: Request,
    session_id: SessionId,
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    target = await runtime_of(request).connect_sessions.start(session_id, csrf_token)
    return _unknown(request) if target is None else _go(target)
