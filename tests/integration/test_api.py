"""The HTTP API over real HTTP on loopback: sessions, CSRF, connect/reconnect, organization
scoping on every route, the token API for programs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ebay_connector.core import quota
from ebay_connector.core.roles import Role
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@dataclass
class Org:
    id: int
    admin: str
    viewer: str
    key: str  # may read tokens, create connect sessions and use the proxy
    list_key: str  # may only list


@dataclass
class Api:
    base: str
    runtime: Runtime
    emulator: Emulator
    a: Org
    b: Org

    def client(self) -> httpx.AsyncClient:
        # 200 concurrent programs on one event loop (test_token_api_for_programs) wait more
        # than 10 s for their answers on a loaded 2-core machine; latency is not tested here.
        return httpx.AsyncClient(base_url=self.base, timeout=60)

    @contextlib.asynccontextmanager
    async def session(self, email: str) -> AsyncIterator[httpx.AsyncClient]:
        async with self.client() as client:
            answer = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
            yield client


async def _org(runtime: Runtime, name: str) -> Org:
    org_id = await runtime.store.create_organization(name)
    people, keys = Users(runtime.db), ApiKeys(runtime.db)
    await people.create(org_id, f"admin@{name}.test", Role.ADMIN, PASSWORD)
    await people.create(org_id, f"viewer@{name}.test", Role.VIEWER, PASSWORD)
    _, key = await keys.create(
        org_id, "sync", can_read_tokens=True, can_connect=True, can_proxy=True
    )
    _, list_key = await keys.create(org_id, "list", can_read_tokens=False)
    return Org(org_id, f"admin@{name}.test", f"viewer@{name}.test", key, list_key)


@pytest.fixture
async def api(runtime: Runtime, emulator: tuple[Emulator, str]) -> AsyncIterator[Api]:
    emu, _ = emulator
    async with serve_asgi(create_app(runtime)) as base:
        a, b = await _org(runtime, "orga"), await _org(runtime, "orgb")
        yield Api(base, runtime, emu, a, b)


async def connect(
    api: Api, session: httpx.AsyncClient, username: str, **params: Any
) -> dict[str, Any]:
    """The whole browser flow: our /connect → eBay consent (agree) → our /callback."""
    start = await session.post("/api/ebay/connect", params=params, follow_redirects=False)
    assert start.status_code == 303, start.text
    consent = urlsplit(start.headers["location"])
    query = {k: v[0] for k, v in parse_qs(consent.query).items()}
    async with httpx.AsyncClient() as browser:
        agreed = await browser.post(
            f"{consent.scheme}://{consent.netloc}{consent.path}",
            data={**query, "username": username, "decision": "agree"},
        )
    assert agreed.status_code == 302
    back = parse_qs(urlsplit(agreed.headers["location"]).query)
    answer = await session.get(
        "/api/ebay/callback",
        params={"code": back["code"][0], "state": back["state"][0], "expires_in": "299"},
    )
    return {"status": answer.status_code, "body": answer.json(), "query": back}


async def test_connect_then_first_refresh_succeeds(api: Api) -> None:
    async with api.session(api.a.admin) as admin:
        done = await connect(api, admin, "api_seller")
        assert done["status"] == 200, done
        account_id = done["body"]["account_id"]
        assert done["body"]["created"] is True
        refreshed = await admin.post(
            "/api/admin/ebay/token/refresh", json={"ebay_account_id": account_id}
        )
        assert refreshed.status_code == 200
        assert refreshed.json()["outcome"] == "ok"
        debug = await admin.post(
            "/api/admin/ebay/token/refresh-debug", json={"ebay_account_id": account_id}
        )
        exchange = debug.json()["exchange"]
        assert exchange["request"]["body"]["grant_type"] == "refresh_token"
        assert exchange["response"]["status"] == 200
        attempts = await api.runtime.journal.attempts(account_id)
        actor = attempts[0].actor
        assert actor is not None and actor.startswith("user:")


async def test_reconnect_brings_a_revoked_account_back_with_its_history(api: Api) -> None:
    async with api.session(api.a.admin) as admin:
        first = await connect(api, admin, "comeback_seller")
        account_id = first["body"]["account_id"]
        api.emulator.revoke_user("comeback_seller")
        failed = await admin.post(
            "/api/admin/ebay/token/refresh", json={"ebay_account_id": account_id}
        )
        assert failed.json()["state"] == "needs_reconnect"
        again = await connect(api, admin, "comeback_seller", account=account_id)
        assert again["status"] == 200
        assert again["body"]["account_id"] == account_id
        assert again["body"]["created"] is False
    account = await api.runtime.store.account_token(account_id)
    assert account is not None
    assert account.state.value == "active"
    history = await api.runtime.journal.attempts(account_id, limit=10)
    assert [a.outcome for a in history][:3] == ["ok", "invalid_grant", "ok"]


async def _count_accounts(api: Api) -> int:
    return len(await api.runtime.store.accounts())


async def test_forged_replayed_foreign_and_declined_states_change_nothing(
    api: Api, clock: FakeClock
) -> None:
    async with api.session(api.a.admin) as admin, api.session(api.b.admin) as other:
        done = await connect(api, admin, "state_seller")
        code, state = done["query"]["code"][0], done["query"]["state"][0]
        before = await _count_accounts(api)
        replay = await admin.get("/api/ebay/callback", params={"code": code, "state": state})
        assert replay.status_code == 400
        assert replay.json()["error"]["code"] == "invalid_state"
        forged = await admin.get(
            "/api/ebay/callback", params={"code": code, "state": state[:-2] + "xx"}
        )
        assert forged.json()["error"]["code"] == "invalid_state"
        # A fresh, valid state but a code that was already exchanged: eBay refuses it.
        start = await admin.post("/api/ebay/connect", follow_redirects=False)
        fresh = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        reused = await admin.get("/api/ebay/callback", params={"code": code, "state": fresh})
        assert reused.status_code == 400
        assert reused.json()["error"]["code"] == "invalid_grant"
        # A state started in one session cannot be completed in another.
        start = await admin.post("/api/ebay/connect", follow_redirects=False)
        foreign = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        stolen = await other.get("/api/ebay/callback", params={"code": code, "state": foreign})
        assert stolen.json()["error"]["code"] == "invalid_state"
        # Declined consent.
        start = await admin.post("/api/ebay/connect", follow_redirects=False)
        declined_state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        declined = await admin.get(
            "/api/ebay/callback", params={"error": "access_denied", "state": declined_state}
        )
        assert declined.json()["error"]["code"] == "consent_declined"
        # An expired state (10 minutes).
        start = await admin.post("/api/ebay/connect", follow_redirects=False)
        old_state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        clock.advance(minutes=11)
        expired = await admin.get("/api/ebay/callback", params={"code": code, "state": old_state})
        assert expired.json()["error"]["code"] == "invalid_state"
        assert await _count_accounts(api) == before


async def test_an_expired_code_is_refused_and_nothing_is_written(
    api: Api, clock: FakeClock
) -> None:
    async with api.session(api.a.admin) as admin:
        start = await admin.post("/api/ebay/connect", follow_redirects=False)
        consent = urlsplit(start.headers["location"])
        query = {k: v[0] for k, v in parse_qs(consent.query).items()}
        async with httpx.AsyncClient() as browser:
            agreed = await browser.post(
                f"{consent.scheme}://{consent.netloc}{consent.path}",
                data={**query, "username": "slow_seller", "decision": "agree"},
            )
        back = parse_qs(urlsplit(agreed.headers["location"]).query)
        clock.advance(seconds=300)  # the code lived 299 s; the state lives 10 min
        before = await _count_accounts(api)
        late = await admin.get(
            "/api/ebay/callback", params={"code": back["code"][0], "state": back["state"][0]}
        )
        assert late.status_code == 400
        assert late.json()["error"]["code"] == "invalid_grant"
        assert await _count_accounts(api) == before


async def test_roles_csrf_and_anonymous_callers(api: Api) -> None:
    async with api.session(api.a.admin) as admin:
        account_id = (await connect(api, admin, "role_seller"))["body"]["account_id"]
    async with api.session(api.a.viewer) as viewer, api.client() as anonymous:
        body = {"ebay_account_id": account_id}
        assert (await viewer.get("/api/admin/ebay/accounts")).status_code == 200
        for path in ("/api/admin/ebay/token/refresh", "/api/admin/ebay/token/refresh-debug"):
            assert (await viewer.post(path, json=body)).status_code == 403
        assert (await viewer.post("/api/ebay/connect", follow_redirects=False)).status_code == 403
        assert (await anonymous.get("/api/admin/ebay/accounts")).status_code == 401
        assert (await anonymous.get("/api/v1/accounts")).status_code == 401
    async with api.session(api.a.admin) as admin:
        del admin.headers["X-CSRF-Token"]
        no_csrf = await admin.post("/api/admin/ebay/token/refresh", json={"ebay_account_id": 1})
        assert no_csrf.status_code == 403
        assert no_csrf.json()["error"]["code"] == "csrf_failed"


def _routes(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "delete", "put", "patch")
    ]


async def test_every_route_hides_other_organizations_data(api: Api) -> None:
    """Walks every route of the OpenAPI document with organization A's credentials on
    organization B's ids: always 404 (or the caller's own empty view), never B's data."""
    async with api.session(api.b.admin) as admin_b:
        b_account = (await connect(api, admin_b, "org_b_seller"))["body"]["account_id"]
    async with api.session(api.a.admin) as admin_a, api.client() as plain:
        schema = (await plain.get("/openapi.json")).json()
        key_headers = {"Authorization": f"Bearer {api.a.key}"}
        checked = 0
        for method, path in _routes(schema):
            url = path.replace("{account_id}", str(b_account))
            url = url.replace("{path}", "sell/inventory/v1/inventory_item")
            kwargs: dict[str, Any] = {"headers": key_headers} if path.startswith("/api/v1") else {}
            if method == "POST" and "ebay/token" in path:
                kwargs["json"] = {"ebay_account_id": b_account}
            client = plain if path.startswith("/api/v1") else admin_a
            if "{account_id}" in path or (method == "POST" and "ebay/token" in path):
                answer = await client.request(method, url, **kwargs)
                assert answer.status_code == 404, (method, path, answer.text)
                checked += 1
        assert checked >= 4
        listing = await admin_a.get("/api/admin/ebay/accounts")
        assert b_account not in [a["id"] for a in listing.json()["accounts"]]
        programs = await plain.get("/api/v1/accounts", headers=key_headers)
        assert b_account not in [a["id"] for a in programs.json()["accounts"]]
        logs = await admin_a.get("/api/admin/ebay/tokens/terminal-logs")
        assert all(e["account_id"] != b_account for e in logs.json()["entries"])
        filtered = await admin_a.get(
            "/api/admin/ebay/tokens/terminal-logs", params={"account": b_account}
        )
        assert filtered.status_code == 404
        reconnect = await admin_a.post(
            "/api/ebay/connect", params={"account": b_account}, follow_redirects=False
        )
        assert reconnect.status_code == 404


async def test_token_api_for_programs(api: Api, clock: FakeClock) -> None:
    async with api.session(api.a.admin) as admin:
        account_id = (await connect(api, admin, "program_seller"))["body"]["account_id"]
        revoked_id = (await connect(api, admin, "gone_seller"))["body"]["account_id"]
    async with api.client() as program:
        path = f"/api/v1/accounts/{account_id}/access-token"
        listing_only = await program.get(
            path, headers={"Authorization": f"Bearer {api.a.list_key}"}
        )
        assert listing_only.status_code == 403
        answer = await program.get(path, headers={"Authorization": f"Bearer {api.a.key}"})
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        token = answer.json()
        assert token["access_token"].startswith("v^1.1#")
        assert set(token) == {"access_token", "expires_at", "expires_in", "token_type"}
        api.emulator.revoke_user("gone_seller")
        now = clock()
        await api.runtime.store.set_access_expiry(revoked_id, now - timedelta(minutes=1), now)
        gone = await program.get(
            f"/api/v1/accounts/{revoked_id}/access-token",
            headers={"Authorization": f"Bearer {api.a.key}"},
        )
        assert gone.status_code == 409
        assert gone.json()["error"] == {
            "code": "needs_reconnect",
            "message": gone.json()["error"]["message"],
            "reason": "invalid_grant",
        }
        # 200 concurrent programs for one expired account: one eBay call.
        await api.runtime.store.set_access_expiry(account_id, now - timedelta(minutes=1), now)
        before = api.emulator.calls.count(grant_type="refresh_token", username="program_seller")
        answers = await asyncio.gather(
            *(
                program.get(path, headers={"Authorization": f"Bearer {api.a.key}"})
                for _ in range(200)
            )
        )
        assert {a.status_code for a in answers} == {200}
        assert len({a.json()["access_token"] for a in answers}) == 1
        after = api.emulator.calls.count(grant_type="refresh_token", username="program_seller")
        assert after - before == 1
        bad_key = await program.get(path, headers={"Authorization": "Bearer ebc_nope_nope"})
        assert bad_key.status_code == 401


async def test_errors_have_one_shape(api: Api) -> None:
    async with api.session(api.a.admin) as admin, api.client() as plain:
        missing = await plain.get("/no/such/route")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        bad = await admin.post(
            "/api/admin/ebay/token/refresh",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "validation_error"
        wrong_type = await admin.post(
            "/api/admin/ebay/token/refresh", json={"ebay_account_id": "one"}
        )
        assert wrong_type.status_code == 422
        assert wrong_type.json()["error"]["field"] == "ebay_account_id"
        huge = await admin.post(
            "/api/admin/ebay/token/refresh",
            content=b"x" * 100_000,
            headers={"Content-Type": "application/json"},
        )
        assert huge.status_code == 413
        login = await plain.post("/api/auth/login", json={"email": "x@y.z", "password": "nope"})
        assert login.status_code == 401
        assert login.json()["error"]["code"] == "invalid_credentials"


async def test_disconnect_revokes_at_ebay_and_records_who_did_it(api: Api) -> None:
    async with api.session(api.a.admin) as admin:
        account_id = (await connect(api, admin, "leaving_seller"))["body"]["account_id"]
        gone = await admin.delete(f"/api/admin/ebay/accounts/{account_id}")
        assert gone.status_code == 200
        assert gone.json() == {"account_id": account_id, "deleted": True, "revoked_at_ebay": True}
        again = await admin.delete(f"/api/admin/ebay/accounts/{account_id}")
        assert again.status_code == 404
    assert await api.runtime.store.account_token(account_id) is None
    assert api.emulator.calls.count(endpoint="revoke", username="leaving_seller") == 1
    revokes = [
        e
        for e in await api.runtime.journal.exchanges(organization_id=api.a.id)
        if e.action == "revoke"
    ]
    assert len(revokes) == 1
    assert (revokes[0].actor or "").startswith("user:")
    assert revokes[0].status == 200


async def test_token_api_refuses_past_the_daily_limit_without_calling_ebay(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> None:
    emu, _ = emulator
    async with (
        open_test_runtime(database, emulator, tmp_path, clock, daily_refresh_limit=2) as runtime,
        serve_asgi(create_app(runtime)) as base,
    ):
        org = await _org(runtime, "limited")
        ids = [await connect_seller(runtime, org.id, f"limit_{i}") for i in range(3)]
        headers = {"Authorization": f"Bearer {org.key}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as program:
            first_at = clock()
            for account_id in ids[:2]:
                await runtime.store.set_access_expiry(account_id, clock(), clock())
                ok = await program.get(
                    f"/api/v1/accounts/{account_id}/access-token", headers=headers
                )
                assert ok.status_code == 200, ok.text
                clock.advance(minutes=10)
            calls = emu.calls.count(grant_type="refresh_token")
            await runtime.store.set_access_expiry(ids[2], clock(), clock())
            path = f"/api/v1/accounts/{ids[2]}/access-token"
            refused = await program.get(path, headers=headers)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "quota_exhausted"
            assert "EBAY_CONNECTOR_DAILY_REFRESH_LIMIT" in refused.json()["error"]["message"]
            # The window frees a call when the first of the two has left it: 24 h after the
            # minute it was reserved in ended (the ledger counts by the minute, never less).
            frees = quota.bucket_of(first_at) + timedelta(hours=24, minutes=1) - clock()
            assert int(refused.headers["retry-after"]) == int(frees.total_seconds())
            assert emu.calls.count(grant_type="refresh_token") == calls
            # The Workers page says why (to the deployment's operator, who owns the shared
            # quota): two calls in minutes are a pace past the limit.
            operator = "operator@limited.test"
            await runtime.users.create(org.id, operator, Role.OPERATOR, PASSWORD)
            login = {"email": operator, "password": PASSWORD}
            assert (await program.post("/api/auth/login", json=login)).status_code == 200
            page = await program.get("/workers")
            assert page.status_code == 200
            assert 'role="alert" id="quota-projection"' in page.text
            assert "Application Growth Check" in page.text
            assert "EBAY_CONNECTOR_DAILY_REFRESH_LIMIT" in page.text
            clock.advance(seconds=int(refused.headers["retry-after"]))
            served = await program.get(path, headers=headers)
            assert served.status_code == 200, served.text
            assert emu.calls.count(grant_type="refresh_token") == calls + 1
