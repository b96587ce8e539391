"""ebay-connector-client (clients/python) against the real server and the emulator on loopback.

The blocking ``Connector`` runs in a worker thread: the server runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.return_urls import ReturnUrls
from ebay_connector.emulator import Emulator
from ebay_connector.emulator.wire import Faults
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from ebay_connector_client import (
    AsyncConnector,
    Connector,
    ConnectorError,
    EbayAuth,
    NeedsReconnect,
    NotFound,
    PermissionDenied,
    RetryLater,
)
from tests.conftest import FakeClock
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

INVENTORY = "sell/inventory/v1/inventory_item"


class Counting(httpx.AsyncHTTPTransport):
    """A real transport that counts the token API requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.token_requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/access-token"):
            self.token_requests += 1
        return await super().handle_async_request(request)


@dataclass
class World:
    base: str
    runtime: Runtime
    emulator: Emulator
    emulator_url: str
    account: int
    key: str  # tokens, connect and proxy
    weak_key: str  # list only

    def refreshes(self) -> int:
        return self.emulator.calls.count(endpoint="token", grant_type="refresh_token")


@pytest.fixture
async def world(runtime: Runtime, emulator: tuple[Emulator, str]) -> AsyncIterator[World]:
    emu, emulator_url = emulator
    async with serve_asgi(create_app(runtime)) as base:
        org = await runtime.store.create_organization("Agency")
        account = await connect_seller(runtime, org, "client_seller")
        keys = ApiKeys(runtime.db)
        _, key = await keys.create(
            org, "all", can_read_tokens=True, can_connect=True, can_proxy=True
        )
        _, weak = await keys.create(org, "list", can_read_tokens=False)
        await ReturnUrls(runtime.db).add(org, "https://agency.example/back")
        yield World(base, runtime, emu, emulator_url, account, key, weak)


async def test_async_tokens_are_cached_and_shared(world: World) -> None:
    counting = Counting()
    async with AsyncConnector(world.base, world.key, transport=counting) as connector:
        tokens = await asyncio.gather(*(connector.access_token(world.account) for _ in range(10)))
        again = await connector.access_token(world.account)
    assert len(set(tokens)) == 1 and again == tokens[0]
    assert counting.token_requests == 1


async def test_async_accounts_sessions_and_proxy(world: World) -> None:
    async with AsyncConnector(world.base, world.key) as connector:
        accounts = await connector.accounts()
        none = await connector.accounts(end_user_id="nobody")
        session = await connector.create_connect_session(
            "shop-9", "https://agency.example/back/9", end_user_label="Shop 9"
        )
        with pytest.raises(ConnectorError) as refused:
            await connector.create_connect_session("shop-9", "https://evil.example/")
        async with connector.proxy(world.account) as ebay:
            listed = await ebay.get(INVENTORY)
    assert [a.ebay_username for a in accounts] == ["client_seller"] and none == []
    assert session.url.endswith(session.id)
    assert refused.value.code == "return_url_not_allowed" and refused.value.status == 422
    assert listed.status_code == 200 and listed.json()["total"] == 0


async def test_typed_errors(world: World, clock: FakeClock) -> None:
    async with AsyncConnector(world.base, world.weak_key) as weak:
        with pytest.raises(PermissionDenied):
            await weak.access_token(world.account)
    async with AsyncConnector(world.base, "ebc_unknown_key") as stranger:
        with pytest.raises(PermissionDenied):
            await stranger.accounts()
    async with AsyncConnector(world.base, world.key) as connector:
        with pytest.raises(NotFound):
            await connector.access_token(999_999)
        world.emulator.set_faults(Faults(error_rate=1.0, error_status=500))
        clock.advance(hours=2)  # the stored token expired: a refresh is needed, eBay fails
        with pytest.raises(RetryLater) as later:
            await connector.access_token(world.account)
        assert later.value.retry_after == 30
        world.emulator.clear_faults()
        world.emulator.revoke_user("client_seller")
        clock.advance(minutes=5)  # past the on-demand cooldown
        with pytest.raises(NeedsReconnect) as gone:
            await connector.access_token(world.account)
        assert gone.value.reason == "invalid_grant"
        async with connector.proxy(world.account) as ebay:
            with pytest.raises(NeedsReconnect):
                await ebay.get(INVENTORY)


async def test_async_ebay_auth_gets_one_fresh_token_on_a_401(world: World) -> None:
    async with (
        AsyncConnector(world.base, world.key) as connector,
        httpx.AsyncClient(
            base_url=world.emulator_url, auth=EbayAuth(connector, world.account)
        ) as ebay,
    ):
        assert (await ebay.get(INVENTORY)).status_code == 200
        before = world.refreshes()
        world.emulator.reject_access_tokens("client_seller")
        answers = await asyncio.gather(*(ebay.get(INVENTORY) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert world.refreshes() == before + 1


async def test_the_blocking_connector_does_the_same(world: World) -> None:
    def program() -> tuple[list[str], int, int, int]:
        with Connector(world.base, world.key) as connector:
            names = [a.ebay_username for a in connector.accounts()]
            with connector.proxy(world.account) as ebay:
                put = ebay.put(
                    f"{INVENTORY}/SKU-1",
                    json={"product": {"title": "Lamp"}},
                    headers={"Content-Language": "en-US"},
                )
            world.emulator.reject_access_tokens("client_seller")
            auth = EbayAuth(connector, world.account)
            with httpx.Client(base_url=world.emulator_url, auth=auth) as direct:
                one = direct.get(f"{INVENTORY}/SKU-1")
            with Connector(world.base, world.weak_key) as weak, pytest.raises(PermissionDenied):
                weak.access_token(world.account)
            return names, put.status_code, one.status_code, world.refreshes()

    names, put, one, refreshes = await asyncio.to_thread(program)
    assert names == ["client_seller"]
    assert (put, one, refreshes) == (204, 200, 1)
