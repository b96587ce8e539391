"""Marketplace Account Deletion end to end: the real emulator signs and sends notifications over
HTTP to the real API on loopback, which fetches eBay's key with the shared application token and
deletes the seller in every organization (real SQLite / PostgreSQL)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ebay_connector.core import deletion
from ebay_connector.db import models as m
from ebay_connector.ebay import public_keys
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

VERIFICATION_TOKEN = "Vt_0123456789-abcdefghijklmnopqrstuvwxyz"
REGISTERED_ENDPOINT = "https://connector.example/api/ebay/notifications/account-deletion"


def serve(runtime: Runtime) -> contextlib.AbstractAsyncContextManager[str]:
    """The real API on a free loopback port; yields its base URL."""
    return serve_asgi(create_app(runtime))


@dataclass
class Setup:
    runtime: Runtime
    emulator: Emulator
    emulator_url: str
    api_url: str
    org_a: int
    org_b: int

    async def connect(self, organization_id: int, username: str) -> int:
        return await connect_seller(self.runtime, organization_id, username)

    async def send(self, **fields: str) -> dict[str, Any]:
        """Ask the emulator to send a notification to our endpoint; its account of the send."""
        body = {"endpoint": self.api_url + deletion.PATH, **fields}
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                self.emulator_url + "/_emulator/notifications/account-deletion", json=body
            )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def emulator_state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(self.emulator_url + "/_emulator/notifications")
        return dict(answer.json())

    async def usernames(self, organization_id: int) -> list[str]:
        return sorted(a.ebay_username for a in await self.runtime.store.accounts(organization_id))

    async def deletions(self) -> list[dict[str, Any]]:
        async with self.runtime.db.read() as conn:
            rows = await conn.execute(sa.select(m.AccountDeletion).order_by(m.AccountDeletion.id))
            return [dict(r._mapping) for r in rows]


@pytest.fixture
async def setup(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Setup]:
    emu, base_url = emulator
    async with (
        open_test_runtime(
            database,
            emulator,
            tmp_path,
            clock,
            http_timeout_seconds=5,
            deletion_verification_token=VERIFICATION_TOKEN,
            deletion_endpoint_url=REGISTERED_ENDPOINT,
        ) as rt,
        serve(rt) as api_url,
    ):
        org_a = await rt.store.create_organization("Shop A")
        org_b = await rt.store.create_organization("Shop B")
        emu.register_notification_endpoint(api_url + deletion.PATH)
        yield Setup(rt, emu, base_url, api_url, org_a, org_b)


async def test_the_emulator_notifies_only_the_registered_endpoint(setup: Setup) -> None:
    """Its sender is no open proxy: another URL (here the emulator's own control API) is refused
    without a request being made."""
    async with httpx.AsyncClient(timeout=10) as client:
        for endpoint in (setup.emulator_url + "/_emulator/health", "http://169.254.169.254/"):
            answer = await client.post(
                setup.emulator_url + "/_emulator/notifications/account-deletion",
                json={"endpoint": endpoint, "user_id": "someone"},
            )
            assert answer.status_code == 400, answer.text
            assert "registered account-deletion endpoint" in answer.json()["detail"]
    assert (await setup.emulator_state())["sent"] == []


async def test_challenge_answers_eBays_sha256_of_code_token_and_registered_endpoint(
    setup: Setup,
) -> None:
    code = "a8628072-3d33-45ee-9004-bee86830a22d"
    async with httpx.AsyncClient(base_url=setup.api_url) as client:
        answer = await client.get(deletion.PATH, params={"challenge_code": code})
        missing = await client.get(deletion.PATH)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    expected = hashlib.sha256((code + VERIFICATION_TOKEN + REGISTERED_ENDPOINT).encode())
    assert answer.json() == {"challengeResponse": expected.hexdigest()}
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "validation_error"


async def test_challenge_without_a_verification_token_says_it_is_not_configured(
    runtime: Runtime,
) -> None:
    async with serve(runtime) as api_url, httpx.AsyncClient(base_url=api_url) as client:
        answer = await client.get(deletion.PATH, params={"challenge_code": "x"})
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "deletion_not_configured"


async def conn_scalar(setup: Setup, statement: Any) -> Any:
    async with setup.runtime.db.read() as conn:
        return (await conn.execute(statement)).scalar_one_or_none()


async def test_a_signed_deletion_removes_the_seller_in_every_organization(setup: Setup) -> None:
    gone_a = await setup.connect(setup.org_a, "seller_gone")
    gone_b = await setup.connect(setup.org_b, "seller_gone")
    await setup.connect(setup.org_a, "seller_stays")
    user_id = next(u.user_id for u in setup.emulator.users() if u.username == "seller_gone")

    sent = await setup.send(username="seller_gone")

    assert sent["status"] == 204, sent
    assert await setup.usernames(setup.org_a) == ["seller_stays"]
    assert await setup.usernames(setup.org_b) == []
    async with setup.runtime.db.read() as conn:
        token_accounts = (await conn.execute(sa.select(m.EbayToken.account_id))).scalars().all()
        exchanges = (await conn.execute(sa.select(m.EbayExchange))).all()
    assert gone_a not in token_accounts and gone_b not in token_accounts
    assert len(token_accounts) == 1
    # The connect history stays, detached, and no longer names the seller.
    assert exchanges
    history = json.dumps([[r.request, r.response, r.error] for r in exchanges])
    assert "seller_stays" in history  # the erasure is targeted, not a wipe
    assert user_id not in history.replace("seller_stays", "")
    assert "seller_gone" not in history
    [record] = await setup.deletions()
    assert record["notification_id"] == sent["notification_id"]
    assert record["ebay_user_fingerprint"] == setup.runtime.keys.ring.fingerprint(user_id)
    assert user_id not in json.dumps(record, default=str)
    assert record["account_ids"] == sorted([gone_a, gone_b])
    assert record["organization_ids"] == sorted([setup.org_a, setup.org_b])
    assert record["environment"] == "emulator"

    # A second seller's deletion reuses the cached key and the shared application token.
    await setup.send(username="seller_stays")
    assert await setup.usernames(setup.org_a) == []
    state = await setup.emulator_state()
    assert state["public_key_fetches"] == 1
    assert setup.emulator.calls.count(endpoint="token", grant_type="client_credentials") == 1
    # Every call to eBay is in the journal: the one getPublicKey too, its app token masked.
    async with setup.runtime.db.read() as conn:
        fetched = (
            await conn.execute(
                sa.select(m.EbayExchange).where(m.EbayExchange.action == "get_public_key")
            )
        ).all()
    assert [(r.outcome, r.status, r.sent) for r in fetched] == [("ok", 200, True)]
    app_tokens = (await conn_scalar(setup, sa.select(m.AppToken.ciphertext))) or ""
    plain = setup.runtime.keys.ring.open(app_tokens, context="app_token/emulator")
    assert plain not in json.dumps([fetched[0].request, fetched[0].response])


async def test_a_replayed_notification_is_acknowledged_and_does_nothing_twice(
    setup: Setup,
) -> None:
    await setup.connect(setup.org_a, "seller_back")
    first = await setup.send(username="seller_back", notification_id="n-1")
    assert first["status"] == 204
    # The seller comes back (a new eBay account keeps the id in the emulator): a redelivery of
    # the old notification must not delete the new connection.
    account = await setup.connect(setup.org_a, "seller_back")
    again = await setup.send(username="seller_back", notification_id="n-1")
    assert again["status"] == 204
    assert [a.account_id for a in await setup.runtime.store.accounts(setup.org_a)] == [account]
    assert len(await setup.deletions()) == 1


async def test_a_deletion_for_an_unknown_seller_is_recorded_with_nothing_deleted(
    setup: Setup,
) -> None:
    sent = await setup.send(user_id="neverConnected1")
    assert sent["status"] == 204
    [record] = await setup.deletions()
    assert record["account_ids"] == [] and record["organization_ids"] == []


@pytest.mark.parametrize("signature", ["missing", "wrong_key", "tampered", "unknown_kid"])
async def test_an_unsigned_or_wrongly_signed_notification_is_refused_and_deletes_nothing(
    setup: Setup, signature: str
) -> None:
    await setup.connect(setup.org_a, "seller_safe")
    await setup.connect(setup.org_b, "seller_safe")
    sent = await setup.send(username="seller_safe", signature=signature)
    assert sent["status"] == 412, sent
    assert json.loads(sent["response"])["error"]["code"] == "signature_invalid"
    assert await setup.usernames(setup.org_a) == ["seller_safe"]
    assert await setup.usernames(setup.org_b) == ["seller_safe"]
    assert await setup.deletions() == []


async def test_garbage_posts_are_4xx_never_500(setup: Setup) -> None:
    async with httpx.AsyncClient(base_url=setup.api_url) as client:
        cases = [
            await client.post(deletion.PATH, content=b"{}"),
            await client.post(
                deletion.PATH, content=b"\xff\xfe", headers={"X-EBAY-SIGNATURE": "@@@"}
            ),
            await client.post(
                deletion.PATH, content=b"{}", headers={"X-EBAY-SIGNATURE": "e30="}
            ),  # base64 of "{}"
        ]
    assert [c.status_code for c in cases] == [412, 412, 412]
    assert await setup.deletions() == []


async def test_unknown_key_ids_cannot_amplify_into_ebay_calls(setup: Setup) -> None:
    """Each post with a new kid used to be an outbound getPublicKey call and a journal row, and
    enough of them flushed the known key. Now fetches are bounded and the rest refused."""
    await setup.connect(setup.org_a, "seller_one")
    await setup.connect(setup.org_a, "seller_two")
    first = await setup.send(username="seller_one")
    assert first["status"] == 204, first
    fetched = (await setup.emulator_state())["public_key_fetches"]
    answers = [await setup.send(username="seller_one", signature="unknown_kid") for _ in range(80)]
    assert {a["status"] for a in answers} == {412}
    extra = (await setup.emulator_state())["public_key_fetches"] - fetched
    assert extra <= public_keys.FETCHES_PER_WINDOW, extra
    async with setup.runtime.db.read() as conn:
        rows = (
            await conn.execute(sa.select(sa.func.count()).select_from(m.EbayExchange))
        ).scalar_one()
    assert rows <= 2 + 2 + 1 + public_keys.FETCHES_PER_WINDOW  # connects, token, key, bounded
    # The known key was never flushed: a genuine notification needs no new fetch.
    before = (await setup.emulator_state())["public_key_fetches"]
    genuine = await setup.send(username="seller_two")
    assert genuine["status"] == 204, genuine
    assert (await setup.emulator_state())["public_key_fetches"] == before
