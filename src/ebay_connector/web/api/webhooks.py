"""Webhook endpoints of an organization: add (secret shown once), list, remove, delivery log,
send a test event. An admin session (CSRF-checked) or the organization's API key may call them;
another organization's endpoint answers 404 exactly like a missing one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from ebay_connector.db.store import MAX_ID
from ebay_connector.errors import Forbidden, WebhookNotFound
from ebay_connector.service import webhooks
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import (
    SAFE_METHODS,
    Principal,
    bearer,
    program,
    session_cookie,
    signed_in,
)
from ebay_connector.web.api.errors import responses
from ebay_connector.web.api.schemas import Strict
from ebay_connector.web.api.state import RuntimeDep

router = APIRouter(tags=["webhooks"])
MAX_LOG = 200


async def manager(
    request: Request,
    cookie: Annotated[str | None, Depends(session_cookie)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Reading: an API key of the organization or a signed-in user. Changing (add, remove, send
    a test event): an admin only — least privilege: a program's key, even one that may read
    tokens, cannot point the organization's account events at a new URL."""
    if credentials is not None:
        key_holder = await program(request, credentials)
        if request.method not in SAFE_METHODS:
            raise Forbidden("API keys may read webhooks; changing them needs an admin")
        return key_holder
    principal = await signed_in(request, cookie)
    if request.method not in SAFE_METHODS and (
        principal.role is None or not principal.role.manages
    ):
        raise Forbidden("this needs the admin role")
    return principal


Manager = Annotated[Principal, Depends(manager)]
EndpointId = Annotated[
    int, Path(ge=1, le=MAX_ID, description="a webhook endpoint id"), schemas.DIGITS
]


class EndpointIn(Strict):
    # Its characters are checked with the rest of the URL: invalid_webhook_url, as in the CLI.
    url: str = Field(min_length=1, max_length=webhooks.MAX_URL_LENGTH)
    description: Annotated[str, schemas.OneLine] = Field(
        default="", max_length=webhooks.MAX_DESCRIPTION_CHARS
    )


class Endpoint(BaseModel):
    id: int
    url: str
    description: str
    created_at: datetime


class CreatedEndpoint(Endpoint):
    secret: str = Field(description="the signing secret: shown this once, never again")


class EndpointList(BaseModel):
    webhooks: list[Endpoint]


class Delivery(BaseModel):
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    account_id: int | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: float | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


@router.get("/api/admin/webhooks", response_model=EndpointList, responses=responses(401))
async def list_webhooks(principal: Manager, runtime: RuntimeDep) -> Any:
    """The organization's webhook endpoints (secrets are never shown again)."""
    rows = await runtime.webhooks.endpoints(principal.organization_id)
    return {"webhooks": [r.__dict__ for r in rows]}


@router.post(
    "/api/admin/webhooks",
    status_code=201,
    response_model=CreatedEndpoint,
    responses=responses(401, 403, 409, 422),
)
async def add_webhook(body: EndpointIn, principal: Manager, runtime: RuntimeDep) -> Any:
    """Add an endpoint; the answer holds its signing secret, shown this once. 409
    `webhook_exists` when the organization already has an endpoint at that URL."""
    row, secret = await runtime.webhooks.create(
        principal.organization_id, body.url, body.description
    )
    return {**row.__dict__, "secret": secret}


@router.delete(
    "/api/admin/webhooks/{endpoint_id}", status_code=204, responses=responses(401, 403, 404, 422)
)
async def remove_webhook(
    endpoint_id: EndpointId, principal: Manager, runtime: RuntimeDep
) -> Response:
    """Remove an endpoint with its delivery log; pending deliveries to it are dropped."""
    await runtime.webhooks.owned(principal.organization_id, endpoint_id)
    await runtime.webhooks.remove(principal.organization_id, endpoint_id)
    return Response(status_code=204)


@router.get(
    "/api/admin/webhooks/{endpoint_id}/deliveries",
    response_model=DeliveryList,
    responses=responses(401, 404, 422),
)
async def deliveries(
    endpoint_id: EndpointId,
    principal: Manager,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG)] = 50,
) -> Any:
    """The delivery log of one endpoint, newest first."""
    rows = await runtime.webhooks.deliveries(principal.organization_id, endpoint_id, limit)
    return {"deliveries": [r.__dict__ for r in rows]}


@router.post(
    "/api/admin/webhooks/{endpoint_id}/test",
    response_model=Delivery,
    responses=responses(401, 403, 404, 422),
)
async def test_webhook(endpoint_id: EndpointId, principal: Manager, runtime: RuntimeDep) -> Any:
    """Send a `webhook.test` event now; the answer is its delivery (status code, timing)."""
    endpoint = await runtime.webhooks.owned(principal.organization_id, endpoint_id)
    row = await runtime.webhooks.send_test(endpoint, principal.actor)
    if row is None:  # removed between the lookup and the send
        raise WebhookNotFound(f"no webhook {endpoint_id}")
    return row.__dict__
