"""The sliding-window allowance: counted in memory, or from times read elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ebay_connector.core.allowance import Allowance, wait_after

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def ago(seconds: int) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_under_the_limit_may_take_now() -> None:
    assert wait_after([ago(10), ago(5)], 3, MINUTE, NOW) is None


def test_at_the_limit_waits_until_the_oldest_counted_take_leaves_the_window() -> None:
    assert wait_after([ago(5), ago(50), ago(20)], 3, MINUTE, NOW) == timedelta(seconds=10)


def test_more_than_the_limit_waits_for_enough_to_leave() -> None:
    # Five taken (another process went past a limit of 3): two must leave before one more.
    taken = [ago(1), ago(2), ago(30), ago(40), ago(50)]
    assert wait_after(taken, 3, MINUTE, NOW) == timedelta(seconds=30)


def test_takes_outside_the_window_do_not_count() -> None:
    assert wait_after([ago(60), ago(61), ago(5)], 2, MINUTE, NOW) is None


def test_no_limit_never_waits() -> None:
    assert wait_after([ago(1)] * 10, 0, MINUTE, NOW) is None


def test_the_in_memory_allowance_agrees() -> None:
    allowance = Allowance(2, MINUTE)
    allowance.take("a", ago(50))
    allowance.take("a", ago(10))
    assert allowance.wait("a", NOW) == timedelta(seconds=10)
    assert allowance.wait("b", NOW) is None
