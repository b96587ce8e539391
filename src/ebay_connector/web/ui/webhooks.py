"""The webhooks page: endpoints, test events and the delivery log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ebay_connector.db.store import MAX_ID
from ebay_connector.errors import ConnectorError, UsageError, WebhookNotFound
from ebay_connector.runtime import Runtime
from ebay_connector.web import views
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import SESSION_COOKIE, Admin
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import Cookie, Me, back, me_of, page

router = APIRouter(include_in_schema=False)


DELIVERY_KINDS = {"delivered": "ok", "pending": "warn", "failed": "bad"}

# The new endpoint's secret crosses the redirect after "Add" in a cookie that only GET /webhooks
# receives, for two minutes, once: sealed by the key ring (encrypted, bound to the session that
# added it), inside a timed signature. Never in a URL; a reload of the page shows it no more.
SECRET_COOKIE = "ebc_new_webhook"
SECRET_MAX_AGE = timedelta(minutes=2)


def _signer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        runtime.keys.ring.derive_secret("webhook-once"), salt="ebay-connector new webhook"
    )


def _secret_context(endpoint_id: int, session_id: str) -> str:
    return f"webhook-once/{endpoint_id}/{session_id}"


def _hand_over(request: Request, response: Response, endpoint_id: int, secret: str) -> None:
    runtime = runtime_of(request)
    session_id = _session_id(request)
    sealed = runtime.keys.ring.seal(secret, context=_secret_context(endpoint_id, session_id))
    response.set_cookie(
        SECRET_COOKIE,
        str(_signer(runtime).dumps({"e": endpoint_id, "s": sealed})),
        max_age=int(SECRET_MAX_AGE.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.app.state.sessions.secure,
        path="/webhooks",
    )


def _session_id(request: Request) -> str:
    data = request.app.state.sessions.read(request.cookies.get(SESSION_COOKIE))
    return str((data or {}).get("sid", ""))


def _handed_over(request: Request) -> tuple[int, str] | None:
    """The endpoint id and secret the cookie carries, if it is this session's and fresh."""
    value = request.cookies.get(SECRET_COOKIE)
    if not value:
        return None
    runtime = runtime_of(request)
    try:
        data = _signer(runtime).loads(value, max_age=int(SECRET_MAX_AGE.total_seconds()))
        endpoint_id = int(data["e"])
        context = _secret_context(endpoint_id, _session_id(request))
        return endpoint_id, runtime.keys.ring.open(str(data["s"]), context=context)
    except (BadSignature, ConnectorError, KeyError, TypeError, ValueError):
        return None  # stale, forged or another session's: nothing to show


async def _webhooks_page(
    request: Request,
    me: Me,
    *,
    created: dict[str, str] | None = None,
    error: str | None = None,
    typed: dict[str, str] | None = None,
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock()
    endpoints = [
        {**e.__dict__, "created": views.relative(e.created_at, now)}
        for e in await runtime.webhooks.endpoints(me.organization_id)
    ]
    deliveries = [
        {
            **d.__dict__,
            "created": views.relative(d.created_at, now),
            "next": views.relative(d.next_attempt_at, now) if d.status == "pending" else "-",
            "kind": DELIVERY_KINDS.get(d.status, "idle"),
        }
        for d in await runtime.outbox.deliveries(me.organization_id, limit=100)
    ]
    response = page(
        request,
        "webhooks.html",
        me,
        endpoints=endpoints,
        deliveries=deliveries,
        created=created,
        error=error,
        typed=typed or {},
    )
    response.headers["Cache-Control"] = "no-store"  # a new endpoint's secret is on this page once
    return response


@router.get("/webhooks")
async def webhooks_page(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    created = None
    handed = _handed_over(request)
    if handed is not None:
        endpoint_id, secret = handed
        try:
            endpoint = await runtime_of(request).webhooks.owned(me.organization_id, endpoint_id)
        except WebhookNotFound:
            pass  # removed meanwhile: its secret is of no use
        else:
            created = {"id": str(endpoint.id), "url": endpoint.url, "secret": secret}
    response = await _webhooks_page(request, me, created=created)
    if request.cookies.get(SECRET_COOKIE):
        response.delete_cookie(
            SECRET_COOKIE,
            path="/webhooks",
            httponly=True,
            samesite="strict",
            secure=request.app.state.sessions.secure,
        )
    return response


@router.post("/ui/webhooks")
async def webhook_add(
    request: Request,
    principal: Admin,
    cookie: Cookie,
    url: Annotated[str, Form(max_length=2048)],
    description: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    me = await me_of(request, cookie)
    assert me is not None  # Admin above signed the caller in
    try:
        row, secret = await runtime_of(request).webhooks.create(
            principal.organization_id, url, description
        )
    except UsageError as exc:  # the URL, a duplicate or the description; never a database error
        typed = {"url": url, "description": description}
        response = await _webhooks_page(request, me, error=exc.message, typed=typed)
        response.status_code = 409 if exc.code == "webhook_exists" else 422
        return response
    # Post/redirect/get: a reload of the page that follows cannot add the endpoint again.
    response = RedirectResponse("/webhooks", status_code=303)
    _hand_over(request, response, row.id, secret)
    return response


WebhookId = Annotated[int, PathParam(ge=1, le=MAX_ID), schemas.DIGITS]


@router.post("/ui/webhooks/{endpoint_id}/test")
async def webhook_test(request: Request, endpoint_id: WebhookId, principal: Admin) -> Response:
    runtime = runtime_of(request)
    endpoint = await runtime.webhooks.owned(principal.organization_id, endpoint_id)
    row = await runtime.webhooks.send_test(endpoint, principal.actor)
    if row is None:
        return back(request, "/webhooks", "the test event could not be written")
    answer = f"HTTP {row.last_status_code}" if row.last_status_code else (row.last_error or "")
    return back(request, "/webhooks", f"test event to #{endpoint_id}: {row.status} ({answer})")


@router.post("/ui/webhooks/{endpoint_id}/delete")
async def webhook_delete(request: Request, endpoint_id: WebhookId, principal: Admin) -> Response:
    runtime = runtime_of(request)
    endpoint = await runtime.webhooks.owned(principal.organization_id, endpoint_id)
    await runtime.webhooks.remove(principal.organization_id, endpoint.id)
    return back(request, "/webhooks", f"webhook #{endpoint_id} removed")
