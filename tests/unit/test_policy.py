"""The refresh policy's pure decisions: the learned use, when to keep warm, when to refresh."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebay_connector.core import policy
from ebay_connector.core.policy import PolicyConfig, Reason, RefreshPolicy
from ebay_connector.core.usage import Use

T0 = datetime(2026, 1, 5, tzinfo=UTC)
CONFIG = PolicyConfig()


def used_every(seconds: float, times: int, start: datetime = T0) -> Use:
    use = Use()
    for i in range(times):
        use = use.observed(start + timedelta(seconds=seconds * i))
    return use


def test_first_use_teaches_nothing_and_the_second_a_gap_of_unknown_spread() -> None:
    first = Use().observed(T0)
    assert first == Use(T0, None, None)
    second = first.observed(T0 + timedelta(minutes=15))
    assert second == Use(T0 + timedelta(minutes=15), 900.0, 900.0)


def test_regular_gaps_converge_and_their_spread_vanishes() -> None:
    use = used_every(900, 30)
    assert use.interval_s == pytest.approx(900)
    assert use.jitter_s is not None and use.jitter_s < 1


@given(st.lists(st.floats(min_value=60, max_value=7 * 86400), min_size=2, max_size=40))
def test_the_estimate_stays_within_the_gaps_seen(gaps: list[float]) -> None:
    use, at = Use().observed(T0), T0
    for gap in gaps:
        at += timedelta(seconds=gap)
        use = use.observed(at)
    assert use.interval_s is not None and use.jitter_s is not None
    assert min(gaps) - 1e-6 <= use.interval_s <= max(gaps) + 1e-6
    assert 0 <= use.jitter_s <= max(gaps) - min(gaps) + max(gaps)


def test_a_silence_longer_than_the_estimate_stretches_it() -> None:
    use = used_every(900, 10)
    assert use.last_used_at is not None
    later = use.last_used_at + timedelta(hours=3)
    assert use.expected_interval(later) == pytest.approx(3 * 3600)
    assert use.chance_of_use(timedelta(hours=2), later) == pytest.approx(1 - math.exp(-2 / 3))


@pytest.mark.parametrize(
    ("gap_s", "warm"),
    [(900, True), (3600, True), (4 * 3600, False), (2 * 86400, False)],
)
def test_warm_only_while_the_next_token_is_likely_used(gap_s: float, warm: bool) -> None:
    use = used_every(gap_s, 5)
    assert use.last_used_at is not None
    assert policy.keep_warm(use, use.last_used_at, CONFIG) is warm


def test_never_or_once_used_accounts_are_not_kept_warm() -> None:
    assert not policy.keep_warm(Use(), T0, CONFIG)
    assert not policy.keep_warm(Use().observed(T0), T0, CONFIG)


def test_warm_stops_past_the_recent_use_period() -> None:
    use = used_every(60, 5)
    assert use.last_used_at is not None
    config = PolicyConfig(recent_use=timedelta(minutes=30), warm_use_share=0.0)
    assert policy.keep_warm(use, use.last_used_at + timedelta(minutes=29), config)
    assert not policy.keep_warm(use, use.last_used_at + timedelta(minutes=30), config)


def test_a_regular_user_is_refreshed_just_before_the_first_use_the_token_cannot_serve() -> None:
    use = used_every(900, 20, start=T0 + timedelta(seconds=100))  # uses at ...+100 s mod 900
    assert use.last_used_at is not None
    now = use.last_used_at
    expires = now + timedelta(hours=2)
    # Usable until expires - 5 min = now + 6900 s; the first use after that is now + 7200 s.
    at = policy.warm_refresh_at(expires, use, now, CONFIG)
    assert use.jitter_s is not None
    lead = CONFIG.lead + timedelta(seconds=3 * use.jitter_s)
    assert at == now + timedelta(seconds=7200) - lead
    assert expires - CONFIG.access_token_margin < at < now + timedelta(seconds=7200)


def test_an_irregular_user_is_refreshed_refresh_ahead_before_expiry() -> None:
    use = Use()
    for offset in (0, 300, 1500, 1700, 3000, 3200, 4500):  # gaps of 5 to 25 minutes
        use = use.observed(T0 + timedelta(seconds=offset))
    assert use.last_used_at is not None
    expires = use.last_used_at + timedelta(hours=2)
    assert policy.warm_refresh_at(expires, use, use.last_used_at, CONFIG) == (
        expires - CONFIG.refresh_ahead
    )


def test_schedule_by_policy() -> None:
    busy = used_every(900, 10)
    now = busy.last_used_at
    assert now is not None
    expires = now + timedelta(hours=2)

    def plan(chosen: RefreshPolicy, use: Use) -> policy.Schedule:
        return policy.schedule(
            chosen,
            access_expires_at=expires,
            use=use,
            last_success_at=now,
            now=now,
            config=CONFIG,
        )

    assert plan(RefreshPolicy.PROACTIVE, Use()) == policy.Schedule(
        expires - CONFIG.refresh_ahead, Reason.PROACTIVE
    )
    assert plan(RefreshPolicy.ON_DEMAND, busy) == policy.Schedule(None, Reason.ON_DEMAND)
    warm = plan(RefreshPolicy.AUTO, busy)
    assert warm.reason is Reason.RECENTLY_USED and warm.next_attempt_at is not None
    assert warm.next_attempt_at >= expires - CONFIG.refresh_ahead
    idle = plan(RefreshPolicy.AUTO, used_every(2 * 86400, 3, start=now - timedelta(days=4)))
    assert idle == policy.Schedule(now + CONFIG.probe_interval, Reason.PROBE)


def test_after_use_warms_an_account_once_its_use_pays_and_otherwise_writes_nothing() -> None:
    probe_at = T0 + timedelta(days=3)
    expires = T0 + timedelta(hours=2)

    def moved(
        use: Use, now: datetime, scheduled_at: datetime | None, chosen: RefreshPolicy
    ) -> datetime | None:
        return policy.after_use(
            chosen,
            scheduled_at=scheduled_at,
            access_expires_at=expires,
            use=use,
            now=now,
            config=CONFIG,
        )

    once = Use().observed(T0)
    assert moved(once, T0, probe_at, RefreshPolicy.AUTO) is None
    now = T0 + timedelta(minutes=15)
    twice = once.observed(now)
    warm_at = moved(twice, now, probe_at, RefreshPolicy.AUTO)
    assert warm_at == expires - CONFIG.refresh_ahead  # one gap: spread unknown, no timing trick
    assert moved(twice, now, warm_at, RefreshPolicy.AUTO) is None
    for chosen in (RefreshPolicy.PROACTIVE, RefreshPolicy.ON_DEMAND):
        assert moved(twice, now, None, chosen) is None


# Spare calls: a small shop keeps every recently used token warm -------------------------------


def test_calls_are_spare_only_well_under_the_limit_and_with_some_history() -> None:
    config = PolicyConfig()
    hour = timedelta(hours=1)
    assert policy.calls_are_spare(4_999, hour, 50_000, config)
    assert not policy.calls_are_spare(5_000, hour, 50_000, config)
    assert not policy.calls_are_spare(0, timedelta(minutes=9), 50_000, config)  # no pace yet


def test_with_spare_calls_an_occasional_account_used_lately_is_kept_warm() -> None:
    config = PolicyConfig()
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    occasional = Use(now - timedelta(hours=3), interval_s=3 * 86400.0, jitter_s=86400.0)
    assert not policy.keep_warm(occasional, now, config)
    assert policy.keep_warm(occasional, now, config, spare=True)
    forgotten = Use(now - timedelta(hours=13), interval_s=3 * 86400.0, jitter_s=86400.0)
    assert not policy.keep_warm(forgotten, now, config, spare=True)
    expires = now + timedelta(hours=1)
    moved = policy.after_use(
        RefreshPolicy.AUTO,
        scheduled_at=None,
        access_expires_at=expires,
        use=occasional,
        now=now,
        config=config,
        spare=True,
    )
    assert moved == expires - config.refresh_ahead
