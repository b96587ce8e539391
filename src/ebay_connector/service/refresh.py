"""The canonical refresh: the one function the worker, the admin, the debug view and programs use.

    refresh(account, trigger)
      read account+token ─► lease (compare-and-set on version) ─► decrypt once / refuse ─►
      call eBay ─► classify ─► transition ─► ONE transaction: exchange + attempt + token

There is no second path: a debug refresh differs from a scheduled one only by its trigger, which
is what the exchange records prove (same request shape, same token fingerprint).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ebay_connector import log
from ebay_connector.core import access, policy, quota, retry, token_state
from ebay_connector.core.access import Access
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Action, ExchangeRecord, Trigger
from ebay_connector.core.outcome import MEANINGS, Classified, Outcome
from ebay_connector.core.policy import PolicyConfig
from ebay_connector.core.quota import QuotaConfig
from ebay_connector.core.token_state import TokenState
from ebay_connector.db.journal import ExchangeRow, Journal
from ebay_connector.db.quota_ledger import QuotaLedger
from ebay_connector.db.store import AccountToken, RefreshWrite, Store
from ebay_connector.ebay.client import EbayClient, build_refresh_request, not_sent
from ebay_connector.ebay.pacing import Pacer
from ebay_connector.errors import (
    AccountNotFound,
    CryptoError,
    DecryptFailed,
    InvalidStoredToken,
    NeedsReconnect,
    QuotaExhausted,
    RefreshFailed,
    StoreError,
    StoreUnavailable,
)
from ebay_connector.keys.crypto import KeyRing, TokenField
from ebay_connector.service import served_tokens
from ebay_connector.service.served_tokens import Served, ServedTokens

logger = logging.getLogger(__name__)

LEASE_POLL = timedelta(milliseconds=50)
MAX_TAKEN_OVER = 4096  # bounded: worker memory stays flat
# invalid_client is about the application, not an account: said this way wherever it surfaces.
APP_CREDENTIALS_REJECTED = (
    "eBay rejected the application credentials (invalid_client): "
    "check EBAY_CONNECTOR_CLIENT_ID/CLIENT_SECRET"
)
LAST_USED_THROTTLE = timedelta(seconds=60)

# Told of every refresh result and how long it took (seconds). Observers are in-process and must
# be quick and must not raise: metrics count here; durable reactions (webhooks) read the store.
RefreshObserver = Callable[["RefreshResult", float], None]


@dataclass(frozen=True)
class RefreshConfig:
    access_token_margin: timedelta = timedelta(minutes=5)
    on_demand_cooldown: timedelta = timedelta(seconds=30)
    lease: timedelta = timedelta(seconds=120)
    backoff: retry.Backoff = retry.DEFAULT_BACKOFF
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    outage_memory: int = served_tokens.DEFAULT_CAPACITY  # accounts whose served token is kept


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did. The exchange is masked; the one secret is ``access_token``."""

    account_id: int
    trigger: Trigger
    outcome: Outcome
    message: str
    state: TokenState
    state_reason: str | None
    access_expires_at: datetime | None
    next_attempt_at: datetime | None
    called_ebay: bool
    joined: bool = False  # another caller refreshed meanwhile; this is its result
    skipped: bool = False  # not attempted (needs_reconnect, or account deleted meanwhile)
    exchange: ExchangeRecord | None = None
    exchange_id: int | None = None
    attempt_id: int | None = None
    # The access token this refresh obtained and stored, as eBay sent it: the token API serves it
    # without reading back and decrypting what was just written. Never rendered, logged or kept
    # (not in repr); None unless this caller's refresh succeeded and was applied.
    access_token: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def failed(self) -> bool:
        """This caller's attempt failed (another caller's result or a skip is no attempt)."""
        return not (self.ok or self.joined or self.skipped)

    @property
    def meaning(self) -> str:
        return MEANINGS[self.outcome]


@dataclass(frozen=True)
class AccessToken:
    """A valid user access token for a program. ``access_token`` is the secret itself."""

    account_id: int
    access_token: str = field(repr=False)
    expires_at: datetime
    token_type: str = "Bearer"


class Refresher:
    """Owns the canonical refresh and ``get_access_token``."""

    def __init__(
        self,
        *,
        store: Store,
        journal: Journal,
        client: EbayClient,
        keyring: KeyRing,
        config: RefreshConfig,
        owner: str,
        ledger: QuotaLedger,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.ledger = ledger
        self.pacer = pacer or Pacer()
        self.client = client
        self.keyring = keyring
        self.config = config
        self.owner = owner
        self.clock = clock
        self.rng = rng or random.Random()
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiters: dict[int, int] = {}
        # Accounts an on-demand, admin or debug refresh of this process attempted lately, in
        # order: a worker claim of one re-reads its version before calling (an ordered set).
        self._taken_over: dict[int, None] = {}
        self.observers: list[RefreshObserver] = []
        # What this process served, to serve through a database outage (and never otherwise).
        self.served = ServedTokens(config.outage_memory)
        # (when, accepted): eBay's last word on the application credentials in this process,
        # so /readyz can say "invalid_client" until a call succeeds again.
        self.app_credentials: tuple[datetime, bool] | None = None
        # (when decided, whether eBay calls are spare): see _calls_are_spare.
        self._spare: tuple[datetime | None, bool] = (None, False)

    def _observed(self, result: RefreshResult, started: float) -> RefreshResult:
        elapsed = time.perf_counter() - started
        if result.called_ebay and not result.joined:
            if result.outcome is Outcome.INVALID_CLIENT:
                self.app_credentials = (self.clock(), False)
            elif result.ok:
                self.app_credentials = (self.clock(), True)
        for observer in self.observers:
            try:
                observer(result, elapsed)
            except Exception:  # an observer's bug must never fail a refresh
                logger.exception("refresh.observer_failed")
        return result

    @asynccontextmanager
    async def _account_lock(self, account_id: int) -> AsyncIterator[bool]:
        """Serialise this process's refreshes of one account; yields whether we had to wait."""
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        self._waiters[account_id] = self._waiters.get(account_id, 0) + 1
        waited = lock.locked()
        try:
            async with lock:
                yield waited
        finally:
            self._waiters[account_id] -= 1
            if self._waiters[account_id] == 0:
                del self._waiters[account_id]
                del self._locks[account_id]

    async def _snapshot(self, account_id: int) -> AccountToken:
        account = await self.store.account_token(account_id)
        if account is None:
            raise AccountNotFound(f"account {account_id} does not exist")
        return account

    # The canonical refresh -------------------------------------------------------------------

    async def refresh(
        self,
        account_id: int,
        trigger: Trigger,
        *,
        actor: str | None = None,
        seen: AccountToken | None = None,
    ) -> RefreshResult:
        """Refresh one account's access token through the one canonical path.

        ``seen`` is the state the caller based its decision on; if the token changed since
        (another caller refreshed it), that caller's result is returned instead of calling eBay.
        """
        started = time.perf_counter()
        return self._observed(await self._refresh(account_id, trigger, actor, seen), started)

    async def _refresh(
        self,
        account_id: int,
        trigger: Trigger,
        actor: str | None,
        seen: AccountToken | None,
    ) -> RefreshResult:
        if seen is None:
            seen = await self._snapshot(account_id)
        async with self._account_lock(account_id) as waited:
            if waited:
                current = await self._snapshot(account_id)
                if current.version != seen.version:
                    return await self._joined(current, trigger)
            if seen.state is TokenState.NEEDS_RECONNECT and trigger in (
                Trigger.SCHEDULED,
                Trigger.ON_DEMAND,
            ):
                return self._skipped(seen, trigger)
            account = await self._lease(seen)
            if account is None:
                return await self._joined(await self._snapshot(account_id), trigger)
            # This process's worker may hold a claim on the account (the lease is this process's
            # own, so the lease was taken over): that claim must see the new version first.
            self._note_refreshed_outside_claims(account_id)
            return await self._attempt_holding_lease(account, trigger, actor)

    def _note_refreshed_outside_claims(self, account_id: int) -> None:
        self._taken_over.pop(account_id, None)
        self._taken_over[account_id] = None
        if len(self._taken_over) > MAX_TAKEN_OVER:
            # The oldest goes: a claim racing a refresh races it within seconds, not hours.
            del self._taken_over[next(iter(self._taken_over))]

    async def refresh_claimed(self, account: AccountToken, trigger: Trigger) -> RefreshResult:
        """Refresh an account the worker already leased with :meth:`Store.claim_due`.

        The claim is the lease, so no second lease statement: a worker refresh costs one
        transaction of its own (the claim's two statements are shared by the whole batch).
        """
        started = time.perf_counter()
        async with self._account_lock(account.account_id) as waited:
            taken_over = account.account_id in self._taken_over
            if waited or taken_over:
                # Another refresh of this process ran while the claim waited (before it took the
                # lock, or with the lock released): if it changed the token, do not call again.
                self._taken_over.pop(account.account_id, None)
                current = await self._snapshot(account.account_id)
                if current.version != account.version:
                    return self._observed(await self._joined(current, trigger), started)
            # The worker reserved this call's quota slot when it claimed the account.
            result = await self._attempt_holding_lease(account, trigger, None, reserved=True)
        return self._observed(result, started)

    async def _attempt_holding_lease(
        self, account: AccountToken, trigger: Trigger, actor: str | None, *, reserved: bool = False
    ) -> RefreshResult:
        """Attempt with the lease held; a failure of our own gives the lease back at once."""
        finished = False
        try:
            result = await self._attempt(account, trigger, actor, reserved=reserved)
            finished = True
            return result
        finally:
            if not finished:
                await self._release_quietly(account.account_id)

    async def exchange_of(self, result: RefreshResult) -> ExchangeRecord | ExchangeRow | None:
        """The masked exchange behind a result (a joined result's comes from the journal)."""
        if result.exchange is not None:
            return result.exchange
        if result.exchange_id is None:
            return None
        return await self.journal.exchange(result.exchange_id)

    async def _lease(self, seen: AccountToken) -> AccountToken | None:
        """Take the lease; ``None`` when another caller changed the token meanwhile."""
        deadline = self.clock() + self.config.lease + LEASE_POLL
        # Also bounded in real time: an injected clock that does not move must not spin forever.
        real_deadline = time.monotonic() + (self.config.lease + LEASE_POLL).total_seconds()
        while True:
            now = self.clock()
            if await self.store.try_lease(
                seen.account_id,
                self.owner,
                now,
                now + self.config.lease,
                expected_version=seen.version,
            ):
                return seen
            current = await self._snapshot(seen.account_id)
            if current.version != seen.version:
                return None
            if now > deadline or time.monotonic() > real_deadline:
                # The holder neither finished nor let its lease expire on our clock: give up
                # rather than wait forever; the caller sees a transient failure.
                raise StoreError(f"account {seen.account_id} stayed leased by another worker")
            await asyncio.sleep(LEASE_POLL.total_seconds())

    async def _release_quietly(self, account_id: int) -> None:
        try:
            await self.store.release_lease(account_id, self.owner)
        except StoreError:
            # The lease expires by itself; the failure that brought us here is what matters.
            log.event(logger, "refresh.lease_release_failed", logging.WARNING, account=account_id)

    async def _attempt(
        self, account: AccountToken, trigger: Trigger, actor: str | None, *, reserved: bool
    ) -> RefreshResult:
        started = self.clock()
        exchange, classified = await self._call_ebay(account, started, reserved=reserved)
        now = self.clock()
        chosen = policy.effective(account.refresh_policy, self.config.policy)
        spare = chosen is policy.RefreshPolicy.AUTO and await self._calls_are_spare(now)

        def next_after_success(new_expiry: datetime) -> datetime | None:
            return policy.schedule(
                chosen,
                access_expires_at=new_expiry,
                use=account.use,
                last_success_at=now,
                now=now,
                config=self.config.policy,
                spare=spare,
            ).next_attempt_at

        transition = token_state.after_attempt(
            classified=classified,
            failures_in_row=account.failures_in_row,
            now=now,
            schedule=next_after_success,
            rng=self.rng,
            backoff=self.config.backoff,
        )
        try:
            access_ct, refresh_ct, refresh_expires = self._seal(account.account_id, classified)
        except CryptoError as exc:
            # eBay answered 200 with a token we refuse to store (e.g. one that looks encrypted).
            classified = Classified(Outcome.MALFORMED_RESPONSE, f"unusable token: {exc.message}")
            transition = token_state.after_attempt(
                classified=classified,
                failures_in_row=account.failures_in_row,
                now=now,
                schedule=next_after_success,
                rng=self.rng,
                backoff=self.config.backoff,
            )
            access_ct = refresh_ct = None
            refresh_expires = None
        written = await self.store.finish_refresh(
            RefreshWrite(
                account=account,
                lease_owner=self.owner,
                trigger=trigger,
                actor=actor,
                started_at=started,
                outcome=classified.outcome,
                error_message=None if classified.outcome is Outcome.OK else classified.message,
                exchange=exchange,
                transition=transition,
                access_token_ciphertext=access_ct,
                refresh_token_ciphertext=refresh_ct,
                refresh_expires_at=refresh_expires,
            )
        )
        log.event(
            logger,
            "refresh.finished",
            account=account.account_id,
            trigger=trigger.value,
            outcome=classified.outcome.value,
            status=exchange.status,
            sent=exchange.sent,
            fingerprint=exchange.token_fingerprint,
            state=transition.state.value,
            applied=written.applied,
        )
        base = RefreshResult(
            account_id=account.account_id,
            trigger=trigger,
            outcome=classified.outcome,
            message=classified.message,
            state=transition.state,
            state_reason=transition.reason,
            access_expires_at=transition.access_expires_at or account.access_expires_at,
            next_attempt_at=transition.next_attempt_at,
            called_ebay=exchange.sent,
            exchange=exchange,
            exchange_id=written.exchange_id,
            attempt_id=written.attempt_id,
            access_token=classified.grant.access_token if classified.grant else None,
        )
        if written.applied:
            return base
        why = (
            "the account was deleted during the refresh; only the exchange was recorded"
            if written.deleted
            else "another worker took over the lease; this result was not applied"
        )
        return dataclasses.replace(
            base,
            message=why,
            state=account.state,
            state_reason=account.state_reason,
            access_expires_at=account.access_expires_at,
            next_attempt_at=None,
            skipped=True,
            access_token=None,
        )

    def _seal(
        self, account_id: int, classified: Classified
    ) -> tuple[str | None, str | None, datetime | None]:
        """Encrypt what eBay granted: (access ciphertext, refresh ciphertext, refresh expiry)."""
        grant = classified.grant
        if grant is None:
            return None, None, None
        access_ct = self.keyring.encrypt(
            grant.access_token, account_id=account_id, field=TokenField.ACCESS_TOKEN
        )
        if grant.refresh_token is None:
            return access_ct, None, None
        # eBay does not rotate refresh tokens today; if it ever sends one, keep it.
        refresh_ct = self.keyring.encrypt(
            grant.refresh_token, account_id=account_id, field=TokenField.REFRESH_TOKEN
        )
        expires = (
            self.clock() + timedelta(seconds=grant.refresh_token_expires_in)
            if grant.refresh_token_expires_in is not None
            else None
        )
        return access_ct, refresh_ct, expires

    async def _call_ebay(
        self, account: AccountToken, now: datetime, *, reserved: bool
    ) -> tuple[ExchangeRecord, Classified]:
        """Validate the stored token and call eBay; refusals are decided here, before any HTTP.

        Unless the caller ``reserved`` it already (the worker, at its claim), the call takes its
        slot in the quota ledger first; with none left, ``QuotaExhausted`` and no call."""
        url = self.client.endpoints.token_url
        if account.refresh_expires_at is not None and account.refresh_expires_at <= now:
            message = "the refresh token expired; no request was sent"
            outcome = Outcome.REFRESH_TOKEN_EXPIRED
            return not_sent(Action.REFRESH_TOKEN, url, outcome, message), Classified(
                outcome, message
            )

        def decrypt(ciphertext: str) -> str:
            return self.keyring.decrypt(
                ciphertext, account_id=account.account_id, field=TokenField.REFRESH_TOKEN
            )

        try:
            request = build_refresh_request(
                account.refresh_token_ciphertext,
                decrypt=decrypt,
                scopes=account.scopes,
                app=self.client.app,
                endpoints=self.client.endpoints,
            )
        except (DecryptFailed, InvalidStoredToken) as exc:
            if isinstance(exc, DecryptFailed):
                outcome = Outcome.DECRYPT_FAILED
            elif account.refresh_token_ciphertext:
                outcome = Outcome.INVALID_STORED_TOKEN
            else:
                outcome = Outcome.NO_REFRESH_TOKEN
            message = f"{exc.message}; no request was sent"
            return not_sent(Action.REFRESH_TOKEN, url, outcome, message), Classified(
                outcome, message
            )
        if self.pacer.paused(now):
            # eBay said 429 for the application: nobody in this process calls until the pause ends.
            message = f"paused after eBay's 429 until {self.pacer.paused_until:%H:%M:%S}"
            outcome = Outcome.RATE_LIMITED
            fingerprint = self.keyring.fingerprint(request.secret) if request.secret else None
            retry_after = (self.pacer.paused_until or now) - now
            return not_sent(Action.REFRESH_TOKEN, url, outcome, message, fingerprint), Classified(
                outcome, message, retry_after=retry_after
            )
        if not reserved:
            await self._reserve_slot(account.account_id, now)
        await self.pacer.acquire()
        call = await self.client.send_token_request(request)
        if call.classified.outcome is Outcome.RATE_LIMITED:
            until = self.pacer.pause(self.clock(), call.classified.retry_after)
            log.event(logger, "refresh.paused", logging.WARNING, until=until.isoformat())
        return call.exchange, call.classified

    async def _joined(self, current: AccountToken, trigger: Trigger) -> RefreshResult:
        """Another caller refreshed while we waited: report its result instead of calling eBay."""
        attempts = await self.journal.attempts(current.account_id, limit=1)
        last = attempts[0] if attempts else None
        outcome = last.outcome if last is not None else Outcome.OK
        exchange_row = (
            await self.journal.exchange(last.exchange_id)
            if last is not None and last.exchange_id is not None
            else None
        )
        return RefreshResult(
            account_id=current.account_id,
            trigger=trigger,
            outcome=outcome,
            message=(last.error_message if last and last.error_message else outcome.value),
            state=current.state,
            state_reason=current.state_reason,
            access_expires_at=current.access_expires_at,
            next_attempt_at=current.next_attempt_at,
            called_ebay=False,
            joined=True,
            exchange_id=exchange_row.id if exchange_row else None,
            attempt_id=last.id if last else None,
        )

    def _skipped(self, account: AccountToken, trigger: Trigger) -> RefreshResult:
        reason = account.state_reason or Outcome.INVALID_GRANT.value
        try:
            outcome = Outcome(reason)
        except ValueError:
            outcome = Outcome.INVALID_GRANT
        return RefreshResult(
            account_id=account.account_id,
            trigger=trigger,
            outcome=outcome,
            message=f"needs reconnect ({reason}); not attempted",
            state=account.state,
            state_reason=account.state_reason,
            access_expires_at=account.access_expires_at,
            next_attempt_at=None,
            called_ebay=False,
            skipped=True,
        )

    # Programs' path --------------------------------------------------------------------------

    async def get_access_token(
        self,
        account_id: int,
        *,
        actor: str | None = None,
        organization_id: int | None = None,
    ) -> AccessToken:
        """A user access token valid for at least the margin, refreshing on demand if needed.

        Raises ``NeedsReconnect`` when only a new consent helps and ``RefreshFailed`` (code = the
        outcome) when eBay could not be reached; inside the cooldown after a failure the last
        failure is returned without calling eBay again.
        """
        try:
            account = await self._snapshot(account_id)
        except StoreUnavailable:
            held = self._held_through_outage(account_id, organization_id)
            if held is None:
                raise
            return held
        except AccountNotFound:
            self.served.forget(account_id)
            raise
        if organization_id is not None and account.organization_id != organization_id:
            # Another organization's account is indistinguishable from a missing one.
            raise AccountNotFound(f"account {account_id} does not exist")
        now = self.clock()
        decision = access.decide(
            state=account.state,
            has_access_token=account.access_token_ciphertext is not None,
            access_expires_at=account.access_expires_at,
            failures_in_row=account.failures_in_row,
            last_attempt_at=account.last_attempt_at,
            app_rejected_at=self._app_rejected_at(),
            now=now,
            margin=self.config.access_token_margin,
            cooldown=self.config.on_demand_cooldown,
        )
        if decision is Access.NEEDS_RECONNECT:
            self.served.forget(account_id)
            raise _needs_reconnect(account)
        if decision is Access.COOLING_DOWN:
            why = (
                APP_CREDENTIALS_REJECTED
                if account.last_error_code == Outcome.INVALID_CLIENT.value
                else f"last refresh failed ({account.last_error_code})"
            )
            raise RefreshFailed(
                f"account {account_id}: {why}; retry after the cooldown",
                code=account.last_error_code or "refresh_failed",
            )
        if decision is Access.APP_REJECTED:
            raise RefreshFailed(
                f"account {account_id}: {APP_CREDENTIALS_REJECTED}; retry after the cooldown",
                code=Outcome.INVALID_CLIENT.value,
            )
        if decision is Access.SERVE:
            token, scheduled_at = self._stored_token(account), account.next_attempt_at
        else:
            token, scheduled_at = await self._refreshed_token(account, actor)
        self.served.remember(
            Served(account_id, account.organization_id, token.access_token, token.expires_at)
        )
        try:
            await self._note_use(account, scheduled_at, token, now)
        except StoreUnavailable:
            # The token is valid and in hand; the use is bookkeeping the database can miss.
            log.event(logger, "token.use_not_noted", logging.WARNING, account=account_id)
        return token

    async def _note_use(
        self,
        account: AccountToken,
        scheduled_at: datetime | None,
        token: AccessToken,
        now: datetime,
    ) -> None:
        """Record the use (at most once a minute) and let ``auto`` keep a used account warm."""
        use = account.use
        if account.last_used_at is None or account.last_used_at < now - LAST_USED_THROTTLE:
            use = use.observed(now)
            await self.store.touch_last_used(account.account_id, use, now - LAST_USED_THROTTLE)
        chosen = policy.effective(account.refresh_policy, self.config.policy)
        moved = policy.after_use(
            chosen,
            scheduled_at=scheduled_at,
            access_expires_at=token.expires_at,
            use=use,
            now=now,
            config=self.config.policy,
            spare=chosen is policy.RefreshPolicy.AUTO and await self._calls_are_spare(now),
        )
        if moved is not None:
            # An `auto` account's use now pays for a warm token: keep it warm from now on.
            await self.store.reschedule(account.account_id, moved)

    async def _calls_are_spare(self, now: datetime) -> bool:
        """Whether eBay calls are spare now (``policy.calls_are_spare``), decided from the quota
        ledger at most once a minute per process: the token path must not read it each time."""
        checked_at, spare = self._spare
        if checked_at is not None and timedelta(0) <= now - checked_at < policy.SPARE_RECHECK:
            return spare
        grant = Action.REFRESH_TOKEN.value
        limit = self.config.quota.limits.get(grant, 0)
        try:
            buckets = await self.ledger.window(grant, now)
        except StoreError:
            return False  # not known: spend nothing extra
        history = now - buckets[0][0] if buckets else timedelta(0)
        projected = quota.project_buckets(buckets, now, limit).projected
        spare = policy.calls_are_spare(projected, history, limit, self.config.policy)
        self._spare = (now, spare)
        return spare

    def _held_through_outage(
        self, account_id: int, organization_id: int | None
    ) -> AccessToken | None:
        """The database does not answer: the token this process served last, while it stays
        valid beyond the margin (None: the outage's own error stands, a 503 with Retry-After)."""
        held = self.served.valid(
            account_id, organization_id, now=self.clock(), margin=self.config.access_token_margin
        )
        if held is None:
            return None
        log.event(logger, "token.served_through_outage", account=account_id)
        return AccessToken(account_id, held.access_token, held.expires_at)

    async def _reserve_slot(self, account_id: int, now: datetime) -> None:
        """Take one slot of eBay's rolling 24 h limit, or raise ``QuotaExhausted``: eBay would
        answer 429, so no call is made until the window's oldest call leaves it."""
        grant = Action.REFRESH_TOKEN.value
        limit = self.config.quota.limits.get(grant, 0)
        reservation = await self.ledger.reserve(grant, 1, limit, now)
        if reservation.granted:
            return
        frees = reservation.frees_at or now + self.config.on_demand_cooldown
        log.event(logger, "refresh.quota_exhausted", logging.WARNING, account=account_id)
        raise QuotaExhausted(
            f"account {account_id}: eBay's daily limit of {limit:,} refresh grants is used up "
            f"for the last 24 h; no call was made (raise it with eBay's Application Growth "
            f"Check, then set EBAY_CONNECTOR_DAILY_REFRESH_LIMIT)",
            retry_after=max(timedelta(seconds=1), frees - now),
        )

    async def _refreshed_token(
        self, account: AccountToken, actor: str | None
    ) -> tuple[AccessToken, datetime | None]:
        """Refresh on demand: the new token and the account's next scheduled attempt."""
        result = await self.refresh(
            account.account_id, Trigger.ON_DEMAND, actor=actor, seen=account
        )
        margin = self.config.access_token_margin
        if (
            result.access_token is not None
            and result.access_expires_at is not None
            and access.fresh(result.access_expires_at, now=self.clock(), margin=margin)
        ):
            token = AccessToken(account.account_id, result.access_token, result.access_expires_at)
            return token, result.next_attempt_at
        # Another caller's refresh (joined), or none that stored a token: the store has the word.
        current = await self._snapshot(account.account_id)
        if current.access_token_ciphertext is not None and access.fresh(
            current.access_expires_at, now=self.clock(), margin=margin
        ):
            return self._stored_token(current), current.next_attempt_at
        if current.state is TokenState.NEEDS_RECONNECT:
            raise _needs_reconnect(current)
        why = (
            APP_CREDENTIALS_REJECTED
            if result.outcome is Outcome.INVALID_CLIENT
            else f"refresh failed ({result.outcome.value})"
        )
        raise RefreshFailed(f"account {account.account_id}: {why}", code=result.outcome.value)

    def _app_rejected_at(self) -> datetime | None:
        """When eBay rejected the application's credentials, if that is its latest word."""
        verdict = self.app_credentials
        return verdict[0] if verdict is not None and not verdict[1] else None

    def _stored_token(self, account: AccountToken) -> AccessToken:
        """The stored access token, decrypted (the caller decided it is fresh)."""
        assert account.access_token_ciphertext is not None
        assert account.access_expires_at is not None
        plaintext = self.keyring.decrypt(
            account.access_token_ciphertext,
            account_id=account.account_id,
            field=TokenField.ACCESS_TOKEN,
        )
        return AccessToken(account.account_id, plaintext, account.access_expires_at)


def _needs_reconnect(account: AccountToken) -> NeedsReconnect:
    reason = account.state_reason or "needs_reconnect"
    return NeedsReconnect(
        f"account {account.account_id} needs to be reconnected ({reason})", reason=reason
    )
