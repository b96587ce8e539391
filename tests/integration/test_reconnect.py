"""An admin's reconnect over real HTTP: the eBay user who consents must be the account's own.
Consent as anybody else changes nothing (both accounts' rows and tokens as before, no new
account, the grant just made revoked at eBay); API clients get 409 `wrong_ebay_user`, a browser
a page that says who signed in, who was expected and what to do. Every other ending of the
callback is a page for a browser too, and JSON for API clients."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ebay_connector.db.store import AccountToken
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.conftest import FakeClock
from tests.helpers import serve_asgi
from tests.integration.test_api import Api, _org, connect

pytestmark = pytest.mark.integration

HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
async def api(runtime: Runtime, emulator: tuple[Emulator, str]) -> AsyncIterator[Api]:
    async with serve_asgi(create_app(runtime)) as base:
        a, b = await _org(runtime, "orga"), await _org(runtime, "orgb")
        yield Api(base, runtime, emulator[0], a, b)


async def consent(
    session: httpx.AsyncClient, username: str, *, decision: str = "agree", **params: Any
) -> dict[str, str]:
    """Our /connect → eBay's consent page, answered as ``username``: the callback's query."""
    start = await session.post("/api/ebay/connect", params=params, follow_redirects=False)
    assert start.status_code == 303, start.text
    page = urlsplit(start.headers["location"])
    query = {k: v[0] for k, v in parse_qs(page.query).items()}
    async with httpx.AsyncClient() as browser:
        answered = await browser.post(
            f"{page.scheme}://{page.netloc}{page.path}",
            data={**query, "username": username, "decision": decision},
        )
    assert answered.status_code == 302, answered.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answered.headers["location"]).query).items()}


async def snapshot(api: Api, *account_ids: int) -> list[AccountToken | None]:
    return [await api.runtime.store.account_token(i) for i in account_ids]


async def two_accounts(api: Api, admin: httpx.AsyncClient) -> tuple[int, int]:
    broken = (await connect(api, admin, "rc_migrated"))["body"]["account_id"]
    other = (await connect(api, admin, "rc_outlet"))["body"]["account_id"]
    api.emulator.revoke_user("rc_migrated")
    failed = await admin.post("/api/admin/ebay/token/refresh", json={"ebay_account_id": broken})
    assert failed.json()["state"] == "needs_reconnect"
    return broken, other


async def test_reconnect_as_another_ebay_user_changes_nothing_for_api_clients(api: Api) -> None:
    async with api.session(api.a.admin) as admin:
        broken, other = await two_accounts(api, admin)
        before = await snapshot(api, broken, other)
        count = len(await api.runtime.store.accounts())
        back = await consent(admin, "rc_outlet", account=broken)
        answer = await admin.get("/api/ebay/callback", params=back)
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["code"] == "wrong_ebay_user"
        assert "rc_outlet" in answer.json()["error"]["message"]
        assert await snapshot(api, broken, other) == before
        assert len(await api.runtime.store.accounts()) == count
        # The grant rc_outlet just made was revoked at eBay, and the revoke is in the journal.
        revokes = [
            e
            for e in await api.runtime.journal.exchanges(organization_id=api.a.id, limit=20)
            if e.action == "revoke"
        ]
        assert revokes and revokes[0].outcome == "ok"
        # rc_outlet's own account still refreshes: only the new grant was revoked.
        fine = await admin.post("/api/admin/ebay/token/refresh", json={"ebay_account_id": other})
        assert fine.json()["outcome"] == "ok"
        # The right seller then reconnects the broken account.
        back = await consent(admin, "rc_migrated", account=broken)
        right = await admin.get("/api/ebay/callback", params=back)
        assert right.status_code == 200, right.text
        assert right.json()["account_id"] == broken
        assert right.json()["created"] is False


async def test_reconnect_as_another_ebay_user_ends_on_a_page_that_says_what_to_do(
    api: Api,
) -> None:
    async with api.session(api.a.admin) as admin:
        broken, other = await two_accounts(api, admin)
        before = await snapshot(api, broken, other)
        back = await consent(admin, "rc_outlet", account=broken)
        answer = await admin.get("/api/ebay/callback", params=back, headers=HTML)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/connect/ended"
        shown = await admin.get("/connect/ended", headers=HTML)
        assert shown.status_code == 409
        assert shown.headers["content-type"].startswith("text/html")
        text = re.sub(r"\s+", " ", shown.text)
        assert "You signed in on eBay as rc_outlet" in text
        assert "Sign out of eBay as rc_outlet, then press Reconnect again and sign in as " in text
        assert "sign in as rc_migrated." in text
        assert f'action="/api/ebay/connect?account={broken}"' in shown.text
        assert 'href="/">Back to accounts</a>' in shown.text
        assert await snapshot(api, broken, other) == before
        again = await admin.get("/connect/ended", headers=HTML)  # a reload shows the same
        assert again.status_code == 409
        assert "You signed in on eBay as rc_outlet" in again.text


async def test_every_other_ending_of_the_callback_is_a_page_for_a_browser(
    api: Api, clock: FakeClock
) -> None:
    async with api.session(api.a.admin) as admin:
        count = len(await api.runtime.store.accounts())

        async def ended(params: dict[str, str]) -> tuple[int, str]:
            answer = await admin.get("/api/ebay/callback", params=params, headers=HTML)
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"] == "/connect/ended"
            shown = await admin.get("/connect/ended", headers=HTML)
            assert shown.headers["content-type"].startswith("text/html")
            assert "Back to accounts" in shown.text
            return shown.status_code, re.sub(r"\s+", " ", shown.text)

        declined = await consent(admin, "rc_decliner", decision="decline")
        status, text = await ended(declined)
        assert status == 400
        assert "Access was declined on eBay" in text
        assert "Try again" in text

        used = await consent(admin, "rc_twice")
        assert (await admin.get("/api/ebay/callback", params=used)).status_code == 200
        count += 1
        fresh = await consent(admin, "rc_twice")
        status, text = await ended({"code": used["code"], "state": fresh["state"]})
        assert status == 400
        assert "eBay refused the authorization code" in text

        status, text = await ended(used)  # the state was used up
        assert status == 400
        assert "This connect has expired" in text

        late = await consent(admin, "rc_late")
        clock.advance(minutes=11)
        status, text = await ended(late)
        assert "This connect has expired" in text
        assert len(await api.runtime.store.accounts()) == count
    async with api.client() as signed_out:
        answer = await signed_out.get("/api/ebay/callback", params=late, headers=HTML)
        assert answer.headers["location"] == "/connect/ended"
        shown = await signed_out.get("/connect/ended", headers=HTML)
        assert shown.status_code == 401
        assert "Your session has ended" in shown.text
        assert 'href="/login"' in shown.text
        assert (await signed_out.get("/api/ebay/callback", params=late)).json()["error"][
            "code"
        ] == "unauthorized"
