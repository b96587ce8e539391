"""Which notices to send: pure decisions on state transitions, never on single attempts.

An account's *mark* records what was last notified about it (its condition, when its current
failing episode started, which refresh-token expiry warnings went out). :func:`decide` compares
the mark with the token row as it is now and answers the notices to send and the new mark:

    ok ──(needs_reconnect)──> needs_reconnect                 account.needs_reconnect
    ok ──(failing while the access token is expired, past a threshold)──> failing
                                                              account.refresh_failing
    failing / needs_reconnect ──(active, no failures)──> ok   account.recovered

Because the mark only moves on a transition, 500 failed attempts in one outage are one
``refresh_failing``; the refresh path is never told anything (it does not change for this).
Application-wide notices (a stale worker, a low eBay quota, a projection past eBay's limit)
carry a deduplication key instead.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ebay_connector.core.quota import Projection

EXPIRY_WARNING_DAYS = (30, 14, 7)  # before the refresh token's 18-month end
REFRESH_FAILING_AFTER = timedelta(hours=1)
QUOTA_LOW_SHARE = 0.25


class EventType(enum.StrEnum):
    CONNECTED = "account.connected"
    RECONNECTED = "account.reconnected"
    NEEDS_RECONNECT = "account.needs_reconnect"
    RECOVERED = "account.recovered"
    REFRESH_FAILING = "account.refresh_failing"
    REFRESH_TOKEN_EXPIRING = "refresh_token.expiring"
    WORKER_STALE = "worker.stale"
    QUOTA_LOW = "quota.low"
    QUOTA_PROJECTED_EXCEEDED = "quota.projected_exceeded"
    TEST = "webhook.test"


class Condition(enum.StrEnum):
    """What was last notified about an account."""

    OK = "ok"
    FAILING = "failing"
    NEEDS_RECONNECT = "needs_reconnect"


@dataclass(frozen=True)
class Mark:
    condition: Condition = Condition.OK
    reason: str | None = None
    failing_since: datetime | None = None  # first time a failure in a row was seen
    expiry_for: datetime | None = None  # the refresh expiry the warnings below were about
    expiry_notified_days: int | None = None  # the smallest warning threshold already sent


INITIAL = Mark()


@dataclass(frozen=True)
class TokenFacts:
    """The token row's facts the decision reads."""

    state: str  # token_state.TokenState value
    state_reason: str | None
    failures_in_row: int
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None


@dataclass(frozen=True)
class Thresholds:
    refresh_failing_after: timedelta = REFRESH_FAILING_AFTER
    expiry_days: tuple[int, ...] = EXPIRY_WARNING_DAYS

    @property
    def expiry_horizon(self) -> timedelta:
        return timedelta(days=max(self.expiry_days, default=0))


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Notice:
    type: EventType
    data: Mapping[str, Any] = field(default_factory=dict)
    dedup: str | None = None  # application-wide notices: the same key is sent once


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def decide(
    mark: Mark, facts: TokenFacts, now: datetime, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[list[Notice], Mark]:
    """The notices due for one account, and its new mark (equal to ``mark`` when nothing moved)."""
    out: list[Notice] = []
    failing = facts.state == "active" and facts.failures_in_row > 0
    since = (mark.failing_since or now) if failing else None
    condition, reason = mark.condition, mark.reason

    if facts.state == "needs_reconnect":
        if condition is not Condition.NEEDS_RECONNECT:
            out.append(Notice(EventType.NEEDS_RECONNECT, {"reason": facts.state_reason}))
        condition, reason = Condition.NEEDS_RECONNECT, facts.state_reason
        since = None
    else:
        if condition is Condition.NEEDS_RECONNECT or (
            condition is Condition.FAILING and not failing
        ):
            out.append(Notice(EventType.RECOVERED, {"previous": condition.value}))
            condition, reason = Condition.OK, None
        if failing and condition is Condition.OK and since is not None:
            expired = facts.access_expires_at is None or facts.access_expires_at <= now
            # How long refreshes have failed while no valid access token existed.
            start = max(since, facts.access_expires_at) if facts.access_expires_at else since
            if expired and now - start >= thresholds.refresh_failing_after:
                data = {
                    "failing_since": _iso(since),
                    "failures_in_row": facts.failures_in_row,
                    "access_expired_at": _iso(facts.access_expires_at),
                }
                out.append(Notice(EventType.REFRESH_FAILING, data))
                condition = Condition.FAILING

    expiry_for, notified = mark.expiry_for, mark.expiry_notified_days
    if facts.refresh_expires_at != expiry_for:
        # A new refresh token (reconnect) starts its warnings afresh.
        expiry_for, notified = facts.refresh_expires_at, None
    if facts.refresh_expires_at is not None and facts.refresh_expires_at > now:
        left = facts.refresh_expires_at - now
        crossed = [d for d in thresholds.expiry_days if left <= timedelta(days=d)]
        if crossed and (notified is None or min(crossed) < notified):
            days = min(crossed)
            data = {
                "threshold_days": days,
                "days_left": left.days,
                "refresh_expires_at": _iso(facts.refresh_expires_at),
            }
            out.append(Notice(EventType.REFRESH_TOKEN_EXPIRING, data))
            notified = days

    new = replace(
        mark,
        condition=condition,
        reason=reason,
        failing_since=since,
        expiry_for=expiry_for,
        expiry_notified_days=notified,
    )
    return out, new


@dataclass(frozen=True)
class WorkerBeat:
    instance_id: str
    host: str
    version: str
    updated_at: datetime
    stale: bool


def stale_workers(beats: Iterable[WorkerBeat]) -> list[Notice]:
    """One ``worker.stale`` per silent episode of a worker (keyed by its last heartbeat)."""
    return [
        Notice(
            EventType.WORKER_STALE,
            {
                "instance_id": b.instance_id,
                "host": b.host,
                "version": b.version,
                "last_heartbeat_at": _iso(b.updated_at),
            },
            dedup=f"worker.stale:{b.instance_id}:{b.updated_at.isoformat()}",
        )
        for b in beats
        if b.stale
    ]


def quota_low(
    used: Mapping[str, int],
    limits: Mapping[str, int],
    now: datetime,
    share: float = QUOTA_LOW_SHARE,
    grants: Sequence[str] | None = None,
) -> list[Notice]:
    """One ``quota.low`` per grant type and UTC day once less than ``share`` of it is left."""
    out = []
    for grant, limit in limits.items():
        if (grants is not None and grant not in grants) or limit <= 0:
            continue
        remaining = max(0, limit - used.get(grant, 0))
        if remaining < share * limit:
            data = {"grant": grant, "used": used.get(grant, 0), "limit": limit}
            data["remaining"] = remaining
            key = f"quota.low:{grant}:{now.date().isoformat()}"
            out.append(Notice(EventType.QUOTA_LOW, data, dedup=key))
    return out


QUOTA_REMEDY = (
    "ask eBay to raise the limit (Application Growth Check in eBay's developer portal), "
    "then set EBAY_CONNECTOR_DAILY_REFRESH_LIMIT to the new limit"
)


def quota_projected(
    projection: Projection, armed: bool, now: datetime, grant: str = "refresh_token"
) -> tuple[list[Notice], bool]:
    """One ``quota.projected_exceeded`` per crossing, and whether the next crossing may notify.

    ``armed`` until the projection reaches the limit; re-armed only once it is back under
    :data:`~ebay_connector.core.quota.REARM_SHARE` of it, so a projection hovering at the limit
    (a full window) is one crossing, not one per cycle. The key (the hour) lets replicas that
    see the same crossing send it once.
    """
    if armed and projection.exceeded:
        data = {"grant": grant, **projection.to_dict(), "remedy": QUOTA_REMEDY}
        key = f"quota.projected_exceeded:{grant}:{now:%Y-%m-%dT%H}"
        return [Notice(EventType.QUOTA_PROJECTED_EXCEEDED, data, dedup=key)], False
    if not armed and projection.rearmed:
        return [], True
    return [], armed
