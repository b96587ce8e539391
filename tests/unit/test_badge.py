"""The one rule that turns a stored token into what an operator reads (CLI, API and UI)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core.token_state import TokenState
from ebay_connector.db.store import AccountToken
from ebay_connector.web import views

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
AHEAD = timedelta(minutes=15)
BASE = AccountToken(
    account_id=1,
    organization_id=1,
    environment="emulator",
    ebay_user_id="u",
    ebay_username="u",
    label="u",
    scopes=(),
    refresh_policy=None,
    last_used_at=None,
    use_interval_s=None,
    use_jitter_s=None,
    created_at=NOW,
    access_token_ciphertext="ENC:v1:k:x",
    access_expires_at=NOW + timedelta(hours=1),
    refresh_token_ciphertext="ENC:v1:k:y",
    refresh_expires_at=None,
    state=TokenState.ACTIVE,
    state_reason=None,
    last_error_code=None,
    last_error_message=None,
    failures_in_row=0,
    next_attempt_at=None,
    last_attempt_at=None,
    last_success_at=None,
    version=0,
    lease_owner=None,
    lease_until=None,
)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ("active", "ok")),
        ({"access_expires_at": NOW + timedelta(minutes=5)}, ("expiring soon", "warn")),
        ({"access_expires_at": NOW - timedelta(hours=3)}, ("active", "ok")),  # idle, not broken
        ({"failures_in_row": 2}, ("refresh failing", "bad")),
        (
            {"state": TokenState.NEEDS_RECONNECT, "state_reason": "decrypt_failed"},
            ("needs reconnect", "bad"),
        ),
    ],
)
def test_badge(changes: dict[str, object], expected: tuple[str, str]) -> None:
    # **changes is typed object; each value has the type of the field it replaces.
    assert views.badge(dataclasses.replace(BASE, **changes), NOW, AHEAD) == expected  # type: ignore[arg-type]


def test_display_state_carries_the_machine_reason() -> None:
    broken = dataclasses.replace(
        BASE, state=TokenState.NEEDS_RECONNECT, state_reason="invalid_grant"
    )
    assert views.display_state(broken, NOW, AHEAD) == "needs reconnect (invalid_grant)"
