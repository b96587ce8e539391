"""The emulator's pure pieces: token shapes, parsing, fault knobs, stores, rules without HTTP."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.emulator import Emulator, Faults, consent, tokens, wire
from ebay_connector.emulator.store import Access, Expiring

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SCOPE = "https://api.ebay.com/oauth/api_scope"
BASIC = "Basic " + base64.b64encode(b"cid:secret").decode()


def test_every_token_kind_has_ebays_header_and_encoding_hostile_characters() -> None:
    for make, header, tail in [
        (tokens.new_user_access_token, tokens.USER_ACCESS_HEADER, "=="),
        (tokens.new_application_access_token, tokens.APPLICATION_ACCESS_HEADER, "=="),
        (tokens.new_refresh_token, tokens.REFRESH_HEADER, "="),
        (tokens.new_code, tokens.CODE_HEADER, "="),
    ]:
        token = make()
        payload = token.removeprefix(header)
        assert token.startswith(header)
        assert "+" in payload
        assert "/" in payload
        assert payload.endswith(tail)
        base64.b64decode(payload, validate=True)
    assert make() != make()


def test_code_stays_under_ebays_1024_character_limit() -> None:
    assert len(tokens.new_code()) <= 1024


def test_token_key_is_a_short_exact_digest() -> None:
    token = tokens.new_user_access_token()
    assert len(tokens.token_key(token)) == 16
    assert tokens.token_key(token) != tokens.token_key(token[:-1] + "A")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a b", ("a", "b")),
        ("a  b a", ("a", "b")),
        ("a%20b", ("a", "b")),  # eBay's node client: literal %20, then form-encoded again
        ("", ()),
    ],
)
def test_parse_scopes(raw: str, expected: tuple[str, ...]) -> None:
    assert wire.parse_scopes(raw) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (BASIC, ("cid", "secret")),
        ("basic " + base64.b64encode(b"a:b:c").decode(), ("a", "b:c")),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Bearer x", None),
        (None, None),
    ],
)
def test_basic_credentials(header: str | None, expected: tuple[str, str] | None) -> None:
    assert wire.basic_credentials(header) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"latency_ms": -1},
        {"latency_ms": 1.5},
        {"error_rate": 1.5},
        {"error_rate": "0.5"},
        {"error_status": 200},
        {"rate_limited": 1},
        {"retry_after_s": -1},
        {"hang_s": 0},
        {"hang_s": 301},
        {"malformed": "xml"},
    ],
)
def test_faults_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        Faults(**bad)  # type: ignore[arg-type]  # wrong types on purpose: the test is the refusal


def test_user_faults_override_global_ones_field_by_field() -> None:
    emulator = Emulator()
    emulator.register_app("cid", "secret", "Ru", "https://x.example/cb")
    token = str(emulator.issue_grant("cid", "slow", [SCOPE])["refresh_token"])
    emulator.set_faults(Faults(latency_ms=100, error_rate=0.1))
    emulator.set_faults(Faults(error_rate=0.9), username="slow")
    form = {"grant_type": "refresh_token", "refresh_token": token}
    faults, owner = emulator.faults_for(form)
    assert owner == "slow"
    assert (faults.latency_ms, faults.error_rate) == (100, 0.9)
    assert emulator.faults_for({"refresh_token": "other"})[0].error_rate == 0.1


def test_expiring_store_drops_expired_entries_and_respects_its_cap() -> None:
    store: Expiring[Access] = Expiring(cap=3)
    for i in range(5):
        expires = T0 + timedelta(seconds=10 + i)
        store.add(f"k{i}", Access("cid", None, frozenset(), expires, None), T0)
    assert len(store) == 3
    assert store.get("k0", T0) is None
    assert store.get("k4", T0) is not None
    assert store.get("k4", T0 + timedelta(seconds=14)) is None
    store.add(
        "k5",
        Access("cid", None, frozenset(), T0 + timedelta(days=1), None),
        T0 + timedelta(seconds=13),
    )
    assert len(store) == 2  # k2 (12 s) and k3 (13 s) have gone; k4 (14 s) and k5 remain


def test_minting_many_tokens_keeps_memory_bounded() -> None:
    emulator = Emulator(max_access_tokens=100)
    emulator.register_app("cid", "secret", "Ru", "https://x.example/cb")
    token = str(emulator.issue_grant("cid", "u", [SCOPE])["refresh_token"])
    form = {"grant_type": "refresh_token", "refresh_token": token}
    for _ in range(1000):
        assert emulator.token(form, BASIC, Faults()).status == 200
    assert len(emulator._store.access) == 100
    assert emulator.calls.count(endpoint="token", username="u", status=200) == 1000


def test_call_log_keeps_recent_calls_but_counts_all() -> None:
    log = wire.CallLog(max_recorded=2)
    for status in (200, 400, 200):
        log.add(wire.Call(wire.Endpoint.TOKEN, "refresh_token", "cid", "u", status, T0))
    assert [c.status for c in log] == [400, 200]
    assert log.count() == 3
    assert log.count(status=200) == 2
    assert log.count(endpoint="user") == 0


def test_consent_page_escapes_what_it_echoes() -> None:
    request = consent.ConsentRequest("cid", "Ru", (SCOPE,), '"><script>x</script>')
    page = consent.render_page(request, ["<b>bob</b>"])
    assert "<script>" not in page
    assert "&lt;b&gt;bob&lt;/b&gt;" in page


def test_emulator_clock_can_be_advanced_for_other_processes() -> None:
    emulator = Emulator(clock=lambda: T0)
    assert emulator.advance_clock(60) == T0 + timedelta(minutes=1)
    emulator.reset()
    assert emulator.now() == T0
