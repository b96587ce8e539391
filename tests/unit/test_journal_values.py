"""The journal's values: enums in, column text out, and what an attempt's columns say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core.exchange import Action, ExchangeRecord
from ebay_connector.core.outcome import Outcome
from ebay_connector.db.journal import Attempt

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def attempt(outcome: Outcome) -> Attempt:
    return Attempt(
        started_at=NOW - timedelta(seconds=1),
        finished_at=NOW,
        outcome=outcome,
        error_message=None if outcome is Outcome.OK else "HTTP 503 from eBay",
        old_expires_at=NOW,
        new_expires_at=NOW + timedelta(hours=2) if outcome is Outcome.OK else None,
    )


def test_a_successful_attempt_has_no_error_code() -> None:
    columns = attempt(Outcome.OK).columns()
    assert (columns["outcome"], columns["error_code"]) == ("ok", None)


@pytest.mark.parametrize("outcome", [o for o in Outcome if o is not Outcome.OK])
def test_a_failed_attempt_names_its_outcome_as_error_code(outcome: Outcome) -> None:
    columns = attempt(outcome).columns()
    assert columns["error_code"] == columns["outcome"] == outcome.value


def test_attempt_columns_hold_plain_text_not_enums() -> None:
    """The conversion to column text happens here, once; the database sees only text."""
    columns = attempt(Outcome.TRANSIENT).columns()
    assert type(columns["outcome"]) is str
    assert type(columns["error_code"]) is str


def test_an_exchange_record_renders_its_request_and_answer() -> None:
    record = ExchangeRecord(
        action=Action.REFRESH_TOKEN,
        method="POST",
        url="https://api.example/identity/v1/oauth2/token",
        request_headers={"authorization": "Basic …"},
        request_body={"grant_type": "refresh_token"},
        sent=True,
        outcome=Outcome.OK,
        status=200,
        response_headers={"content-type": "application/json"},
        response_body={"expires_in": 7200},
    )
    assert record.request_dict() == {
        "method": "POST",
        "url": "https://api.example/identity/v1/oauth2/token",
        "headers": {"authorization": "Basic …"},
        "body": {"grant_type": "refresh_token"},
        "sent": True,
    }
    assert record.response_dict() == {
        "status": 200,
        "headers": {"content-type": "application/json"},
        "body": {"expires_in": 7200},
    }


def test_an_exchange_never_sent_has_no_answer() -> None:
    record = ExchangeRecord(
        action=Action.REFRESH_TOKEN,
        method="POST",
        url="https://api.example/identity/v1/oauth2/token",
        request_headers={},
        request_body={},
        sent=False,
        outcome=Outcome.DECRYPT_FAILED,
        error="cannot decrypt; no request was sent",
    )
    assert record.response_dict() is None
    assert record.request_dict()["sent"] is False
