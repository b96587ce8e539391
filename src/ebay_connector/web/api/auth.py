"""Who is calling: a signed-in user (cookie session, CSRF-checked on writes) or a program (API key).

Sessions are signed cookies (``HttpOnly``, ``SameSite=Lax``) holding the user id, the user's
session version, a session id (to which OAuth states are bound) and a CSRF token; every
state-changing call made with the cookie must echo the CSRF token in ``X-CSRF-Token`` (or the
form field ``csrf_token``). The version is checked against the user's row on every request, so
signing out, a new password, a new role or removing the user ends their sessions at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ebay_connector.core.roles import Role
from ebay_connector.db import login_throttle
from ebay_connector.db.api_keys import ApiKeyRow
from ebay_connector.db.users import UserRow
from ebay_connector.errors import Forbidden, Unauthorized
from ebay_connector.web.api import schemas
from ebay_connector.web.api.state import runtime_of

SESSION_COOKIE = "ebc_session"
NOTICE_COOKIE = "ebc_notice"
NOTICE_MAX_AGE = timedelta(minutes=2)
ENDING_COOKIE = "ebc_connect_ending"
ENDING_PATH = "/connect/ended"
ENDING_MAX_AGE = timedelta(minutes=10)
SHOWN_ONCE_MAX_AGE = timedelta(minutes=2)
SESSION_MAX_AGE = timedelta(hours=12)
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

session_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, scheme_name="session")
bearer = HTTPBearer(auto_error=False, scheme_name="api_key", description="ebc_… API key")


@dataclass(frozen=True)
class Principal:
    """The caller, resolved once per request."""

    organization_id: int
    user_id: int | None = None
    role: Role | None = None
    session_id: str | None = None
    csrf: str | None = None
    key: ApiKeyRow | None = None

    @property
    def actor(self) -> str:
        if self.key is not None:
            return f"key:{self.key.key_id}"
        return f"user:{self.user_id}"


class Sessions:
    """Signs and reads session cookies, and the one-time notices shown after a redirect."""

    def __init__(self, secret: bytes, *, secure: bool) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="ebay-connector session")
        self._notices = URLSafeTimedSerializer(secret, salt="ebay-connector notice")
        self._endings = URLSafeTimedSerializer(secret, salt="ebay-connector connect ending")
        self._shown_once = URLSafeTimedSerializer(secret, salt="ebay-connector shown once")
        self.secure = secure

    def ending(self, response: Response, ending: dict[str, str | int | None]) -> None:
        """How a connect ended, for its page: signed (a person cannot be shown another's words)
        and kept for a while, so reloading the page shows it again; never a secret."""
        response.set_cookie(
            ENDING_COOKIE,
            str(self._endings.dumps(ending)),
            max_age=int(ENDING_MAX_AGE.total_seconds()),
            httponly=True,
            samesite="lax",
            secure=self.secure,
            path=ENDING_PATH,
        )

    def shown_once(self, response: Response, cookie: str, path: str, secret: str) -> None:
        """A secret for the one page at ``path`` that shows it once after a post/redirect/get:
        never in a URL, gone after two minutes or the first showing (the page clears it)."""
        response.set_cookie(
            cookie,
            str(self._shown_once.dumps(secret)),
            max_age=int(SHOWN_ONCE_MAX_AGE.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path=path,
        )

    def read_shown_once(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            secret = self._shown_once.loads(value, max_age=int(SHOWN_ONCE_MAX_AGE.total_seconds()))
        except BadSignature:
            return None
        return secret if isinstance(secret, str) else None

    def read_ending(self, value: str | None) -> dict[str, Any] | None:
        if not value:
            return None
        try:
            ending = self._endings.loads(value, max_age=int(ENDING_MAX_AGE.total_seconds()))
        except BadSignature:
            return None
        return ending if isinstance(ending, dict) else None

    def notice(self, response: Response, text: str) -> None:
        response.set_cookie(
            NOTICE_COOKIE,
            str(self._notices.dumps(text)),
            max_age=int(NOTICE_MAX_AGE.total_seconds()),
            httponly=True,
            samesite="lax",
            secure=self.secure,
            path="/",
        )

    def read_notice(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            text = self._notices.loads(value, max_age=int(NOTICE_MAX_AGE.total_seconds()))
        except BadSignature:
            return None
        return text if isinstance(text, str) else None

    def clear_notice(self, response: Response) -> None:
        response.delete_cookie(
            NOTICE_COOKIE, path="/", httponly=True, samesite="lax", secure=self.secure
        )

    def issue(self, response: Response, user: UserRow) -> tuple[str, str]:
        session_id, csrf = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
        value = self._signer.dumps(
            {"uid": user.id, "ver": user.session_version, "sid": session_id, "csrf": csrf}
        )
        response.set_cookie(
            SESSION_COOKIE,
            str(value),
            max_age=int(SESSION_MAX_AGE.total_seconds()),
            httponly=True,
            samesite="lax",
            secure=self.secure,
            path="/",
        )
        return session_id, csrf

    def read(self, value: str | None) -> dict[str, Any] | None:
        if not value:
            return None
        try:
            data = self._signer.loads(value, max_age=int(SESSION_MAX_AGE.total_seconds()))
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
            return None
        if not isinstance(data.get("ver"), int):
            return None
        return data

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=self.secure
        )


@dataclass(frozen=True)
class Session:
    user: UserRow
    session_id: str
    csrf: str


async def current_session(request: Request, cookie: str | None) -> Session | None:
    """The session this cookie holds, if it is still valid: signed, not expired, its user still
    there and its version still the user's."""
    data = request.app.state.sessions.read(cookie)
    if data is None:
        return None
    user = await runtime_of(request).users.get(data["uid"])
    if user is None or user.session_version != data["ver"]:
        return None
    return Session(user, str(data.get("sid", "")), str(data.get("csrf", "")))


SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # "none": typed, bookmarked


def refuse_cross_site(request: Request) -> None:
    """Sign-in only from our own pages: a form on another site must not sign the victim into the
    attacker's organization (login CSRF). Browsers say where a request comes from
    (``Sec-Fetch-Site``, else ``Origin``); a program that sends neither is no browser to fool."""
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if fetch_site is not None:
        allowed = fetch_site.lower() in SAME_SITE_FETCHES
    elif origin is not None:
        public = runtime_of(request).settings.public_url
        own = {_origin_of(public), f"{request.url.scheme}://{request.headers.get('host', '')}"}
        allowed = origin.rstrip("/").lower() in own
    else:
        allowed = True
    if not allowed:
        raise Forbidden("sign-in from another site is refused", code="csrf_failed")


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def client_address(request: Request) -> str | None:
    """The caller's address for throttling (X-Forwarded-For only from a trusted proxy)."""
    peer = request.client.host if request.client is not None else None
    trusted = runtime_of(request).login_throttle.trusted_proxies
    return login_throttle.client_address(peer, request.headers.get("x-forwarded-for"), trusted)


async def sign_in(request: Request, email: str, password: str) -> UserRow:
    """Check a password behind the login throttle; the one sign-in path of the API and the UI.

    ``TooManyAttempts`` (before any password hashing) or ``Unauthorized`` /
    ``invalid_credentials`` — the same answers whether or not the e-mail belongs to a user.
    """
    runtime = runtime_of(request)
    throttle = runtime.login_throttle
    client = client_address(request)
    await throttle.charge(email, client)
    # No user's address holds a control character; PostgreSQL cannot even compare a NUL.
    known = schemas.printable(email)
    user: UserRow | None = await runtime.users.authenticate(email, password) if known else None
    if user is None:
        raise Unauthorized("wrong e-mail or password", code="invalid_credentials")
    await throttle.succeeded(email, client)
    return user


async def _session_principal(request: Request, cookie: str | None) -> Principal:
    session = await current_session(request, cookie)
    if session is None:
        raise Unauthorized("sign in first (no session, or it has ended)")
    user = session.user
    principal = Principal(
        organization_id=user.organization_id,
        user_id=user.id,
        role=user.role,
        session_id=session.session_id,
        csrf=session.csrf,
    )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            sent = str((await request.form()).get("csrf_token", ""))
        if not sent or not secrets.compare_digest(sent, principal.csrf or ""):
            raise Forbidden("missing or wrong CSRF token", code="csrf_failed")
    return principal


async def signed_in(
    request: Request, cookie: Annotated[str | None, Depends(session_cookie)]
) -> Principal:
    """Any signed-in user (admin or viewer)."""
    return await _session_principal(request, cookie)


async def admin(principal: Annotated[Principal, Depends(signed_in)]) -> Principal:
    """A signed-in admin: connect, refresh, debug, disconnect, manage keys."""
    if principal.role is None or not principal.role.manages:
        raise Forbidden("this needs the admin role")
    return principal


async def operator(principal: Annotated[Principal, Depends(signed_in)]) -> Principal:
    """The instance operator: workers, the shared quota, running a cycle for every organization."""
    if principal.role is None or not principal.role.sees_instance:
        raise Forbidden(
            "instance-wide figures are for the instance operator (users create --role operator)"
        )
    return principal


async def program(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """A program with an API key (``Authorization: Bearer ebc_…``)."""
    if credentials is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer ebc_…'")
    key = await runtime_of(request).api_keys.authenticate(credentials.credentials)
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    return Principal(organization_id=key.organization_id, key=key)


async def token_reader(principal: Annotated[Principal, Depends(program)]) -> Principal:
    if principal.key is None or not principal.key.can_read_tokens:
        raise Forbidden("this API key may not read tokens (create it with --tokens)")
    return principal


async def session_maker(principal: Annotated[Principal, Depends(program)]) -> Principal:
    if principal.key is None or not principal.key.can_connect:
        raise Forbidden("this API key may not create connect sessions (create it with --connect)")
    return principal


async def proxy_caller(principal: Annotated[Principal, Depends(program)]) -> Principal:
    if principal.key is None or not principal.key.can_proxy:
        raise Forbidden("this API key may not call eBay through the proxy (create it with --proxy)")
    return principal


SignedIn = Annotated[Principal, Depends(signed_in)]
Admin = Annotated[Principal, Depends(admin)]
Operator = Annotated[Principal, Depends(operator)]
Program = Annotated[Principal, Depends(program)]
TokenReader = Annotated[Principal, Depends(token_reader)]
SessionMaker = Annotated[Principal, Depends(session_maker)]
ProxyCaller = Annotated[Principal, Depends(proxy_caller)]
