"""``GET /metrics`` (Prometheus text format) and the timing of the token API.

The scrape reads the database gauges first (a few aggregate queries), then renders them with this
process's counters; see ``ebay_connector.service.metrics`` and docs/metrics.md.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ebay_connector.errors import Unauthorized
from ebay_connector.runtime import Runtime
from ebay_connector.service import metrics
from ebay_connector.web.api.state import runtime_of

# The token API's one route, by path: labels carry the status only, never the account id.
TOKEN_API_PATH = re.compile(r"/api/v1/accounts/[^/]+/access-token")

router = APIRouter()
_bearer = HTTPBearer(auto_error=False, scheme_name="metrics_token")


def _authorized(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Open unless ``metrics_token`` is set; then the bearer token must match it."""
    expected = runtime_of(request).settings.metrics_token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized(
            "GET /metrics needs Authorization: Bearer <EBAY_CONNECTOR_METRICS_TOKEN>"
        )


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(_authorized)])
async def scrape(request: Request) -> Response:
    runtime = runtime_of(request)
    snapshot = await metrics.read_database(
        store=runtime.store,
        journal=runtime.journal,
        heartbeats=runtime.heartbeats,
        quota=runtime.settings.quota,
        now=runtime.clock(),
    )
    return Response(runtime.metrics.render(snapshot), media_type=metrics.CONTENT_TYPE)


class TokenApiTimer:
    """Counts and times every token API request by status (plain ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, observe: metrics.Metrics) -> None:
        self.app = app
        self.metrics = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not TOKEN_API_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started is what the client sees as 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe_token_request(status, time.perf_counter() - started)


def install(app: FastAPI, runtime: Runtime) -> None:
    """Add ``/metrics`` and the token API timing to ``app``."""
    app.add_middleware(TokenApiTimer, observe=runtime.metrics)
    app.include_router(router)
