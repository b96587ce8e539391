"""Errors as pages a person can act on: the app's frame, plain words and the next step.

The API's exception handlers (web/api/errors.py) call :func:`render` for a browser that asked for
HTML outside ``/api/``; programs keep the JSON body. The status, code and headers are the same
either way; no stack trace or driver text reaches either (the handlers already strip them).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from ebay_connector.errors import ConnectorError
from ebay_connector.web.api.auth import SESSION_COOKIE
from ebay_connector.web.api.errors import ErrorAnswer
from ebay_connector.web.ui.pages import Me, me_of, page


@dataclass(frozen=True)
class Step:
    href: str
    text: str


@dataclass(frozen=True)
class Explained:
    title: str
    what: str  # what happened, in plain words
    steps: tuple[Step, ...]


ACCOUNTS = Step("/", "Back to accounts")
SIGN_IN = Step("/login", "Sign in again")

# By code first (the most precise), then by status.
_BY_CODE: dict[str, Explained] = {
    "unauthorized": Explained(
        "Your session has ended",
        "You were signed out (the session expired, or you signed out elsewhere), so nothing "
        "was done. Sign in again, then repeat what you were doing.",
        (SIGN_IN,),
    ),
    "csrf_failed": Explained(
        "This form could not be accepted",
        "The form was out of date or was sent from another site, so nothing was done. "
        "Go back, reload the page and try again.",
        (ACCOUNTS,),
    ),
    "validation_error": Explained(
        "Some of what was sent cannot be used",
        "Nothing was changed. Go back, correct the value and send the form again.",
        (ACCOUNTS,),
    ),
    "method_not_allowed": Explained(
        "This address cannot be used that way",
        "This address is for the buttons of the app's pages, not for opening directly.",
        (ACCOUNTS,),
    ),
}
_BY_STATUS: dict[int, Explained] = {
    403: Explained(
        "You may not do this",
        "Your role does not allow it, so nothing was done. An admin of your organization can.",
        (ACCOUNTS,),
    ),
    404: Explained(
        "Page not found",
        "There is nothing at this address, or it belongs to another organization.",
        (ACCOUNTS,),
    ),
    409: Explained(
        "This cannot be done now",
        "Nothing was changed: the account's state does not allow it.",
        (ACCOUNTS,),
    ),
    429: Explained(
        "Too many requests",
        "Nothing was done. Wait a moment and try again.",
        (ACCOUNTS,),
    ),
}
# Where the server's own message adds nothing to the plain words: Starlette's "Not Found", and
# the codes explained above (a validation error keeps its message: it names the field).
_SAID = frozenset({"not_found", "http_error", *_BY_CODE}) - {"validation_error"}
_FALLBACK_4XX = Explained(
    "This request cannot be done", "Nothing was changed. Go back and try again.", (ACCOUNTS,)
)
_FALLBACK_5XX = Explained(
    "Something went wrong on our side",
    "The request did not complete. Try again in a moment; if it keeps failing, give the "
    "operator the error id below.",
    (ACCOUNTS,),
)


def explain(error: ErrorAnswer) -> Explained:
    """What a person reads for an error: a title, what happened, where to go next."""
    if error.code in _BY_CODE:
        return _BY_CODE[error.code]
    if error.status in _BY_STATUS:
        return _BY_STATUS[error.status]
    return _FALLBACK_5XX if error.status >= 500 else _FALLBACK_4XX


async def _me(request: Request, error: ErrorAnswer) -> Me | None:
    if error.code == "unauthorized" or error.status >= 500:
        return None  # no session, or the database that would name the person may be down
    try:
        return await me_of(request, request.cookies.get(SESSION_COOKIE))
    except ConnectorError:
        return None


async def render(request: Request, error: ErrorAnswer) -> Response:
    explained = explain(error)
    retry_after = (error.headers or {}).get("Retry-After")
    response = page(
        request,
        "error.html",
        await _me(request, error),
        explained=explained,
        error=error,
        # Our own messages are plain and masked; an unexpected one only says "internal error".
        detail=error.message if error.status < 500 and error.code not in _SAID else None,
        error_id=error.extra.get("error_id"),
        retry_after=retry_after,
        # A page that failed on the way may work when asked again; a form is sent again by hand.
        again=str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
        if request.method in {"GET", "HEAD"} and (error.status == 429 or error.status >= 500)
        else None,
    )
    response.status_code = error.status
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response
