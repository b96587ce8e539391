"""eBay's daily limit: when the window is full, when it frees a call, the 24 h projection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core import quota
from ebay_connector.core.quota import QuotaConfig, QuotaState

T0 = datetime(2026, 1, 5, tzinfo=UTC)
GRANT = "refresh_token"


@pytest.mark.parametrize(("used", "full"), [(0, False), (99, False), (100, True), (150, True)])
def test_the_window_is_full_at_the_limit(used: int, full: bool) -> None:
    state = QuotaState({GRANT: used}, QuotaConfig(limits={GRANT: 100}))
    assert state.window_full(GRANT) is full
    assert state.proactive_budget() <= state.remaining(GRANT)


def test_a_full_window_frees_a_call_just_after_its_oldest_extra_call_leaves() -> None:
    assert quota.calls_to_leave(100, 100) == 1
    assert quota.calls_to_leave(103, 100) == 4
    assert quota.calls_to_leave(99, 100) == 0
    assert quota.frees_at(99, 100, T0) is None
    assert quota.frees_at(100, 100, T0) == T0 + timedelta(hours=24, seconds=1)


@pytest.mark.parametrize(
    ("used", "recent", "history", "projected"),
    [
        (0, 0, timedelta(0), 0),
        (2, 2, timedelta(minutes=5), 8),  # less than 6 h: paced over 6 h
        (10, 10, timedelta(hours=5), 40),
        (20, 20, timedelta(hours=8), 60),  # eight hours of history: 2.5 an hour
        (240, 120, timedelta(hours=23), 240),  # steady: as much as the last 24 h
        (300, 200, timedelta(hours=23), 400),  # growing: the last 12 h's pace
        (300, 50, timedelta(hours=23), 300),  # shrinking: never below the last 24 h
    ],
)
def test_the_projection_takes_the_recent_pace_over_a_day(
    used: int, recent: int, history: timedelta, projected: int
) -> None:
    assert quota.project(used, recent, history, limit=300).projected == projected


def test_a_crossing_ends_only_well_under_the_limit() -> None:
    over = quota.project(110, 55, timedelta(hours=20), limit=100)
    assert over.exceeded and not over.rearmed
    near = quota.project(95, 40, timedelta(hours=20), limit=100)
    assert not near.exceeded and not near.rearmed
    under = quota.project(80, 40, timedelta(hours=20), limit=100)
    assert not under.exceeded and under.rearmed


# The ledger's decisions -------------------------------------------------------------------------

NOON = datetime(2026, 12, 5, 12, 0, 30, 500, tzinfo=UTC)


def test_a_call_counts_in_the_bucket_of_its_minute() -> None:
    assert quota.bucket_of(NOON) == datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_a_bucket_counts_while_any_part_of_its_minute_is_in_the_window() -> None:
    # At 12:00:30 the window starts at 12:00:30 yesterday: the 12:00 bucket of yesterday still
    # holds calls inside it, the 11:59 bucket none.
    after = quota.counted_after(NOON)
    assert datetime(2026, 12, 4, 12, 0, tzinfo=UTC) > after
    assert not datetime(2026, 12, 4, 11, 59, tzinfo=UTC) > after


def test_only_what_fits_under_the_ceiling_is_granted() -> None:
    assert quota.grantable(used=3, wanted=10, ceiling=5) == 2
    assert quota.grantable(used=5, wanted=1, ceiling=5) == 0
    assert quota.grantable(used=7, wanted=1, ceiling=5) == 0  # a lowered limit grants nothing
    assert quota.grantable(used=0, wanted=4, ceiling=5) == 4


def test_a_slot_frees_when_enough_of_the_oldest_buckets_have_left_the_window() -> None:
    day = timedelta(hours=24)
    first = datetime(2026, 12, 4, 13, 0, tzinfo=UTC)
    second = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    buckets = [(first, 2), (second, 3)]
    assert quota.slot_frees_at(buckets, ceiling=6) is None  # room now
    assert quota.slot_frees_at(buckets, ceiling=5) == first + quota.BUCKET + day
    assert quota.slot_frees_at(buckets, ceiling=4) == first + quota.BUCKET + day
    assert quota.slot_frees_at(buckets, ceiling=3) == second + quota.BUCKET + day
    assert quota.slot_frees_at(buckets, ceiling=2) == second + quota.BUCKET + day
    assert quota.slot_frees_at(buckets, ceiling=0) is None  # never: nothing may be sent


def test_the_ledger_projects_the_next_24_hours_as_the_journal_does() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    buckets = [(now - timedelta(hours=20), 100), (now - timedelta(hours=2), 60)]
    # 160 in the window, 60 of them in the last 12 h: 120 a day at that pace, never below 160.
    assert quota.project_buckets(buckets, now, 1000) == quota.Projection(160, 160, 1000)
    busy = [(now - timedelta(hours=1), 500)]  # one hour old: paced over the 6 h minimum
    assert quota.project_buckets(busy, now, 1000).projected == 2000
    assert quota.project_buckets([], now, 1000) == quota.Projection(0, 0, 1000)
