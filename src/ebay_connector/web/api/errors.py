"""One error shape for every 4xx/5xx, and the one place codes map to HTTP statuses.

    {"error": {"code": "<stable code>", "message": "<one readable line>", ...}}

No stack trace and no secret ever reaches an answer: unexpected exceptions become a bare
``internal_error`` (and are logged with the request's path).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ebay_connector import log
from ebay_connector.errors import (
    AccessError,
    ConnectFailed,
    ConnectorError,
    Forbidden,
    InvalidState,
    NeedsReconnect,
    NotFound,
    QuotaExhausted,
    RateLimited,
    RefreshFailed,
    StoreError,
    TooManyAttempts,
    Unauthorized,
    UsageError,
)

logger = logging.getLogger(__name__)

# By class, most specific first; anything else is a 500 `internal_error`.
_STATUS_BY_CLASS: tuple[tuple[type[ConnectorError], int], ...] = (
    (TooManyAttempts, 429),
    (RateLimited, 429),
    (Unauthorized, 401),
    (Forbidden, 403),
    (InvalidState, 400),
    (AccessError, 403),
    (NotFound, 404),
    (NeedsReconnect, 409),
    (RefreshFailed, 503),
    (ConnectFailed, 502),
    (StoreError, 503),
    (UsageError, 400),
)
_STATUS_BY_CODE = {"decrypt_failed": 409, "invalid_stored_token": 409}
_STATUS_BY_CODE["invalid_webhook_url"] = 422  # webhooks and notices
_STATUS_BY_CODE["webhook_exists"] = 409
# -- programs: connect sessions and the eBay API proxy
_STATUS_BY_CODE.update(
    {
        "return_url_not_allowed": 422,
        "end_user_mismatch": 409,
        "wrong_ebay_user": 409,
        "invalid_proxy_path": 422,
        "ebay_unreachable": 502,
        "ebay_timeout": 504,
        "too_large": 413,
    }
)
_STATUS_BY_CODE["destination_refused"] = 422
_STATUS_BY_CODE["invalid_label"] = 422
_STATUS_BY_CODE["member_change_refused"] = 409
# -- application token and account deletions: 412 is what eBay's SDKs answer to a
# notification whose signature fails; 503 asks eBay to deliver again later.
_STATUS_BY_CODE.update(
    {
        "signature_invalid": 412,
        "invalid_notification": 400,
        "public_key_unavailable": 503,
        "app_token_unavailable": 503,
        "deletion_not_configured": 503,
    }
)


def status_for(exc: ConnectorError) -> int:
    if isinstance(exc, ConnectFailed) and exc.code == "invalid_grant":
        return 400  # the code was reused, expired or forged: the caller's request is at fault
    if exc.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[exc.code]
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "reason": {"type": "string"},
                "error_id": {"type": "string"},
            },
        }
    },
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give."""
    return {
        status: {
            "description": "error",
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status in statuses
    }


@dataclass(frozen=True)
class ErrorAnswer:
    """An error as it is answered: the JSON body's fields, its status and headers. A person's
    browser gets the same facts as a page (see ``install``)."""

    status: int
    code: str
    message: str
    headers: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers, **self.extra)


# Renders an error as an HTML page for a person; the UI provides it (web/app.py wires it in),
# since this layer may not import the UI.
ErrorPage = Callable[[Request, ErrorAnswer], Awaitable[Response]]


def wants_page(request: Request) -> bool:
    """A person's browser, not a program: it navigates to HTML, outside the API's paths.
    ``fetch`` asks for ``*/*`` and keeps the JSON it has always had."""
    if request.url.path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get("accept", "")


def _connector_answer(request: Request, exc: ConnectorError) -> ErrorAnswer:
    status = status_for(exc)
    extra: dict[str, Any] = {}
    headers = None
    if isinstance(exc, NeedsReconnect):
        extra["reason"] = exc.reason
    if isinstance(exc, RefreshFailed | StoreError):
        headers = {"Retry-After": "30"}
    if isinstance(exc, TooManyAttempts | QuotaExhausted | RateLimited):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    message = exc.message
    if isinstance(exc, StoreError):
        # The driver's text describes the schema and the data; the log keeps it, the
        # answer gets an id to find it by.
        error_id = secrets.token_hex(6)
        extra["error_id"] = error_id
        message = f"the database could not complete this request (error id {error_id})"
        log.event(
            logger,
            "api.store_error",
            logging.WARNING,
            path=request.url.path,
            code=exc.code,
            error_id=error_id,
            detail=exc.message,
        )
    elif status >= 500:
        log.event(logger, "api.error", logging.WARNING, path=request.url.path, code=exc.code)
    return ErrorAnswer(status, exc.code, message, headers, extra)


def _validation_answer(exc: RequestValidationError) -> ErrorAnswer:
    first = exc.errors()[0] if exc.errors() else {}
    field_name = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "invalid request"))
    return ErrorAnswer(
        422, "validation_error", f"{field_name}: {message}", extra={"field": field_name}
    )


def _http_answer(exc: StarletteHTTPException) -> ErrorAnswer:
    if exc.status_code == 400:
        # FastAPI's own 400: a body that is not parseable (e.g. not UTF-8) is invalid input.
        return ErrorAnswer(422, "validation_error", f"body: {exc.detail}", extra={"field": "body"})
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    code = codes.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return ErrorAnswer(exc.status_code, code, str(exc.detail), headers)


def _unexpected_answer(request: Request) -> ErrorAnswer:
    error_id = secrets.token_hex(6)
    logger.exception("api.unexpected path=%s error_id=%s", request.url.path, error_id)
    return ErrorAnswer(
        500, "internal_error", f"internal error (error id {error_id})", extra={"error_id": error_id}
    )


def install(app: FastAPI, page: ErrorPage | None = None) -> None:
    """The exception handlers: JSON for programs; with ``page``, an HTML page for a person's
    browser (:func:`wants_page`), with the same status, code and headers."""

    async def answer(request: Request, error: ErrorAnswer) -> Response:
        if page is not None and wants_page(request):
            return await page(request, error)
        return error.json()

    @app.exception_handler(ConnectorError)
    async def connector_error(request: Request, exc: ConnectorError) -> Response:
        return await answer(request, _connector_answer(request, exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return await answer(request, _validation_answer(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return await answer(request, _http_answer(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return await answer(request, _unexpected_answer(request))
