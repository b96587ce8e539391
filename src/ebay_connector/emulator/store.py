"""Every record of one emulator (apps, users, grants, codes, tokens, quotas, faults).

Not thread-safe by itself: :class:`~ebay_connector.emulator.state.Emulator` holds its lock
around every use. Lookups are dict hits and pruning is amortised O(1), so each request costs
the same however many tokens benchmarks have minted.
"""

from __future__ import annotations

import hmac
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from ebay_connector.emulator import tokens, wire
from ebay_connector.emulator.wire import Answer, Endpoint, Faults, GrantType

SCOPE_ROOT = "https://api.ebay.com/oauth/"
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Config:
    seed: int | None
    daily_limits: Mapping[GrantType, int]
    access_token_ttl_s: int
    refresh_token_ttl_s: int
    code_ttl_s: int
    max_access_tokens: int


@dataclass(frozen=True, slots=True)
class App:
    """A keyset plus its RuName, as registered in eBay's developer portal."""

    client_id: str
    client_secret: str
    ru_name: str
    accept_url: str
    decline_url: str | None = None
    scopes: frozenset[str] | None = None  # None: any scope under SCOPE_ROOT

    def allows(self, scope: str) -> bool:
        return scope.startswith(SCOPE_ROOT) if self.scopes is None else scope in self.scopes


@dataclass(frozen=True, slots=True)
class User:
    username: str
    user_id: str
    account_type: str = "INDIVIDUAL"
    marketplace_id: str = "EBAY_US"
    status: str = "CONFIRMED"


@dataclass(slots=True)
class Grant:
    """One consent: a refresh token bound to (client, user, consented scopes)."""

    refresh_token: str
    client_id: str
    username: str
    scopes: frozenset[str]
    expires_at: datetime
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class Code:
    client_id: str
    ru_name: str
    username: str
    scopes: frozenset[str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Access:
    client_id: str
    username: str | None  # None: application token
    scopes: frozenset[str]
    expires_at: datetime
    grant: Grant | None
    serial: int = 0  # mint order: the reject-access-tokens knob refuses those minted before it


@dataclass
class SellerData:
    """One seller's listings and orders (the Sell APIs, ``sell.py``)."""

    inventory: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)


_V = TypeVar("_V", Code, Access)


class Expiring(Generic[_V]):
    """A dict whose entries leave in insertion order once expired or over a cap.

    TTLs are constant per emulator, so insertion order is expiry order and pruning costs
    amortised O(1) per insert; lookups treat a stale entry as missing.
    """

    def __init__(self, cap: int) -> None:
        self._items: dict[str | bytes, _V] = {}
        self._order: deque[tuple[datetime, str | bytes]] = deque()
        self._cap = cap

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: str | bytes, value: _V, now: datetime) -> None:
        self._items[key] = value
        self._order.append((value.expires_at, key))
        order = self._order
        while order and (order[0][0] <= now or len(order) > self._cap):
            self._items.pop(order.popleft()[1], None)

    def get(self, key: str | bytes, now: datetime) -> _V | None:
        value = self._items.get(key)
        return value if value is not None and value.expires_at > now else None

    def pop(self, key: str | bytes) -> None:
        self._items.pop(key, None)


class Store:
    """Every record of one emulator. Not thread-safe: used only under ``Emulator._lock``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.random = random.Random(config.seed)
        self.apps: dict[str, App] = {}
        self.users: dict[str, User] = {}
        self.grants: dict[str, Grant] = {}
        self.user_grants: dict[str, list[Grant]] = {}
        self.codes: Expiring[Code] = Expiring(config.max_access_tokens)
        self.access: Expiring[Access] = Expiring(config.max_access_tokens)
        self.quota: dict[tuple[str, GrantType], deque[datetime]] = {}
        self.global_faults = Faults()
        self.user_faults: dict[str, Faults] = {}
        self.minted = 0
        # username -> the first serial still accepted (eBay rejecting a seller's current tokens)
        self.accepted_from: dict[str, int] = {}
        self.sellers: dict[str, SellerData] = {}

    def add_user(
        self,
        username: str,
        user_id: str | None = None,
        account_type: str = "INDIVIDUAL",
        marketplace_id: str = "EBAY_US",
    ) -> User:
        username = username.strip()
        if not username:
            raise ValueError("username must not be empty")
        if account_type not in ("INDIVIDUAL", "BUSINESS"):
            raise ValueError("account_type must be INDIVIDUAL or BUSINESS")
        known = self.users.get(username)
        user_id = user_id or (known.user_id if known else tokens.new_user_id())
        user = self.users[username] = User(username, user_id, account_type, marketplace_id)
        return user

    def authenticate(self, creds: tuple[str, str] | None) -> App | None:
        app = self.apps.get(creds[0]) if creds else None
        if creds is None or app is None:
            return None
        ok = hmac.compare_digest(app.client_secret.encode(), creds[1].encode())
        return app if ok else None

    def bearer(self, token: str | None, now: datetime) -> Access | None:
        access = self.access.get(tokens.token_key(token), now) if token else None
        if access is None or (access.grant is not None and access.grant.revoked):
            return None
        if access.username is not None and access.serial < self.accepted_from.get(
            access.username, 0
        ):
            return None
        return access

    def reject_access_tokens(self, username: str) -> None:
        """From now on, every access token the user holds is invalid (new ones work)."""
        if username not in self.users:
            raise LookupError(f"unknown user {username!r}")
        self.accepted_from[username] = self.minted + 1  # serials start at 1

    def seller(self, username: str) -> SellerData:
        return self.sellers.setdefault(username, SellerData())

    def owner(
        self, form: Mapping[str, str] | None, bearer: str | None, now: datetime
    ) -> str | None:
        """The user a request acts for (its refresh token, code, or token to revoke)."""
        if form is None:
            access = self.bearer(bearer, now)
            return access.username if access else None
        if (grant := self.grants.get(form.get("refresh_token") or "")) is not None:
            return grant.username
        if (code := self.codes.get(form.get("code") or "", now)) is not None:
            return code.username
        if (token := form.get("token")) and (grant := self.grants.get(token)) is not None:
            return grant.username
        access = self.bearer(form.get("token"), now)
        return access.username if access else None

    def faults_for(self, username: str | None) -> Faults:
        """The user's knobs override the global ones field by field (non-default values win)."""
        own = self.user_faults.get(username) if username is not None else None
        if own is None:
            return self.global_faults
        default = Faults()
        changed = {
            f.name: getattr(own, f.name)
            for f in fields(Faults)
            if getattr(own, f.name) != getattr(default, f.name)
        }
        return replace(self.global_faults, **changed)

    def fault_answer(self, faults: Faults, endpoint: Endpoint) -> Answer | None:
        if faults.rate_limited:
            after = faults.retry_after_s
            headers = {} if after is None else {"Retry-After": str(after)}
            return Answer(429, wire.TOO_MANY_REQUESTS, headers=headers)
        if faults.error_rate > 0 and self.random.random() < faults.error_rate:
            body = {
                Endpoint.USER: wire.IDENTITY_ERROR,
                Endpoint.SELL: wire.SELL_ERROR,
            }.get(endpoint, wire.SERVER_ERROR)
            return Answer(faults.error_status, body)
        return None

    def spend_quota(self, client_id: str, grant: GrantType, now: datetime) -> Answer | None:
        """Count one request on the rolling 24 h window, or answer 429 when it is full."""
        window = self.quota.setdefault((client_id, grant), deque())
        while window and window[0] <= now - DAY:
            window.popleft()
        if len(window) >= self.config.daily_limits[grant]:
            wait = math.ceil((window[0] + DAY - now).total_seconds()) if window else 1
            return Answer(429, wire.TOO_MANY_REQUESTS, headers={"Retry-After": str(max(1, wait))})
        window.append(now)
        return None

    def mint(
        self,
        client_id: str,
        username: str | None,
        scopes: frozenset[str],
        grant: Grant | None,
        now: datetime,
    ) -> str:
        if username is None:
            token = tokens.new_application_access_token()
        else:
            token = tokens.new_user_access_token()
        expires = now + timedelta(seconds=self.config.access_token_ttl_s)
        self.minted += 1
        access = Access(client_id, username, scopes, expires, grant, self.minted)
        self.access.add(tokens.token_key(token), access, now)
        return token

    def new_grant(
        self, client_id: str, username: str, scopes: frozenset[str], now: datetime
    ) -> wire.JSONBody:
        """Create a grant and return eBay's 5-field code-exchange body, key order kept
        (docs/ebay-oauth.md §4.4)."""
        ttl = self.config.refresh_token_ttl_s
        grant = Grant(
            tokens.new_refresh_token(), client_id, username, scopes, now + timedelta(seconds=ttl)
        )
        self.grants[grant.refresh_token] = grant
        self.user_grants.setdefault(username, []).append(grant)
        return {
            "access_token": self.mint(client_id, username, scopes, grant, now),
            "expires_in": self.config.access_token_ttl_s,
            "refresh_token": grant.refresh_token,
            "refresh_token_expires_in": ttl,
            "token_type": wire.USER_TOKEN_TYPE,
        }

    def new_code(
        self,
        client_id: str,
        ru_name: str,
        username: str,
        scopes: tuple[str, ...],
        now: datetime,
    ) -> str:
        code = tokens.new_code()
        expires = now + timedelta(seconds=self.config.code_ttl_s)
        self.codes.add(code, Code(client_id, ru_name, username, frozenset(scopes), expires), now)
        return code

    def revoke_grant(self, grant: Grant) -> None:
        grant.revoked = True  # our choice: its access tokens stop working at once, too
        self.grants.pop(grant.refresh_token, None)
        owned = self.user_grants.get(grant.username, [])
        if grant in owned:
            owned.remove(grant)

    def grants_of(self, username: str) -> list[Grant]:
        if username not in self.users:
            raise LookupError(f"unknown user {username!r}")
        return list(self.user_grants.get(username, []))
