"""The worker's own pace, as pure decisions: how many due accounts to claim next, what a finished
refresh says to the claiming, and how long to sleep between cycles.

Claim-ahead: up to ``concurrency`` refreshes run at once and an eighth more are claimed ahead, so a
slot that frees starts its next account at once instead of waiting for a claim's round trip (see
docs/decisions.md, "Claim-ahead"). The claiming stops while eBay asks for a pause (429), when the
cycle's quota budget is spent, and on ``invalid_client``: then the next cycles probe with one
account at a time until eBay gets past the application's credentials again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from ebay_connector.core.outcome import Outcome

MAX_WAKE = timedelta(seconds=60)  # the worker looks at least this often
MIN_WAKE = timedelta(seconds=1)
REFILL_DIVISOR = 8  # claim again once an eighth of the slots are free


class ClaimAction(enum.StrEnum):
    WAIT = "wait"  # enough is running or claimed ahead: claim when more slots free up
    CLAIM = "claim"
    DEFER_PAUSE = "defer_pause"  # eBay asked for a pause (429): leave the rest for later
    DEFER_QUOTA = "defer_quota"  # the cycle's share of the daily quota is spent


@dataclass(frozen=True)
class ClaimStep:
    action: ClaimAction
    size: int = 0  # how many to claim (CLAIM only)


def refill_at(concurrency: int) -> int:
    """How many slots must be free before the next claim, and how many are claimed ahead."""
    return max(1, concurrency // REFILL_DIVISOR)


def next_claim(
    *,
    concurrency: int,
    in_flight: int,
    ready: int,
    claimed: int,
    budget: int,
    probing: bool,
    paused: bool,
) -> ClaimStep:
    """The next claim of a cycle that has ``in_flight`` refreshes running and ``ready`` accounts
    claimed but not started, after claiming ``claimed`` of its ``budget``.

    ``probing``: eBay rejected the application's credentials, so one account at a time until an
    answer gets past them. ``paused``: eBay's 429 pause is on.
    """
    if probing:
        want = 0 if in_flight else 1
    else:
        ahead = refill_at(concurrency)
        want = concurrency + ahead - in_flight - ready
        if want < ahead and in_flight:
            want = 0  # batches, not one round trip per freed slot
    if want <= 0:
        return ClaimStep(ClaimAction.WAIT)
    if paused:
        return ClaimStep(ClaimAction.DEFER_PAUSE)
    size = min(want, budget - claimed)
    if size <= 0:
        return ClaimStep(ClaimAction.DEFER_QUOTA)
    return ClaimStep(ClaimAction.CLAIM, size)


class AppVerdict(enum.StrEnum):
    """What one finished refresh says about the application's credentials (not the account)."""

    UNHEARD = "unheard"  # eBay was not asked: refused before any HTTP, or another caller's result
    REJECTED = "rejected"  # invalid_client: stop claiming, every account would get that answer
    PASSED = "passed"  # eBay got past the credentials, yet the refresh failed: claim widely again
    ACCEPTED = "accepted"  # eBay issued a token: the credentials work, no probe next cycle


def app_verdict(outcome: Outcome, *, called_ebay: bool, joined: bool) -> AppVerdict:
    if not called_ebay or joined:
        return AppVerdict.UNHEARD
    if outcome is Outcome.INVALID_CLIENT:
        return AppVerdict.REJECTED
    return AppVerdict.ACCEPTED if outcome is Outcome.OK else AppVerdict.PASSED


def next_wake(
    now: datetime, next_due: datetime | None, interval: timedelta, deferred: bool
) -> timedelta:
    """How long to sleep: until the next account is due, at most ``interval`` (and 60 s)."""
    longest = min(interval, MAX_WAKE)
    if deferred or next_due is None:
        return longest
    return max(MIN_WAKE, min(longest, next_due - now))
