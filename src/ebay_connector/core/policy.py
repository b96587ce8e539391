"""When should the worker refresh an account? A pure function of the account's use and tokens.

eBay allows an application 50,000 refresh grants a day. Refreshing every account 15 minutes
before its 2-hour token expires spends 12 grants per account per day whether or not anybody uses
the account, so the default policy spends them only where a program needs a token:

    proactive  keep the access token valid at all times (refresh inside the refresh-ahead window)
    on_demand  never refresh in the background; programs' requests refresh when they need to
    auto       proactive while a program used the account recently (default: within 6 h);
               otherwise on demand, plus one validity probe a day so that a revoked grant is
               found within a day rather than when a seller needs the account
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta


class RefreshPolicy(enum.StrEnum):
    AUTO = "auto"
    PROACTIVE = "proactive"
    ON_DEMAND = "on_demand"


class Reason(enum.StrEnum):
    """Why the account is scheduled as it is (shown to operators)."""

    PROACTIVE = "proactive"  # keep the token valid
    RECENTLY_USED = "recently_used"  # auto, used within the recent-use period
    PROBE = "probe"  # auto, idle: daily validity probe
    ON_DEMAND = "on_demand"  # nothing scheduled


@dataclass(frozen=True)
class PolicyConfig:
    default: RefreshPolicy = RefreshPolicy.AUTO
    refresh_ahead: timedelta = timedelta(minutes=15)
    recent_use: timedelta = timedelta(hours=6)
    probe_interval: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Schedule:
    next_attempt_at: datetime | None
    reason: Reason


def effective(account_policy: str | None, config: PolicyConfig) -> RefreshPolicy:
    return RefreshPolicy(account_policy) if account_policy else config.default


def recently_used(last_used_at: datetime | None, now: datetime, config: PolicyConfig) -> bool:
    return last_used_at is not None and now - last_used_at < config.recent_use


def schedule(
    policy: RefreshPolicy,
    *,
    access_expires_at: datetime | None,
    last_used_at: datetime | None,
    last_success_at: datetime | None,
    now: datetime,
    config: PolicyConfig,
) -> Schedule:
    """The next time the worker should refresh this (healthy) account, and why."""
    proactive_at = (
        access_expires_at - config.refresh_ahead if access_expires_at is not None else now
    )
    if policy is RefreshPolicy.PROACTIVE:
        return Schedule(proactive_at, Reason.PROACTIVE)
    if policy is RefreshPolicy.ON_DEMAND:
        return Schedule(None, Reason.ON_DEMAND)
    if recently_used(last_used_at, now, config):
        return Schedule(proactive_at, Reason.RECENTLY_USED)
    # Idle: the next probe a day after the last time eBay accepted the grant.
    validated = last_success_at or now
    return Schedule(max(validated + config.probe_interval, now), Reason.PROBE)


def after_use(
    policy: RefreshPolicy,
    *,
    scheduled_at: datetime | None,
    access_expires_at: datetime | None,
    now: datetime,
    config: PolicyConfig,
) -> datetime | None:
    """A program just used the account: the schedule it should have now, if it must change.

    An idle ``auto`` account becomes proactive on its first use; returns ``None`` when the
    stored schedule is already right (so the hot token path writes nothing).
    """
    if policy is not RefreshPolicy.AUTO or access_expires_at is None:
        return None
    proactive_at = access_expires_at - config.refresh_ahead
    if scheduled_at is None or scheduled_at > proactive_at:
        return proactive_at
    return None
