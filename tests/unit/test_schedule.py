"""The worker's claim-ahead and wake-up decisions, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core.outcome import Outcome
from ebay_connector.core.schedule import (
    MAX_WAKE,
    MIN_WAKE,
    AppVerdict,
    ClaimAction,
    ClaimStep,
    app_verdict,
    next_claim,
    next_wake,
    refill_at,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def claim(
    *,
    concurrency: int = 64,
    in_flight: int = 0,
    ready: int = 0,
    claimed: int = 0,
    budget: int = 10_000,
    probing: bool = False,
    paused: bool = False,
) -> ClaimStep:
    return next_claim(
        concurrency=concurrency,
        in_flight=in_flight,
        ready=ready,
        claimed=claimed,
        budget=budget,
        probing=probing,
        paused=paused,
    )


@pytest.mark.parametrize(("concurrency", "ahead"), [(1, 1), (7, 1), (8, 1), (32, 4), (64, 8)])
def test_an_eighth_of_the_slots_is_claimed_ahead(concurrency: int, ahead: int) -> None:
    assert refill_at(concurrency) == ahead
    assert claim(concurrency=concurrency) == ClaimStep(ClaimAction.CLAIM, concurrency + ahead)


def test_the_buffer_is_refilled_in_batches_of_at_least_an_eighth() -> None:
    # 64 running and 8 ready: full. Freeing fewer than 8 slots claims nothing yet.
    assert claim(in_flight=64, ready=8).action is ClaimAction.WAIT
    assert claim(in_flight=64, ready=1).action is ClaimAction.WAIT
    assert claim(in_flight=57, ready=8).action is ClaimAction.WAIT
    assert claim(in_flight=64, ready=0) == ClaimStep(ClaimAction.CLAIM, 8)
    assert claim(in_flight=50, ready=3) == ClaimStep(ClaimAction.CLAIM, 19)


def test_nothing_running_claims_even_below_the_batch_size() -> None:
    assert claim(concurrency=64, in_flight=0, ready=70) == ClaimStep(ClaimAction.CLAIM, 2)


def test_the_claim_never_exceeds_the_quota_budget() -> None:
    assert claim(claimed=9_990) == ClaimStep(ClaimAction.CLAIM, 10)
    assert claim(claimed=10_000) == ClaimStep(ClaimAction.DEFER_QUOTA)
    assert claim(budget=0) == ClaimStep(ClaimAction.DEFER_QUOTA)


def test_a_429_pause_stops_the_claiming_before_the_quota_is_looked_at() -> None:
    assert claim(paused=True) == ClaimStep(ClaimAction.DEFER_PAUSE)
    assert claim(paused=True, budget=0) == ClaimStep(ClaimAction.DEFER_PAUSE)
    # Nothing would be claimed anyway: waiting says nothing about the pause.
    assert claim(paused=True, in_flight=64, ready=8).action is ClaimAction.WAIT


def test_after_invalid_client_one_probe_at_a_time() -> None:
    assert claim(probing=True) == ClaimStep(ClaimAction.CLAIM, 1)
    assert claim(probing=True, in_flight=1).action is ClaimAction.WAIT
    assert claim(probing=True, paused=True) == ClaimStep(ClaimAction.DEFER_PAUSE)
    assert claim(probing=True, budget=0) == ClaimStep(ClaimAction.DEFER_QUOTA)


@pytest.mark.parametrize(
    ("outcome", "called_ebay", "joined", "verdict"),
    [
        (Outcome.INVALID_CLIENT, True, False, AppVerdict.REJECTED),
        (Outcome.OK, True, False, AppVerdict.ACCEPTED),
        (Outcome.INVALID_GRANT, True, False, AppVerdict.PASSED),
        (Outcome.RATE_LIMITED, True, False, AppVerdict.PASSED),
        (Outcome.TRANSIENT, True, False, AppVerdict.PASSED),
        # eBay was not asked by this caller: nothing learnt about the credentials.
        (Outcome.INVALID_CLIENT, True, True, AppVerdict.UNHEARD),
        (Outcome.OK, False, True, AppVerdict.UNHEARD),
        (Outcome.DECRYPT_FAILED, False, False, AppVerdict.UNHEARD),
        (Outcome.RATE_LIMITED, False, False, AppVerdict.UNHEARD),  # refused during a pause
    ],
)
def test_what_a_finished_refresh_says_about_the_application_credentials(
    outcome: Outcome, called_ebay: bool, joined: bool, verdict: AppVerdict
) -> None:
    assert app_verdict(outcome, called_ebay=called_ebay, joined=joined) is verdict


def test_wake_at_the_next_due_account() -> None:
    interval = timedelta(seconds=60)
    assert next_wake(NOW, NOW + timedelta(seconds=5), interval, False) == timedelta(seconds=5)


def test_wake_at_least_every_interval_and_60_seconds() -> None:
    far = NOW + timedelta(hours=2)
    assert next_wake(NOW, far, timedelta(seconds=10), False) == timedelta(seconds=10)
    assert next_wake(NOW, far, timedelta(minutes=5), False) == MAX_WAKE
    assert next_wake(NOW, None, timedelta(seconds=30), False) == timedelta(seconds=30)


def test_wake_no_sooner_than_a_second_even_when_already_due() -> None:
    interval = timedelta(seconds=60)
    assert next_wake(NOW, NOW - timedelta(minutes=1), interval, False) == MIN_WAKE
    assert next_wake(NOW, NOW, interval, False) == MIN_WAKE


def test_a_deferred_cycle_waits_the_full_interval_though_accounts_are_due() -> None:
    interval = timedelta(seconds=20)
    assert next_wake(NOW, NOW - timedelta(minutes=1), interval, True) == interval
