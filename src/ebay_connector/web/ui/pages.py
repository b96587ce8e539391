"""What every page of the admin UI shares: the signed-in person, the page frame, the one-time
notice after an action, and the account an organization may act on.

Everything shown comes from masked records; state-changing buttons are forms carrying the
session's CSRF token; a viewer sees the same pages without the buttons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from ebay_connector.db.store import MAX_ID, AccountToken
from ebay_connector.errors import AccountNotFound
from ebay_connector.runtime import Runtime
from ebay_connector.web import views
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import NOTICE_COOKIE, current_session, session_cookie
from ebay_connector.web.api.state import runtime_of

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
static = StaticFiles(directory=HERE / "static")
REFRESH_WARNING = timedelta(days=30)

Cookie = Annotated[str | None, Depends(session_cookie)]
AccountId = Annotated[int, PathParam(ge=1, le=MAX_ID), schemas.DIGITS]


@dataclass(frozen=True)
class Me:
    user_id: int
    email: str
    role: str
    admin: bool
    operator: bool
    csrf: str
    organization: str
    organization_id: int


async def me_of(request: Request, cookie: str | None) -> Me | None:
    """The signed-in person, or None (the page then sends them to sign in)."""
    session = await current_session(request, cookie)
    if session is None:
        return None
    user = session.user
    organization = await runtime_of(request).store.organization_name(user.organization_id)
    return Me(
        user.id,
        user.email,
        user.role.value,
        user.role.manages,
        user.role.sees_instance,
        session.csrf,
        organization or "?",
        user.organization_id,
    )


def page(request: Request, name: str, me: Me | None, **context: Any) -> HTMLResponse:
    # The banner shows only what this server said, once: a signed cookie, never the URL's text.
    sessions = request.app.state.sessions
    notice = sessions.read_notice(request.cookies.get(NOTICE_COOKIE))
    response = templates.TemplateResponse(
        request, name, {"me": me, "notice": notice, "page": name.removesuffix(".html"), **context}
    )
    if notice is not None:
        sessions.clear_notice(response)
    return response


def back(request: Request, path: str, notice: str) -> RedirectResponse:
    """Post/redirect/get: back to ``path`` with a one-time notice."""
    response = RedirectResponse(path, status_code=303)
    request.app.state.sessions.notice(response, notice)
    return response


def badge(account: AccountToken, now: datetime, refresh_ahead: timedelta) -> tuple[str, str]:
    """The terminal's badge, with the reason in plain words for people."""
    text, kind = views.badge(account, now, refresh_ahead)
    if account.state_reason and text == "needs reconnect":
        reason = account.state_reason
        text = f"{text} — {views.PLAIN_REASONS.get(reason, reason)}"
    return text, kind


async def owned(runtime: Runtime, organization_id: int, account_id: int) -> AccountToken:
    """The account, if it is this organization's; another's is as unknown as a missing one."""
    account = await runtime.store.account_token(account_id)
    if account is None or account.organization_id != organization_id:
        raise AccountNotFound(f"no account {account_id}")
    return account


def account_view(account: AccountToken) -> dict[str, Any]:
    return {
        "id": account.account_id,
        "label": account.label,
        "ebay_username": account.ebay_username,
    }


def time_tag(value: datetime | str | None) -> Markup:
    """A moment as ``<time>``: UTC in the text (said so, for a page without scripts), turned
    into the reader's own time zone by ui.js, with UTC kept on hover."""
    if value is None:
        return Markup("–")
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{0}" title="{1} UTC" data-utc>{1} UTC</time>').format(
        escape(stamp), escape(text)
    )


templates.env.globals["time_tag"] = time_tag
