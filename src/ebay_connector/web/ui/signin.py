"""Signing in and out of the admin UI."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from ebay_connector.errors import Forbidden, TooManyAttempts, Unauthorized
from ebay_connector.web.api.auth import SignedIn, refuse_cross_site, sign_in
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import page

router = APIRouter(include_in_schema=False)


@router.get("/login")
async def login_page(request: Request) -> Response:
    return page(request, "login.html", None)


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    try:
        refuse_cross_site(request)
        user = await sign_in(request, email, password)
    except Forbidden:
        response = page(
            request, "login.html", None, error="Sign in from this site's own page.", email=email
        )
        response.status_code = 403
        return response
    except TooManyAttempts as exc:
        minutes = -(-exc.retry_after_seconds // 60)
        error = f"Too many sign-in attempts. Try again in {minutes} minute(s)."
        response = page(request, "login.html", None, error=error, email=email)
        response.status_code = 429
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
        return response
    except Unauthorized:
        # The e-mail stays typed (a typo in the password costs only the password); the password
        # is never sent back.
        response = page(request, "login.html", None, error="Wrong e-mail or password.", email=email)
        response.status_code = 401
        return response
    signed_in = RedirectResponse("/", status_code=303)
    request.app.state.sessions.issue(signed_in, user)
    return signed_in


@router.post("/ui/logout")
async def logout(request: Request, principal: SignedIn) -> Response:
    assert principal.user_id is not None
    await runtime_of(request).users.end_sessions(principal.user_id)  # copied cookies too
    response = RedirectResponse("/login", status_code=303)
    request.app.state.sessions.clear(response)
    return response
