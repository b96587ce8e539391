"""The application factory: a FastAPI app from a runtime, never built at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import swagger_ui  # type: ignore[import-untyped]
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from ebay_connector import __version__
from ebay_connector.core import destination
from ebay_connector.core.outcome import AppCredentials
from ebay_connector.errors import ConnectorError
from ebay_connector.runtime import Runtime
from ebay_connector.service.refresh import APP_CREDENTIALS_REJECTED
from ebay_connector.settings import Settings
from ebay_connector.version import code_version
from ebay_connector.web.api import errors
from ebay_connector.web.api import metrics as metrics_api
from ebay_connector.web.api import notifications as notifications_api
from ebay_connector.web.api import programs as programs_api
from ebay_connector.web.api import proxy as proxy_api
from ebay_connector.web.api import webhooks as webhooks_api
from ebay_connector.web.api.auth import Sessions
from ebay_connector.web.api.guard import Guard, security_headers
from ebay_connector.web.api.routes import router
from ebay_connector.web.api.schemas import Health, Readiness
from ebay_connector.web.ui import error_pages
from ebay_connector.web.ui import routes as ui
from ebay_connector.web.ui import seller as seller_ui

EMULATOR_MOUNT = "/emulator"
SWAGGER_UI_FILES = Path(swagger_ui.__file__).parent / "static"  # Swagger UI 5, OpenAPI 3.1
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ebay-connector API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/ui/static/docs.js"></script></body></html>
"""
MAX_BODY_BYTES = 64 * 1024  # no request of this API needs more


async def _app_credentials_accepted(runtime: Runtime, *, database_up: bool) -> bool:
    """eBay's newest word on the application credentials: this process's refreshes, or a live
    worker's heartbeat (the worker may run elsewhere). An ``invalid_client`` counts until a
    refresh succeeds again; no word at all is not a failure."""
    verdicts = [runtime.refresher.app_credentials] if runtime.refresher.app_credentials else []
    now = runtime.clock()
    beats = []
    if database_up:  # never wait on a database the database check already found down
        try:
            beats = await runtime.heartbeats.all()
        except ConnectorError:
            beats = []  # gone since the ping: the next probe's database check says so
    for beat in beats:
        if beat.stale(now) or beat.app_credentials is None:
            continue
        verdicts.append((beat.updated_at, beat.app_credentials is AppCredentials.ACCEPTED))
    return not verdicts or max(verdicts)[1]  # on a tie, the success wins


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def secure_cookies(settings: Settings) -> bool:
    """``Secure`` cookies unless the product is reached over plain HTTP on loopback only."""
    public_host = urlsplit(settings.public_url).hostname or ""
    local = destination.is_loopback_host(public_host) and destination.is_loopback_host(
        settings.host
    )
    return settings.public_url.startswith("https://") or not local


def create_app(runtime: Runtime, *, emulator_app: ASGIApp | None = None) -> FastAPI:
    app = FastAPI(
        title="ebay-connector",
        version=__version__,
        description="Connects eBay seller accounts over OAuth and keeps their tokens alive.",
        docs_url=None,  # served below from the package's own files, not a CDN
        redoc_url=None,
    )
    ring = runtime.keys.ring
    settings = runtime.settings
    app.state.runtime = runtime
    app.state.sessions = Sessions(ring.derive_secret("session"), secure=secure_cookies(settings))
    errors.install(app, error_pages.render)  # JSON for programs, pages for people
    consent = _origin(settings.endpoints.authorize_url)
    app.add_middleware(
        Guard,
        max_body_bytes=MAX_BODY_BYTES,
        headers=security_headers((consent,) if consent != _origin(settings.public_url) else ()),
        relaxed_prefixes=(EMULATOR_MOUNT + "/",),
        streamed=proxy_api.PROXY_PATH,
    )

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Any:
        """The process is up."""
        return {"status": "ok", "version": code_version()}

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready"}},
        tags=["health"],
    )
    async def readyz() -> Any:
        """Ready to serve: database reachable, key ring loaded, eBay configuration complete."""
        checks: dict[str, str] = {"keyring": f"ok ({len(ring.key_ids)} keys)"}
        ready = True
        try:
            await runtime.db.ping()
            checks["database"] = "ok"
        except ConnectorError as exc:
            checks["database"] = exc.code
            ready = False
        checks["ebay"] = f"ok ({runtime.environment})"
        if not await _app_credentials_accepted(runtime, database_up=ready):
            checks["ebay"] = f"invalid_client: {APP_CREDENTIALS_REJECTED}"
            ready = False
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE)

    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_FILES))
    app.include_router(router)
    app.include_router(webhooks_api.router)
    app.include_router(notifications_api.router)
    app.include_router(programs_api.router)
    app.include_router(proxy_api.router)
    metrics_api.install(app, runtime)  # GET /metrics + token API timing
    app.include_router(ui.router)
    app.include_router(seller_ui.router)
    app.mount("/ui/static", ui.static, name="static")
    if emulator_app is not None:
        app.mount(EMULATOR_MOUNT, emulator_app)
    return app
