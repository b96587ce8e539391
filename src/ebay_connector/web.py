"""The HTTP server: built by a factory from a runtime, never at import time."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from ebay_connector import __version__
from ebay_connector.errors import ConnectorError
from ebay_connector.runtime import Runtime
from ebay_connector.version import code_version

EMULATOR_MOUNT = "/emulator"


def create_app(runtime: Runtime, *, emulator_app: ASGIApp | None = None) -> FastAPI:
    app = FastAPI(title="ebay-connector", version=__version__)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok", "version": code_version()}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready to serve: database reachable, key ring loaded, eBay configuration complete."""
        checks: dict[str, str] = {"keyring": f"ok ({len(runtime.keys.ring.key_ids)} keys)"}
        ready = True
        try:
            await runtime.db.ping()
            checks["database"] = "ok"
        except ConnectorError as exc:
            checks["database"] = exc.code
            ready = False
        checks["ebay"] = f"ok ({runtime.environment})"
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    if emulator_app is not None:
        app.mount(EMULATOR_MOUNT, emulator_app)
    return app
