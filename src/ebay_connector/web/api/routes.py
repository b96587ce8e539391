"""The HTTP routes. Handlers only translate: every rule lives in the core modules.

Organization scoping: every account id is looked up through :func:`_owned`, which answers 404
for an account of another organization exactly as for one that does not exist.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse

from ebay_connector import log
from ebay_connector.core import quota
from ebay_connector.core.exchange import Trigger
from ebay_connector.db.store import MAX_ID, AccountToken
from ebay_connector.errors import (
    AccountNotFound,
    ConnectorError,
    InvalidState,
    Unauthorized,
    WrongEbayUser,
)
from ebay_connector.runtime import Runtime
from ebay_connector.web import views
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import (
    ENDING_PATH,
    Admin,
    Operator,
    Principal,
    Program,
    SignedIn,
    TokenReader,
    current_session,
    refuse_cross_site,
    session_cookie,
    sign_in,
)
from ebay_connector.web.api.errors import responses, status_for
from ebay_connector.web.api.state import RuntimeDep, runtime_of

logger = logging.getLogger(__name__)
router = APIRouter()
MAX_PAGE = 200


AccountId = Annotated[int, Path(ge=1, le=MAX_ID, description="an account id"), schemas.DIGITS]


async def _owned(runtime: Runtime, principal: Principal, account_id: int) -> AccountToken:
    account = await runtime.store.account_token(account_id)
    if account is None or account.organization_id != principal.organization_id:
        raise AccountNotFound(f"no account {account_id}")
    return account


def _account(runtime: Runtime, account: AccountToken) -> views.AccountDoc:
    return views.account_dict(account, runtime.clock(), runtime.settings.refresh_ahead)


async def _accounts(
    runtime: Runtime, principal: Principal, end_user_id: str | None = None
) -> dict[str, Any]:
    rows = await runtime.store.accounts(principal.organization_id, end_user_id=end_user_id)
    return {"accounts": [_account(runtime, a) for a in rows]}


# Session ------------------------------------------------------------------------------------


@router.post(
    "/api/auth/login",
    response_model=schemas.SessionInfo,
    responses=responses(401, 422, 429),
    tags=["session"],
)
async def login(body: schemas.LoginRequest, request: Request, response: Response) -> Any:
    """Sign in; sets the session cookie and returns the CSRF token for state-changing calls.
    429 `too_many_attempts` (with `Retry-After`) after repeated failures for the e-mail or the
    client address; the password is then not checked at all."""
    refuse_cross_site(request)
    user = await sign_in(request, body.email, body.password)
    _, csrf = request.app.state.sessions.issue(response, user)
    return schemas.SessionInfo(
        user_id=user.id,
        email=user.email,
        role=user.role.value,
        organization_id=user.organization_id,
        csrf_token=csrf,
    )


@router.post("/api/auth/logout", status_code=204, responses=responses(401, 403), tags=["session"])
async def logout(principal: SignedIn, request: Request) -> Response:
    """Sign out: every session of this user ends now, copied cookies included."""
    assert principal.user_id is not None
    await runtime_of(request).users.end_sessions(principal.user_id)
    response = Response(status_code=204)
    request.app.state.sessions.clear(response)
    return response


@router.get(
    "/api/auth/me", response_model=schemas.SessionInfo, responses=responses(401), tags=["session"]
)
async def me(principal: SignedIn, request: Request) -> Any:
    assert principal.user_id is not None  # SignedIn: a session's principal has a user
    user = await runtime_of(request).users.get(principal.user_id)
    if user is None:
        raise Unauthorized("this session's user no longer exists")
    return schemas.SessionInfo(
        user_id=user.id,
        email=user.email,
        role=user.role.value,
        organization_id=user.organization_id,
        csrf_token=principal.csrf or "",
    )


# OAuth connect / reconnect / disconnect -----------------------------------------------------


@router.post(
    "/api/ebay/connect",
    status_code=303,
    response_class=RedirectResponse,
    responses={303: {"description": "redirect to eBay's consent page"}, **responses(401, 403, 404)},
    tags=["connect"],
)
async def connect_start(
    principal: Admin,
    runtime: RuntimeDep,
    request: Request,
    account: Annotated[int | None, Query(ge=1, le=2**31 - 1), schemas.DIGITS] = None,
) -> RedirectResponse:
    """Start connecting a seller (or reconnecting ``account``): redirects to eBay's consent.

    A POST with the CSRF token: a link on another site cannot start a connect in the victim's
    session (and so cannot send them to connect their eBay account to someone else's
    organization)."""
    if account is not None:
        await _owned(runtime, principal, account)
    assert principal.user_id is not None and principal.session_id is not None
    state = await runtime.connect_states.create(
        organization_id=principal.organization_id,
        user_id=principal.user_id,
        session_id=principal.session_id,
        account_id=account,
    )
    return RedirectResponse(runtime.client.consent_url(runtime.settings.scope_list, state), 303)


@router.get(
    "/api/ebay/callback",
    response_model=schemas.Connected,
    responses=responses(400, 401, 404, 409, 502),
    tags=["connect"],
)
async def connect_callback(
    request: Request,
    runtime: RuntimeDep,
    cookie: Annotated[str | None, Depends(session_cookie)],
    state: Annotated[str | None, Query(max_length=2048)] = None,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    expires_in: Annotated[int | None, Query(ge=0, le=86400)] = None,
) -> Any:
    """Where eBay sends the seller back. The state is checked and used up before anything else;
    the code is exchanged exactly once; nothing is stored unless everything succeeds. A
    reconnect stores nothing unless the seller consented as the account's own eBay user (409
    `wrong_ebay_user`; the grant just made is revoked). A browser (`Accept: text/html`) is sent
    to a page for every ending instead of JSON."""
    if state and runtime.connect_sessions.is_seller_state(state):
        # A seller's connect session: no login; the seller is always sent back, never shown JSON.
        back = await runtime.connect_sessions.complete(state, code=code, error=error)
        return RedirectResponse(back or "/", status_code=303)
    browser = "text/html" in request.headers.get("accept", "")
    target: AccountToken | None = None
    try:
        session = await current_session(request, cookie)
        if session is None:
            raise Unauthorized("sign in first: the connect belongs to a session")
        if not state:
            raise InvalidState("the callback carries no state")
        pending = await runtime.connect_states.consume(state, session.session_id)
        if pending is None:
            raise InvalidState(
                "the state is forged, expired, already used, or from another session"
            )
        if pending.account_id is not None:
            target = await runtime.store.account_token(pending.account_id)
            if target is None or target.organization_id != pending.organization_id:
                target = None
                raise AccountNotFound(f"account {pending.account_id} to reconnect is gone")
        if error:
            raise InvalidState(
                f"the seller declined on eBay's page ({error})", code="consent_declined"
            )
        if not code:
            raise InvalidState("the callback carries no code", code="missing_code")
        connection = await runtime.connector.connect(
            organization_id=pending.organization_id,
            code=code,
            actor=f"user:{pending.user_id}",
            expected_ebay_user_id=target.ebay_user_id if target else None,
        )
    except ConnectorError as exc:
        if not browser:
            raise
        return _connect_ended(request, exc, target)
    body = schemas.Connected(
        account_id=connection.account_id,
        created=connection.created,
        ebay_username=connection.ebay_username,
        reconnected_account=pending.account_id,
    )
    if browser:
        verb = "connected" if connection.created else "reconnected"
        page = RedirectResponse("/", status_code=303)
        request.app.state.sessions.notice(page, f"eBay account {connection.ebay_username} {verb}.")
        return page
    return body


def _connect_ended(
    request: Request, exc: ConnectorError, target: AccountToken | None
) -> RedirectResponse:
    """Post/redirect/get to the page that says how the connect ended (the UI renders it)."""
    log.event(logger, "connect.ended", code=exc.code, account=target.account_id if target else None)
    page = RedirectResponse(ENDING_PATH, status_code=303)
    request.app.state.sessions.ending(
        page,
        {
            "code": exc.code,
            "status": status_for(exc),
            "signed_in": exc.signed_in if isinstance(exc, WrongEbayUser) else None,
            "account_id": target.account_id if target else None,
            "label": target.label if target else None,
            "ebay_username": target.ebay_username if target else None,
        },
    )
    return page


@router.delete(
    "/api/admin/ebay/accounts/{account_id}",
    response_model=schemas.Disconnected,
    responses=responses(401, 403, 404, 422),
    tags=["admin"],
)
async def disconnect(account_id: AccountId, principal: Admin, runtime: RuntimeDep) -> Any:
    """Disconnect: revoke the grant at eBay where possible, then delete the account's tokens."""
    account = await _owned(runtime, principal, account_id)
    done = await runtime.connector.disconnect(account, actor=principal.actor)
    deleted, revoked = done.deleted, done.revoked_at_ebay
    return schemas.Disconnected(account_id=account_id, deleted=deleted, revoked_at_ebay=revoked)


# Programs -----------------------------------------------------------------------------------


@router.get(
    "/api/v1/accounts",
    response_model=schemas.AccountList,
    responses=responses(401),
    tags=["programs"],
)
async def program_accounts(
    principal: Program,
    runtime: RuntimeDep,
    end_user_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Any:
    """The organization's accounts with their state (no tokens); ``end_user_id`` keeps those
    a connect session connected for that end user."""
    if end_user_id is not None and not schemas.printable(end_user_id):
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "end_user_id"),
                    "msg": "contains control characters",
                    "type": "value_error",
                }
            ]
        )
    return await _accounts(runtime, principal, end_user_id)


@router.get(
    "/api/v1/accounts/{account_id}/access-token",
    response_model=schemas.AccessToken,
    responses=responses(401, 403, 404, 409, 422, 503),
    tags=["programs"],
)
async def access_token(
    account_id: AccountId,
    principal: TokenReader,
    runtime: RuntimeDep,
    rejected: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None,
) -> Any:
    """A valid user access token (refreshed on demand; one eBay call for many callers).
    409 `needs_reconnect` when only the seller can fix it; 503 when eBay failed (retry later).
    `rejected` (the SHA-256, hex, of a token eBay answered 401 to): a fresh one, refreshed once
    however many callers report the same token."""
    if rejected is not None:
        token = await runtime.proxy.replace_rejected(
            account_id,
            rejected,
            actor=principal.actor,
            organization_id=principal.organization_id,
        )
    else:
        token = await runtime.refresher.get_access_token(
            account_id, actor=principal.actor, organization_id=principal.organization_id
        )
    return {
        "access_token": token.access_token,
        "expires_at": token.expires_at,
        "expires_in": max(0, int((token.expires_at - runtime.clock()).total_seconds())),
        "token_type": token.token_type,
    }


# Admin --------------------------------------------------------------------------------------


@router.get(
    "/api/admin/ebay/accounts",
    response_model=schemas.AccountList,
    responses=responses(401),
    tags=["admin"],
)
async def admin_accounts(principal: SignedIn, runtime: RuntimeDep) -> Any:
    return await _accounts(runtime, principal)


async def _refresh(
    runtime: Runtime, principal: Principal, body: schemas.ManualRefresh, trigger: Trigger
) -> views.RefreshResultDoc:
    account = await _owned(runtime, principal, body.ebay_account_id)
    result = await runtime.manual.refresh(account, trigger, actor=principal.actor, force=body.force)
    return views.refresh_result_dict(
        result, views.exchange_dict(await runtime.refresher.exchange_of(result))
    )


@router.post(
    "/api/admin/ebay/token/refresh-debug",
    response_model=schemas.RefreshOutcome,
    responses=responses(401, 403, 404, 409, 422, 429),
    tags=["admin"],
)
async def refresh_debug(body: schemas.ManualRefresh, principal: Admin, runtime: RuntimeDep) -> Any:
    """Refresh now through the canonical path (trigger `debug`); the answer carries the masked
    request and response exactly as sent and received. 429 `rate_limited` (with `Retry-After`)
    beyond the organization's or the account's allowance. Always forced: it shows what eBay
    answers even for an account that needs reconnecting."""
    return await _refresh(runtime, principal, body, Trigger.DEBUG)


@router.post(
    "/api/admin/ebay/token/refresh",
    response_model=schemas.RefreshOutcome,
    responses=responses(401, 403, 404, 409, 422, 429),
    tags=["admin"],
)
async def refresh_admin(body: schemas.ManualRefresh, principal: Admin, runtime: RuntimeDep) -> Any:
    """Refresh now (trigger `admin`); limits as for refresh-debug. An account that needs
    reconnecting answers 409 `needs_reconnect` without calling eBay, unless `force`."""
    return await _refresh(runtime, principal, body, Trigger.ADMIN)


@router.get(
    "/api/admin/ebay/tokens/terminal-logs",
    response_model=schemas.TerminalPage,
    responses=responses(401, 404, 422),
    tags=["admin"],
)
async def terminal_logs(
    principal: SignedIn,
    runtime: RuntimeDep,
    account: Annotated[int | None, Query(ge=1, le=2**31 - 1), schemas.DIGITS] = None,
    trigger: Trigger | None = None,
    outcome: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
    since: datetime | None = None,
    cursor: Annotated[int | None, Query(ge=1, le=2**62), schemas.DIGITS] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> Any:
    """The token refresh terminal: every exchange of this organization, newest first."""
    if account is not None:
        await _owned(runtime, principal, account)
    if since is not None:
        since = _utc(since)
    rows = await runtime.journal.exchanges(
        organization_id=principal.organization_id,
        account_id=account,
        trigger=trigger.value if trigger else None,
        outcome=outcome,
        since=since,
        # A cursor above every possible id (ids are 32-bit) simply means "from the newest".
        before_id=cursor if cursor is None or cursor <= MAX_ID else None,
        limit=limit,
    )
    return {
        "entries": [views.exchange_row_dict(row) for row in rows],
        "next_cursor": rows[-1].id if len(rows) == limit else None,
    }


@router.get(
    "/api/admin/workers",
    response_model=schemas.Workers,
    responses=responses(401, 403),
    tags=["admin"],
)
async def workers(principal: Operator, runtime: RuntimeDep) -> Any:
    """Worker heartbeats (with `stale`), code versions, cycle counts and today's eBay quota:
    the deployment's, so for the instance operator only (403 for an organization's users)."""
    now = runtime.clock()
    beats = await runtime.heartbeats.all()
    usage = await runtime.journal.quota_usage(now - quota.WINDOW)
    versions = sorted({b.version for b in beats})
    return {
        "workers": [
            {
                "instance_id": b.instance_id,
                "host": b.host,
                "pid": b.pid,
                "version": b.version,
                "status": b.status_at(now),
                "reported_status": b.status,
                "started_at": b.started_at,
                "last_cycle_started_at": b.last_cycle_started_at,
                "last_cycle_finished_at": b.last_cycle_finished_at,
                "next_cycle_before": b.updated_at + timedelta(seconds=b.interval_seconds),
                "cycles": b.cycles,
                "counts": b.counts,
                "last_error": b.last_error,
            }
            for b in beats
        ],
        "versions": versions,
        "mixed_versions": len(versions) > 1,
        "quota": quota.QuotaState(usage, runtime.settings.quota).to_dict(),
    }


@router.post(
    "/api/admin/workers/token-refresh/run-once",
    response_model=schemas.CycleOutcome,
    responses=responses(401, 403),
    tags=["admin"],
)
async def run_once(principal: Operator, runtime: RuntimeDep) -> Any:
    """Run one worker cycle now, in this process, and return its counts (every organization's
    due accounts: the instance operator only)."""
    report = await runtime.worker().run_once()
    return {"status": report.status.value, "counts": asdict(report.counts), "error": report.error}


def _utc(value: datetime) -> datetime:
    """A query time as aware UTC; naive or unrepresentable times are the caller's error."""
    problem = None
    if value.tzinfo is None:
        problem = "needs a UTC offset, e.g. 2026-11-28T12:00:00Z"
    else:
        try:
            return value.astimezone(UTC)
        except OverflowError:
            problem = "is out of range"
    raise RequestValidationError(
        [{"loc": ("query", "since"), "msg": f"since {problem}", "type": "value_error"}]
    )
