"""Programs' API keys, managed by an organization's admins: the same calls as the CLI's
``api-keys create/list/revoke``. A new key is shown once, after a post/redirect/get (a reload
never makes a second key), on a page no cache keeps, and never in a URL."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from ebay_connector.db.api_keys import ApiKeyRow
from ebay_connector.errors import UsageError
from ebay_connector.web import views
from ebay_connector.web.api.auth import Admin
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import Cookie, Me, back, me_of, page

router = APIRouter(include_in_schema=False)
CREATED_PATH = "/api-keys/created"
CREATED_COOKIE = "ebc_new_api_key"
KeyId = Annotated[str, PathParam(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]
TYPED_MAX = 1000


def permissions(row: ApiKeyRow) -> str:
    granted = [
        name
        for name, allowed in (
            ("read tokens", row.can_read_tokens),
            ("create connect sessions", row.can_connect),
            ("call eBay through the proxy", row.can_proxy),
        )
        if allowed
    ]
    return "list accounts, " + ", ".join(granted) if granted else "list accounts only"


def key_view(row: ApiKeyRow, now: datetime) -> dict[str, Any]:
    return {
        "key_id": row.key_id,
        "name": row.name,
        "permissions": permissions(row),
        "created": views.relative(row.created_at, now),
        "last_used": views.relative(row.last_used_at, now) if row.last_used_at else "never",
        "revoked": views.relative(row.revoked_at, now) if row.revoked_at else None,
    }


def forbidden(request: Request, me: Me) -> Response:
    what = "An organization's API keys are managed by its admins."
    response = page(request, "forbidden.html", me, what=what)
    response.status_code = 403
    return response


async def render(
    request: Request,
    me: Me,
    *,
    error: str | None = None,
    typed: dict[str, Any] | None = None,
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock()
    keys = [key_view(r, now) for r in await runtime.api_keys.list(me.organization_id)]
    response = page(
        request,
        "api_keys.html",
        me,
        keys=keys,
        error=error,
        typed=typed or {"name": "", "tokens": False, "connect": False, "proxy": False},
    )
    if error is not None:
        response.status_code = 422
    return response


@router.get("/api-keys")
async def api_keys_page(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    if not me.admin:
        return forbidden(request, me)
    return await render(request, me)


Flag = Annotated[bool, Form()]


@router.post("/ui/api-keys")
async def create(
    request: Request,
    principal: Admin,
    cookie: Cookie,
    name: Annotated[str, Form(max_length=TYPED_MAX)] = "",
    tokens: Flag = False,
    connect: Flag = False,
    proxy: Flag = False,
) -> Response:
    runtime = runtime_of(request)
    try:
        _, full = await runtime.api_keys.create(
            principal.organization_id,
            name,
            can_read_tokens=tokens,
            can_connect=connect,
            can_proxy=proxy,
        )
    except UsageError as exc:
        me = await me_of(request, cookie)
        assert me is not None
        typed = {"name": name, "tokens": tokens, "connect": connect, "proxy": proxy}
        return await render(request, me, error=exc.message, typed=typed)
    shown = RedirectResponse(CREATED_PATH, status_code=303)
    request.app.state.sessions.shown_once(shown, CREATED_COOKIE, CREATED_PATH, full)
    return shown


@router.get(CREATED_PATH)
async def created(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    if not me.admin:
        return forbidden(request, me)
    sessions = request.app.state.sessions
    full = sessions.read_shown_once(request.cookies.get(CREATED_COOKIE))
    row = None
    if full is not None:
        key_id = full.removeprefix("ebc_").partition("_")[0]
        rows = await runtime_of(request).api_keys.list(me.organization_id)
        row = next((r for r in rows if r.key_id == key_id), None)
    now = runtime_of(request).clock()
    response = page(
        request,
        "api_key_created.html",
        me,
        key=key_view(row, now) if row else None,
        full=full if row else None,
    )
    response.delete_cookie(
        CREATED_COOKIE, path=CREATED_PATH, httponly=True, samesite="strict", secure=sessions.secure
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/ui/api-keys/{key_id}/revoke")
async def revoke(request: Request, key_id: KeyId, principal: Admin) -> Response:
    if not await runtime_of(request).api_keys.revoke(principal.organization_id, key_id):
        return back(request, "/api-keys", f"No active key {key_id}: nothing was revoked.")
    return back(request, "/api-keys", f"Key {key_id} revoked: programs using it get 401 now.")
