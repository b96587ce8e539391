"""When should the worker refresh an account? A pure function of the account's use and tokens.

eBay allows an application 50,000 refresh grants a day. Refreshing every account 15 minutes
before its 2-hour token expires spends 12 grants per account per day whether or not anybody uses
the account, so the default policy spends them only where a program needs a token:

    proactive  keep the access token valid at all times (refresh inside the refresh-ahead window)
    on_demand  never refresh in the background; programs' requests refresh when they need to
    auto       proactive while keeping the token warm pays for itself: while the account's
               learned rate of use (:mod:`ebay_connector.core.usage`) makes a use of the next
               token likely (default: 80 %); otherwise on demand, plus one validity probe every
               few days so that a revoked grant is found before a seller needs the account.
               While the application spends little of eBay's daily limit (a projected 24 h
               under 10 % of it, at the recent pace), calls are not scarce: every account used
               in the last 12 h is kept warm, so a second use soon after the first does not
               wait either

A warm refresh costs a call whether or not the token is then used; on demand, that call is
made only when a program asks, and the program waits for it. So an account is kept warm only
when the new token will very likely serve a request, and a regular user's refresh (an order sync
every 15 minutes) is timed just before the first request the old token cannot serve, so each
token serves as many requests as it can.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from ebay_connector.core.usage import Use

# eBay's user access tokens live 2 h: the window a warm refresh's token can serve requests in.
TOKEN_LIFETIME = timedelta(hours=2)
# How long a process keeps its word on whether calls are spare before it reads the ledger again.
SPARE_RECHECK = timedelta(minutes=1)
# Calls are never called spare on less history than this: a shop's first minutes (accounts just
# connected, nothing refreshed yet) say nothing of its pace. With none, 20,000 accounts kept a
# few hundred tokens warm in their first minute and refused 7,000 more requests that week.
SPARE_MIN_HISTORY = timedelta(minutes=10)


class RefreshPolicy(enum.StrEnum):
    AUTO = "auto"
    PROACTIVE = "proactive"
    ON_DEMAND = "on_demand"


class Reason(enum.StrEnum):
    """Why the account is scheduled as it is (shown to operators)."""

    PROACTIVE = "proactive"  # keep the token valid
    RECENTLY_USED = "recently_used"  # auto, in use: the next token will likely serve a request
    PROBE = "probe"  # auto, idle: daily validity probe
    ON_DEMAND = "on_demand"  # nothing scheduled


@dataclass(frozen=True)
class PolicyConfig:
    default: RefreshPolicy = RefreshPolicy.AUTO
    refresh_ahead: timedelta = timedelta(minutes=15)
    recent_use: timedelta = timedelta(hours=6)
    probe_interval: timedelta = timedelta(days=3)
    # Keep warm only while a use of the next token is at least this likely.
    warm_use_share: float = 0.8
    # A token this close to its expiry is not served (RefreshConfig.access_token_margin).
    access_token_margin: timedelta = timedelta(minutes=5)
    # A regular user's refresh runs this long before its next expected use: two worker wakes.
    lead: timedelta = timedelta(minutes=2)
    # While the next 24 h are projected to spend less than this share of eBay's daily limit,
    # every account used within ``spare_recent_use`` is kept warm (the spend then rises towards
    # the share, and the rule switches itself off there).
    spare_share: float = 0.1
    spare_recent_use: timedelta = timedelta(hours=12)


@dataclass(frozen=True)
class Schedule:
    next_attempt_at: datetime | None
    reason: Reason


def effective(account_policy: str | None, config: PolicyConfig) -> RefreshPolicy:
    return RefreshPolicy(account_policy) if account_policy else config.default


def calls_are_spare(
    projected_24h: int, history: timedelta, daily_limit: int, config: PolicyConfig
) -> bool:
    """Whether the next 24 h, at the recent pace, spend so little of the daily limit that calls
    are not scarce (the pace, not the window: a large shop's first hours already show it).
    ``history``: how far back the window's calls go."""
    return history >= SPARE_MIN_HISTORY and projected_24h < config.spare_share * daily_limit


def keep_warm(use: Use, now: datetime, config: PolicyConfig, *, spare: bool = False) -> bool:
    """Whether an ``auto`` account's token is worth keeping valid in the background: a use of
    the next token is likely, or the account was used lately and calls are ``spare``."""
    if use.last_used_at is None:
        return False
    idle = now - use.last_used_at
    if spare and idle < config.spare_recent_use:
        return True
    if idle >= config.recent_use:
        return False
    return use.chance_of_use(TOKEN_LIFETIME, now) >= config.warm_use_share


def warm_refresh_at(
    access_expires_at: datetime, use: Use, now: datetime, config: PolicyConfig
) -> datetime:
    """When to refresh a warm account: ``refresh_ahead`` before expiry, or, for a regular user,
    just before the first request the current token cannot serve (the old token then serves
    every request it can, and the new one starts as late as it may)."""
    ahead = access_expires_at - config.refresh_ahead
    unusable = access_expires_at - config.access_token_margin
    expected = use.next_use_after(unusable, now, slack=config.refresh_ahead)
    if expected is None or use.jitter_s is None:
        return ahead
    return max(ahead, expected - config.lead - timedelta(seconds=3 * use.jitter_s))


def schedule(
    policy: RefreshPolicy,
    *,
    access_expires_at: datetime | None,
    use: Use,
    last_success_at: datetime | None,
    now: datetime,
    config: PolicyConfig,
    spare: bool = False,
) -> Schedule:
    """The next time the worker should refresh this (healthy) account, and why."""
    proactive_at = (
        access_expires_at - config.refresh_ahead if access_expires_at is not None else now
    )
    if policy is RefreshPolicy.PROACTIVE:
        return Schedule(proactive_at, Reason.PROACTIVE)
    if policy is RefreshPolicy.ON_DEMAND:
        return Schedule(None, Reason.ON_DEMAND)
    if keep_warm(use, now, config, spare=spare):
        if access_expires_at is None:
            return Schedule(now, Reason.RECENTLY_USED)
        return Schedule(warm_refresh_at(access_expires_at, use, now, config), Reason.RECENTLY_USED)
    # Idle: the next probe a probe interval after the last time eBay accepted the grant.
    validated = last_success_at or now
    return Schedule(max(validated + config.probe_interval, now), Reason.PROBE)


def after_use(
    policy: RefreshPolicy,
    *,
    scheduled_at: datetime | None,
    access_expires_at: datetime | None,
    use: Use,
    now: datetime,
    config: PolicyConfig,
    spare: bool = False,
) -> datetime | None:
    """A program just used the account (``use`` includes this use): the schedule it should have
    now, if it must change.

    An idle ``auto`` account becomes warm once its use makes that pay; returns ``None`` when the
    stored schedule is already right (so the hot token path writes nothing).
    """
    if policy is not RefreshPolicy.AUTO or access_expires_at is None:
        return None
    if not keep_warm(use, now, config, spare=spare):
        return None
    warm_at = warm_refresh_at(access_expires_at, use, now, config)
    if scheduled_at is None or scheduled_at > warm_at:
        return warm_at
    return None
