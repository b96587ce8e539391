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
