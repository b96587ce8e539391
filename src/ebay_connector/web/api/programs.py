"""Programs' routes beside the token API: connect sessions (``--connect`` keys)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import SessionMaker
from ebay_connector.web.api.errors import responses
from ebay_connector.web.api.state import RuntimeDep

router = APIRouter()


@router.post(
    "/api/v1/connect-sessions",
    status_code=201,
    response_model=schemas.ConnectSessionCreated,
    responses=responses(401, 403, 404, 409, 422),
    tags=["programs"],
)
async def create_connect_session(
    body: schemas.ConnectSessionRequest, principal: SessionMaker, runtime: RuntimeDep
) -> Any:
    """A single-use link (default 30 minutes) for a seller to connect their eBay account, or
    reconnect ``account_id``, without a login; afterwards the seller is sent to ``return_url``
    (which must be on the organization's allow-list: 422 `return_url_not_allowed`)."""
    service = runtime.connect_sessions
    session = await service.create(
        organization_id=principal.organization_id,
        actor=principal.actor,
        end_user_id=body.end_user_id,
        end_user_label=body.end_user_label,
        return_url=body.return_url,
        account_id=body.account_id,
    )
    return {"id": session.id, "url": service.url_of(session), "expires_at": session.expires_at}
