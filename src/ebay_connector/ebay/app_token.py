"""The application token: one client-credentials token per eBay environment, shared by all.

eBay grants only 1,000 client-credentials tokens per application per day (docs/ebay-oauth.md
§5.4), and each lives 7,200 s (§6). So the token is kept in the store (``app_tokens``, sealed with
``app_token/<environment>`` as associated data) and every process reuses it until it is within
:data:`MARGIN` of its end. When a new one is needed exactly one process asks eBay: it takes the
row's lease in one compare-and-set ``UPDATE`` (SQLite serialises writers; on PostgreSQL the row
lock makes a second ``UPDATE`` re-check its condition and match nothing), the others wait for
the row to hold a fresh token. Within a process an ``asyncio.Lock`` keeps concurrent callers to
one database round. Each grant is journaled like every other eBay call (action
``client_credentials``), so it counts in the day's quota figures.

:class:`AppTokenChore` renews the token ahead of its end, but only while something uses it:
an idle installation spends nothing of the 1,000.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ebay_connector import log
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db import journal
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.ebay.client import EbayClient
from ebay_connector.errors import AppTokenUnavailable, CryptoError
from ebay_connector.keys.crypto import KeyRing

logger = logging.getLogger(__name__)

API_SCOPE = "https://api.ebay.com/oauth/api_scope"
MARGIN = timedelta(minutes=5)  # never hand out a token with less left (eBay's clients: 5 min)
RENEW_AHEAD = timedelta(minutes=15)  # the chore renews this long before the end...
RECENT_USE = timedelta(hours=2)  # ...only if the token was used this recently (one lifetime)
USE_WRITE_INTERVAL = timedelta(minutes=5)  # last_used_at is written at most this often
DEFAULT_LEASE = timedelta(seconds=120)
WAIT_POLL_S = 0.05  # how often a process waiting for another's grant looks at the row


@dataclass(frozen=True)
class Cached:
    token: str
    expires_at: datetime


def usable(expires_at: datetime | None, now: datetime, margin: timedelta) -> bool:
    """A token is handed out only while it has more than ``margin`` left."""
    return expires_at is not None and expires_at - margin > now


def renewal_due(
    expires_at: datetime | None,
    last_used_at: datetime | None,
    now: datetime,
    *,
    ahead: timedelta = RENEW_AHEAD,
    recent_use: timedelta = RECENT_USE,
) -> bool:
    """The chore renews a token that ends within ``ahead`` and was used within ``recent_use``."""
    if last_used_at is None or now - last_used_at > recent_use:
        return False
    return not usable(expires_at, now, ahead)


@dataclass(frozen=True)
class _Row:
    ciphertext: str | None
    expires_at: datetime | None
    last_used_at: datetime | None


class AppTokens:
    """The shared application token of one environment: :meth:`get` returns a valid one."""

    def __init__(
        self,
        *,
        db: Database,
        client: EbayClient,
        keyring: KeyRing,
        environment: str,
        owner: str,
        clock: Clock = utcnow,
        scopes: Sequence[str] = (API_SCOPE,),
        lease: timedelta = DEFAULT_LEASE,
        margin: timedelta = MARGIN,
    ) -> None:
        self.db = db
        self.client = client
        self.keyring = keyring
        self.environment = environment
        self.owner = owner
        self.clock = clock
        self.scopes = tuple(scopes)
        self.lease = lease
        self.margin = margin
        self._cached: Cached | None = None
        self._use_written: datetime | None = None
        self._lock = asyncio.Lock()

    @property
    def _context(self) -> str:
        return f"app_token/{self.environment}"

    async def get(self) -> str:
        """A token valid for more than :data:`MARGIN`; asks eBay only when the store has none.

        Raises ``AppTokenUnavailable`` when eBay refuses or fails (nothing is cached then).
        """
        cached = self._cached
        if cached is not None and usable(cached.expires_at, self.clock(), self.margin):
            await self._note_use()
            return cached.token
        async with self._lock:
            token = await self._obtain(self.margin, Trigger.ON_DEMAND)
        await self._note_use()
        return token

    async def renew_if_due(self) -> bool:
        """Renew ahead of the end when the token is in use (the chore); True if renewed."""
        row = await self._read()
        now = self.clock()
        if row is None or not renewal_due(row.expires_at, row.last_used_at, now):
            return False
        async with self._lock:
            before = self._cached
            await self._obtain(RENEW_AHEAD, Trigger.SCHEDULED)
            return self._cached is not before

    # The slow path ---------------------------------------------------------------------------

    async def _obtain(self, margin: timedelta, trigger: Trigger) -> str:
        """A token with more than ``margin`` left: from the store, or minted by one process."""
        deadline = time.monotonic() + self.lease.total_seconds() + 5
        while True:
            row = await self._read()
            now = self.clock()
            token = None if row is None else self._open(row)
            if row is not None and token is not None and usable(row.expires_at, now, margin):
                assert row.expires_at is not None
                self._cached = Cached(token, row.expires_at)
                return token
            # A token the ring cannot open is replaced whatever its expiry says.
            unreadable = row is not None and row.ciphertext is not None and token is None
            if await self._take_lease(now, margin, unreadable=unreadable):
                return await self._mint(trigger)
            if time.monotonic() > deadline:
                raise AppTokenUnavailable(
                    "another process is getting the application token and has not finished"
                )
            # Another process holds the lease and is asking eBay right now: wait for its token.
            await asyncio.sleep(WAIT_POLL_S)

    def _open(self, row: _Row) -> str | None:
        if row.ciphertext is None:
            return None
        try:
            return self.keyring.open(row.ciphertext, context=self._context)
        except CryptoError:
            # Sealed with a key the ring lost: as if there were none (a new one costs one grant).
            return None

    async def _read(self) -> _Row | None:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(
                    m.AppToken.ciphertext, m.AppToken.expires_at, m.AppToken.last_used_at
                ).where(m.AppToken.environment == self.environment)
            )
            row = result.first()
            return None if row is None else _Row(row[0], row[1], row[2])

    async def _take_lease(self, now: datetime, margin: timedelta, *, unreadable: bool) -> bool:
        """Compare-and-set: lease the row if it is free and its token needs replacing."""
        async with self.db.transaction() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            await conn.execute(
                dialect.insert(m.AppToken)
                .values(environment=self.environment, scopes=" ".join(self.scopes), updated_at=now)
                .on_conflict_do_nothing(index_elements=["environment"])
            )
            stale = sa.or_(
                m.AppToken.ciphertext.is_(None),
                m.AppToken.expires_at.is_(None),
                m.AppToken.expires_at <= now + margin,
                sa.true() if unreadable else sa.false(),
            )
            result = await conn.execute(
                sa.update(m.AppToken)
                .where(
                    m.AppToken.environment == self.environment,
                    sa.or_(m.AppToken.lease_until.is_(None), m.AppToken.lease_until < now),
                    stale,
                )
                .values(lease_owner=self.owner, lease_until=now + self.lease)
            )
            return bool(result.rowcount)

    async def _mint(self, trigger: Trigger) -> str:
        """Ask eBay (we hold the lease); store the token and the exchange in one transaction."""
        started = self.clock()
        call = await self.client.send_token_request(
            self.client.application_token_request(self.scopes)
        )
        grant = call.classified.grant
        ok = call.classified.outcome is Outcome.OK and grant is not None
        now = self.clock()
        values: Mapping[str, object]
        if ok and grant is not None:
            expires_at = started + timedelta(seconds=grant.expires_in)
            values = {
                "ciphertext": self.keyring.seal(grant.access_token, context=self._context),
                "expires_at": expires_at,
                "scopes": " ".join(self.scopes),
            }
            if trigger is Trigger.ON_DEMAND:
                # A caller is using it; a renewal by the chore is not a use (or renewals would
                # keep an unused token alive forever).
                values = {**values, "last_used_at": now}
        else:
            values = {}
        async with self.db.transaction() as conn:
            await journal.insert_exchange(
                conn, call.exchange, None, None, self.environment, trigger, now
            )
            await conn.execute(
                sa.update(m.AppToken)
                .where(
                    m.AppToken.environment == self.environment, m.AppToken.lease_owner == self.owner
                )
                .values(lease_owner=None, lease_until=None, updated_at=now, **values)
            )
        log.event(
            logger,
            "app_token.granted" if ok else "app_token.failed",
            logging.INFO if ok else logging.WARNING,
            environment=self.environment,
            outcome=call.classified.outcome.value,
            trigger=trigger.value,
        )
        if not ok or grant is None:
            raise AppTokenUnavailable(
                f"eBay did not grant an application token: {call.classified.message}"
            )
        self._cached = Cached(grant.access_token, started + timedelta(seconds=grant.expires_in))
        if trigger is Trigger.ON_DEMAND:
            self._use_written = now
        return grant.access_token

    async def _note_use(self) -> None:
        """Record that the token is in use (the chore renews only used tokens), throttled."""
        now = self.clock()
        if self._use_written is not None and now - self._use_written < USE_WRITE_INTERVAL:
            return
        self._use_written = now
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.AppToken)
                .where(m.AppToken.environment == self.environment)
                .values(last_used_at=now)
            )


class AppTokenChore:
    """Renews the application token ahead of its end while it is in use."""

    name = "app_token"

    def __init__(self, tokens: AppTokens) -> None:
        self.tokens = tokens

    async def run(self, now: datetime) -> Mapping[str, int]:
        return {"renewed": 1} if await self.tokens.renew_if_due() else {}
