"""Connect sessions over real HTTP on loopback: a program asks for a link, a seller (a plain
HTTP client here; a real browser in tests/browser/test_program_day.py) follows it through the
emulator's consent page, and lands on the program's return URL — never on a JSON page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.return_urls import ReturnUrls
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.conftest import FakeClock
from tests.helpers import serve_asgi

pytestmark = pytest.mark.integration

RETURN = "https://shop.example/ebay/done"


@dataclass
class Program:
    base: str
    runtime: Runtime
    emulator: Emulator
    org: int
    key: str  # --connect
    token_key: str  # --tokens only

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10)

    async def new_session(self, **body: Any) -> httpx.Response:
        async with self.client() as client:
            return await client.post(
                "/api/v1/connect-sessions",
                json={"end_user_id": "seller-1", "return_url": RETURN, **body},
            )


@pytest.fixture
async def program(runtime: Runtime, emulator: tuple[Emulator, str]) -> AsyncIterator[Program]:
    emu, _ = emulator
    async with serve_asgi(create_app(runtime)) as base:
        org = await runtime.store.create_organization("Lister Ltd")
        keys = ApiKeys(runtime.db)
        _, key = await keys.create(org, "onboarding", can_read_tokens=False, can_connect=True)
        _, token_key = await keys.create(org, "sync", can_read_tokens=True)
        await ReturnUrls(runtime.db).add(org, "https://shop.example/ebay")
        yield Program(base, runtime, emu, org, key, token_key)


async def seller_goes(program: Program, url: str, username: str, decision: str = "agree") -> str:
    """The seller: the product's page, its button, eBay's consent, back through the callback;
    answers where the seller finally lands."""
    path = urlsplit(url).path
    async with httpx.AsyncClient(base_url=program.base, timeout=10) as browser:
        page = await browser.get(path)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "Lister Ltd" in page.text
        csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        pressed = await browser.post(path, data={"csrf_token": csrf})
        assert pressed.status_code == 303, pressed.text
        consent = urlsplit(pressed.headers["location"])
        query = {k: v[0] for k, v in parse_qs(consent.query).items()}
        ebay = await browser.post(
            f"{consent.scheme}://{consent.netloc}{consent.path}",
            data={**query, "username": username, "decision": decision},
        )
        assert ebay.status_code == 302
        back = urlsplit(ebay.headers["location"])
        landed = await browser.get(f"/api/ebay/callback?{back.query}")
        assert landed.status_code == 303, landed.text
        return str(landed.headers["location"])


def outcome(location: str) -> dict[str, str]:
    assert location.startswith(RETURN + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_only_a_connect_key_creates_sessions(program: Program) -> None:
    async with program.client(program.token_key) as client:
        refused = await client.post(
            "/api/v1/connect-sessions", json={"end_user_id": "x", "return_url": RETURN}
        )
    assert refused.status_code == 403
    assert "--connect" in refused.json()["error"]["message"]
    made = await program.new_session(end_user_label="Alice's shop")
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == {"id", "url", "expires_at"}
    assert body["url"].endswith(f"/connect/{body['id']}")
    created = await program.runtime.connect_sessions.sessions.get(body["id"])
    assert created is not None
    assert created.expires_at - created.created_at == timedelta(minutes=30)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/ebay/done",
        "https://shop.example/ebayx",
        "http://shop.example/ebay/done",
        "https://shop.example:444/ebay/done",
        "https://shop.example/ebay/../admin",
        "https://shop.example@evil.example/ebay/done",
        "https://shop.example\\@evil.example/ebay",
        "javascript:alert(1)",
    ],
)
async def test_a_return_url_off_the_allow_list_is_refused(program: Program, url: str) -> None:
    answer = await program.new_session(return_url=url)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "return_url_not_allowed"


async def test_a_seller_connects_and_the_program_finds_the_account(program: Program) -> None:
    made = (await program.new_session(end_user_label="Alice's shop")).json()
    landed = outcome(await seller_goes(program, made["url"], "alice_store"))
    assert landed["status"] == "connected"
    assert landed["session_id"] == made["id"]
    account_id = int(landed["account_id"])
    async with program.client() as client:
        mine = await client.get("/api/v1/accounts", params={"end_user_id": "seller-1"})
        others = await client.get("/api/v1/accounts", params={"end_user_id": "seller-2"})
    assert [a["id"] for a in mine.json()["accounts"]] == [account_id]
    assert mine.json()["accounts"][0]["end_user_label"] == "Alice's shop"
    assert others.json()["accounts"] == []
    events = await program.runtime.outbox.events(program.org)
    connected = [e for e in events if e["type"] == "account.connected"]
    assert connected[0]["payload"]["data"]["end_user_id"] == "seller-1"
    assert connected[0]["payload"]["data"]["account"]["id"] == account_id
    # Single use: the link now sends the seller straight back with the error.
    async with httpx.AsyncClient(base_url=program.base) as browser:
        again = await browser.get(urlsplit(made["url"]).path)
    assert again.status_code == 303
    assert outcome(again.headers["location"])["error"] == "session_expired"


async def test_a_declined_consent_comes_back_as_an_error(program: Program) -> None:
    made = (await program.new_session()).json()
    landed = outcome(await seller_goes(program, made["url"], "bob_store", decision="decline"))
    assert landed == {"status": "error", "error": "consent_declined", "session_id": made["id"]}
    assert await program.runtime.store.accounts(program.org) == []


async def test_an_expired_session_and_an_unknown_link(program: Program, clock: FakeClock) -> None:
    made = (await program.new_session()).json()
    clock.advance(minutes=31)
    async with httpx.AsyncClient(base_url=program.base) as browser:
        late = await browser.get(urlsplit(made["url"]).path)
        unknown = await browser.get("/connect/cs_not-a-session-at-all")
        forged = await browser.post(urlsplit(made["url"]).path, data={"csrf_token": "x" * 64})
    assert outcome(late.headers["location"])["error"] == "session_expired"
    for page in (unknown, forged):
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")


async def test_a_reconnect_by_another_ebay_user_changes_nothing(program: Program) -> None:
    first = (await program.new_session()).json()
    account_id = int(outcome(await seller_goes(program, first["url"], "carol"))["account_id"])
    before = await program.runtime.store.account_token(account_id)
    again = (await program.new_session(account_id=account_id)).json()
    landed = outcome(await seller_goes(program, again["url"], "mallory"))
    assert landed["error"] == "wrong_ebay_user"
    after = await program.runtime.store.account_token(account_id)
    assert before is not None and after is not None
    assert after.version == before.version and after.ebay_username == "carol"
    assert len(await program.runtime.store.accounts(program.org)) == 1
    right = (await program.new_session(account_id=account_id)).json()
    landed = outcome(await seller_goes(program, right["url"], "carol"))
    assert landed["status"] == "connected" and int(landed["account_id"]) == account_id
    events = await program.runtime.outbox.events(program.org)
    assert events[0]["type"] == "account.reconnected"


async def test_the_same_ebay_user_through_another_end_user_is_refused(program: Program) -> None:
    first = (await program.new_session()).json()
    account_id = int(outcome(await seller_goes(program, first["url"], "dave"))["account_id"])
    other = (await program.new_session(end_user_id="seller-2")).json()
    landed = outcome(await seller_goes(program, other["url"], "dave"))
    assert landed["error"] == "end_user_conflict"
    account = await program.runtime.store.account_token(account_id)
    assert account is not None and account.end_user_id == "seller-1"
    mismatch = await program.new_session(end_user_id="seller-2", account_id=account_id)
    assert mismatch.status_code == 409
    assert mismatch.json()["error"]["code"] == "end_user_mismatch"
