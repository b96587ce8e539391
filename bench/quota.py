"""Simulate a week of eBay refresh grants under each refresh policy, with the quota guard on.

eBay allows an application 50,000 refresh-token grants a day and a user access token lives
2 h. This script asks what each refresh policy (``proactive``, ``on_demand``, ``auto``) spends
of that quota, and how often a program has to wait for eBay, on one synthetic workload. It
drives the product's own pure functions -- ``policy.effective / schedule / after_use``,
``token_state.after_attempt`` and ``quota.QuotaState.proactive_budget`` -- and re-implements
only the surrounding I/O (store, worker loop, program requests) as in-memory state.

Model (virtual clock, no sleeping, no I/O, deterministic for a given ``--seed``):

* ``--accounts N``, all connected at t0: access token valid 2 h, ``last_success_at`` t0, never
  used, first ``next_attempt_at`` from ``policy.schedule``. Every refresh succeeds.
* Workload, generated once and replayed identically under every policy:
  - busy accounts (20 %): a program asks for a token every 15 minutes around the clock
    (order sync), starting at a per-account phase drawn uniformly from [0 s, 900 s);
  - occasional accounts (80 %): Poisson(3 uses/week) uses at uniform random times.
* A program request is ``Refresher.get_access_token``: a stored token valid for more than the
  5-minute margin is served without a call ("no wait"); otherwise, if the rolling 24 h window
  still has room under the daily limit, one on-demand refresh (one eBay call; the request
  waited), else the product answers 503 and makes no call (the request is refused). Then the
  use is recorded (``usage.Use.observed``, at most once per 60 s, as the store's
  ``touch_last_used``) and ``policy.after_use`` may move the schedule, in the product's order.
* The worker wakes every 60 s of virtual time (t0, t0+60 s, ...). It computes
  ``QuotaState(calls of the last 24 h).proactive_budget()`` (the calls are kept in a rolling
  24 h window) and refreshes due accounts (``next_attempt_at <= now``), most overdue first, up
  to that budget. A due account left for a later wake counts once as "deferred" (by the guard:
  nothing else can delay it here). On-demand refreshes use the reserve, never past the limit.
  eBay itself answers 429 (and grants nothing) to a call that would pass its limit: counted as
  ``ebay_429``, which the product's guards keep at 0. At equal instants the worker runs before
  program requests.
* Every refresh goes through ``token_state.after_attempt`` with a 7200 s grant; its schedule
  callback is ``policy.schedule(...)`` with the account's learned use as read before the
  refresh, as ``Refresher._attempt`` does.

Printed per policy: calls per account-day (all refresh grants / accounts / days), the share of
program requests answered without waiting (overall, busy, occasional; a refused request did not
get a token), worker vs on-demand calls, the calls over the lower bound (``ratio_to_minimum``),
the requests refused at the limit, the largest number of calls in any 24 h window, whether that
ever exceeded the daily limit, and the deferred count. Then a lower bound that no policy can
beat on this workload (the fewest refreshes that can serve every request: a token issued at t
serves requests in [t, t + 6900 s)), ``note:`` lines for any target that bound makes
impossible, and last a ratio line.

Usage (from the repository root)::

    .venv/bin/python bench/quota.py
    .venv/bin/python bench/quota.py --accounts 2000 --days 7 --seed 1 --json
    .venv/bin/python bench/quota.py --accounts 200 --days 2 --daily-limit 500
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ebay_connector.core import policy, token_state
from ebay_connector.core.exchange import Action
from ebay_connector.core.outcome import Classified, Outcome, TokenGrant
from ebay_connector.core.policy import SPARE_RECHECK, PolicyConfig, Reason, RefreshPolicy
from ebay_connector.core.quota import WINDOW, QuotaConfig, QuotaState, pace_span, project
from ebay_connector.core.usage import Use
from ebay_connector.service.refresh import LAST_USED_THROTTLE, RefreshConfig

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, 00:00 UTC
TOKEN_LIFETIME_S = 7200
TOKEN_LIFETIME = timedelta(seconds=TOKEN_LIFETIME_S)
WAKE = timedelta(seconds=60)
PROJECT_EVERY = timedelta(minutes=10)  # how often the simulated notice chore projects
DAY_S = 86_400
BUSY_SHARE = 0.2
BUSY_PERIOD_S = 900
OCCASIONAL_USES_PER_WEEK = 3.0
GRANT = Action.REFRESH_TOKEN.value
# The product's own values, so the simulation follows the product when they change.
MARGIN = RefreshConfig().access_token_margin
USABLE_S = TOKEN_LIFETIME_S - int(MARGIN.total_seconds())  # a token serves requests this long
POLICIES = (RefreshPolicy.PROACTIVE, RefreshPolicy.ON_DEMAND, RefreshPolicy.AUTO)
TARGET_CALLS_PER_ACCOUNT_DAY = 2.0
TARGET_NO_WAIT = 0.97
OK = Classified(Outcome.OK, "ok", grant=TokenGrant("simulated", TOKEN_LIFETIME_S, "Bearer"))

# What a program's request got.
SERVED, WAITED, REFUSED = 0, 1, 2

# Event kinds, in the order they run at the same instant.
EV_WAKE, EV_BUSY, EV_OCCASIONAL = 0, 1, 2
Event = tuple[datetime, int, int]


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """Who uses which account when; accounts ``0 .. busy-1`` are the busy ones."""

    accounts: int
    days: int
    busy_phases: tuple[int, ...]  # seconds after t0 of each busy account's first use
    occasional_uses: tuple[tuple[float, int], ...]  # (seconds after t0, account), sorted

    @property
    def busy(self) -> int:
        return len(self.busy_phases)

    @property
    def horizon_s(self) -> int:
        return self.days * DAY_S

    def busy_uses(self, phase: int) -> range:
        return range(phase, self.horizon_s, BUSY_PERIOD_S)

    @property
    def requests(self) -> int:
        busy = sum(len(self.busy_uses(phase)) for phase in self.busy_phases)
        return busy + len(self.occasional_uses)


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method (small means only)."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def make_workload(accounts: int, days: int, seed: int) -> Workload:
    rng = random.Random(seed)
    busy = round(accounts * BUSY_SHARE)
    phases = tuple(rng.randrange(BUSY_PERIOD_S) for _ in range(busy))
    mean = OCCASIONAL_USES_PER_WEEK * days / 7
    horizon = days * DAY_S
    uses = [
        (rng.random() * horizon, account)
        for account in range(busy, accounts)
        for _ in range(poisson(rng, mean))
    ]
    uses.sort()
    return Workload(accounts, days, phases, tuple(uses))


# --------------------------------------------------------------------------- lower bound


def min_refreshes(uses_s: Sequence[float]) -> int:
    """Fewest refreshes that serve every use (sorted seconds after t0), given the t0 token.

    A token issued at t serves requests in [t, t + USABLE_S); greedily issuing one at the first
    use the current token cannot serve is optimal (issuing earlier never covers more).
    """
    covered_until, refreshes = float(USABLE_S), 0
    for use in uses_s:
        if use >= covered_until:
            refreshes += 1
            covered_until = use + USABLE_S
    return refreshes


@dataclass(frozen=True)
class Bounds:
    """What no policy can beat on this workload, and what the guard allows."""

    min_calls: int
    min_calls_per_account_day: float
    min_calls_per_day: float
    busy_refreshes_per_day: float  # per busy account
    proactive_ceiling_per_day: int
    max_no_wait_share: float  # with background work capped at the ceiling per 24 h


def compute_bounds(workload: Workload, quota: QuotaConfig) -> Bounds:
    per_account: dict[int, list[float]] = {}
    for at, account in workload.occasional_uses:
        per_account.setdefault(account, []).append(at)
    busy = sum(min_refreshes(workload.busy_uses(phase)) for phase in workload.busy_phases)
    total = busy + sum(min_refreshes(uses) for uses in per_account.values())
    ceiling = math.floor(quota.limits[GRANT] * (1 - quota.reserve_share))
    # The worker spends at most `ceiling` in any 24 h window, so at least the rest of the
    # minimum is on demand, and every on-demand call is a request that waited.
    forced_waits = max(0, total - ceiling * workload.days)
    uses_per_token = math.ceil(USABLE_S / BUSY_PERIOD_S)
    return Bounds(
        min_calls=total,
        min_calls_per_account_day=total / workload.accounts / workload.days,
        min_calls_per_day=total / workload.days,
        busy_refreshes_per_day=DAY_S / (uses_per_token * BUSY_PERIOD_S),
        proactive_ceiling_per_day=ceiling,
        max_no_wait_share=1 - forced_waits / max(1, workload.requests),
    )


# --------------------------------------------------------------------------- simulation


@dataclass
class Stats:
    calls: int = 0
    worker_calls: int = 0
    on_demand_calls: int = 0
    worker_calls_by_reason: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    waited: int = 0
    refused: int = 0  # answered 503 by the product's limit guard (or 429 by eBay): no token
    busy_requests: int = 0
    busy_waited: int = 0
    busy_refused: int = 0
    ebay_429: int = 0  # calls eBay refused because the 24 h window was full
    warned_at_h: float | None = None  # the projection first reached the limit (hours after t0)
    first_refusal_at_h: float | None = None
    deferred: int = 0
    peak_24h_calls: int = 0
    elapsed_s: float = 0.0


class Simulation:
    """One policy over one workload. Per-account state lives in parallel lists (speed)."""

    def __init__(
        self,
        workload: Workload,
        refresh_policy: RefreshPolicy,
        config: PolicyConfig,
        quota: QuotaConfig,
    ) -> None:
        n = workload.accounts
        self.workload = workload
        self.config = config
        self.quota = quota
        self.policy = policy.effective(refresh_policy.value, config)
        self.rng = random.Random(0)  # after_attempt's backoff jitter; unused on success
        self.expires: list[datetime] = [T0 + TOKEN_LIFETIME] * n
        self.use: list[Use] = [Use()] * n
        self.next_at: list[datetime | None] = [None] * n
        self.due_from: list[datetime] = [T0] * n  # max(next_at, when it was set)
        self.reason: list[Reason] = [Reason.ON_DEMAND] * n
        self.version: list[int] = [0] * n
        self.due: list[Event] = []  # (next_attempt_at, account, version); stale ones skipped
        self.calls: list[datetime] = []  # every grant, in time order
        self.window_start = 0  # calls[window_start:] are the last 24 h
        self.last_wake = T0 - WAKE  # the last completed worker wake
        self._spare_at: datetime | None = None  # when calls_are_spare was last decided
        self._spare_now = False
        self.stats = Stats()
        for account in range(n):
            first = policy.schedule(
                self.policy,
                access_expires_at=self.expires[account],
                use=Use(),
                last_success_at=T0,
                now=T0,
                config=config,
            )
            self._set_next(account, first.next_attempt_at, first.reason, T0)

    # state changes ---------------------------------------------------------------------------

    def _set_next(self, account: int, at: datetime | None, reason: Reason, now: datetime) -> None:
        """Replace the account's schedule; a due one a wake already left counts as deferred."""
        if self.next_at[account] is not None and self.due_from[account] <= self.last_wake:
            self.stats.deferred += 1
        self.next_at[account] = at
        if at is not None:
            self.due_from[account] = max(at, now)  # after_use may set a time already past
        self.reason[account] = reason
        self.version[account] += 1
        if at is not None:
            heapq.heappush(self.due, (at, account, self.version[account]))

    def _refresh(self, account: int, now: datetime) -> bool:
        """One grant through ``token_state.after_attempt`` and ``policy.schedule``.

        eBay answers 429 (and grants nothing) once its 24 h window holds the daily limit; the
        account is then looked at again after the next wake. Returns whether it was granted.
        """
        if self._calls_in_window(now) >= self.quota.limits[GRANT]:
            self.stats.ebay_429 += 1
            self._set_next(account, now + WAKE, self.reason[account], now)
            return False
        planned: list[policy.Schedule] = []

        def next_after_success(new_expiry: datetime) -> datetime | None:
            planned.append(
                policy.schedule(
                    self.policy,
                    access_expires_at=new_expiry,
                    use=self.use[account],
                    last_success_at=now,
                    now=now,
                    config=self.config,
                    spare=self._spare(now),
                )
            )
            return planned[-1].next_attempt_at

        transition = token_state.after_attempt(
            classified=OK, failures_in_row=0, now=now, schedule=next_after_success, rng=self.rng
        )
        assert transition.access_expires_at is not None
        self.calls.append(now)
        self.stats.calls += 1
        self.expires[account] = transition.access_expires_at
        self._set_next(account, transition.next_attempt_at, planned[-1].reason, now)
        return True

    # events ----------------------------------------------------------------------------------

    def request(self, account: int, now: datetime, valid_after: datetime, stale: datetime) -> int:
        """A program's ``get_access_token``: SERVED, WAITED (for eBay) or REFUSED (no token).

        ``valid_after`` is now + margin, ``stale`` now - the last-used throttle. With the 24 h
        window full the product answers 503 without calling eBay, as ``Refresher`` does.
        """
        answer = SERVED
        if self.expires[account] <= valid_after:
            budget = QuotaState({GRANT: self._calls_in_window(now)}, self.quota)
            if budget.window_full(GRANT) or not self._refresh(account, now):
                if self.stats.first_refusal_at_h is None:
                    self.stats.first_refusal_at_h = hours_after_t0(now)
                return REFUSED
            self.stats.on_demand_calls += 1
            answer = WAITED
        use = self.use[account]
        if use.last_used_at is None or use.last_used_at < stale:
            self.use[account] = use = use.observed(now)
        moved = policy.after_use(
            self.policy,
            scheduled_at=self.next_at[account],
            access_expires_at=self.expires[account],
            use=use,
            now=now,
            config=self.config,
            spare=self._spare(now),
        )
        if moved is not None:
            self._set_next(account, moved, Reason.RECENTLY_USED, now)
        return answer

    def wake(self, now: datetime) -> None:
        """One worker cycle: refresh due accounts, most overdue first, within the budget."""
        budget = QuotaState({GRANT: self._calls_in_window(now)}, self.quota).proactive_budget()
        due, version, spent = self.due, self.version, 0
        while due and due[0][0] <= now:
            if spent >= budget and version[due[0][1]] == due[0][2]:
                break  # left for a later wake: counted when it is refreshed or replaced
            _, account, seen = heapq.heappop(due)
            if seen != version[account]:
                continue
            if self.due_from[account] <= self.last_wake:
                self.stats.deferred += 1
            reason = self.reason[account]
            self.next_at[account] = None  # claimed
            if not self._refresh(account, now):
                continue
            self.stats.worker_calls += 1
            by_reason = self.stats.worker_calls_by_reason
            by_reason[reason.value] = by_reason.get(reason.value, 0) + 1
            spent += 1
        self.last_wake = now
        if self.stats.warned_at_h is None and (now - T0) % PROJECT_EVERY == timedelta(0):
            self._project(now)

    def _project(self, now: datetime) -> None:
        """The product's projection (``Journal.quota_projection``) over the calls so far."""
        calls, since = self.calls, now - WINDOW
        used = len(calls) - bisect.bisect_left(calls, since)
        if not used:
            return
        history = now - calls[bisect.bisect_left(calls, since)]
        recent = len(calls) - bisect.bisect_left(calls, now - pace_span(history))
        if project(used, recent, history, self.quota.limits[GRANT]).exceeded:
            self.stats.warned_at_h = hours_after_t0(now)

    def _spare(self, now: datetime) -> bool:
        """As the product decides it, at most once a minute: the projection of the next 24 h
        (the product projects over the quota ledger's minute buckets; exact times here)."""
        if self._spare_at is not None and now - self._spare_at < SPARE_RECHECK:
            return self._spare_now
        calls, since = self.calls, now - WINDOW
        first = bisect.bisect_left(calls, since)
        limit = self.quota.limits[GRANT]
        projected, history = 0, timedelta(0)
        if first < len(calls):
            history = now - calls[first]
            recent = len(calls) - bisect.bisect_left(calls, now - pace_span(history))
            projected = project(len(calls) - first, recent, history, limit).projected
        self._spare_at = now
        self._spare_now = policy.calls_are_spare(projected, history, limit, self.config)
        return self._spare_now

    def _calls_in_window(self, now: datetime) -> int:
        """Calls since now - 24 h (inclusive, as ``Journal.quota_usage``)."""
        since, calls, start = now - WINDOW, self.calls, self.window_start
        while start < len(calls) and calls[start] < since:
            start += 1
        self.window_start = start
        return len(calls) - start

    # the run ---------------------------------------------------------------------------------

    def run(self) -> Stats:
        started = time.perf_counter()
        workload = self.workload
        end = T0 + timedelta(days=workload.days)
        buckets: dict[int, list[int]] = {}
        for account, phase in enumerate(workload.busy_phases):
            buckets.setdefault(phase, []).append(account)
        events: list[Event] = [(T0, EV_WAKE, 0)]
        events += [(T0 + timedelta(seconds=p), EV_BUSY, p) for p in buckets]
        events += [
            (T0 + timedelta(seconds=s), EV_OCCASIONAL, a) for s, a in workload.occasional_uses
        ]
        heapq.heapify(events)
        period = timedelta(seconds=BUSY_PERIOD_S)
        while events and events[0][0] < end:
            now, kind, key = heapq.heappop(events)
            if kind == EV_WAKE:
                self.wake(now)
                heapq.heappush(events, (now + WAKE, EV_WAKE, 0))
            elif kind == EV_BUSY:
                self._busy_batch(buckets[key], now)
                heapq.heappush(events, (now + period, EV_BUSY, key))
            else:
                self._occasional(key, now)
        self._finish()
        self.stats.elapsed_s = time.perf_counter() - started
        return self.stats

    def _busy_batch(self, accounts: list[int], now: datetime) -> None:
        """All busy accounts sharing a phase ask at the same instant: one event, not one each."""
        valid_after, stale = now + MARGIN, now - LAST_USED_THROTTLE
        answers = [self.request(account, now, valid_after, stale) for account in accounts]
        waited, refused = answers.count(WAITED), answers.count(REFUSED)
        stats = self.stats
        stats.requests += len(accounts)
        stats.busy_requests += len(accounts)
        stats.waited += waited
        stats.busy_waited += waited
        stats.refused += refused
        stats.busy_refused += refused

    def _occasional(self, account: int, now: datetime) -> None:
        answer = self.request(account, now, now + MARGIN, now - LAST_USED_THROTTLE)
        self.stats.requests += 1
        self.stats.waited += answer == WAITED
        self.stats.refused += answer == REFUSED

    def _finish(self) -> None:
        """Count refreshes still left over by the guard; the largest 24 h window."""
        self.stats.deferred += sum(
            1
            for at, due_from in zip(self.next_at, self.due_from, strict=True)
            if at is not None and due_from <= self.last_wake
        )
        self.stats.peak_24h_calls = peak_window(self.calls)


def hours_after_t0(now: datetime) -> float:
    return round((now - T0) / timedelta(hours=1), 2)


def peak_window(calls: Sequence[datetime]) -> int:
    """The most calls in any closed 24 h window [t - 24 h, t] (sorted call times)."""
    best, start = 0, 0
    for end, at in enumerate(calls):
        since = at - WINDOW
        while calls[start] < since:
            start += 1
        best = max(best, end - start + 1)
    return best


# --------------------------------------------------------------------------- report


def summarise(
    stats: Stats, workload: Workload, quota: QuotaConfig, bounds: Bounds
) -> dict[str, Any]:
    """One policy's figures; a refused request did not get a token, so it is not "no wait"."""
    occasional_requests = stats.requests - stats.busy_requests
    occasional_missed = stats.waited + stats.refused - stats.busy_waited - stats.busy_refused
    busy_missed = stats.busy_waited + stats.busy_refused
    account_days = workload.accounts * workload.days
    return {
        "calls_per_account_day": stats.calls / account_days,
        "ratio_to_minimum": stats.calls / bounds.min_calls if bounds.min_calls else math.nan,
        "no_wait_share": share(stats.requests - stats.waited - stats.refused, stats.requests),
        "no_wait_share_busy": share(stats.busy_requests - busy_missed, stats.busy_requests),
        "no_wait_share_occasional": share(
            occasional_requests - occasional_missed, occasional_requests
        ),
        "peak_24h_calls": stats.peak_24h_calls,
        "exceeded_daily_limit": stats.peak_24h_calls > quota.limits[GRANT],
        "deferred": stats.deferred,
        "calls": stats.calls,
        "worker_calls": stats.worker_calls,
        "on_demand_calls": stats.on_demand_calls,
        "worker_calls_by_reason": dict(sorted(stats.worker_calls_by_reason.items())),
        "requests": stats.requests,
        "waited": stats.waited,
        "refused_requests": stats.refused,
        "ebay_429": stats.ebay_429,
        "projection_warned_after_h": stats.warned_at_h,
        "first_refusal_after_h": stats.first_refusal_at_h,
        "elapsed_s": round(stats.elapsed_s, 2),
    }


def share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def notes(bounds: Bounds, workload: Workload, quota: QuotaConfig) -> list[str]:
    """One line per target that this workload makes arithmetically impossible."""
    found: list[str] = []
    limit = quota.limits[GRANT]
    busy_share = workload.busy / workload.accounts
    busy_part = busy_share * bounds.busy_refreshes_per_day
    if bounds.min_calls_per_account_day > TARGET_CALLS_PER_ACCOUNT_DAY:
        found.append(
            f"note: ≤ {TARGET_CALLS_PER_ACCOUNT_DAY:g} calls/account-day is impossible here: a "
            f"{TOKEN_LIFETIME_S} s token serves requests for {USABLE_S} s (5-min margin), i.e. "
            f"≤ {math.ceil(USABLE_S / BUSY_PERIOD_S)} uses {BUSY_PERIOD_S} s apart, so each of "
            f"the {workload.busy:,} busy accounts needs ≥ {bounds.busy_refreshes_per_day:g} "
            f"refreshes/day ({busy_share:.0%} × {bounds.busy_refreshes_per_day:g} = "
            f"{busy_part:.2f} calls/account-day alone); with the occasional uses any policy "
            f"needs ≥ {bounds.min_calls_per_account_day:.2f} calls/account-day"
        )
    if bounds.min_calls_per_day > limit:
        found.append(
            f"note: staying under {limit:,}/day is impossible here: serving every request needs "
            f"≥ {bounds.min_calls:,} calls in {workload.days} days = "
            f"{bounds.min_calls_per_day:,.0f}/day on average (busy accounts alone "
            f"{workload.busy * bounds.busy_refreshes_per_day:,.0f}/day), so some 24 h window "
            f"holds at least that many"
        )
    if bounds.max_no_wait_share < TARGET_NO_WAIT:
        found.append(
            f"note: ≥ {TARGET_NO_WAIT:.0%} no-wait is impossible with the quota guard here: "
            f"background refreshes are capped at {bounds.proactive_ceiling_per_day:,} per 24 h, "
            f"so ≥ {bounds.min_calls - bounds.proactive_ceiling_per_day * workload.days:,} of "
            f"the ≥ {bounds.min_calls:,} needed calls are on demand, each a request that waits: "
            f"no_wait_share ≤ {bounds.max_no_wait_share:.4f}"
        )
    return found


def ratio_line(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    auto = results[RefreshPolicy.AUTO.value]["calls_per_account_day"]
    proactive = results[RefreshPolicy.PROACTIVE.value]["calls_per_account_day"]
    ratio = auto / proactive if proactive else math.nan
    text = (
        f"ratio: auto spends {ratio:.2f}× the eBay calls of proactive "
        f"({auto:.2f} vs {proactive:.2f} calls/account-day)"
    )
    return ratio, text


def print_table(
    results: dict[str, dict[str, Any]],
    workload: Workload,
    bounds: Bounds,
    quota: QuotaConfig,
    config: PolicyConfig,
) -> None:
    print(
        f"accounts {workload.accounts:,} ({workload.busy:,} busy: every {BUSY_PERIOD_S // 60} "
        f"min; {workload.accounts - workload.busy:,} occasional: Poisson "
        f"{OCCASIONAL_USES_PER_WEEK:g}/week), {workload.days} days, "
        f"{workload.requests:,} program requests"
    )
    print(
        f"token {TOKEN_LIFETIME_S} s, margin {int(MARGIN.total_seconds())} s, refresh_ahead "
        f"{config.refresh_ahead}, warm at {config.warm_use_share:.0%} chance of use, recent_use "
        f"{config.recent_use}, probe {config.probe_interval}; "
        f"limit {quota.limits[GRANT]:,}/24 h, proactive ceiling "
        f"{bounds.proactive_ceiling_per_day:,}/24 h; worker wakes every "
        f"{int(WAKE.total_seconds())} s"
    )
    print()
    header = (
        f"{'policy':<10} {'calls/acct-day':>14} {'x min':>6} {'no_wait':>8} {'busy':>8} "
        f"{'occas.':>8} {'worker':>9} {'on_demand':>9} {'refused':>9} {'peak 24h':>9} "
        f"{'>limit':>6} {'deferred':>9} {'s':>5}"
    )
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        print(
            f"{name:<10} {row['calls_per_account_day']:>14.3f} {row['ratio_to_minimum']:>6.3f} "
            f"{row['no_wait_share']:>8.4f} {row['no_wait_share_busy']:>8.4f} "
            f"{row['no_wait_share_occasional']:>8.4f} {row['worker_calls']:>9,} "
            f"{row['on_demand_calls']:>9,} {row['refused_requests']:>9,} "
            f"{row['peak_24h_calls']:>9,} {'yes' if row['exceeded_daily_limit'] else 'no':>6} "
            f"{row['deferred']:>9,} {row['elapsed_s']:>5.1f}"
        )
    print()
    for name, row in results.items():
        reasons = ", ".join(f"{k} {v:,}" for k, v in row["worker_calls_by_reason"].items())
        print(f"worker calls by schedule reason, {name}: {reasons or 'none'}")
    for name, row in results.items():
        warned, refused = row["projection_warned_after_h"], row["first_refusal_after_h"]
        if warned is not None or refused is not None:
            print(
                f"limit, {name}: projection reached it after {warned} h, first request refused "
                f"after {refused} h"
            )
    print(
        f"lower bound (any policy, serving every request): {bounds.min_calls:,} calls = "
        f"{bounds.min_calls_per_account_day:.3f} calls/account-day = "
        f"{bounds.min_calls_per_day:,.0f}/day; with the guard no_wait_share ≤ "
        f"{bounds.max_no_wait_share:.4f}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000, help="connected accounts")
    parser.add_argument("--days", type=int, default=7, help="simulated days")
    parser.add_argument("--seed", type=int, default=1, help="workload random seed")
    parser.add_argument(
        "--daily-limit", type=int, default=50_000, help="eBay's refresh grants per 24 h"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    unused = "unused: accepted for symmetry with the other benchmarks (this one does no I/O)"
    parser.add_argument("--latency-ms", type=float, default=None, help=unused)
    parser.add_argument("--database-url", default=None, help=unused)
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.days < 1 or args.daily_limit < 1:
        parser.error("--accounts, --days and --daily-limit must be at least 1")
    return args


def simulate_all(
    workload: Workload, config: PolicyConfig, quota: QuotaConfig, bounds: Bounds
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for refresh_policy in POLICIES:
        stats = Simulation(workload, refresh_policy, config, quota).run()
        results[refresh_policy.value] = summarise(stats, workload, quota, bounds)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    config = PolicyConfig()
    quota = QuotaConfig(limits={**QuotaConfig().limits, GRANT: args.daily_limit})
    workload = make_workload(args.accounts, args.days, args.seed)
    bounds = compute_bounds(workload, quota)
    results = simulate_all(workload, config, quota, bounds)
    ratio, text = ratio_line(results)
    found = notes(bounds, workload, quota)
    elapsed = time.perf_counter() - started
    if args.json:
        body: dict[str, Any] = dict(results)
        body |= {
            "ratio": ratio,
            "bounds": asdict(bounds),
            "notes": found,
            "workload": {
                "accounts": workload.accounts,
                "busy": workload.busy,
                "days": workload.days,
                "seed": args.seed,
                "daily_limit": args.daily_limit,
                "requests": workload.requests,
            },
            "elapsed_s": round(elapsed, 2),
        }
        print(json.dumps(body))
        return 0
    print_table(results, workload, bounds, quota, config)
    print(f"runtime {elapsed:.1f} s (seed {args.seed})")
    for line in found:
        print(line)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
