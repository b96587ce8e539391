"""The access tokens this process served, kept in memory to serve through a database outage.

When the database does not answer, a program asking for an account's token still gets the one
this process handed out last, as long as that token stays valid beyond the margin: eBay honours it
whatever our database is doing. Nothing else is ever served from here — while the database
answers, every request reads it, so a disconnect, a revocation or a needs-reconnect is honoured at
once. The memory is bounded (the least recently served entry goes first), holds nothing past
its token's expiry, and is never written anywhere (docs/security.md, "Held in memory").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_CAPACITY = 10_000  # accounts; an entry is a few hundred bytes


@dataclass(frozen=True)
class Served:
    account_id: int
    organization_id: int
    access_token: str
    expires_at: datetime

    def __repr__(self) -> str:  # the token is a secret: never in a traceback or a log
        return f"Served(account_id={self.account_id}, expires_at={self.expires_at.isoformat()})"


class ServedTokens:
    """A bounded, expiring map of account id → the access token last served for it."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError("capacity must not be negative")
        self.capacity = capacity
        self._entries: OrderedDict[int, Served] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, served: Served) -> None:
        if self.capacity == 0:
            return
        self._entries[served.account_id] = served
        self._entries.move_to_end(served.account_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, account_id: int) -> None:
        self._entries.pop(account_id, None)

    def valid(
        self, account_id: int, organization_id: int | None, *, now: datetime, margin: timedelta
    ) -> Served | None:
        """The remembered token if it is still valid beyond ``margin`` (expired ones are dropped).

        ``organization_id``: the caller's organization; another organization's account is not
        served (and looks missing, as it does with the database)."""
        served = self._entries.get(account_id)
        if served is None:
            return None
        if served.expires_at <= now + margin:
            del self._entries[account_id]
            return None
        if organization_id is not None and served.organization_id != organization_id:
            return None
        return served
