"""The admin web UI: server-rendered pages over the same core as the API.

Everything shown comes from masked records; state-changing buttons are forms carrying the
session's CSRF token; a viewer sees the same pages without the buttons.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ebay_connector.core import quota
from ebay_connector.core.exchange import Action, Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db.journal import ExchangeRow
from ebay_connector.db.store import MAX_ID, AccountToken
from ebay_connector.errors import (
    AccountNotFound,
    Forbidden,
    NeedsReconnect,
    RateLimited,
    TooManyAttempts,
    Unauthorized,
    UsageError,
)
from ebay_connector.runtime import Runtime
from ebay_connector.web import views
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import (
    NOTICE_COOKIE,
    Admin,
    Operator,
    SignedIn,
    current_session,
    refuse_cross_site,
    session_cookie,
    sign_in,
)
from ebay_connector.web.api.state import runtime_of

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=HERE / "static")
REFRESH_WARNING = timedelta(days=30)
TERMINAL_PAGE = 100

SORTS = {
    "label": ("Label", lambda a: a.label.lower()),
    "ebay_username": ("eBay username", lambda a: a.ebay_username.lower()),
    "state": ("State", lambda a: a.state.value),
    "access": ("Access token expires", lambda a: a.access_expires_at or datetime.min),
    "refresh": ("Refresh token expires", lambda a: a.refresh_expires_at or datetime.min),
    "failures": ("Failures in a row", lambda a: -a.failures_in_row),
    "last_attempt": ("Last attempt", lambda a: a.last_attempt_at or datetime.min),
    "last_used": ("Last used", lambda a: a.last_used_at or datetime.min),
}
BADGES = ("active", "expiring soon", "refresh failing", "needs reconnect")


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


def badge(account: AccountToken, now: datetime, refresh_ahead: timedelta) -> tuple[str, str]:
    """The terminal's badge, with the reason in plain words for people."""
    text, kind = views.badge(account, now, refresh_ahead)
    if account.state_reason and text == "needs reconnect":
        reason = account.state_reason
        text = f"{text} — {views.PLAIN_REASONS.get(reason, reason)}"
    return text, kind


async def _me(request: Request, cookie: str | None) -> Me | None:
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


def _page(request: Request, name: str, me: Me | None, **context: Any) -> HTMLResponse:
    # The banner shows only what this server said, once: a signed cookie, never the URL's text.
    sessions = request.app.state.sessions
    notice = sessions.read_notice(request.cookies.get(NOTICE_COOKIE))
    page = templates.TemplateResponse(
        request, name, {"me": me, "notice": notice, "page": name.removesuffix(".html"), **context}
    )
    if notice is not None:
        sessions.clear_notice(page)
    return page


def _back(request: Request, path: str, notice: str) -> RedirectResponse:
    response = RedirectResponse(path, status_code=303)
    request.app.state.sessions.notice(response, notice)
    return response


Cookie = Annotated[str | None, Depends(session_cookie)]
AccountId = Annotated[int, PathParam(ge=1, le=MAX_ID), schemas.DIGITS]


# Sign-in ------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request) -> Response:
    return _page(request, "login.html", None)


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
        page = _page(request, "login.html", None, error="Sign in from this site's own page.")
        page.status_code = 403
        return page
    except TooManyAttempts as exc:
        minutes = -(-exc.retry_after_seconds // 60)
        error = f"Too many sign-in attempts. Try again in {minutes} minute(s)."
        page = _page(request, "login.html", None, error=error)
        page.status_code = 429
        page.headers["Retry-After"] = str(exc.retry_after_seconds)
        return page
    except Unauthorized:
        page = _page(request, "login.html", None, error="Wrong e-mail or password.")
        page.status_code = 401
        return page
    response = RedirectResponse("/", status_code=303)
    request.app.state.sessions.issue(response, user)
    return response


@router.post("/ui/logout")
async def logout(request: Request, principal: SignedIn) -> Response:
    assert principal.user_id is not None
    await runtime_of(request).users.end_sessions(principal.user_id)  # copied cookies too
    response = RedirectResponse("/login", status_code=303)
    request.app.state.sessions.clear(response)
    return response


# Accounts -----------------------------------------------------------------------------------


@router.get("/")
async def accounts_page(
    request: Request, cookie: Cookie, state: str = "", sort: str = ""
) -> Response:
    me = await _me(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    now = runtime.clock()
    rows = await runtime.store.accounts(me.organization_id)
    if sort in SORTS:
        rows.sort(key=SORTS[sort][1])
    shown = []
    for a in rows:
        text, kind = badge(a, now, runtime.settings.refresh_ahead)
        if state and not text.startswith(state):
            continue
        refresh_expires = a.refresh_expires_at
        shown.append(
            {
                "id": a.account_id,
                "label": a.label,
                "ebay_username": a.ebay_username,
                "badge": text,
                "badge_kind": kind,
                "access_in": views.relative(a.access_expires_at, now),
                "refresh_in": views.relative(refresh_expires, now),
                "refresh_warn": refresh_expires is not None
                and refresh_expires - now < REFRESH_WARNING,
                "failures_in_row": a.failures_in_row,
                "last_attempt": views.relative(a.last_attempt_at, now),
                "last_used": views.relative(a.last_used_at, now),
            }
        )
    columns = [(key, label) for key, (label, _) in SORTS.items()]
    return _page(
        request,
        "accounts.html",
        me,
        accounts=shown,
        states=BADGES,
        state=state,
        sort=sort,
        columns=columns,
    )


async def _owned(runtime: Runtime, organization_id: int, account_id: int) -> AccountToken:
    account = await runtime.store.account_token(account_id)
    if account is None or account.organization_id != organization_id:
        raise AccountNotFound(f"no account {account_id}")
    return account


def _refused(
    request: Request, account: AccountToken, exc: NeedsReconnect | RateLimited
) -> Response:
    if isinstance(exc, RateLimited):
        return _back(
            request,
            "/",
            f"{account.label}: {exc.message}; try again in {exc.retry_after_seconds} s",
        )
    return _back(request, "/", exc.message)


Force = Annotated[bool, Form()]


@router.post("/ui/accounts/{account_id}/refresh")
async def refresh(
    request: Request, account_id: AccountId, principal: Admin, force: Force = False
) -> Response:
    runtime = runtime_of(request)
    account = await _owned(runtime, principal.organization_id, account_id)
    try:
        result = await runtime.manual.refresh(
            account, Trigger.ADMIN, actor=principal.actor, force=force
        )
    except (NeedsReconnect, RateLimited) as exc:
        return _refused(request, account, exc)
    return _back(request, "/", f"{account.label}: {result.outcome.value} — {result.meaning}")


@router.post("/ui/accounts/{account_id}/debug")
async def debug(
    request: Request, account_id: AccountId, principal: Admin, cookie: Cookie
) -> Response:
    runtime = runtime_of(request)
    account = await _owned(runtime, principal.organization_id, account_id)
    try:
        result = await runtime.manual.refresh(account, Trigger.DEBUG, actor=principal.actor)
    except (NeedsReconnect, RateLimited) as exc:
        return _refused(request, account, exc)
    exchange = views.exchange_dict(await runtime.refresher.exchange_of(result))
    lines = (
        "\n".join(
            views.exchange_lines(exchange["request"], exchange["response"], exchange["error"])
        )
        if exchange
        else "(another refresh finished meanwhile; see the terminal)"
    )
    view = {
        "outcome": result.outcome.value,
        "meaning": result.meaning,
        "trigger": result.trigger.value,
        "state": result.state.value,
        "state_reason": result.state_reason,
    }
    return _page(
        request,
        "debug.html",
        await _me(request, cookie),
        account=account_view(account),
        result=view,
        exchange=exchange,
        lines=lines,
    )


def account_view(account: AccountToken) -> dict[str, Any]:
    return {
        "id": account.account_id,
        "label": account.label,
        "ebay_username": account.ebay_username,
    }


@router.post("/ui/accounts/{account_id}/disconnect")
async def disconnect(request: Request, account_id: AccountId, principal: Admin) -> Response:
    runtime = runtime_of(request)
    account = await _owned(runtime, principal.organization_id, account_id)
    done = await runtime.connector.disconnect(account, actor=principal.actor)
    revoked = "revoked at eBay" if done.revoked_at_ebay else "not revoked at eBay"
    return _back(request, "/", f"{account.label} disconnected ({revoked})")


# Terminal -----------------------------------------------------------------------------------


def _terminal_filters(account: str, trigger: str, outcome: str) -> dict[str, Any]:
    return {
        "account_id": int(account) if account.isdigit() and len(account) < 10 else None,
        "trigger": trigger if trigger in {t.value for t in Trigger} else None,
        "outcome": outcome if outcome in {o.value for o in Outcome} else None,
    }


def _entry_view(row: ExchangeRow) -> dict[str, Any]:
    lines = "\n".join(views.exchange_lines(row.request, row.response, row.error))
    return {**views.exchange_row_dict(row), "lines": lines}


@router.get("/terminal")
async def terminal_page(
    request: Request, cookie: Cookie, account: str = "", trigger: str = "", outcome: str = ""
) -> Response:
    me = await _me(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    filters = _terminal_filters(account, trigger, outcome)
    rows = await runtime.journal.exchanges(
        organization_id=me.organization_id, limit=TERMINAL_PAGE, **filters
    )
    query = urlencode(
        {k: v for k, v in (("account", account), ("trigger", trigger), ("outcome", outcome)) if v}
    )
    return _page(
        request,
        "terminal.html",
        me,
        entries=[_entry_view(r) for r in rows],
        newest_id=rows[0].id if rows else 0,
        query=query,
        accounts=await runtime.store.accounts(me.organization_id),
        account=filters["account_id"],
        trigger=filters["trigger"],
        outcome=filters["outcome"],
        triggers=[t.value for t in Trigger],
        outcomes=[o.value for o in Outcome],
    )


@router.get("/ui/terminal/entries")
async def terminal_entries(
    request: Request,
    cookie: Cookie,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    account: str = "",
    trigger: str = "",
    outcome: str = "",
) -> Response:
    """New entries (newer than ``after``) as HTML list items, newest first: the live feed."""
    me = await _me(request, cookie)
    if me is None:
        return Response(status_code=401)
    runtime = runtime_of(request)
    rows = await runtime.journal.exchanges(
        organization_id=me.organization_id,
        after_id=after,
        limit=TERMINAL_PAGE,
        **_terminal_filters(account, trigger, outcome),
    )
    html = "".join(templates.get_template("entry.html").render(e=_entry_view(row)) for row in rows)
    return HTMLResponse(html)


# Workers ------------------------------------------------------------------------------------


def activity_svg(points: list[tuple[datetime, str]], now: datetime) -> str:
    """Refreshes per hour over the last 24 h: ok bars up, failures down. Plain SVG, no CDN."""
    ok: Counter[int] = Counter()
    bad: Counter[int] = Counter()
    for when, outcome in points:
        hour = int((now - when).total_seconds() // 3600)
        if 0 <= hour < 24:
            (ok if outcome == "ok" else bad)[23 - hour] += 1
    top = max([1, *ok.values(), *bad.values()])
    width, half, bar = 24 * 20, 60, 14
    parts = [
        f'<svg role="img" aria-label="refreshes per hour" viewBox="0 0 {width} {2 * half + 20}"'
        f' width="100%" class="chart">',
        f'<line x1="0" x2="{width}" y1="{half}" y2="{half}" stroke="#999"/>',
    ]
    for slot in range(24):
        x = slot * 20 + 3
        up = round(ok[slot] / top * (half - 2))
        down = round(bad[slot] / top * (half - 2))
        label = f"{23 - slot} h ago: {ok[slot]} ok, {bad[slot]} failed"
        parts.append(
            f"<g><title>{label}</title>"
            f'<rect x="{x}" y="{half - up}" width="{bar}" height="{up}" fill="#2e7d32"/>'
            f'<rect x="{x}" y="{half}" width="{bar}" height="{down}" fill="#b71c1c"/></g>'
        )
    parts.append(f'<text x="0" y="{2 * half + 15}" font-size="11">24 h ago</text>')
    parts.append(f'<text x="{width - 30}" y="{2 * half + 15}" font-size="11">now</text></svg>')
    return "".join(parts)


@router.get("/workers")
async def workers_page(request: Request, cookie: Cookie) -> Response:
    me = await _me(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    now = runtime.clock()
    # Workers and the shared quota are the deployment's: its operator's to see, not every
    # organization's (host names, pids, the other organizations' spending).
    beats = await runtime.heartbeats.all() if me.operator else []
    versions = sorted({b.version for b in beats})
    cards = []
    for b in beats:
        status = b.status_at(now)
        kind = {"ok": "ok", "degraded": "warn", "starting": "idle"}.get(status, "bad")
        counts = [(k, v) for k, v in b.counts.items() if isinstance(v, int) and v]
        cards.append(
            {
                "instance_id": b.instance_id,
                "host": b.host,
                "pid": b.pid,
                "version": b.version,
                "status": status,
                "kind": kind,
                "started": views.relative(b.started_at, now),
                "last_cycle": views.relative(b.last_cycle_finished_at, now),
                "next_cycle": views.relative(
                    b.updated_at + timedelta(seconds=b.interval_seconds), now
                ),
                "counts": counts,
                "last_error": b.last_error,
            }
        )
    usage = quota.QuotaState(
        await runtime.journal.quota_usage(now - quota.WINDOW), runtime.settings.quota
    )
    table = [
        {"grant": g, "used": usage.used.get(g, 0), "limit": limit, "remaining": usage.remaining(g)}
        for g, limit in usage.config.limits.items()
        if me.operator
    ]
    projection = await runtime.journal.quota_projection(
        now, usage.config.limits.get(Action.REFRESH_TOKEN.value, 0)
    )
    points = await runtime.journal.refresh_outcomes_since(
        me.organization_id, now - timedelta(hours=24)
    )
    expiries = []
    for a in await runtime.store.accounts(me.organization_id):
        if a.access_expires_at is not None and now <= a.access_expires_at <= now + timedelta(
            hours=24
        ):
            expiries.append(f"{a.label}: access token {views.relative(a.access_expires_at, now)}")
        if a.refresh_expires_at is not None and a.refresh_expires_at - now < REFRESH_WARNING:
            expiries.append(
                f"{a.label}: refresh token ends {views.relative(a.refresh_expires_at, now)}"
                " — the seller must reconnect before then"
            )
    return _page(
        request,
        "workers.html",
        me,
        workers=cards,
        versions=versions,
        mixed_versions=len(versions) > 1,
        quota=table,
        proactive_budget=usage.proactive_budget(),
        projection=projection,
        chart=activity_svg(points, now),
        expiries=expiries,
    )


@router.post("/ui/workers/run-once")
async def run_once(request: Request, principal: Operator) -> Response:
    report = await runtime_of(request).worker().run_once()
    c = report.counts
    return _back(
        request,
        "/workers",
        f"cycle {report.status.value}: claimed {c.claimed}, refreshed {c.refreshed}, "
        f"failed {c.failed}",
    )


# Webhooks ----------------------------------------------------------------------------------

DELIVERY_KINDS = {"delivered": "ok", "pending": "warn", "failed": "bad"}


async def _webhooks_page(
    request: Request, me: Me, *, created: dict[str, str] | None = None, error: str | None = None
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock()
    endpoints = [
        {**e.__dict__, "created": views.relative(e.created_at, now)}
        for e in await runtime.webhooks.endpoints(me.organization_id)
    ]
    deliveries = [
        {
            **d.__dict__,
            "created": views.relative(d.created_at, now),
            "next": views.relative(d.next_attempt_at, now) if d.status == "pending" else "-",
            "kind": DELIVERY_KINDS.get(d.status, "idle"),
        }
        for d in await runtime.outbox.deliveries(me.organization_id, limit=100)
    ]
    page = _page(
        request,
        "webhooks.html",
        me,
        endpoints=endpoints,
        deliveries=deliveries,
        created=created,
        error=error,
    )
    page.headers["Cache-Control"] = "no-store"  # a new endpoint's secret is on this page once
    return page


@router.get("/webhooks")
async def webhooks_page(request: Request, cookie: Cookie) -> Response:
    me = await _me(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    return await _webhooks_page(request, me)


@router.post("/ui/webhooks")
async def webhook_add(
    request: Request,
    principal: Admin,
    cookie: Cookie,
    url: Annotated[str, Form(max_length=2048)],
    description: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    me = await _me(request, cookie)
    assert me is not None  # Admin above signed the caller in
    try:
        row, secret = await runtime_of(request).webhooks.create(
            principal.organization_id, url, description
        )
    except UsageError as exc:  # the URL or the description; a database error is not shown
        page = await _webhooks_page(request, me, error=exc.message)
        page.status_code = 422
        return page
    # Rendered, not redirected: the secret must never travel in a URL.
    return await _webhooks_page(request, me, created={"url": row.url, "secret": secret})


WebhookId = Annotated[int, PathParam(ge=1, le=MAX_ID), schemas.DIGITS]


@router.post("/ui/webhooks/{endpoint_id}/test")
async def webhook_test(request: Request, endpoint_id: WebhookId, principal: Admin) -> Response:
    runtime = runtime_of(request)
    endpoint = await runtime.webhooks.owned(principal.organization_id, endpoint_id)
    row = await runtime.webhooks.send_test(endpoint, principal.actor)
    if row is None:
        return _back(request, "/webhooks", "the test event could not be written")
    answer = f"HTTP {row.last_status_code}" if row.last_status_code else (row.last_error or "")
    return _back(request, "/webhooks", f"test event to #{endpoint_id}: {row.status} ({answer})")


@router.post("/ui/webhooks/{endpoint_id}/delete")
async def webhook_delete(request: Request, endpoint_id: WebhookId, principal: Admin) -> Response:
    runtime = runtime_of(request)
    endpoint = await runtime.webhooks.owned(principal.organization_id, endpoint_id)
    await runtime.webhooks.remove(principal.organization_id, endpoint.id)
    return _back(request, "/webhooks", f"webhook #{endpoint_id} removed")
