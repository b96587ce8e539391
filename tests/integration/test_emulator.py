"""The eBay identity emulator over real HTTP on loopback (EmulatorServer + httpx).

One server serves the module; every test starts from a reset emulator, a fixed clock and one
registered keyset. Tests that need their own constructor settings start their own server.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest

from ebay_connector.emulator import Emulator, EmulatorServer, Faults

pytestmark = pytest.mark.integration

TOKEN = "/identity/v1/oauth2/token"
REVOKE = "/identity/v1/oauth2/token/revoke"
USER = "/commerce/identity/v1/user/"
AUTHORIZE = "/oauth2/authorize"

CLIENT_ID = "FakeApp-Demo-PRD-0123456789-abcdef01"
SECRET = "PRD-0123456789ab-cdef-0123-4567-89ab"
RU_NAME = "Fake_Seller-FakeApp-Demo-P-abcdefghi"
ACCEPT = "https://seller-tool.example/ebay/callback"
DECLINE = "https://seller-tool.example/ebay/declined"
AUTH = (CLIENT_ID, SECRET)

SCOPE_ROOT = "https://api.ebay.com/oauth/api_scope"
IDENTITY = SCOPE_ROOT + "/commerce.identity.readonly"
INVENTORY = SCOPE_ROOT + "/sell.inventory"
ACCOUNT = SCOPE_ROOT + "/sell.account"
SCOPES = [SCOPE_ROOT, IDENTITY, INVENTORY]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

REFRESH_INVALID = (
    "the provided authorization refresh token is invalid or was issued to another client"
)
CODE_INVALID = "the provided authorization grant code is invalid or was issued to another client"
SCOPE_INVALID = (
    "The requested scope is invalid, unknown, malformed, or exceeds the scope granted to the client"
)
MALFORMED = "request is missing a required parameter or malformed."
AUTHORIZE_ERROR = {
    "error_id": "invalid_request",
    "error_description": "Input request parameters are invalid.",
    "http_status_code": 400,
}
INVALID_TOKEN = {
    "errors": [
        {
            "errorId": 1001,
            "domain": "OAuth",
            "category": "REQUEST",
            "message": "Invalid access token",
            "longMessage": "Invalid access token. Check the value of the Authorization HTTP "
            "request header.",
        }
    ]
}


class Clock:
    """A movable clock the emulator reads from the server thread."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def server(clock: Clock) -> Iterator[EmulatorServer]:
    with EmulatorServer(Emulator(clock=clock, seed=7)) as running:
        yield running


@pytest.fixture
def emulator(server: EmulatorServer, clock: Clock) -> Emulator:
    server.emulator.reset()
    clock.now = T0
    server.emulator.register_app(CLIENT_ID, SECRET, RU_NAME, ACCEPT, DECLINE)
    return server.emulator


@pytest.fixture
def client(server: EmulatorServer, emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        yield http


def consent_params(scopes: list[str] = SCOPES, state: str | None = "st_FAKE123") -> dict[str, str]:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": RU_NAME,
        "response_type": "code",
        "scope": " ".join(scopes),
    }
    if state is not None:
        params["state"] = state
    return params


def authorize(client: httpx.Client, username: str = "seller1", scopes: list[str] = SCOPES) -> str:
    """Answer consent with one POST; return the code as the callback decodes it (once)."""
    form = {**consent_params(scopes), "username": username, "decision": "agree"}
    answer = client.post(AUTHORIZE, data=form)
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def exchange(client: httpx.Client, code: str, ru_name: str = RU_NAME) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": ru_name}
    return client.post(TOKEN, data=form, auth=AUTH)


def connect(
    client: httpx.Client, username: str = "seller1", scopes: list[str] = SCOPES
) -> dict[str, Any]:
    answer = exchange(client, authorize(client, username, scopes))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def refresh(client: httpx.Client, token: str, scope: str | None = None) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    if scope is not None:
        form["scope"] = scope
    return client.post(TOKEN, data=form, auth=AUTH)


def get_user(client: httpx.Client, access_token: str) -> httpx.Response:
    return client.get(USER, headers={"Authorization": f"Bearer {access_token}"})


def assert_oauth_error(answer: httpx.Response, status: int, error: str, text: str) -> None:
    assert answer.status_code == status
    assert answer.json() == {"error": error, "error_description": text}


# -- grant bodies ---------------------------------------------------------------------------------


def test_code_exchange_returns_ebays_five_fields_in_order(client: httpx.Client) -> None:
    answer = exchange(client, authorize(client))
    body = answer.json()
    assert answer.headers["content-type"] == "application/json"
    assert list(body) == [
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "token_type",
    ]
    assert body["expires_in"] == 7200
    assert type(body["expires_in"]) is int
    assert body["refresh_token_expires_in"] == 47304000
    assert body["token_type"] == "User Access Token"
    assert body["access_token"].startswith("v^1.1#i^1#p^3#r^1#I^3#f^0#t^H4sI")
    assert body["refresh_token"].startswith("v^1.1#i^1#I^3#r^1#p^3#f^0#t^Ul4x")
    assert 600 <= len(body["access_token"]) <= 1000
    assert 90 <= len(body["refresh_token"]) <= 120
    for token in (body["access_token"], body["refresh_token"]):
        assert "+" in token
        assert "/" in token
        assert token.endswith("=")


def test_refresh_returns_three_fields_and_never_a_new_refresh_token(client: httpx.Client) -> None:
    grant = connect(client)
    first = refresh(client, grant["refresh_token"]).json()
    second = refresh(client, grant["refresh_token"]).json()
    assert list(first) == ["access_token", "expires_in", "token_type"]
    assert first["expires_in"] == 7200
    assert first["token_type"] == "User Access Token"
    assert first["access_token"] != second["access_token"] != grant["access_token"]


def test_client_credentials_gives_application_token_and_ignores_redirect_uri(
    client: httpx.Client,
) -> None:
    form = {"grant_type": "client_credentials", "scope": SCOPE_ROOT, "redirect_uri": RU_NAME}
    body = client.post(TOKEN, data=form, auth=AUTH).json()
    assert list(body) == ["access_token", "expires_in", "token_type"]
    assert body["token_type"] == "Application Access Token"
    assert body["expires_in"] == 7200


# -- token endpoint errors (docs/ebay-oauth.md §5.1) ----------------------------------------------


def test_missing_basic_auth_is_invalid_client(client: httpx.Client) -> None:
    answer = client.post(TOKEN, data={"grant_type": "client_credentials", "scope": SCOPE_ROOT})
    assert_oauth_error(answer, 401, "invalid_client", "client authentication failed")


def test_wrong_secret_is_invalid_client(client: httpx.Client) -> None:
    form = {"grant_type": "client_credentials", "scope": SCOPE_ROOT}
    answer = client.post(TOKEN, data=form, auth=(CLIENT_ID, "nope"))
    assert_oauth_error(answer, 401, "invalid_client", "client authentication failed")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"grant_type": "client_credentials", "scope": SCOPE_ROOT}},
        {"content": b""},
        {"data": {"scope": SCOPE_ROOT}},
        {"data": {"grant_type": "authorization_code", "code": "x"}},  # no redirect_uri
        {"data": {"grant_type": "refresh_token"}},
        {"data": {"grant_type": "client_credentials"}},
    ],
    ids=["json-body", "no-body", "no-grant-type", "no-redirect-uri", "no-token", "no-scope"],
)
def test_malformed_requests_are_invalid_request(
    client: httpx.Client, kwargs: dict[str, Any]
) -> None:
    answer = client.post(TOKEN, auth=AUTH, **kwargs)
    assert_oauth_error(answer, 400, "invalid_request", MALFORMED)


def test_unknown_grant_type_is_unsupported(client: httpx.Client) -> None:
    answer = client.post(TOKEN, data={"grant_type": "password"}, auth=AUTH)
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_unknown_refresh_token_is_invalid_grant(client: httpx.Client) -> None:
    assert_oauth_error(refresh(client, "not-a-token"), 400, "invalid_grant", REFRESH_INVALID)


def test_refresh_token_of_another_client_is_invalid_grant(
    client: httpx.Client, emulator: Emulator
) -> None:
    grant = connect(client)
    emulator.register_app("OtherApp", "other-secret", "Other_RuName", ACCEPT)
    form = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    answer = client.post(TOKEN, data=form, auth=("OtherApp", "other-secret"))
    assert_oauth_error(answer, 400, "invalid_grant", REFRESH_INVALID)


def test_expired_refresh_token_is_invalid_grant(client: httpx.Client, clock: Clock) -> None:
    grant = connect(client)
    clock.advance(seconds=47304000)
    assert_oauth_error(
        refresh(client, grant["refresh_token"]), 400, "invalid_grant", REFRESH_INVALID
    )


def test_client_credentials_scope_not_on_keyset_is_invalid_scope(
    client: httpx.Client, emulator: Emulator
) -> None:
    emulator.register_app(CLIENT_ID, SECRET, RU_NAME, ACCEPT, scopes=[SCOPE_ROOT])
    form = {"grant_type": "client_credentials", "scope": f"{SCOPE_ROOT} {INVENTORY}"}
    answer = client.post(TOKEN, data=form, auth=AUTH)
    assert_oauth_error(answer, 400, "invalid_scope", SCOPE_INVALID)


# -- authorization codes --------------------------------------------------------------------------


def test_code_is_single_use(client: httpx.Client) -> None:
    code = authorize(client)
    assert exchange(client, code).status_code == 200
    assert_oauth_error(exchange(client, code), 400, "invalid_grant", CODE_INVALID)


def test_code_expires_after_299_seconds(client: httpx.Client, clock: Clock) -> None:
    fresh, stale = authorize(client), authorize(client)
    clock.advance(seconds=298)
    assert exchange(client, fresh).status_code == 200
    clock.advance(seconds=1)
    assert_oauth_error(exchange(client, stale), 400, "invalid_grant", CODE_INVALID)


def test_code_is_bound_to_the_runame(client: httpx.Client) -> None:
    code = authorize(client)
    assert_oauth_error(exchange(client, code, "Other_RuName"), 400, "invalid_grant", CODE_INVALID)


def test_code_is_bound_to_the_client(client: httpx.Client, emulator: Emulator) -> None:
    code = authorize(client)
    emulator.register_app("OtherApp", "other-secret", RU_NAME, ACCEPT)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": RU_NAME}
    answer = client.post(TOKEN, data=form, auth=("OtherApp", "other-secret"))
    assert_oauth_error(answer, 400, "invalid_grant", CODE_INVALID)


def test_double_encoded_code_is_invalid_grant_and_does_not_burn_it(client: httpx.Client) -> None:
    code = authorize(client)
    assert_oauth_error(exchange(client, quote(code, safe="")), 400, "invalid_grant", CODE_INVALID)
    assert exchange(client, code).status_code == 200


# -- scopes on refresh ----------------------------------------------------------------------------


def test_refresh_with_a_subset_mints_a_token_with_only_that_subset(client: httpx.Client) -> None:
    grant = connect(client)
    narrow = refresh(client, grant["refresh_token"], INVENTORY)
    assert narrow.status_code == 200
    assert get_user(client, narrow.json()["access_token"]).status_code == 403


def test_refresh_beyond_the_consent_is_invalid_scope(client: httpx.Client) -> None:
    grant = connect(client)
    answer = refresh(client, grant["refresh_token"], f"{INVENTORY} {ACCOUNT}")
    assert_oauth_error(answer, 400, "invalid_scope", SCOPE_INVALID)


def test_refresh_without_scope_gets_every_consented_scope(client: httpx.Client) -> None:
    grant = connect(client)
    whole = refresh(client, grant["refresh_token"])
    assert get_user(client, whole.json()["access_token"]).status_code == 200


@pytest.mark.parametrize("separator", ["+", "%20"])
def test_scope_separator_plus_and_percent20_both_work(client: httpx.Client, separator: str) -> None:
    grant = connect(client)
    scope = separator.join(quote(s, safe="") for s in (IDENTITY, INVENTORY))
    body = urlencode({"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = client.post(TOKEN, content=f"{body}&scope={scope}", headers=headers, auth=AUTH)
    assert answer.status_code == 200, answer.text
    assert get_user(client, answer.json()["access_token"]).status_code == 200


# -- consent page ---------------------------------------------------------------------------------


def test_consent_page_is_a_form_with_users_a_new_username_field_and_both_buttons(
    client: httpx.Client, emulator: Emulator
) -> None:
    emulator.add_user("alice_de")
    page = client.get(AUTHORIZE, params={**consent_params(), "prompt": "login", "locale": "de-DE"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<form method="post" action="/oauth2/authorize">' in html
    assert 'name="username" id="user-0" value="alice_de"' in html
    assert '<label for="user-0">alice_de</label>' in html
    assert '<label for="new_username">' in html
    assert 'name="new_username"' in html
    assert 'name="decision" value="agree">Agree<' in html
    assert 'name="decision" value="decline">Decline<' in html
    for name, value in [
        ("client_id", CLIENT_ID),
        ("redirect_uri", RU_NAME),
        ("state", "st_FAKE123"),
    ]:
        assert f'<input type="hidden" name="{name}" value="{value}">' in html
    assert 'lang="de-DE"' in html


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "UnknownApp"},
        {"redirect_uri": "https://seller-tool.example/ebay/callback"},
        {"response_type": "token"},
        {"scope": ""},
        {"scope": "https://example.com/not-an-ebay-scope"},
    ],
    ids=["client_id", "url-not-runame", "response_type", "no-scope", "foreign-scope"],
)
def test_bad_authorize_requests_get_ebays_error_page_shape(
    client: httpx.Client, change: dict[str, str]
) -> None:
    params = {**consent_params(), **change}
    page = client.get(AUTHORIZE, params=params)
    assert (page.status_code, page.json()) == (400, AUTHORIZE_ERROR)
    decided = client.post(AUTHORIZE, data={**params, "username": "u1", "decision": "agree"})
    assert (decided.status_code, decided.json()) == (400, AUTHORIZE_ERROR)


def test_scope_the_keyset_lacks_is_an_authorize_error(
    client: httpx.Client, emulator: Emulator
) -> None:
    emulator.register_app(CLIENT_ID, SECRET, RU_NAME, ACCEPT, scopes=[SCOPE_ROOT])
    page = client.get(AUTHORIZE, params=consent_params([SCOPE_ROOT, INVENTORY]))
    assert (page.status_code, page.json()) == (400, AUTHORIZE_ERROR)


def test_agree_redirects_with_state_code_encoded_once_and_expires_in(
    client: httpx.Client, emulator: Emulator
) -> None:
    form = {**consent_params(), "new_username": "brand_new_seller", "decision": "agree"}
    answer = client.post(AUTHORIZE, data=form, follow_redirects=False)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(ACCEPT + "?state=st_FAKE123&code=v%5E1.1%23i%5E1%23r%5E1%23")
    assert location.endswith("%3D&expires_in=299")
    code = parse_qs(urlsplit(location).query)["code"][0]
    assert code.startswith("v^1.1#i^1#r^1#p^3#I^3#f^0#t^Ul4xX")
    assert code.endswith("=")
    assert "brand_new_seller" in [u.username for u in emulator.users()]


def test_agree_without_state_sends_no_state(client: httpx.Client) -> None:
    form = {**consent_params(state=None), "username": "seller1", "decision": "agree"}
    query = parse_qs(urlsplit(client.post(AUTHORIZE, data=form).headers["location"]).query)
    assert sorted(query) == ["code", "expires_in"]


def test_decline_redirects_to_the_decline_url_with_access_denied(client: httpx.Client) -> None:
    answer = client.post(AUTHORIZE, data={**consent_params(), "decision": "decline"})
    assert answer.status_code == 302
    assert answer.headers["location"] == DECLINE + "?state=st_FAKE123&error=access_denied"


def test_decline_without_decline_url_goes_to_the_accept_url(
    client: httpx.Client, emulator: Emulator
) -> None:
    emulator.register_app(CLIENT_ID, SECRET, RU_NAME, ACCEPT)
    answer = client.post(AUTHORIZE, data={**consent_params(), "decision": "decline"})
    assert answer.headers["location"] == ACCEPT + "?state=st_FAKE123&error=access_denied"


# -- getUser --------------------------------------------------------------------------------------


def test_get_user_returns_the_user_response(client: httpx.Client, emulator: Emulator) -> None:
    user = emulator.add_user("seller1", account_type="BUSINESS", marketplace_id="EBAY_DE")
    answer = get_user(client, connect(client)["access_token"])
    assert answer.status_code == 200
    assert answer.json() == {
        "userId": user.user_id,
        "username": "seller1",
        "accountType": "BUSINESS",
        "registrationMarketplaceId": "EBAY_DE",
        "status": "CONFIRMED",
    }


def test_get_user_rejects_unknown_expired_and_application_tokens(
    client: httpx.Client, clock: Clock
) -> None:
    grant = connect(client)
    form = {"grant_type": "client_credentials", "scope": SCOPE_ROOT}
    app_token = client.post(TOKEN, data=form, auth=AUTH).json()["access_token"]
    assert client.get(USER).status_code == 401
    for token in ("garbage", app_token):
        answer = get_user(client, token)
        assert (answer.status_code, answer.json()) == (401, INVALID_TOKEN)
    clock.advance(seconds=7200)
    assert get_user(client, grant["access_token"]).json() == INVALID_TOKEN


def test_get_user_without_identity_scope_is_403(client: httpx.Client) -> None:
    grant = connect(client, scopes=[SCOPE_ROOT, INVENTORY])
    answer = get_user(client, grant["access_token"])
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["errorId"] == 1100
    assert answer.json()["errors"][0]["domain"] == "ACCESS"


def test_get_user_path_needs_its_trailing_slash(client: httpx.Client) -> None:
    token = connect(client)["access_token"]
    answer = client.get(USER.rstrip("/"), headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 404


# -- revocation -----------------------------------------------------------------------------------


def test_revoke_endpoint_kills_the_grant(client: httpx.Client) -> None:
    grant = connect(client)
    answer = client.post(REVOKE, data={"token": grant["refresh_token"]}, auth=AUTH)
    assert (answer.status_code, answer.content) == (200, b"")
    assert_oauth_error(
        refresh(client, grant["refresh_token"]), 400, "invalid_grant", REFRESH_INVALID
    )
    assert get_user(client, grant["access_token"]).status_code == 401


def test_revoke_endpoint_requires_client_auth(client: httpx.Client) -> None:
    answer = client.post(REVOKE, data={"token": "x"})
    assert_oauth_error(answer, 401, "invalid_client", "client authentication failed")


def test_revoking_a_user_makes_later_refreshes_invalid_grant(
    client: httpx.Client, emulator: Emulator
) -> None:
    mine, theirs = connect(client, "seller1"), connect(client, "seller2")
    assert client.post("/_emulator/users/seller1/revoke").json() == {"revoked": 1}
    assert refresh(client, mine["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(client, theirs["refresh_token"]).status_code == 200


def test_refresh_expiry_set_over_the_control_api(client: httpx.Client, clock: Clock) -> None:
    grant = connect(client)
    when = (T0 + timedelta(hours=1)).isoformat()
    answer = client.put("/_emulator/users/seller1/refresh-expiry", json={"expires_at": when})
    assert answer.json() == {"updated": 1}
    assert refresh(client, grant["refresh_token"]).status_code == 200
    clock.advance(hours=1)
    assert refresh(client, grant["refresh_token"]).json()["error"] == "invalid_grant"


# -- faults ---------------------------------------------------------------------------------------


def test_latency_delays_the_answer(client: httpx.Client, emulator: Emulator) -> None:
    grant = connect(client)
    emulator.set_faults(Faults(latency_ms=200))
    started = time.monotonic()
    assert refresh(client, grant["refresh_token"]).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_error_rate_one_always_fails_with_error_status(
    client: httpx.Client, emulator: Emulator
) -> None:
    grant = connect(client)
    emulator.set_faults(Faults(error_rate=1.0, error_status=503))
    assert [refresh(client, grant["refresh_token"]).status_code for _ in range(3)] == [503] * 3


def test_error_rate_draws_are_deterministic_for_a_seed(
    client: httpx.Client, emulator: Emulator
) -> None:
    def pattern() -> list[int]:
        emulator.reset()
        emulator.register_app(CLIENT_ID, SECRET, RU_NAME, ACCEPT)
        token = connect(client)["refresh_token"]
        emulator.set_faults(Faults(error_rate=0.5))
        return [refresh(client, token).status_code for _ in range(12)]

    first = pattern()
    assert set(first) == {200, 500}
    assert pattern() == first


def test_rate_limited_is_429_with_retry_after_and_errors_envelope(
    client: httpx.Client, emulator: Emulator
) -> None:
    grant = connect(client)
    emulator.set_faults(Faults(rate_limited=True, retry_after_s=30))
    answer = refresh(client, grant["refresh_token"])
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "30"
    assert answer.json()["errors"][0]["errorId"] == 2001


def test_forced_invalid_grant(client: httpx.Client, emulator: Emulator) -> None:
    grant = connect(client)
    emulator.set_faults(Faults(invalid_grant=True))
    assert_oauth_error(
        refresh(client, grant["refresh_token"]), 400, "invalid_grant", REFRESH_INVALID
    )


def test_malformed_answers(client: httpx.Client, emulator: Emulator) -> None:
    grant = connect(client)
    emulator.set_faults(Faults(malformed="json"))
    broken = refresh(client, grant["refresh_token"])
    assert broken.status_code == 200
    with pytest.raises(ValueError, match="Unterminated string"):
        broken.json()
    emulator.set_faults(Faults(malformed="html"))
    html = refresh(client, grant["refresh_token"])
    assert html.status_code == 502
    assert html.headers["content-type"].startswith("text/html")
    emulator.set_faults(Faults(malformed="missing_access_token"))
    partial = refresh(client, grant["refresh_token"])
    assert partial.status_code == 200
    assert "access_token" not in partial.json()


def test_per_user_faults_touch_only_that_users_calls(
    client: httpx.Client, emulator: Emulator
) -> None:
    mine, theirs = connect(client, "seller1"), connect(client, "seller2")
    emulator.set_faults(Faults(invalid_grant=True), username="seller1")
    assert refresh(client, mine["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(client, theirs["refresh_token"]).status_code == 200
    emulator.clear_faults("seller1")
    assert refresh(client, mine["refresh_token"]).status_code == 200


async def test_hang_holds_only_that_request_and_never_blocks_shutdown() -> None:
    emulator = Emulator()
    emulator.register_app(CLIENT_ID, SECRET, RU_NAME, ACCEPT)
    slow = str(emulator.issue_grant(CLIENT_ID, "slow", SCOPES)["refresh_token"])
    fast = str(emulator.issue_grant(CLIENT_ID, "fast", SCOPES)["refresh_token"])
    emulator.set_faults(Faults(hang=True), username="slow")
    server = EmulatorServer(emulator).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, auth=AUTH) as http:

            def post(token: str, timeout: float) -> asyncio.Task[httpx.Response]:
                form = {"grant_type": "refresh_token", "refresh_token": token}
                return asyncio.create_task(http.post(TOKEN, data=form, timeout=timeout))

            with pytest.raises(httpx.ReadTimeout):
                await post(slow, 0.3)
            held = post(slow, 30)
            assert (await post(fast, 5)).status_code == 200
            await asyncio.sleep(0.2)
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 3
            assert (await held).status_code == 504
    finally:
        server.stop()
    unanswered = [c for c in emulator.calls if c.username == "slow" and c.status is None]
    assert len(unanswered) == 2


# -- quotas ---------------------------------------------------------------------------------------


def test_daily_quota_per_grant_type_is_a_rolling_24h_window(clock: Clock) -> None:
    clock.now = T0
    emulator = Emulator(clock=clock, daily_limits={"client_credentials": 2})
    emulator.register_app(CLIENT_ID, SECRET, RU_NAME, ACCEPT)
    form = {"grant_type": "client_credentials", "scope": SCOPE_ROOT}
    with EmulatorServer(emulator) as server, httpx.Client(base_url=server.base_url) as http:
        assert [http.post(TOKEN, data=form, auth=AUTH).status_code for _ in range(2)] == [200] * 2
        clock.advance(hours=1)
        limited = http.post(TOKEN, data=form, auth=AUTH)
        assert limited.status_code == 429
        assert limited.json()["errors"][0]["errorId"] == 2001
        assert limited.headers["retry-after"] == str(23 * 3600)
        token = emulator.issue_grant(CLIENT_ID, "u", SCOPES)["refresh_token"]
        refreshed = http.post(
            TOKEN, data={"grant_type": "refresh_token", "refresh_token": token}, auth=AUTH
        )
        assert refreshed.status_code == 200  # other grant types have their own window
        clock.advance(hours=23)
        assert http.post(TOKEN, data=form, auth=AUTH).status_code == 200


def test_default_daily_limits_are_ebays() -> None:
    limits = Emulator().config.daily_limits
    assert limits == {
        "refresh_token": 50_000,
        "authorization_code": 10_000,
        "client_credentials": 1_000,
    }


# -- control API ----------------------------------------------------------------------------------


def test_control_api_drives_a_whole_flow(client: httpx.Client, emulator: Emulator) -> None:
    assert client.post("/_emulator/reset").json() == {"ok": True}
    app = {"client_id": "Ctl", "client_secret": "s3", "ru_name": "Ctl_Ru", "accept_url": ACCEPT}
    assert client.post("/_emulator/apps", json={**app, "scopes": SCOPES}).status_code == 201
    user = client.post("/_emulator/users", json={"username": "ctl", "user_id": "Id42"})
    assert user.json()["user_id"] == "Id42"
    assert [u["username"] for u in client.get("/_emulator/users").json()] == ["ctl"]
    grant = client.post(
        "/_emulator/grants", json={"client_id": "Ctl", "username": "ctl", "scopes": SCOPES}
    ).json()
    assert list(grant)[2] == "refresh_token"
    assert get_user(client, grant["access_token"]).json()["userId"] == "Id42"

    faults = client.put("/_emulator/users/ctl/faults", json={"rate_limited": True})
    assert faults.json()["rate_limited"] is True
    form = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    assert client.post(TOKEN, data=form, auth=("Ctl", "s3")).status_code == 429
    assert client.get("/_emulator/faults").json()["users"]["ctl"]["rate_limited"] is True
    client.delete("/_emulator/users/ctl/faults")
    assert client.post(TOKEN, data=form, auth=("Ctl", "s3")).status_code == 200

    calls = client.get("/_emulator/calls", params={"username": "ctl", "endpoint": "token"}).json()
    assert calls["count"] == 2
    assert [c["status"] for c in calls["calls"]] == [429, 200]
    assert calls["calls"][0]["grant_type"] == "refresh_token"
    assert emulator.calls.count(endpoint="token", grant_type="refresh_token", username="ctl") == 2

    moved = client.post("/_emulator/clock/advance", json={"seconds": 7200}).json()["now"]
    assert datetime.fromisoformat(moved) == T0 + timedelta(hours=2)
    assert get_user(client, grant["access_token"]).status_code == 401


def test_control_api_global_faults(client: httpx.Client) -> None:
    grant = connect(client)
    assert client.put("/_emulator/faults", json={"error_rate": 1}).status_code == 200
    assert refresh(client, grant["refresh_token"]).status_code == 500
    assert client.delete("/_emulator/faults").json()["error_rate"] == 0
    assert refresh(client, grant["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/_emulator/users/nobody/revoke", None, 404),
        ("PUT", "/_emulator/users/nobody/refresh-expiry", {"expires_at": T0.isoformat()}, 404),
        ("PUT", "/_emulator/users/seller1/refresh-expiry", {"expires_at": "2026-01-01"}, 400),
        ("PUT", "/_emulator/faults", {"error_rate": 2}, 400),
        ("PUT", "/_emulator/faults", {"malformed": "xml"}, 400),
        ("PUT", "/_emulator/faults", {"no_such_knob": True}, 400),
        ("POST", "/_emulator/apps", {"client_id": "x"}, 400),
        ("POST", "/_emulator/users", [], 400),
    ],
)
def test_control_api_rejects_bad_input(
    client: httpx.Client, method: str, path: str, body: object, status: int
) -> None:
    client.post("/_emulator/users", json={"username": "seller1"})
    answer = client.request(method, path, json=body)
    assert answer.status_code == status
    assert answer.json()["error"] in ("not_found", "bad_request")


# -- a client written like eBay's official python client ------------------------------------------


class OfficialStyleClient:
    """Mirrors eBay/ebay-oauth-python-client oauth2api.py: Basic header built by hand,
    scopes joined with ' ', bodies form-encoded by the HTTP library, redirect_uri sent on
    client_credentials too, ``prompt=login`` on the consent URL."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        credential = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
        self.headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Basic " + credential,
        }

    def user_authorization_url(self, scopes: list[str], state: str) -> str:
        param = {
            "client_id": CLIENT_ID,
            "redirect_uri": RU_NAME,
            "response_type": "code",
            "prompt": "login",
            "scope": " ".join(scopes),
            "state": state,
        }
        return AUTHORIZE + "?" + urlencode(param)

    def post(self, body: dict[str, str]) -> dict[str, Any]:
        answer = self.http.post(TOKEN, data=body, headers=self.headers)
        assert answer.status_code == 200, answer.text
        grant: dict[str, Any] = answer.json()
        return grant

    def application_token(self, scopes: list[str]) -> dict[str, Any]:
        scope = " ".join(scopes)
        return self.post(
            {"grant_type": "client_credentials", "redirect_uri": RU_NAME, "scope": scope}
        )

    def exchange_code(self, code: str) -> dict[str, Any]:
        return self.post(
            {"grant_type": "authorization_code", "redirect_uri": RU_NAME, "code": code}
        )

    def access_token(self, refresh_token: str, scopes: list[str]) -> dict[str, Any]:
        scope = " ".join(scopes)
        return self.post(
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": scope}
        )


def test_a_client_written_like_ebays_python_client_works_unchanged(client: httpx.Client) -> None:
    official = OfficialStyleClient(client)
    assert official.application_token([SCOPE_ROOT])["token_type"] == "Application Access Token"
    page = client.get(official.user_authorization_url(SCOPES, "xyz"))
    assert page.status_code == 200
    callback = client.post(
        AUTHORIZE, data={**consent_params(state="xyz"), "username": "py", "decision": "agree"}
    )
    query = parse_qs(urlsplit(callback.headers["location"]).query)
    user_token = official.exchange_code(query["code"][0])
    assert int(user_token["refresh_token_expires_in"]) == 47304000
    access = official.access_token(user_token["refresh_token"], SCOPES)
    assert int(access["expires_in"]) == 7200
    assert get_user(client, access["access_token"]).json()["username"] == "py"
