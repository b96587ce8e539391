"""A refresh result carries the new access token for the token API, and never shows it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.token_state import TokenState
from ebay_connector.service.refresh import AccessToken, RefreshResult

pytestmark = pytest.mark.unit

SECRET = "v^1.1#i^1#f^0#r^0#I^3#p^3#t^H4sIAAAAAAAA-secret-access-token"
EXPIRES = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


def test_the_results_repr_and_str_omit_the_access_token() -> None:
    result = RefreshResult(
        account_id=7,
        trigger=Trigger.ON_DEMAND,
        outcome=Outcome.OK,
        message="ok",
        state=TokenState.ACTIVE,
        state_reason=None,
        access_expires_at=EXPIRES,
        next_attempt_at=None,
        called_ebay=True,
        access_token=SECRET,
    )
    assert result.access_token == SECRET
    for shown in (repr(result), str(result), f"{result}"):
        assert "account_id=7" in shown
        assert SECRET not in shown
        assert "access_token" not in shown


def test_an_access_tokens_repr_omits_the_secret() -> None:
    token = AccessToken(7, SECRET, EXPIRES)
    assert SECRET not in repr(token)
    assert "expires_at" in repr(token)


@pytest.mark.parametrize(
    ("outcome", "flags", "failed"),
    [
        (Outcome.OK, {}, False),
        (Outcome.TRANSIENT, {}, True),
        (Outcome.INVALID_GRANT, {}, True),
        (Outcome.OK, {"joined": True}, False),
        (Outcome.TRANSIENT, {"joined": True}, False),
        (Outcome.INVALID_GRANT, {"skipped": True}, False),
    ],
)
def test_failed_means_this_callers_attempt_failed(
    outcome: Outcome, flags: dict[str, bool], failed: bool
) -> None:
    result = RefreshResult(
        account_id=1,
        trigger=Trigger.SCHEDULED,
        outcome=outcome,
        message=outcome.value,
        state=TokenState.ACTIVE,
        state_reason=None,
        access_expires_at=None,
        next_attempt_at=None,
        called_ebay=not flags,
        joined=flags.get("joined", False),
        skipped=flags.get("skipped", False),
    )
    assert result.failed is failed
