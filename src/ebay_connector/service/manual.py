"""Refreshes a person asks for (the admin and debug buttons, the admin API), held to limits.

Each one is an eBay call from the application's shared daily quota, so an organization and each
of its accounts get an allowance per window; beyond it the answer is ``rate_limited`` with when
to try again, and eBay is not called. An account that needs reconnecting is only refreshed when
the admin insists (``force``): eBay would refuse the refresh token anyway. A debug refresh is
that insistence by nature (it exists to show what eBay answers), so it is always forced.

Two counts decide, and the stricter wins: this process's own takes (they include refreshes still
in flight) and the calls the journal holds from every process (so replicas share one allowance).
"""

from __future__ import annotations

from dataclasses import dataclass

from ebay_connector.core.allowance import Allowance, wait_after
from ebay_connector.core.clock import Clock
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.token_state import TokenState
from ebay_connector.db.journal import Journal
from ebay_connector.db.store import AccountToken
from ebay_connector.errors import NeedsReconnect, RateLimited
from ebay_connector.service.refresh import Refresher, RefreshResult


@dataclass
class ManualRefreshes:
    refresher: Refresher
    per_account: Allowance
    per_organization: Allowance
    journal: Journal
    clock: Clock

    async def refresh(
        self, account: AccountToken, trigger: Trigger, *, actor: str, force: bool = False
    ) -> RefreshResult:
        forced = force or trigger is Trigger.DEBUG
        if account.state is TokenState.NEEDS_RECONNECT and not forced:
            raise NeedsReconnect(
                f"{account.label} needs the seller to reconnect; eBay was not called "
                "(force the refresh to try anyway)",
                reason=account.state_reason or "needs_reconnect",
            )
        now = self.clock()
        org, own = self.per_organization, self.per_account
        window = max(org.window, own.window)
        by_org, by_account = await self.journal.manual_calls_since(
            account.organization_id, account.account_id, now - window, max(org.limit, own.limit)
        )
        waits = [
            org.wait(account.organization_id, now),
            own.wait(account.account_id, now),
            wait_after(by_org, org.limit, org.window, now),
            wait_after(by_account, own.limit, own.window, now),
        ]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise RateLimited(
                "too many manual refreshes; they spend the application's shared eBay quota",
                retry_after=wait,
            )
        self.per_organization.take(account.organization_id, now)
        self.per_account.take(account.account_id, now)
        return await self.refresher.refresh(account.account_id, trigger, actor=actor)
