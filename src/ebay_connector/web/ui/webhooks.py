"""The webhooks page: endpoints, test events and the delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from ebay_connector.db.store import MAX_ID
from ebay_connector.errors import UsageError
from ebay_connector.web import views
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import Admin
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import Cookie, Me, back, me_of, page

router = APIRouter(include_in_schema=False)


DELIVERY_KINDS = {"delivered": "ok", "pending": "warn", "failed": "bad"}


async def _webhooks_page(
    request: Request, me: Me, *, created: dict[str, str] | None = None, error: str | None = None
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
    )
    response.headers["Cache-Control"] = "no-store"  # a new endpoint's secret is on this page once
    return response


@router.get("/webhooks")
async def webhooks_page(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    return await _webhooks_page(request, me)


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
    except UsageError as exc:  # the URL or the description; a database error is not shown
        response = await _webhooks_page(request, me, error=exc.message)
        response.status_code = 422
        return response
    # Rendered, not redirected: the secret must never travel in a URL.
    return await _webhooks_page(request, me, created={"url": row.url, "secret": secret})


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
