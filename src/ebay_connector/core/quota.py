"""eBay's daily limits on the token endpoint, and how much of them proactive work may spend.

Usage is counted from the exchange records (every call actually sent), over eBay's rolling
24-hour window, so every replica sees the same numbers without a coordinator. Proactive work
stops before the reserve (default 20 %) is touched; on-demand refreshes and connects may use it.
Nothing is sent once the window holds the whole limit (eBay would answer 429): a program's
request is refused until the oldest call of the window leaves it.

The limit itself is kept by reservations, not by counting after the fact: every refresh grant
takes a slot in a ledger of per-minute buckets before it is sent, atomically with the count of
the window, so concurrent callers and replicas can never together pass it. A bucket counts
while any part of its minute lies in the window: at most one minute's calls are counted longer
than eBay counts them, never shorter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ebay_connector.core.exchange import Action

WINDOW = timedelta(hours=24)
# The projection extrapolates the pace of the last 12 h (a day's growth shows in it), but never
# from less than 6 h (accounts connected together refresh together: a burst is not a day's pace;
# see docs/decisions.md, "Projecting the next 24 h").
PACE = timedelta(hours=12)
MIN_PACE = timedelta(hours=6)
REARM_SHARE = 0.9  # a crossing is over once the projection is back under 90 % of the limit
DEFAULT_DAILY_LIMITS: Mapping[str, int] = {
    Action.REFRESH_TOKEN.value: 50_000,
    Action.AUTHORIZATION_CODE.value: 10_000,
    Action.CLIENT_CREDENTIALS.value: 1_000,
}


@dataclass(frozen=True)
class QuotaConfig:
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_DAILY_LIMITS))
    reserve_share: float = 0.2  # kept for on-demand refreshes and connects

    def proactive_ceiling(self) -> int:
        """Refresh grants a window may hold before background work stops (the reserve's edge)."""
        limit = self.limits.get(Action.REFRESH_TOKEN.value, 0)
        return math.floor(limit * (1 - self.reserve_share))


@dataclass(frozen=True)
class QuotaState:
    """Calls sent per grant type over the last 24 hours, against the limits."""

    used: Mapping[str, int]
    config: QuotaConfig

    def remaining(self, grant: str) -> int:
        return max(0, self.config.limits.get(grant, 0) - self.used.get(grant, 0))

    def window_full(self, grant: str) -> bool:
        """Whether a call of this grant type now would pass eBay's limit."""
        return self.remaining(grant) <= 0

    def proactive_budget(self) -> int:
        """Refresh grants background work may still spend before it reaches the reserve."""
        used = self.used.get(Action.REFRESH_TOKEN.value, 0)
        return max(0, self.config.proactive_ceiling() - used)

    def to_dict(self) -> dict[str, Any]:
        return {
            grant: {
                "used": self.used.get(grant, 0),
                "limit": limit,
                "remaining": self.remaining(grant),
            }
            for grant, limit in self.config.limits.items()
        } | {"proactive_budget": self.proactive_budget()}


BUCKET = timedelta(minutes=1)


def bucket_of(moment: datetime) -> datetime:
    """The ledger bucket (its minute) a call sent at ``moment`` counts in."""
    return moment.replace(second=0, microsecond=0)


def counted_after(now: datetime) -> datetime:
    """Buckets that start after this moment still count in the window ending ``now``."""
    return now - WINDOW - BUCKET


def grantable(used: int, wanted: int, ceiling: int) -> int:
    """How many of ``wanted`` calls fit under ``ceiling`` with ``used`` already in the window."""
    return max(0, min(wanted, ceiling - used))


def slot_frees_at(buckets: list[tuple[datetime, int]], ceiling: int) -> datetime | None:
    """When the window (``buckets``: oldest first, with their calls) has room for one more call
    under ``ceiling`` again; None when it has room now."""
    used = sum(calls for _, calls in buckets)
    leave = calls_to_leave(used, ceiling)
    if leave <= 0:
        return None
    gone = 0
    for minute, calls in buckets:
        gone += calls
        if gone >= leave:
            # The bucket stops counting once its whole minute is older than 24 h.
            return minute + BUCKET + WINDOW
    return None  # a ceiling of 0 (nothing may be sent) never frees; the caller retries later


def frees_at(window_calls: int, limit: int, nth_oldest: datetime) -> datetime | None:
    """When the rolling window has room for one more call again.

    ``nth_oldest`` is the ``window_calls - limit + 1``-th oldest call still in the window (see
    :func:`calls_to_leave`); ``None`` when the window is not full.
    """
    if window_calls < limit:
        return None
    # The window [now - 24 h, now] still holds a call made exactly 24 h ago: one second later.
    return nth_oldest + WINDOW + timedelta(seconds=1)


def calls_to_leave(window_calls: int, limit: int) -> int:
    """How many of the oldest calls must leave the window before one more call fits."""
    return max(0, window_calls - limit + 1)


@dataclass(frozen=True)
class Projection:
    """Refresh grants the next 24 h will take if the recent pace holds, against the limit."""

    used: int  # sent over the last 24 h
    projected: int
    limit: int

    @property
    def exceeded(self) -> bool:
        """Reaching the limit is enough: the next call past it would be refused."""
        return self.projected >= self.limit

    @property
    def rearmed(self) -> bool:
        """Far enough under the limit that passing it again is a new crossing."""
        return self.projected < REARM_SHARE * self.limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "used_24h": self.used,
            "projected_24h": self.projected,
            "limit": self.limit,
            "exceeded": self.exceeded,
        }


def pace_span(history: timedelta) -> timedelta:
    """Over how long the recent pace is measured, given how old the window's oldest call is."""
    return min(PACE, max(history, MIN_PACE))


def project(used: int, recent: int, history: timedelta, limit: int) -> Projection:
    """Project the next 24 h from the last 24 h.

    ``used`` calls were sent over the last 24 h, ``recent`` of them over the last ``min(PACE,
    history)``, where ``history`` is how long ago the oldest of them was sent. The next 24 h take
    that recent pace over a whole day, and never fewer than the last 24 h took: with the window
    full, the pace shows the limit itself, so a crossing lasts as long as the demand does.
    """
    paced = math.ceil(recent * (WINDOW / pace_span(history)))
    return Projection(used, max(used, paced), limit)


def project_buckets(buckets: list[tuple[datetime, int]], now: datetime, limit: int) -> Projection:
    """:func:`project` over the quota ledger's buckets (oldest first) of the window ending
    ``now``."""
    used = sum(calls for _, calls in buckets)
    if not used:
        return Projection(0, 0, limit)
    history = now - buckets[0][0]
    since = now - pace_span(history)
    recent = sum(calls for minute, calls in buckets if minute >= since)
    return project(used, recent, history, limit)
