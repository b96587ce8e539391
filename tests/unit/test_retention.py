"""The retention policy as a pure statement: what is kept, and when the chore is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.service.retention import ExchangeFacts, RetentionPolicy, is_due, survivors

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy(max_age=timedelta(days=30), per_account=3)


def facts(*rows: tuple[int | None, str, float]) -> list[ExchangeFacts]:
    """(account, outcome, days ago) in the order recorded (ids ascending)."""
    return [
        ExchangeFacts(i, account, outcome, NOW - timedelta(days=days))
        for i, (account, outcome, days) in enumerate(rows, start=1)
    ]


def test_old_exchanges_go_but_the_newest_ok_and_newest_failure_stay() -> None:
    rows = facts((1, "ok", 50), (1, "transient", 45), (1, "ok", 40), (1, "invalid_grant", 35))
    assert survivors(rows, POLICY, NOW) == {3, 4}


def test_an_old_failure_stays_when_every_recent_exchange_is_ok() -> None:
    rows = facts((1, "transient", 40), (1, "ok", 2), (1, "ok", 1))
    assert survivors(rows, POLICY, NOW) == {1, 2, 3}


def test_only_the_newest_per_account_are_kept_beyond_the_cap() -> None:
    rows = facts(*[(1, "ok", 10 - d) for d in range(6)])  # days ago 10, 9, ..., 5
    assert survivors(rows, POLICY, NOW) == {4, 5, 6}


def test_the_newest_failure_survives_the_cap_too() -> None:
    rows = facts((1, "rate_limited", 9), *[(1, "ok", 8 - d) for d in range(5)])
    assert survivors(rows, POLICY, NOW) == {1, 4, 5, 6}


def test_ties_at_the_cap_boundary_are_kept() -> None:
    rows = facts((1, "ok", 5), (1, "ok", 4), (1, "ok", 4), (1, "ok", 4), (1, "ok", 1))
    assert survivors(rows, POLICY, NOW) == {2, 3, 4, 5}


def test_exchanges_of_no_account_go_by_age_alone() -> None:
    rows = facts((None, "ok", 31), (None, "invalid_client", 40), (None, "ok", 29))
    assert survivors(rows, POLICY, NOW) == {3}


def test_accounts_are_independent() -> None:
    rows = facts((1, "ok", 40), (2, "ok", 40), (2, "ok", 1))
    assert survivors(rows, POLICY, NOW) == {1, 3}


def test_due_every_interval_and_after_the_clock_went_back() -> None:
    every = timedelta(minutes=5)
    assert is_due(None, NOW, every)
    assert not is_due(NOW, NOW + timedelta(minutes=4, seconds=59), every)
    assert is_due(NOW, NOW + every, every)
    assert is_due(NOW, NOW - timedelta(seconds=1), every)
