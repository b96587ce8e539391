"""What a crash or an outage must not cost, read from the database and the emulator (``soak.py``).

The same invariants as the crash tests of the suite (tests/acceptance/test_crash.py), read
directly from the database (never through the proxy the product's processes use) and from the
in-process emulator's records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ebay_connector.core.clock import utcnow
from ebay_connector.db import models as m
from ebay_connector.emulator import Emulator
from ebay_connector.errors import CryptoError
from ebay_connector.keys.crypto import TokenField
from ebay_connector.runtime import Runtime


@dataclass(frozen=True)
class Invariants:
    """Every field but the last two must be 0."""

    accounts: int
    accounts_lost: int  # gone, not active, or neither holding a valid token nor scheduled
    tokens_lost: int  # a stored token that does not decrypt or that eBay no longer honours
    double_refreshes: int  # two applied refreshes that started from the same token
    stuck_attempts: int  # incomplete attempt rows + leases held past their expiry
    half_written: int  # an account without its token row, an exchange without its attempt
    unrecorded_ebay_calls: int  # eBay answered a refresh a kill kept from being recorded
    leased_now: int  # leases still running (not yet expired)


async def _scalar(runtime: Runtime, statement: Any) -> int:
    async with runtime.db.read() as conn:
        return int((await conn.execute(statement)).scalar_one())


def _emulator_honours(emu: Emulator, username: str, refresh_token: str) -> bool:
    """Whether eBay (the emulator) still knows this refresh token as ``username``'s grant."""
    _, owner = emu.faults_for(form={"grant_type": "refresh_token", "refresh_token": refresh_token})
    return owner == username


async def check_invariants(runtime: Runtime, emu: Emulator, *, usernames: set[str]) -> Invariants:
    """``usernames``: the accounts seeded before the run (one missing afterwards is lost)."""
    now = utcnow()
    ring = runtime.keys.ring
    accounts = await runtime.store.accounts()
    lost = tokens_lost = 0
    present = set()
    for account in accounts:
        present.add(account.ebay_username)
        try:
            refresh = ring.decrypt(
                account.refresh_token_ciphertext or "",
                account_id=account.account_id,
                field=TokenField.REFRESH_TOKEN,
            )
            if account.access_token_ciphertext:
                ring.decrypt(
                    account.access_token_ciphertext,
                    account_id=account.account_id,
                    field=TokenField.ACCESS_TOKEN,
                )
            if not _emulator_honours(emu, account.ebay_username, refresh):
                tokens_lost += 1
        except CryptoError:
            tokens_lost += 1
        fresh = account.access_expires_at is not None and account.access_expires_at > now
        if account.state.value != "active" or not (fresh or account.next_attempt_at is not None):
            lost += 1
    lost += len(usernames - present)
    per_start = (
        sa.select(sa.func.count().label("n"))
        .where(m.RefreshAttempt.new_expires_at.is_not(None), m.RefreshAttempt.outcome == "ok")
        .group_by(m.RefreshAttempt.account_id, m.RefreshAttempt.old_expires_at)
        .subquery()
    )
    doubles = await _scalar(
        runtime, sa.select(sa.func.count()).select_from(per_start).where(per_start.c.n > 1)
    )
    incomplete = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.RefreshAttempt)
        .where(sa.or_(m.RefreshAttempt.finished_at.is_(None), m.RefreshAttempt.outcome.is_(None))),
    )
    expired_leases = sum(
        1 for a in accounts if a.lease_owner is not None and (a.lease_until or now) < now
    )
    leased_now = sum(1 for a in accounts if a.lease_owner is not None) - expired_leases
    without_token = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.EbayAccount)
        .outerjoin(m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
        .where(m.EbayToken.account_id.is_(None)),
    )
    # A scheduled refresh's exchange is written in the same transaction as its attempt.
    orphan_exchanges = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.EbayExchange)
        .outerjoin(m.RefreshAttempt, m.RefreshAttempt.exchange_id == m.EbayExchange.id)
        .where(
            m.EbayExchange.trigger == "scheduled",
            m.EbayExchange.account_id.is_not(None),
            m.RefreshAttempt.id.is_(None),
        ),
    )
    recorded = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.EbayExchange)
        .where(m.EbayExchange.action == "refresh_token", m.EbayExchange.status == 200),
    )
    answered = emu.calls.count(grant_type="refresh_token", status=200)
    return Invariants(
        accounts=len(accounts),
        accounts_lost=lost,
        tokens_lost=tokens_lost,
        double_refreshes=doubles,
        stuck_attempts=incomplete + expired_leases,
        half_written=without_token + orphan_exchanges,
        unrecorded_ebay_calls=max(0, answered - recorded),
        leased_now=leased_now,
    )
