"""The eBay API proxy's routes (``--proxy`` keys): call eBay as seller X without its token.

``/api/v1/accounts/{id}/proxy/{path}`` forwards to eBay's host for the configured environment
(see ``service/proxy.py``); eBay's status, allowed headers and body come back unchanged. Errors of
the proxy itself (no such account, needs reconnect, eBay unreachable) use the API's error shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse

from ebay_connector.db.store import MAX_ID
from ebay_connector.errors import AccountNotFound
from ebay_connector.web import views
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import ProxyCaller
from ebay_connector.web.api.errors import responses
from ebay_connector.web.api.state import RuntimeDep

router = APIRouter()
AccountId = Annotated[int, Path(ge=1, le=MAX_ID, description="an account id"), schemas.DIGITS]
# The proxy streams its bodies under its own cap, so the API's small body limit is not for it.
PROXY_PATH = re.compile(r"/api/v1/accounts/[^/]+/proxy/.*")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def proxy(
    account_id: AccountId, path: str, request: Request, principal: ProxyCaller, runtime: RuntimeDep
) -> Response:
    """Call eBay's API ``path`` as this account's seller. Query and body pass through, headers
    by an allow-list; your `Authorization` never reaches eBay. A 401 errorId 1001 from eBay gets
    one forced refresh and one retry; 409 `needs_reconnect` when only the seller can fix it."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    raw_path = bytes(raw).decode("latin-1").partition("/proxy/")[2]
    headers = request.headers
    has_body = request.method in _WITH_BODY and (
        headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    )
    answer = await runtime.proxy.call(
        account_id,
        organization_id=principal.organization_id,
        actor=principal.actor,
        method=request.method,
        raw_path=raw_path,
        raw_query=request.scope.get("query_string", b"").decode("latin-1"),
        headers=list(headers.items()),
        body=request.stream().__aiter__() if has_body else None,
    )
    if answer.body is None:
        return Response(answer.content, status_code=answer.status, headers=dict(answer.headers))
    return StreamingResponse(answer.body, status_code=answer.status, headers=dict(answer.headers))


for _method in METHODS:  # one operation per method: OpenAPI operation ids must be unique
    router.add_api_route(
        "/api/v1/accounts/{account_id}/proxy/{path:path}",
        proxy,
        methods=[_method],
        operation_id=f"proxy_{_method.lower()}",
        responses={
            200: {"description": "eBay's answer, as eBay sent it"},
            **responses(401, 403, 404, 409, 413, 422, 502, 503, 504),
        },
        tags=["programs"],
    )


@router.get(
    "/api/v1/accounts/{account_id}/proxy-calls",
    response_model=schemas.ProxyCalls,
    responses=responses(401, 403, 404, 422),
    tags=["programs"],
)
async def proxy_calls(account_id: AccountId, principal: ProxyCaller, runtime: RuntimeDep) -> Any:
    """This process's proxied calls of the account today (UTC) and the last error eBay gave."""
    account = await runtime.store.account_token(account_id)
    if account is None or account.organization_id != principal.organization_id:
        raise AccountNotFound(f"no account {account_id}")
    day = runtime.metrics.proxy_day(account_id, runtime.clock())
    last = day.last_error
    return {
        "account_id": account_id,
        "day": day.day.isoformat(),
        "calls": day.calls,
        "last_error": None
        if last is None
        else {"status": last.status, "api": last.api, "at": views.iso(last.at)},
    }
