"""Serve, refresh or refuse: the token API's decision for one request, as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core.access import Access, decide, fresh
from ebay_connector.core.token_state import TokenState

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=5)
COOLDOWN = timedelta(seconds=30)


def access(
    *,
    state: TokenState = TokenState.ACTIVE,
    has_access_token: bool = True,
    expires_in: timedelta | None = timedelta(hours=1),
    failures_in_row: int = 0,
    last_attempt_ago: timedelta | None = None,
    app_rejected_ago: timedelta | None = None,
) -> Access:
    return decide(
        state=state,
        has_access_token=has_access_token,
        access_expires_at=None if expires_in is None else NOW + expires_in,
        failures_in_row=failures_in_row,
        last_attempt_at=None if last_attempt_ago is None else NOW - last_attempt_ago,
        app_rejected_at=None if app_rejected_ago is None else NOW - app_rejected_ago,
        now=NOW,
        margin=MARGIN,
        cooldown=COOLDOWN,
    )


def test_a_token_valid_beyond_the_margin_is_served() -> None:
    assert access() is Access.SERVE
    assert access(expires_in=MARGIN + timedelta(seconds=1)) is Access.SERVE


@pytest.mark.parametrize(
    "expires_in", [MARGIN, timedelta(minutes=1), timedelta(0), -timedelta(hours=1), None]
)
def test_a_token_within_the_margin_or_expired_is_refreshed(expires_in: timedelta | None) -> None:
    assert access(expires_in=expires_in) is Access.REFRESH


def test_no_stored_access_token_is_refreshed() -> None:
    assert access(has_access_token=False) is Access.REFRESH


def test_needs_reconnect_is_refused_even_with_a_valid_token() -> None:
    assert access(state=TokenState.NEEDS_RECONNECT) is Access.NEEDS_RECONNECT
    assert access(state=TokenState.NEEDS_RECONNECT, expires_in=None) is Access.NEEDS_RECONNECT


def test_a_failure_within_the_cooldown_is_answered_without_calling_ebay() -> None:
    recent = timedelta(seconds=10)
    assert access(expires_in=None, failures_in_row=1, last_attempt_ago=recent) is (
        Access.COOLING_DOWN
    )
    # A still-valid token is served whatever the last attempt did.
    assert access(failures_in_row=3, last_attempt_ago=recent) is Access.SERVE


def test_after_the_cooldown_or_without_a_failure_the_request_refreshes() -> None:
    assert access(expires_in=None, failures_in_row=1, last_attempt_ago=COOLDOWN) is Access.REFRESH
    assert access(expires_in=None, failures_in_row=1, last_attempt_ago=None) is Access.REFRESH
    recent = timedelta(seconds=1)
    assert access(expires_in=None, failures_in_row=0, last_attempt_ago=recent) is Access.REFRESH


def test_the_applications_rejection_within_the_cooldown_refuses_every_account() -> None:
    assert access(expires_in=None, app_rejected_ago=timedelta(seconds=5)) is Access.APP_REJECTED
    assert access(expires_in=None, app_rejected_ago=COOLDOWN) is Access.REFRESH
    # The account's own recent failure is its answer first.
    assert (
        access(
            expires_in=None,
            failures_in_row=1,
            last_attempt_ago=timedelta(seconds=1),
            app_rejected_ago=timedelta(seconds=1),
        )
        is Access.COOLING_DOWN
    )
    assert access(app_rejected_ago=timedelta(seconds=1)) is Access.SERVE


def test_fresh_is_strictly_beyond_the_margin() -> None:
    assert fresh(NOW + MARGIN + timedelta(microseconds=1), now=NOW, margin=MARGIN)
    assert not fresh(NOW + MARGIN, now=NOW, margin=MARGIN)
    assert not fresh(None, now=NOW, margin=MARGIN)
