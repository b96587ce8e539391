"""Process-wide pacing of eBay calls: the per-second ceiling and eBay's 429 pause."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.ebay.pacing import DEFAULT_PAUSE, MAX_PAUSE, Pacer, reserve

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_free_slot_is_taken_at_once_and_the_next_opens_an_interval_later() -> None:
    assert reserve(100.0, 0.0, 0.25) == (0.0, 100.25)
    assert reserve(100.0, 99.0, 0.25) == (0.0, 100.25)  # idle time earns no burst


def test_callers_inside_one_interval_queue_behind_each_other() -> None:
    wait, following = reserve(100.0, 100.25, 0.25)
    assert (wait, following) == (0.25, 100.5)
    assert reserve(100.1, following, 0.25) == pytest.approx((0.4, 100.75))


async def test_acquire_spaces_calls_to_the_ceiling() -> None:
    pacer = Pacer(max_per_second=50)  # one call per 20 ms
    started = time.monotonic()
    for _ in range(5):
        await pacer.acquire()
    assert time.monotonic() - started >= 4 * 0.02 * 0.95


async def test_without_a_ceiling_acquire_never_waits() -> None:
    pacer = Pacer()
    started = time.monotonic()
    for _ in range(1000):
        await pacer.acquire()
    assert pacer.interval == 0.0
    assert time.monotonic() - started < 0.5


def test_a_429_pauses_for_its_retry_after() -> None:
    pacer = Pacer()
    assert not pacer.paused(NOW)
    until = pacer.pause(NOW, timedelta(seconds=30))
    assert until == NOW + timedelta(seconds=30)
    assert pacer.paused(NOW + timedelta(seconds=29))
    assert not pacer.paused(until)


def test_a_429_without_retry_after_pauses_a_minute_and_no_pause_exceeds_an_hour() -> None:
    assert Pacer().pause(NOW, None) == NOW + DEFAULT_PAUSE
    assert Pacer().pause(NOW, timedelta(days=2)) == NOW + MAX_PAUSE


def test_a_later_429_extends_the_pause_and_never_shortens_it() -> None:
    pacer = Pacer()
    pacer.pause(NOW, timedelta(seconds=60))
    assert pacer.pause(NOW + timedelta(seconds=1), timedelta(seconds=5)) == NOW + timedelta(
        seconds=60
    )
    assert pacer.pause(NOW + timedelta(seconds=50), timedelta(seconds=30)) == NOW + timedelta(
        seconds=80
    )
    assert pacer.paused_until == NOW + timedelta(seconds=80)
