"""The runtime an app was built with, for handlers (see :func:`create_app`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ebay_connector.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _runtime(request: Request) -> Runtime:
    # async: FastAPI would run a plain `def` dependency in a thread pool, a hop per request.
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
