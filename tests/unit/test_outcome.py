"""Every eBay answer is classified once; these pin what each one means."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core.outcome import Disposition, Outcome, classify_token_answer, disposition

pytestmark = pytest.mark.unit


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_refresh_success_is_ok_with_the_three_fields() -> None:
    answer = body(
        {"access_token": "v^1.1#x", "expires_in": 7200, "token_type": "User Access Token"}
    )
    result = classify_token_answer(200, {}, answer)
    assert result.outcome is Outcome.OK
    assert result.grant is not None
    assert result.grant.expires_in == 7200
    assert result.grant.refresh_token is None


def test_code_exchange_success_carries_refresh_token_and_its_lifetime() -> None:
    answer = body(
        {
            "access_token": "v^1.1#a",
            "expires_in": 7200,
            "refresh_token": "v^1.1#r",
            "refresh_token_expires_in": 47304000,
            "token_type": "User Access Token",
        }
    )
    grant = classify_token_answer(200, {}, answer).grant
    assert grant is not None
    assert (grant.refresh_token, grant.refresh_token_expires_in) == ("v^1.1#r", 47304000)


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (400, "invalid_grant", Outcome.INVALID_GRANT),
        (401, "invalid_client", Outcome.INVALID_CLIENT),
        (400, "invalid_scope", Outcome.INVALID_SCOPE),
        (400, "invalid_request", Outcome.INVALID_REQUEST),
        (400, "unsupported_grant_type", Outcome.CONFIGURATION_ERROR),
        (400, "something_new", Outcome.CONFIGURATION_ERROR),
    ],
)
def test_oauth_error_bodies(status: int, error: str, expected: Outcome) -> None:
    answer = body({"error": error, "error_description": "text"})
    assert classify_token_answer(status, {}, answer).outcome is expected


def test_invalid_grant_is_permanent_and_transients_are_not() -> None:
    assert disposition(Outcome.INVALID_GRANT) is Disposition.PERMANENT
    assert disposition(Outcome.DECRYPT_FAILED) is Disposition.PERMANENT
    assert disposition(Outcome.TRANSIENT) is Disposition.TRANSIENT
    assert disposition(Outcome.RATE_LIMITED) is Disposition.TRANSIENT
    assert disposition(Outcome.INVALID_CLIENT) is Disposition.CONFIGURATION


def test_every_outcome_has_a_disposition() -> None:
    for outcome in Outcome:
        disposition(outcome)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient_even_with_html(status: int) -> None:
    result = classify_token_answer(status, {}, b"<html><body>Bad gateway</body></html>")
    assert result.outcome is Outcome.TRANSIENT


def test_429_reads_retry_after_seconds() -> None:
    result = classify_token_answer(429, {"retry-after": "17"}, body({"errors": []}))
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.retry_after == timedelta(seconds=17)


def test_429_reads_retry_after_http_date() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    result = classify_token_answer(
        429, {"retry-after": "Sat, 28 Nov 2026 12:01:00 GMT"}, b"", now=now
    )
    assert result.retry_after == timedelta(seconds=60)


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        body({"expires_in": 7200, "token_type": "User Access Token"}),
        body({"access_token": "", "expires_in": 7200}),
        body({"access_token": "v^1.1#x", "expires_in": "7200"}),
        body({"access_token": "v^1.1#x", "expires_in": True}),
        body(["access_token"]),
    ],
)
def test_200_without_a_usable_token_is_malformed(answer: bytes) -> None:
    assert classify_token_answer(200, {}, answer).outcome is Outcome.MALFORMED_RESPONSE


def test_401_without_body_is_invalid_client() -> None:
    assert classify_token_answer(401, {}, b"").outcome is Outcome.INVALID_CLIENT
