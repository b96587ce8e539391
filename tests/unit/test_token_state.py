"""Token lifecycle decisions and the backoff, as pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core import retry
from ebay_connector.core.outcome import Classified, Outcome, TokenGrant
from ebay_connector.core.token_state import TokenState, after_attempt

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
AHEAD = timedelta(minutes=15)


def decide(classified: Classified, failures: int = 0) -> object:
    return after_attempt(
        classified=classified,
        failures_in_row=failures,
        now=NOW,
        schedule=lambda expiry: expiry - AHEAD,
        rng=random.Random(1),
    )


def test_success_clears_errors_and_schedules_before_expiry() -> None:
    grant = TokenGrant("v^1.1#a", 7200, "User Access Token")
    t = after_attempt(
        classified=Classified(Outcome.OK, "ok", grant=grant),
        failures_in_row=4,
        now=NOW,
        schedule=lambda expiry: expiry - AHEAD,
        rng=random.Random(1),
    )
    assert t.state is TokenState.ACTIVE
    assert t.failures_in_row == 0
    assert t.last_error_code is None
    assert t.access_expires_at == NOW + timedelta(hours=2)
    assert t.next_attempt_at == NOW + timedelta(hours=2) - AHEAD


@pytest.mark.parametrize(
    "outcome", [Outcome.INVALID_GRANT, Outcome.DECRYPT_FAILED, Outcome.INVALID_STORED_TOKEN]
)
def test_permanent_failure_needs_reconnect_and_is_never_scheduled(outcome: Outcome) -> None:
    t = after_attempt(
        classified=Classified(outcome, "x"),
        failures_in_row=0,
        now=NOW,
        schedule=lambda expiry: expiry - AHEAD,
        rng=random.Random(1),
    )
    assert t.state is TokenState.NEEDS_RECONNECT
    assert t.reason == outcome.value
    assert t.next_attempt_at is None


def test_transient_failure_keeps_state_counts_and_backs_off() -> None:
    t = after_attempt(
        classified=Classified(Outcome.TRANSIENT, "HTTP 500"),
        failures_in_row=2,
        now=NOW,
        schedule=lambda expiry: expiry - AHEAD,
        rng=random.Random(1),
    )
    assert t.state is TokenState.ACTIVE
    assert t.failures_in_row == 3
    assert t.access_expires_at is None  # the stored token is untouched
    assert t.next_attempt_at is not None
    assert NOW + retry.DEFAULT_BACKOFF.floor <= t.next_attempt_at <= NOW + timedelta(minutes=2)


def test_retry_after_is_a_lower_bound() -> None:
    t = after_attempt(
        classified=Classified(Outcome.RATE_LIMITED, "429", retry_after=timedelta(minutes=10)),
        failures_in_row=0,
        now=NOW,
        schedule=lambda expiry: expiry - AHEAD,
        rng=random.Random(1),
    )
    assert t.next_attempt_at is not None
    assert t.next_attempt_at >= NOW + timedelta(minutes=10)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(42)
    policy = retry.Backoff(base=timedelta(seconds=30), cap=timedelta(hours=1))
    for failures in range(1, 40):
        ceiling = min(policy.cap, policy.base * 2 ** (failures - 1))
        delays = {retry.next_delay(failures, rng, policy=policy) for _ in range(20)}
        assert all(policy.floor <= d <= max(ceiling, policy.floor) for d in delays)
        if ceiling > timedelta(seconds=10):
            assert len(delays) > 1  # jitter: not all the same
    late = [retry.next_delay(30, rng, policy=policy) for _ in range(200)]
    assert max(late) <= policy.cap
    assert max(late) > timedelta(minutes=30)  # really reaches up towards the cap
