"""Notices fire on transitions, never per attempt; the webhook signature is the documented one."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core import notices, quota
from ebay_connector.core.notices import Condition, EventType, Mark, TokenFacts
from ebay_connector.errors import InvalidWebhookUrl
from ebay_connector.service import webhooks

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FAR = NOW + timedelta(days=500)
HOUR = timedelta(hours=1)


def facts(
    state: str = "active",
    reason: str | None = None,
    failures: int = 0,
    access: datetime | None = NOW + HOUR,
    refresh: datetime | None = FAR,
) -> TokenFacts:
    return TokenFacts(state, reason, failures, access, refresh)


def types(found: list[notices.Notice]) -> list[str]:
    return [n.type.value for n in found]


def test_needs_reconnect_fires_once_with_its_reason_and_recovery_once() -> None:
    found, mark = notices.decide(Mark(), facts("needs_reconnect", "invalid_grant", 1), NOW)
    assert types(found) == ["account.needs_reconnect"]
    assert found[0].data == {"reason": "invalid_grant"}
    again, same = notices.decide(mark, facts("needs_reconnect", "invalid_grant", 1), NOW + HOUR)
    assert again == [] and same == mark
    back, ok = notices.decide(mark, facts(), NOW + 2 * HOUR)
    assert types(back) == ["account.recovered"]
    assert back[0].data == {"previous": "needs_reconnect"}
    assert ok.condition is Condition.OK
    assert notices.decide(ok, facts(), NOW + 3 * HOUR)[0] == []


def test_five_hundred_failed_attempts_in_one_outage_are_one_refresh_failing() -> None:
    """The anchor product sent one notice per failed attempt and flooded its users."""
    mark, sent = Mark(), []
    expired_at = NOW
    for attempt in range(1, 501):
        now = NOW + timedelta(minutes=attempt)
        found, mark = notices.decide(mark, facts(failures=attempt, access=expired_at), now)
        sent += types(found)
    assert sent == ["account.refresh_failing"]
    recovered, mark = notices.decide(mark, facts(), NOW + timedelta(days=1))
    assert types(recovered) == ["account.recovered"]
    assert mark.failing_since is None


def test_refresh_failing_waits_for_the_threshold_while_the_access_token_is_expired() -> None:
    thresholds = notices.Thresholds(refresh_failing_after=HOUR)
    # Failing, but the access token is still valid for hours: programs are fine, no notice.
    found, mark = notices.decide(Mark(), facts(failures=3, access=NOW + 5 * HOUR), NOW, thresholds)
    assert found == [] and mark.failing_since == NOW
    # Expired 30 minutes ago, failing since before: not yet.
    later = NOW + 5 * HOUR + timedelta(minutes=30)
    found, mark = notices.decide(mark, facts(failures=9, access=NOW + 5 * HOUR), later, thresholds)
    assert found == []
    found, mark = notices.decide(
        mark, facts(failures=10, access=NOW + 5 * HOUR), NOW + 6 * HOUR, thresholds
    )
    assert types(found) == ["account.refresh_failing"]
    assert found[0].data["failing_since"] == NOW.isoformat()


def test_an_account_long_expired_that_just_started_failing_waits_from_its_first_failure() -> None:
    thresholds = notices.Thresholds(refresh_failing_after=HOUR)
    old = NOW - timedelta(days=3)  # an on-demand account nobody refreshed for days
    found, mark = notices.decide(Mark(), facts(failures=1, access=old), NOW, thresholds)
    assert found == []
    found, _ = notices.decide(mark, facts(failures=2, access=old), NOW + HOUR, thresholds)
    assert types(found) == ["account.refresh_failing"]


def test_failing_then_needs_reconnect_then_reconnected() -> None:
    failing = Mark(Condition.FAILING, failing_since=NOW)
    found, mark = notices.decide(failing, facts("needs_reconnect", "invalid_grant", 4), NOW)
    assert types(found) == ["account.needs_reconnect"]
    assert mark.failing_since is None
    found, mark = notices.decide(mark, facts(), NOW + HOUR)
    assert types(found) == ["account.recovered"]


def test_refresh_token_expiry_warns_at_30_14_and_7_days_once_each() -> None:
    end = NOW + timedelta(days=40)
    mark, sent = Mark(), []
    for day in range(0, 45):
        found, mark = notices.decide(mark, facts(refresh=end), NOW + timedelta(days=day, hours=1))
        sent += [n.data["threshold_days"] for n in found]
    assert sent == [30, 14, 7]


def test_a_new_refresh_token_restarts_its_expiry_warnings() -> None:
    end = NOW + timedelta(days=20)
    found, mark = notices.decide(Mark(), facts(refresh=end), NOW)
    assert [n.data["threshold_days"] for n in found] == [30]
    renewed = NOW + timedelta(days=540)
    found, mark = notices.decide(mark, facts(refresh=renewed), NOW + HOUR)
    assert found == [] and mark.expiry_notified_days is None
    found, _ = notices.decide(mark, facts(refresh=renewed), renewed - timedelta(days=29))
    assert [n.data["threshold_days"] for n in found] == [30]


def test_first_sight_inside_two_thresholds_sends_only_the_nearest() -> None:
    found, mark = notices.decide(Mark(), facts(refresh=NOW + timedelta(days=10)), NOW)
    assert [n.data["threshold_days"] for n in found] == [14]
    assert notices.decide(mark, facts(refresh=NOW + timedelta(days=10)), NOW + HOUR)[0] == []


def test_stale_workers_and_low_quota_carry_stable_dedup_keys() -> None:
    beats = [
        notices.WorkerBeat("w1", "h", "1.0", NOW - HOUR, stale=True),
        notices.WorkerBeat("w2", "h", "1.0", NOW, stale=False),
    ]
    stale = notices.stale_workers(beats)
    assert [n.data["instance_id"] for n in stale] == ["w1"]
    assert stale[0].dedup == notices.stale_workers(beats)[0].dedup
    limits = {"refresh_token": 100, "authorization_code": 100}
    low = notices.quota_low({"refresh_token": 80, "authorization_code": 10}, limits, NOW, 0.25)
    assert [(n.type, n.data["grant"], n.data["remaining"]) for n in low] == [
        (EventType.QUOTA_LOW, "refresh_token", 20)
    ]
    assert notices.quota_low({"refresh_token": 75}, limits, NOW, 0.25) == []
    tomorrow = notices.quota_low({"refresh_token": 80}, limits, NOW + timedelta(days=1), 0.25)
    assert tomorrow[0].dedup != low[0].dedup


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    secret, body = "whsec_test", b'{"a":1}'
    header = webhooks.signature_header(secret, 1_700_000_000, body)
    expected = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    at = datetime.fromtimestamp(1_700_000_000, UTC)
    assert webhooks.verify(secret, header, body, at)
    assert not webhooks.verify(secret, header, body + b" ", at)
    assert not webhooks.verify("whsec_other", header, body, at)
    assert not webhooks.verify(secret, header, body, at + timedelta(minutes=6))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "javascript:alert(1)",
        "not a url",
        "http://",
        "https://user:pass@example.com/hook",
        "http://exa mple.com/",
        "http://example.com:99999/",
        "https://example.com/#frag",
        "http://a..b/",
    ],
)
def test_garbage_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        webhooks.check_url(url)


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/ebay?x=1", "http://127.0.0.1:8080/h", "http://[::1]:9/"]
)
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert str(webhooks.check_url(url)) == url


def test_retries_back_off_and_stop_on_2xx_or_after_the_last_attempt() -> None:
    config = webhooks.DispatchConfig(max_attempts=3)
    rng = random.Random(1)
    status, at = webhooks.after_attempt(attempt=1, status_code=500, now=NOW, config=config, rng=rng)
    assert status == "pending" and at is not None and at >= NOW + config.backoff.floor
    status, at = webhooks.after_attempt(attempt=2, status_code=204, now=NOW, config=config, rng=rng)
    assert (status, at) == ("delivered", None)
    status, at = webhooks.after_attempt(
        attempt=3, status_code=None, now=NOW, config=config, rng=rng
    )
    assert (status, at) == ("failed", None)


def test_a_projection_past_the_limit_notifies_once_per_crossing() -> None:
    over = quota.project(120, 60, timedelta(hours=20), limit=100)
    at_limit = quota.project(100, 50, timedelta(hours=20), limit=100)
    near = quota.project(95, 45, timedelta(hours=20), limit=100)
    under = quota.project(80, 40, timedelta(hours=20), limit=100)
    sent, armed = notices.quota_projected(over, True, NOW)
    assert [n.type for n in sent] == [EventType.QUOTA_PROJECTED_EXCEEDED] and not armed
    assert sent[0].data["projected_24h"] == 120 and "Growth Check" in sent[0].data["remedy"]
    # Hovering at the limit, or just under it, is the same crossing.
    for projection in (at_limit, near, over):
        sent, armed = notices.quota_projected(projection, armed, NOW)
        assert sent == [] and not armed
    sent, armed = notices.quota_projected(under, armed, NOW)
    assert sent == [] and armed
    sent, armed = notices.quota_projected(at_limit, armed, NOW + timedelta(hours=1))
    assert len(sent) == 1 and not armed
