"""The eBay API proxy over real HTTP: the product on loopback, the emulator's Sell APIs behind it,
accounts connected through the emulator's consent page."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

INVENTORY = "sell/inventory/v1/inventory_item"
ITEM = {
    "product": {"title": "Vintage lamp"},
    "availability": {"shipToLocationAvailability": {"quantity": 3}},
}


@dataclass
class Setup:
    base: str
    runtime: Runtime
    emulator: Emulator
    account: int
    key: str  # --proxy
    plain_key: str  # --tokens only

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.base}/api/v1/accounts/{self.account}/proxy/",
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=10,
        )

    def refreshes(self) -> int:
        return self.emulator.calls.count(endpoint="token", grant_type="refresh_token")


async def _setup(runtime: Runtime, emu: Emulator) -> AsyncIterator[Setup]:
    async with serve_asgi(create_app(runtime)) as base:
        org = await runtime.store.create_organization("Lister Ltd")
        account = await connect_seller(runtime, org, "lamp_seller")
        keys = ApiKeys(runtime.db)
        _, key = await keys.create(org, "proxy", can_read_tokens=False, can_proxy=True)
        _, plain = await keys.create(org, "tokens", can_read_tokens=True)
        yield Setup(base, runtime, emu, account, key, plain)


@pytest.fixture
async def setup(runtime: Runtime, emulator: tuple[Emulator, str]) -> AsyncIterator[Setup]:
    async for value in _setup(runtime, emulator[0]):
        yield value


async def test_only_a_proxy_key_may_call(setup: Setup) -> None:
    async with setup.client(setup.plain_key) as client:
        refused = await client.get(INVENTORY)
    assert refused.status_code == 403
    assert "--proxy" in refused.json()["error"]["message"]


async def test_inventory_round_trip_through_the_proxy(setup: Setup) -> None:
    async with setup.client() as client:
        missing_language = await client.put(f"{INVENTORY}/LAMP-1", json=ITEM)
        put = await client.put(
            f"{INVENTORY}/LAMP-1", json=ITEM, headers={"Content-Language": "en-US"}
        )
        listed = await client.get(INVENTORY, params={"limit": "10"})
        one = await client.get(f"{INVENTORY}/LAMP-1")
        missing = await client.get(f"{INVENTORY}/NOPE")
        privileges = await client.get("sell/account/v1/privilege")
        orders = await client.get("sell/fulfillment/v1/order")
        identity = await client.get("commerce/identity/v1/user/")
    # eBay's own 4xx bodies pass through unchanged.
    assert missing_language.status_code == 400
    assert missing_language.json()["errors"][0]["errorId"] == 25709
    assert put.status_code == 204
    assert listed.status_code == 200
    assert listed.json()["total"] == 1 and listed.json()["limit"] == 10
    assert listed.json()["inventoryItems"][0]["sku"] == "LAMP-1"
    assert one.json()["product"] == ITEM["product"]
    assert missing.status_code == 404 and missing.json()["errors"][0]["errorId"] == 25710
    assert privileges.json()["sellerRegistrationCompleted"] is True
    assert orders.json()["orders"] == []
    assert identity.json().get("username") == "lamp_seller", identity.text
    # eBay's request id crosses; every call reached eBay with the seller's token, not our key.
    assert len(one.headers["x-ebay-c-request-id"]) == 16
    assert setup.emulator.calls.count(endpoint="sell", username="lamp_seller") == 7
    assert one.headers["cache-control"] == "no-store"


async def test_a_rejected_token_gets_one_refresh_and_one_retry(setup: Setup) -> None:
    async with setup.client() as client:
        assert (await client.get(INVENTORY)).status_code == 200
        before = setup.refreshes()
        setup.emulator.reject_access_tokens("lamp_seller")
        answers = await asyncio.gather(*(client.get(INVENTORY) for _ in range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert setup.refreshes() == before + 1
    assert setup.emulator.calls.count(endpoint="sell", status=401) == 8


async def test_a_revoked_seller_answers_needs_reconnect(setup: Setup) -> None:
    setup.emulator.revoke_user("lamp_seller")
    async with setup.client() as client:
        answer = await client.get(INVENTORY)
        again = await client.get(INVENTORY)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "needs_reconnect"
    assert again.status_code == 409


@pytest.mark.parametrize(
    "path",
    [
        "sell/../identity/v1/oauth2/token",
        "sell/%2e%2e/x",
        "identity/v1/oauth2/token",
        "sell//inventory",
        "sell/inventory/v1/inventory_item/a%zz",
    ],
)
async def test_paths_that_could_leave_the_api_are_refused(setup: Setup, path: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.send(
            client.build_request(
                "GET",
                httpx.URL(f"{setup.base}/api/v1/accounts/{setup.account}/proxy/{path}"),
                headers={"Authorization": f"Bearer {setup.key}"},
            )
        )
    assert answer.status_code in (404, 422), answer.text
    assert setup.emulator.calls.count(endpoint="sell") == 0


async def test_another_organizations_account_is_not_found(setup: Setup) -> None:
    other = await setup.runtime.store.create_organization("Other")
    _, key = await ApiKeys(setup.runtime.db).create(
        other, "p", can_read_tokens=False, can_proxy=True
    )
    async with setup.client(key) as client:
        answer = await client.get(INVENTORY)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "account_not_found"


async def test_calls_are_counted_per_account_and_never_logged_with_bodies(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.emulator.add_order(
        "lamp_seller", {"orderId": "1-2", "buyer": {"username": "buyer_jane_doe"}}
    )
    caplog.set_level(logging.DEBUG)
    async with setup.client() as client:
        orders = await client.get("sell/fulfillment/v1/order")
        await client.get(f"{INVENTORY}/NOPE")
        stats = await client.get(f"{setup.base}/api/v1/accounts/{setup.account}/proxy-calls")
    assert orders.json()["orders"][0]["buyer"]["username"] == "buyer_jane_doe"
    assert "buyer_jane_doe" not in caplog.text
    assert stats.json()["calls"] == 2
    assert stats.json()["last_error"]["status"] == 404
    assert stats.json()["last_error"]["api"] == "sell/inventory"
    async with httpx.AsyncClient() as plain:
        metrics = (await plain.get(f"{setup.base}/metrics")).text
    labels = f'account="{setup.account}",api="sell/fulfillment",status="200"'
    line = f"ebay_connector_proxy_requests_total{{{labels}}} 1.0"
    assert line in metrics


async def test_bodies_over_the_cap_are_refused(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> None:
    async with open_test_runtime(
        database, emulator, tmp_path, clock, http_timeout_seconds=3, proxy_max_body_bytes=2048
    ) as runtime:
        async for setup in _setup(runtime, emulator[0]):
            big = {"product": {"title": "x" * 4096}}

            async def chunked() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b" " * 1024

            async with setup.client() as client:
                declared = await client.put(
                    f"{INVENTORY}/BIG", json=big, headers={"Content-Language": "en-US"}
                )
                streamed = await client.put(
                    f"{INVENTORY}/BIG", content=chunked(), headers={"Content-Language": "en-US"}
                )
            assert declared.status_code == 413
            assert streamed.status_code == 413
            assert declared.json()["error"]["code"] == "too_large"


async def test_the_emulator_refuses_user_scopes_for_an_application_token(
    emulator: tuple[Emulator, str],
) -> None:
    emu, base = emulator
    emu.register_app("App-1", "secret-1", "ru", "http://127.0.0.1:9/cb")
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{base}/identity/v1/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "scope": "https://api.ebay.com/oauth/api_scope/sell.inventory",
            },
            auth=("App-1", "secret-1"),
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"


async def test_a_program_reports_a_rejected_token_by_its_digest(setup: Setup) -> None:
    path = f"/api/v1/accounts/{setup.account}/access-token"
    headers = {"Authorization": f"Bearer {setup.plain_key}"}
    async with httpx.AsyncClient(base_url=setup.base, headers=headers) as client:
        first = (await client.get(path)).json()
        before = setup.refreshes()
        digest = hashlib.sha256(first["access_token"].encode()).hexdigest()
        fresh = (await client.get(path, params={"rejected": digest})).json()
        again = (await client.get(path, params={"rejected": digest})).json()
        malformed = await client.get(path, params={"rejected": first["access_token"][:64]})
    assert 0 < first["expires_in"] <= 7200
    assert fresh["access_token"] != first["access_token"]
    assert again["access_token"] == fresh["access_token"]  # a stale report refreshes nothing
    assert setup.refreshes() == before + 1
    assert malformed.status_code == 422
