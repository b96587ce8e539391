"""The admin web UI, assembled: one module per page, each with its own router."""

from __future__ import annotations

from fastapi import APIRouter

from ebay_connector.web.ui import (
    account,
    accounts,
    api_keys,
    connect_ending,
    exchanges,
    people,
    signin,
    terminal,
    webhooks,
    workers,
)
from ebay_connector.web.ui.pages import static

router = APIRouter(include_in_schema=False)
for part in (
    signin,
    accounts,
    account,
    connect_ending,
    people,
    api_keys,
    exchanges,
    terminal,
    workers,
    webhooks,
):
    router.include_router(part.router)

__all__ = ["router", "static"]
