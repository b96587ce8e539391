"""The documents the CLI, the API and the UI render: exactly their TypedDict's keys, and plain
JSON values (an enum is rendered as its code, never handed on as an object)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from ebay_connector.core.exchange import Action, ExchangeRecord, Trigger
from ebay_connector.core.outcome import MEANINGS, Outcome
from ebay_connector.core.token_state import TokenState
from ebay_connector.db.heartbeats import HeartbeatRow
from ebay_connector.db.journal import AttemptRow, ExchangeRow
from ebay_connector.service.refresh import AccessToken, RefreshResult
from ebay_connector.web import views
from tests.unit.test_badge import AHEAD, BASE, NOW

pytestmark = pytest.mark.unit

PLAIN = (str, int, float, bool, type(None))

RECORD = ExchangeRecord(
    action=Action.REFRESH_TOKEN,
    method="POST",
    url="https://api.example/identity/v1/oauth2/token",
    request_headers={"content-type": "application/x-www-form-urlencoded"},
    request_body={"grant_type": "refresh_token"},
    sent=True,
    outcome=Outcome.INVALID_GRANT,
    status=400,
    response_body={"error": "invalid_grant"},
    duration_ms=12.5,
    error="invalid_grant: the refresh token was revoked",
    token_fingerprint="0123456789abcdef",
)
ROW = ExchangeRow(
    id=7,
    created_at=NOW,
    action=Action.REFRESH_TOKEN,
    trigger=Trigger.DEBUG,
    actor="cli",
    account_id=1,
    account_label="u",
    organization_id=1,
    environment="emulator",
    outcome=Outcome.INVALID_GRANT,
    sent=True,
    status=400,
    duration_ms=12.5,
    error="invalid_grant: the refresh token was revoked",
    token_fingerprint="0123456789abcdef",
    request=dict(RECORD.request_dict()),
    response=None,
)
RESULT = RefreshResult(
    account_id=1,
    trigger=Trigger.ADMIN,
    outcome=Outcome.INVALID_GRANT,
    message="invalid_grant: the refresh token was revoked",
    state=TokenState.NEEDS_RECONNECT,
    state_reason="invalid_grant",
    access_expires_at=NOW,
    next_attempt_at=None,
    called_ebay=True,
    exchange=RECORD,
    exchange_id=7,
)


def assert_plain(value: Any, where: str = "document") -> None:
    """Only JSON's own types, exactly: a StrEnum would pass ``isinstance(str)``."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, where
            assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            assert_plain(item, where)
    else:
        assert type(value) in PLAIN, f"{where} is a {type(value).__name__}"


def keys_of(doc_type: Any) -> set[str]:
    return set(doc_type.__required_keys__) | set(doc_type.__optional_keys__)


def test_an_exchange_row_renders_its_codes_and_their_meaning() -> None:
    doc = views.exchange_row_dict(ROW)
    assert set(doc) == keys_of(views.ExchangeRowDoc)
    assert_plain(doc)
    assert (doc["action"], doc["trigger"], doc["outcome"]) == (
        "refresh_token",
        "debug",
        "invalid_grant",
    )
    assert doc["meaning"] == MEANINGS[Outcome.INVALID_GRANT]
    assert doc["created_at"] == NOW.isoformat()


def test_a_fresh_record_renders_as_the_exchange_it_will_be_stored_as() -> None:
    doc = views.record_dict(RECORD)
    assert set(doc) == keys_of(views.RecordDoc)
    assert_plain(doc)
    assert doc["outcome"] == "invalid_grant"
    assert doc["request"] == RECORD.request_dict()
    assert views.exchange_dict(RECORD) == doc
    assert views.exchange_dict(ROW) == views.exchange_row_dict(ROW)
    assert views.exchange_dict(None) is None


def test_an_account_renders_every_field_once() -> None:
    account = dataclasses.replace(BASE, refresh_policy="auto", scopes=("a", "b"))
    doc = views.account_dict(account, NOW, AHEAD)
    assert set(doc) == keys_of(views.AccountDoc)
    assert_plain(doc)
    assert (doc["state"], doc["display_state"], doc["scopes"]) == ("active", "active", ["a", "b"])


def test_a_refresh_result_renders_with_its_exchange() -> None:
    doc = views.refresh_result_dict(RESULT, views.exchange_dict(RESULT.exchange))
    assert set(doc) == keys_of(views.RefreshResultDoc)
    assert_plain(doc)
    assert (doc["trigger"], doc["outcome"], doc["state"]) == (
        "admin",
        "invalid_grant",
        "needs_reconnect",
    )
    assert doc["exchange"] == views.record_dict(RECORD)


def test_a_heartbeat_renders_stale_once_it_is_old() -> None:
    beat = HeartbeatRow(
        instance_id="host:1:abc",
        host="host",
        pid=1,
        version="1.0",
        started_at=NOW,
        interval_seconds=60,
        last_cycle_started_at=NOW,
        last_cycle_finished_at=NOW,
        status="ok",
        counts={"refreshed": 1},
        last_error=None,
        app_credentials=None,
        cycles=1,
        updated_at=NOW,
    )
    doc = views.heartbeat_dict(beat, NOW)
    assert set(doc) == keys_of(views.HeartbeatDoc)
    assert_plain(doc)
    assert (doc["status"], doc["reported_status"]) == ("ok", "ok")
    later = views.heartbeat_dict(beat, NOW + timedelta(minutes=5))
    assert (later["status"], later["reported_status"]) == ("stale", "ok")


def test_an_attempt_renders_its_codes() -> None:
    attempt = AttemptRow(
        id=3,
        account_id=1,
        organization_id=1,
        trigger=Trigger.SCHEDULED,
        actor=None,
        started_at=NOW,
        finished_at=NOW,
        outcome=Outcome.TRANSIENT,
        error_code="transient",
        error_message="HTTP 503 from eBay",
        old_expires_at=None,
        new_expires_at=None,
        exchange_id=7,
    )
    doc = views.attempt_dict(attempt)
    assert set(doc) == keys_of(views.AttemptDoc)
    assert_plain(doc)
    assert (doc["trigger"], doc["outcome"], doc["error_code"]) == (
        "scheduled",
        "transient",
        "transient",
    )


def test_an_access_token_document() -> None:
    token = AccessToken(account_id=1, access_token="not-a-real-token", expires_at=NOW)
    doc = views.access_token_dict(token)
    assert set(doc) == keys_of(views.AccessTokenDoc)
    assert_plain(doc)
    assert doc == {
        "account_id": 1,
        "access_token": "not-a-real-token",
        "expires_at": NOW.isoformat(),
        "token_type": "Bearer",
    }
