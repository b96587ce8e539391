"""What doctor's findings mean: each check's ok, warn and fail, from values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from ebay_connector.core import checkup, ebay_setup
from ebay_connector.core.checkup import Check, Report, Status
from ebay_connector.core.ebay_setup import PageAnswer
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.quota import QuotaConfig, QuotaState

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CALLBACK = "https://connector.example/api/ebay/callback"


def settings_facts(**kw: object) -> checkup.SettingsFacts:
    values: dict[str, object] = {
        "environment": "production",
        "client_id": "Shop-Conn-PRD-1a2b3c4d5-6e7f8a9b",
        "public_url": "https://connector.example",
        "key_ring": "EBAY_CONNECTOR_TOKEN_KEYS",
        "emulator_url": "http://127.0.0.1:8000/emulator",
    }
    return checkup.SettingsFacts(**{**values, **kw})  # type: ignore[arg-type]


def test_report_fails_only_on_a_failed_check() -> None:
    ok, warn = Check("a", Status.OK, "fine"), Check("b", Status.WARN, "hm", "look")
    assert Report((ok, warn)).ok
    report = Report((ok, warn, Check("c", Status.FAIL, "broken", "fix")))
    assert not report.ok
    doc = report.to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["ok"] is False
    assert doc["checks"][1] == {"name": "b", "status": "warn", "detail": "hm", "remedy": "look"}


def test_settings_for_production() -> None:
    assert checkup.settings_check(settings_facts()).status is Status.OK
    plain = checkup.settings_check(settings_facts(public_url="http://connector.example"))
    assert plain.status is Status.FAIL and "not https" in plain.detail
    local = checkup.settings_check(settings_facts(public_url="https://127.0.0.1:8443"))
    assert local.status is Status.FAIL and "local address" in local.detail
    sandbox_id = checkup.settings_check(settings_facts(client_id="Shop-Conn-SBX-1a2b3c4d5-6e"))
    assert sandbox_id.status is Status.WARN and "SBX" in sandbox_id.detail


def test_settings_for_sandbox_and_the_emulator() -> None:
    local = settings_facts(environment="sandbox", public_url="http://localhost:8000")
    assert checkup.settings_check(local).status is Status.WARN
    emulator = settings_facts(environment="emulator", client_id=None, public_url="http://x:1")
    assert checkup.settings_check(emulator).status is Status.OK
    broken = settings_facts(public_url="connector.example")
    assert checkup.settings_check(broken).status is Status.FAIL


def database(**kw: object) -> Check:
    values: dict[str, object] = {
        "description": "SQLite file /srv/db",
        "revision": "0010",
        "head": "0010",
        "pool_size": 20,
    }
    return checkup.database_check(checkup.DatabaseFacts(**{**values, **kw}))  # type: ignore[arg-type]


def test_database() -> None:
    assert database().status is Status.OK
    none = database(revision=None)
    assert none.status is Status.FAIL and "db upgrade" in none.remedy
    behind = database(revision="0009")
    assert behind.status is Status.FAIL and "0009" in behind.detail
    assert database(max_connections=100).status is Status.OK
    crowded = database(max_connections=20)
    assert crowded.status is Status.WARN and "POOL_SIZE" in crowded.remedy
    down = checkup.database_unreachable("postgresql://u@h/db", "database unavailable: refused")
    assert down.status is Status.FAIL


def key_ring(**kw: object) -> Check:
    values: dict[str, object] = {
        "ring": ("k1", "k2"),
        "primary": "k2",
        "by_key": {"k1": 3, "k2": 9},
        "tried": 8,
        "failures": (),
        "full": False,
    }
    facts = checkup.KeyRingFacts(**{**values, **kw})  # type: ignore[arg-type]
    return checkup.key_ring_check(facts, "EBAY_CONNECTOR_TOKEN_KEYS")


def test_key_ring() -> None:
    fine = key_ring()
    assert fine.status is Status.OK and "k1 3 · k2 9" in fine.detail
    missing = key_ring(by_key={"k1": 3, "old": 2})
    assert missing.status is Status.FAIL
    assert "'old' (2)" in missing.detail and "EBAY_CONNECTOR_TOKEN_KEYS" in missing.remedy
    failing = key_ring(failures=["access_token account 4: authentication_failed (key 'k1')"])
    assert failing.status is Status.FAIL and "1 of 8" in failing.detail
    assert key_ring(unsealed=1).status is Status.FAIL


def test_credentials() -> None:
    assert ebay_setup.credentials_check(Outcome.OK, "ok", "sandbox").status is Status.OK
    refused = ebay_setup.credentials_check(
        Outcome.INVALID_CLIENT, "invalid_client: client authentication failed", "sandbox"
    )
    assert refused.status is Status.FAIL
    assert refused.detail.startswith("invalid_client")
    assert "sandbox keyset" in refused.remedy
    down = ebay_setup.credentials_check(Outcome.TRANSIENT, "timeout", "production")
    assert down.status is Status.FAIL and "reaches eBay" in down.remedy


ERROR_BODY = json.dumps(
    {
        "error_id": "invalid_request",
        "error_description": "Input request parameters are invalid.",
        "http_status_code": 400,
    }
).encode()


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (PageAnswer(200, content_type="text/html; charset=utf-8", body=b"<form>"), Status.OK),
        (PageAnswer(302, location="https://signin.ebay.com/ws/eBayISAPI.dll?SignIn"), Status.OK),
        (PageAnswer(400, content_type="application/json", body=ERROR_BODY), Status.FAIL),
        (
            PageAnswer(
                302, location="https://auth.ebay.com/oauth2/errorOauth?errorId=invalid_request"
            ),
            Status.FAIL,
        ),
        (PageAnswer(302, location="https://phish.example/"), Status.FAIL),
        (PageAnswer(None, error="timeout: TimeoutError"), Status.FAIL),
        (PageAnswer(500, content_type="text/plain"), Status.FAIL),
    ],
)
def test_consent_page(answer: PageAnswer, status: Status) -> None:
    assert ebay_setup.consent_check(answer, "Shop-RuName").status is status


def test_an_error_page_is_named() -> None:
    check = ebay_setup.consent_check(PageAnswer(400, body=ERROR_BODY), "Shop-RuName")
    assert "invalid_request" in check.detail and "Shop-RuName" in check.remedy


def test_ru_name_against_the_registry() -> None:
    app = ebay_setup.RegisteredApp("Shop-RuName", CALLBACK)
    fine = ebay_setup.ru_name_check(
        app, ru_name="Shop-RuName", callback_url=CALLBACK, connected_at=None
    )
    assert fine.status is Status.OK
    other = ebay_setup.ru_name_check(app, ru_name="Other", callback_url=CALLBACK, connected_at=None)
    assert other.status is Status.FAIL and "EBAY_CONNECTOR_RU_NAME=Shop-RuName" in other.remedy
    moved = ebay_setup.ru_name_check(
        app,
        ru_name="Shop-RuName",
        callback_url="https://new.example/api/ebay/callback",
        connected_at=None,
    )
    assert moved.status is Status.FAIL and CALLBACK in moved.detail


def test_ru_name_at_real_ebay_needs_a_connect() -> None:
    unproven = ebay_setup.ru_name_check(None, ru_name="R", callback_url=CALLBACK, connected_at=None)
    assert unproven.status is Status.WARN and CALLBACK in unproven.remedy
    proven = ebay_setup.ru_name_check(None, ru_name="R", callback_url=CALLBACK, connected_at=NOW)
    assert proven.status is Status.OK


OUR_401 = json.dumps({"error": {"code": "unauthorized", "message": "sign in first"}}).encode()


def test_callback() -> None:
    assert (
        ebay_setup.callback_check(PageAnswer(401, body=OUR_401), CALLBACK, "production").status
        is Status.OK
    )
    other = ebay_setup.callback_check(PageAnswer(404, body=b"<html>"), CALLBACK, "production")
    assert other.status is Status.FAIL and "not as ebay-connector" in other.detail
    silent = ebay_setup.callback_check(PageAnswer(None, error="ConnectError"), CALLBACK, "sandbox")
    assert silent.status is Status.FAIL and "ConnectError" in silent.detail
    plain = "http://connector.example/api/ebay/callback"
    assert (
        ebay_setup.callback_check(PageAnswer(401, body=OUR_401), plain, "production").status
        is Status.FAIL
    )
    assert (
        ebay_setup.callback_check(PageAnswer(401, body=OUR_401), plain, "sandbox").status
        is Status.OK
    )


ENDPOINT = "https://connector.example/api/ebay/notifications/account-deletion"


def deletion(**kw: object) -> Check:
    values: dict[str, object] = {
        "environment": "production",
        "configured": True,
        "exempt": False,
        "endpoint": ENDPOINT,
        "answer": PageAnswer(200, body=b'{"challengeResponse": "abc"}'),
        "expected": "abc",
    }
    return ebay_setup.deletion_check(ebay_setup.DeletionFacts(**{**values, **kw}))  # type: ignore[arg-type]


def test_account_deletion() -> None:
    assert deletion().status is Status.OK
    assert deletion(expected="def").status is Status.FAIL
    assert deletion(answer=PageAnswer(503, body=b"{}")).status is Status.FAIL
    assert deletion(answer=PageAnswer(None, error="ConnectError")).status is Status.FAIL
    local = deletion(endpoint="http://127.0.0.1:8000/api/ebay/notifications/account-deletion")
    assert local.status is Status.FAIL and "public https" in local.detail


def test_account_deletion_unconfigured() -> None:
    missing = deletion(configured=False, answer=None, expected=None)
    assert missing.status is Status.FAIL and "DELETION_EXEMPT" in missing.remedy
    assert deletion(configured=False, exempt=True, answer=None).status is Status.OK
    assert deletion(configured=False, environment="sandbox", answer=None).status is Status.OK


def worker(status: str = "ok", version: str = "1.0", age_s: int = 5) -> checkup.WorkerSeen:
    return checkup.WorkerSeen("w1", "host", version, status, NOW - timedelta(seconds=age_s))


def test_workers() -> None:
    assert checkup.workers_check([worker()], "1.0").status is Status.OK
    none = checkup.workers_check([], "1.0")
    assert none.status is Status.FAIL and "no worker" in none.detail
    stale = checkup.workers_check([worker("stale", "0.9", 3600)], "1.0")
    assert stale.status is Status.FAIL and "0.9" in stale.detail
    assert checkup.workers_check([worker("error")], "1.0").status is Status.FAIL
    other = checkup.workers_check([worker(version="0.9")], "1.0")
    assert other.status is Status.WARN and "0.9" in other.detail
    assert checkup.workers_check([worker(), worker("stale", "0.9")], "1.0").status is Status.OK


@pytest.mark.parametrize(
    ("skew_s", "status"),
    [(0, Status.OK), (29, Status.OK), (-29, Status.OK), (31, Status.FAIL), (-95, Status.FAIL)],
)
def test_clock(skew_s: int, status: Status) -> None:
    theirs = format_datetime(NOW - timedelta(seconds=skew_s), usegmt=True)
    assert checkup.clock_check(theirs, NOW).status is status


def test_clock_without_a_date() -> None:
    assert checkup.clock_check(None, NOW).status is Status.WARN
    assert checkup.clock_check("yesterday", NOW).status is Status.WARN


def test_quota() -> None:
    config = QuotaConfig(limits={"refresh_token": 100, "client_credentials": 10})
    assert checkup.quota_check(QuotaState({"refresh_token": 10}, config), 0.25).status is Status.OK
    low = checkup.quota_check(QuotaState({"refresh_token": 80}, config), 0.25)
    assert low.status is Status.WARN and "20 of 100" in low.detail
    spent = checkup.quota_check(QuotaState({"client_credentials": 10}, config), 0.25)
    assert spent.status is Status.FAIL and "client_credentials" in spent.detail


def test_a_check_out_of_time() -> None:
    assert checkup.timed_out("consent", 8).status is Status.FAIL
    assert checkup.not_checked("quota", "db down").status is Status.WARN
