"""The rules of eBay's token, revoke and getUser endpoints, as functions of the store.

Called only by :class:`~ebay_connector.emulator.state.Emulator`, under its lock. Order of checks
on the token endpoint: injected faults, form body, client authentication, grant_type, daily
quota, forced ``invalid_grant``, then the grant's own rules. A faulted answer changes nothing.
Section marks (§3, §4.3, …) cite docs/ebay-oauth.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from ebay_connector.emulator import tokens, wire
from ebay_connector.emulator.store import Access, App, Store
from ebay_connector.emulator.wire import Answer, Endpoint, Faults, GrantType, oauth_error


def _malformed_request() -> Answer:
    return oauth_error(400, "invalid_request", wire.REQUEST_MALFORMED)


def token(
    store: Store,
    form: Mapping[str, str] | None,
    creds: tuple[str, str] | None,
    faults: Faults,
    now: datetime,
) -> Answer:
    """``POST /identity/v1/oauth2/token``; ``form`` is None when the body is not a form."""
    grant_type = form.get("grant_type") if form is not None else None
    if (fault := store.fault_answer(faults, Endpoint.TOKEN)) is not None:
        return fault
    if faults.malformed is not None:
        return wire.malformed(faults.malformed, grant_type, store.config.access_token_ttl_s)
    if form is None:
        return _malformed_request()
    app = store.authenticate(creds)
    if app is None:
        return oauth_error(401, "invalid_client", wire.CLIENT_AUTH_FAILED)
    if not grant_type:
        return _malformed_request()
    try:
        grant = GrantType(grant_type)
    except ValueError:
        return oauth_error(400, "unsupported_grant_type", wire.GRANT_TYPE_UNSUPPORTED)
    if (limited := store.spend_quota(app.client_id, grant, now)) is not None:
        return limited
    if grant is GrantType.REFRESH_TOKEN:
        if faults.invalid_grant:
            return oauth_error(400, "invalid_grant", wire.REFRESH_INVALID)
        return _refresh(store, app, form, now)
    if grant is GrantType.AUTHORIZATION_CODE:
        if faults.invalid_grant:
            return oauth_error(400, "invalid_grant", wire.CODE_INVALID)
        return _exchange_code(store, app, form, now)
    return _client_credentials(store, app, form, now)


def _refresh(store: Store, app: App, form: Mapping[str, str], now: datetime) -> Answer:
    """§3: a new access token, never a new refresh token; scopes a subset of the consent."""
    refresh_token = form.get("refresh_token")
    if not refresh_token:
        return _malformed_request()
    grant = store.grants.get(refresh_token)
    if grant is None or grant.client_id != app.client_id or grant.expires_at <= now:
        return oauth_error(400, "invalid_grant", wire.REFRESH_INVALID)
    requested = wire.parse_scopes(form.get("scope") or "")
    if not set(requested) <= grant.scopes:
        return oauth_error(400, "invalid_scope", wire.SCOPE_INVALID)
    # Our choice (UNCONFIRMED): an omitted or empty scope means all consented scopes.
    scopes = frozenset(requested) if requested else grant.scopes
    return Answer(
        200,
        {
            "access_token": store.mint(app.client_id, grant.username, scopes, grant, now),
            "expires_in": store.config.access_token_ttl_s,
            "token_type": wire.USER_TOKEN_TYPE,
        },
    )


def _exchange_code(store: Store, app: App, form: Mapping[str, str], now: datetime) -> Answer:
    """§4.3: single use, bound to client and RuName, expires after ``code_ttl_s``.

    A double-encoded code (``v%5E1.1…`` after one decode) simply is not a known code.
    """
    code, ru_name = form.get("code"), form.get("redirect_uri")
    if not code or not ru_name:
        return _malformed_request()
    found = store.codes.get(code, now)
    if found is None or found.client_id != app.client_id or found.ru_name != ru_name:
        # Our choice: a failed attempt does not burn the code; only a success does.
        return oauth_error(400, "invalid_grant", wire.CODE_INVALID)
    store.codes.pop(code)
    return Answer(200, store.new_grant(app.client_id, found.username, found.scopes, now))


def _client_credentials(store: Store, app: App, form: Mapping[str, str], now: datetime) -> Answer:
    """§4.5; an extra ``redirect_uri`` (eBay's python client sends one) is ignored."""
    scopes = wire.parse_scopes(form.get("scope") or "")
    if not scopes:
        return _malformed_request()
    if not all(app.allows(s) for s in scopes):
        return oauth_error(400, "invalid_scope", wire.SCOPE_INVALID)
    if any(s.startswith(wire.USER_ONLY_SCOPE_PREFIXES) for s in scopes):
        # eBay's rule: an application token carries only application scopes.
        return oauth_error(400, "invalid_scope", wire.SCOPE_INVALID)
    return Answer(
        200,
        {
            "access_token": store.mint(app.client_id, None, frozenset(scopes), None, now),
            "expires_in": store.config.access_token_ttl_s,
            "token_type": wire.APPLICATION_TOKEN_TYPE,
        },
    )


def revoke(
    store: Store,
    form: Mapping[str, str] | None,
    creds: tuple[str, str] | None,
    faults: Faults,
    now: datetime,
) -> Answer:
    """Revoke a refresh token's whole grant, or a single access token; always 200 if valid.

    Our choice (the endpoint is UNCONFIRMED at eBay): RFC 7009 semantics, so an unknown or
    another client's token also gets 200 and nothing changes.
    """
    if (fault := store.fault_answer(faults, Endpoint.REVOKE)) is not None:
        return fault
    if form is None:
        return _malformed_request()
    app = store.authenticate(creds)
    if app is None:
        return oauth_error(401, "invalid_client", wire.CLIENT_AUTH_FAILED)
    token = form.get("token")
    if not token:
        return _malformed_request()
    grant = store.grants.get(token)
    if grant is not None:
        if grant.client_id == app.client_id:
            store.revoke_grant(grant)
    elif (access := store.bearer(token, now)) is not None and access.client_id == app.client_id:
        store.access.pop(tokens.token_key(token))
    return Answer(200, None)


def get_user(store: Store, access: Access | None, faults: Faults) -> Answer:
    """§7: 401 errorId 1001 unless a live user token; 403 errorId 1100 without identity scope."""
    if (fault := store.fault_answer(faults, Endpoint.USER)) is not None:
        return fault
    user = store.users.get(access.username) if access and access.username else None
    if access is None or user is None:
        return Answer(401, wire.INVALID_ACCESS_TOKEN)
    if not access.scopes & wire.IDENTITY_SCOPES:
        return Answer(403, wire.ACCESS_DENIED)
    return Answer(
        200,
        {
            "userId": user.user_id,
            "username": user.username,
            "accountType": user.account_type,
            "registrationMarketplaceId": user.marketplace_id,
            "status": user.status,
        },
    )
