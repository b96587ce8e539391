""":class:`Emulator`: the emulator's in-memory state (no HTTP) behind one thread-safe facade.

The records live in a :class:`~ebay_connector.emulator.store.Store` that is never touched without
``Emulator._lock``: uvicorn serves from its own thread while tests move the clock, revoke users
or set faults from theirs.

The protocol rules live in ``protocol.py`` (token, revoke, getUser) and ``consent.py``; they take
the store and return an :class:`~ebay_connector.emulator.wire.Answer`. Work under the lock is
O(1) per request; only ``revoke_user``/``set_refresh_expiry`` walk one user's grants.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from ebay_connector.emulator import consent, protocol, sell, wire
from ebay_connector.emulator.store import App, Config, Store, User
from ebay_connector.emulator.wire import Answer, Call, CallLog, Endpoint, Faults, GrantType

Clock = Callable[[], datetime]

ACCESS_TOKEN_TTL_S = 7200
REFRESH_TOKEN_TTL_S = 47_304_000
CODE_TTL_S = 299
DEFAULT_DAILY_LIMITS: Mapping[str, int] = {
    GrantType.REFRESH_TOKEN: 50_000,
    GrantType.AUTHORIZATION_CODE: 10_000,
    GrantType.CLIENT_CREDENTIALS: 1_000,
}
# Live access tokens (and pending codes) kept at most; the oldest go first.
MAX_ACCESS_TOKENS = 200_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class Emulator:
    """eBay's identity service in memory: apps, users, grants, tokens, faults, quotas, calls.

    ``clock`` returns an aware UTC datetime (tests pass a movable one); ``seed`` makes
    ``error_rate`` draws deterministic; ``daily_limits`` overrides per-grant-type quotas.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int | None = 0,
        daily_limits: Mapping[str, int] | None = None,
        access_token_ttl_s: int = ACCESS_TOKEN_TTL_S,
        refresh_token_ttl_s: int = REFRESH_TOKEN_TTL_S,
        code_ttl_s: int = CODE_TTL_S,
        max_access_tokens: int = MAX_ACCESS_TOKENS,
        max_recorded_calls: int = wire.MAX_RECORDED_CALLS,
    ) -> None:
        limits = {
            GrantType(k): v for k, v in {**DEFAULT_DAILY_LIMITS, **(daily_limits or {})}.items()
        }
        self.config = Config(
            seed, limits, access_token_ttl_s, refresh_token_ttl_s, code_ttl_s, max_access_tokens
        )
        self._clock = clock or utc_now
        self._offset = timedelta()
        self._lock = threading.Lock()
        self._store = Store(self.config)
        self.calls = CallLog(max_recorded_calls)
        self._notification_endpoints: list[str] = []

    # -- control ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: apps, users, grants, tokens, faults, quotas, calls, clock offset."""
        with self._lock:
            self._store = Store(self.config)
            self._offset = timedelta()
            self.calls.clear()

    def now(self) -> datetime:
        with self._lock:
            return self._now()

    def _now(self) -> datetime:
        return self._clock() + self._offset

    def advance_clock(self, seconds: float) -> datetime:
        """Shift the emulator's clock (for other processes, which cannot pass a clock)."""
        with self._lock:
            self._offset += timedelta(seconds=seconds)
            return self._now()

    def register_app(
        self,
        client_id: str,
        client_secret: str,
        ru_name: str,
        accept_url: str,
        decline_url: str | None = None,
        scopes: list[str] | tuple[str, ...] | frozenset[str] | None = None,
    ) -> App:
        """Register (or replace) a keyset; ``scopes=None`` allows any scope under SCOPE_ROOT."""
        if not (client_id and client_secret and ru_name and accept_url):
            raise ValueError("client_id, client_secret, ru_name and accept_url are required")
        allowed = None if scopes is None else frozenset(scopes)
        app = App(client_id, client_secret, ru_name, accept_url, decline_url, allowed)
        with self._lock:
            self._store.apps[client_id] = app
        return app

    def register_notification_endpoint(self, url: str) -> None:
        """The account-deletion endpoint the application registered in eBay's developer portal:
        the only URL the emulator's notification sender posts to (a sender to any URL would be
        an open proxy into the network the emulator runs in)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError("the notification endpoint must be an http(s) URL")
        with self._lock:
            if url not in self._notification_endpoints:
                self._notification_endpoints.append(url)

    def notification_endpoints(self) -> list[str]:
        with self._lock:
            return list(self._notification_endpoints)

    def add_user(
        self,
        username: str,
        user_id: str | None = None,
        account_type: str = "INDIVIDUAL",
        marketplace_id: str = "EBAY_US",
    ) -> User:
        """Create or update a user; an update keeps the immutable user id unless one is given."""
        with self._lock:
            return self._store.add_user(username, user_id, account_type, marketplace_id)

    def users(self) -> list[User]:
        with self._lock:
            return sorted(self._store.users.values(), key=lambda u: u.username)

    def apps(self) -> list[App]:
        with self._lock:
            return list(self._store.apps.values())

    def revoke_user(self, username: str) -> int:
        """Revoke every grant of the user (as a password change would); returns how many."""
        with self._lock:
            grants = self._store.grants_of(username)
            for grant in grants:
                self._store.revoke_grant(grant)
            return len(grants)

    def set_refresh_expiry(self, username: str, when: datetime) -> int:
        """Set the refresh-token expiry of every live grant of the user; returns how many."""
        if when.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        with self._lock:
            grants = self._store.grants_of(username)
            for grant in grants:
                grant.expires_at = when
            return len(grants)

    def reject_access_tokens(self, username: str) -> None:
        """eBay rejects every access token the seller holds now (errorId 1001), as after a
        password change on eBay's side; tokens minted later work again."""
        with self._lock:
            self._store.reject_access_tokens(username)

    def add_order(self, username: str, order: Mapping[str, object]) -> None:
        """Give the seller an order (getOrders answers it as given)."""
        with self._lock:
            if username not in self._store.users:
                raise LookupError(f"unknown user {username!r}")
            self._store.seller(username).orders.append(dict(order))

    def set_faults(self, faults: Faults, username: str | None = None) -> None:
        with self._lock:
            if username is None:
                self._store.global_faults = faults
            else:
                self._store.user_faults[username] = faults

    def clear_faults(self, username: str | None = None) -> None:
        with self._lock:
            if username is None:
                self._store.global_faults = Faults()
            else:
                self._store.user_faults.pop(username, None)

    def fault_settings(self) -> tuple[Faults, dict[str, Faults]]:
        with self._lock:
            return self._store.global_faults, dict(self._store.user_faults)

    def issue_grant(self, client_id: str, username: str, scopes: list[str]) -> wire.JSONBody:
        """Skip consent: mint a grant and return the code-exchange body (seeding, benchmarks)."""
        with self._lock:
            app = self._store.apps.get(client_id)
            if app is None:
                raise LookupError(f"unknown client_id {client_id!r}")
            if not scopes or not all(app.allows(s) for s in scopes):
                raise ValueError("scopes must be non-empty and allowed for the app")
            if username not in self._store.users:
                self._store.add_user(username)
            now = self._now()
            return self._store.new_grant(client_id, username, frozenset(scopes), now)

    # -- protocol (called by app.py) --------------------------------------------------------

    def faults_for(
        self, form: Mapping[str, str] | None = None, authorization: str | None = None
    ) -> tuple[Faults, str | None]:
        """The faults that apply to a request, and the user it acts for (None if none)."""
        with self._lock:
            now = self._now()
            owner = self._store.owner(form, wire.bearer_token(authorization), now)
            return self._store.faults_for(owner), owner

    def note_unanswered(
        self, endpoint: Endpoint, grant_type: str | None, owner: str | None
    ) -> None:
        """Record a call that a ``hang`` fault never answered (status None)."""
        with self._lock:
            now = self._now()
            self.calls.add(Call(endpoint, grant_type, None, owner, None, now))

    def token(
        self, form: Mapping[str, str] | None, authorization: str | None, faults: Faults
    ) -> Answer:
        """``POST /identity/v1/oauth2/token``; ``form`` is None when the body is not a form."""
        creds = wire.basic_credentials(authorization)
        grant_type = form.get("grant_type") if form is not None else None
        with self._lock:
            now = self._now()
            owner = self._store.owner(form, None, now)
            answer = protocol.token(self._store, form, creds, faults, now)
            client_id = creds[0] if creds else None
            self.calls.add(Call(Endpoint.TOKEN, grant_type, client_id, owner, answer.status, now))
            return answer

    def revoke(
        self, form: Mapping[str, str] | None, authorization: str | None, faults: Faults
    ) -> Answer:
        """``POST /identity/v1/oauth2/token/revoke``."""
        creds = wire.basic_credentials(authorization)
        with self._lock:
            now = self._now()
            owner = self._store.owner(form, None, now)
            answer = protocol.revoke(self._store, form, creds, faults, now)
            client_id = creds[0] if creds else None
            self.calls.add(Call(Endpoint.REVOKE, None, client_id, owner, answer.status, now))
            return answer

    def get_user(self, authorization: str | None, faults: Faults) -> Answer:
        """``GET /commerce/identity/v1/user/``."""
        with self._lock:
            now = self._now()
            access = self._store.bearer(wire.bearer_token(authorization), now)
            answer = protocol.get_user(self._store, access, faults)
            client_id, owner = (access.client_id, access.username) if access else (None, None)
            self.calls.add(Call(Endpoint.USER, None, client_id, owner, answer.status, now))
            return answer

    def sell(
        self,
        operation: str,
        authorization: str | None,
        faults: Faults,
        *,
        query: Mapping[str, str],
        sku: str = "",
        body: bytes = b"",
        content_language: str | None = None,
    ) -> Answer:
        """One Sell API call (``sell.py``); ``operation`` names it."""
        scopes = {
            "inventory_items": sell.INVENTORY_READ,
            "inventory_item": sell.INVENTORY_READ,
            "put_inventory_item": sell.INVENTORY_WRITE,
            "orders": sell.FULFILLMENT_READ,
            "privileges": sell.ACCOUNT_READ,
        }[operation]
        with self._lock:
            now = self._now()
            access = self._store.bearer(wire.bearer_token(authorization), now)
            answer = self._store.fault_answer(faults, Endpoint.SELL) or sell.authorize(
                access, scopes
            )
            if answer is None:
                assert access is not None and access.username is not None
                data = self._store.seller(access.username)
                if operation == "inventory_items":
                    answer = sell.inventory_items(data, query)
                elif operation == "inventory_item":
                    answer = sell.inventory_item(data, sku)
                elif operation == "put_inventory_item":
                    answer = sell.put_inventory_item(data, sku, body, content_language)
                elif operation == "orders":
                    answer = sell.orders(data, query)
                else:
                    answer = sell.privileges()
            client_id, owner = (access.client_id, access.username) if access else (None, None)
            self.calls.add(Call(Endpoint.SELL, None, client_id, owner, answer.status, now))
            return answer

    def consent_request(self, params: Mapping[str, str]) -> consent.ConsentRequest | None:
        """Validate an authorize request; None means eBay's ``invalid_request`` error."""
        with self._lock:
            return consent.validate(self._store, params)

    def known_usernames(self) -> list[str]:
        with self._lock:
            return sorted(self._store.users)

    def consent(self, request: consent.ConsentRequest, username: str | None, agree: bool) -> Answer:
        """The user's decision: 302 to the accept URL with a code, or to the decline URL."""
        who = (username or "").strip() or None
        with self._lock:
            now = self._now()
            answer = consent.decide(self._store, request, who, agree, now)
            call = Call(Endpoint.AUTHORIZE, None, request.client_id, who, answer.status, now)
            self.calls.add(call)
            return answer
