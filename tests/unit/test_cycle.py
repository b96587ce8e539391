"""What a worker cycle reports: counts that add up, a status derived from them, and a bounded
sample of the failed accounts (nothing per refreshed account)."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from datetime import UTC, datetime

import pytest

from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.token_state import TokenState
from ebay_connector.service.refresh import RefreshResult
from ebay_connector.service.worker import (
    FAILURE_SAMPLE,
    CycleCounts,
    CycleStatus,
    CycleTally,
    FailedAccount,
    cycle_status,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def result(
    account_id: int, outcome: Outcome, *, joined: bool = False, skipped: bool = False
) -> RefreshResult:
    return RefreshResult(
        account_id=account_id,
        trigger=Trigger.SCHEDULED,
        outcome=outcome,
        message=f"{outcome.value} for {account_id}",
        state=TokenState.ACTIVE,
        state_reason=None,
        access_expires_at=None,
        next_attempt_at=None,
        called_ebay=True,
        joined=joined,
        skipped=skipped,
    )


def test_status_is_derived_from_counts() -> None:
    assert cycle_status(CycleCounts(due=3, refreshed=3), None) is CycleStatus.OK
    assert cycle_status(CycleCounts(due=0), None) is CycleStatus.OK
    assert cycle_status(CycleCounts(due=2, refreshed=1, failed=1), None) is CycleStatus.DEGRADED
    assert cycle_status(CycleCounts(due=5, failed=5), None) is CycleStatus.ERROR
    assert cycle_status(CycleCounts(due=1, failed=1), None) is CycleStatus.ERROR  # all failed
    assert cycle_status(CycleCounts(due=1, refreshed=1), "store_unavailable") is CycleStatus.ERROR
    # The application is misconfigured: an error even though other accounts were refreshed.
    assert (
        cycle_status(CycleCounts(due=3, refreshed=2, configuration=1, failed=1), None)
        is CycleStatus.ERROR
    )
    # Accounts already waiting for a reconnect, joined or skipped ones are not failures.
    assert cycle_status(CycleCounts(due=0, waiting_reconnect=4), None) is CycleStatus.OK
    assert cycle_status(CycleCounts(due=2, joined=1, skipped=1), None) is CycleStatus.OK


def test_each_result_lands_in_exactly_one_count_and_failures_by_disposition() -> None:
    tally = CycleTally()
    for r in [
        result(1, Outcome.OK),
        result(2, Outcome.INVALID_GRANT),
        result(3, Outcome.TRANSIENT),
        result(4, Outcome.RATE_LIMITED),
        result(5, Outcome.INVALID_CLIENT),
        result(6, Outcome.OK, joined=True),
        result(7, Outcome.INVALID_GRANT, skipped=True),
    ]:
        tally.add(r)
    c = tally.counts
    assert (c.refreshed, c.failed, c.joined, c.skipped) == (1, 4, 1, 1)
    assert (c.needs_reconnect, c.transient, c.configuration) == (1, 2, 1)
    assert c.outcomes == {
        "ok": 2,
        "invalid_grant": 2,
        "transient": 1,
        "rate_limited": 1,
        "invalid_client": 1,
    }
    assert [f.account_id for f in tally.failures] == [2, 3, 4, 5]
    assert tally.failures[0] == FailedAccount(2, Outcome.INVALID_GRANT, "invalid_grant for 2")


def test_the_failure_sample_is_bounded_however_many_fail() -> None:
    tally = CycleTally()
    for account_id in range(10 * FAILURE_SAMPLE):
        tally.add(result(account_id, Outcome.TRANSIENT))
        tally.add(result(100_000 + account_id, Outcome.OK))
    assert tally.counts.failed == 10 * FAILURE_SAMPLE
    assert tally.counts.refreshed == 10 * FAILURE_SAMPLE
    assert [f.account_id for f in tally.failures] == list(range(FAILURE_SAMPLE))


def test_the_tally_keeps_no_result_once_counted() -> None:
    tally = CycleTally()
    secret = "v^1.1#i^1#p^3#r^1#SECRET-ACCESS"
    results = [
        dataclasses.replace(result(1, Outcome.OK), access_token=secret),
        result(2, Outcome.TRANSIENT),
    ]
    refs = [weakref.ref(r) for r in results]
    for r in results:
        tally.add(r)
    del results, r
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
    assert len(tally.failures) == 1
