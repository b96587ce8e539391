"""Errors answer a person with a page and a program with JSON; a debug refresh's result lives at
its own URL, where reloading reads it again and never refreshes again.

The real app on a loopback port, a real database (SQLite and PostgreSQL), a seller connected
through the real emulator.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from ebay_connector.core.roles import Role
from ebay_connector.db.users import Users
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
PAGE = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
JSON = {"Accept": "application/json"}


@dataclass
class Site:
    base: str
    runtime: Runtime
    org_a: int
    org_b: int
    account_a: int

    @contextlib.asynccontextmanager
    async def session(self, email: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            answer = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            yield client, answer.json()["csrf_token"]


@pytest.fixture
async def site(runtime: Runtime) -> AsyncIterator[Site]:
    people = Users(runtime.db)
    orgs = []
    for name in ("pagesa", "pagesb"):
        org = await runtime.store.create_organization(name)
        await people.create(org, f"admin@{name}.test", Role.ADMIN, PASSWORD)
        await people.create(org, f"viewer@{name}.test", Role.VIEWER, PASSWORD)
        orgs.append(org)
    account = await connect_seller(runtime, orgs[0], "pages_seller")
    app = create_app(runtime)

    @app.get("/ui/test-boom")
    async def boom() -> None:
        raise RuntimeError("driver said: relation secret_table does not exist")

    async with serve_asgi(app) as base:
        yield Site(base, runtime, orgs[0], orgs[1], account)


def assert_page(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html"), answer.headers
    text = answer.text
    assert text.lstrip().startswith("<!doctype html>"), text[:200]
    assert f'data-code="{code}"' in text, text
    assert '{"error"' not in text
    assert "Traceback" not in text
    return text


async def test_unknown_pages_and_wrong_methods_are_pages_for_people_and_json_for_programs(
    site: Site,
) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as anonymous:
        text = assert_page(await anonymous.get("/no-such-page", headers=PAGE), 404, "not_found")
        assert "Page not found" in text and 'href="/"' in text
        as_json = await anonymous.get("/no-such-page", headers=JSON)
        assert as_json.status_code == 404
        assert as_json.json() == {"error": {"code": "not_found", "message": "Not Found"}}
        # The API's paths stay JSON whatever the client asks for.
        api = await anonymous.get("/api/v1/no-such-route", headers=PAGE)
        assert api.json()["error"]["code"] == "not_found"

        wrong = await anonymous.get("/ui/logout", headers=PAGE)
        text = assert_page(wrong, 405, "method_not_allowed")
        assert wrong.headers["allow"] == "POST"
        assert "cannot be used that way" in text
        assert (await anonymous.get("/ui/logout")).json()["error"]["code"] == "method_not_allowed"

        ended = await anonymous.post(
            "/ui/accounts/1/refresh", data={"csrf_token": "x"}, headers=PAGE
        )
        text = assert_page(ended, 401, "unauthorized")
        assert "Your session has ended" in text and 'href="/login"' in text
        assert "Sign out" not in text  # nobody is signed in

        boom = await anonymous.get("/ui/test-boom", headers=PAGE)
        text = assert_page(boom, 500, "internal_error")
        assert "Something went wrong on our side" in text
        assert "driver said" not in text and "secret_table" not in text
        assert re.search(r"Error id: <code>[0-9a-f]{12}</code>", text), text
        assert 'href="/ui/test-boom">Try again' in text
        program = await anonymous.get("/ui/test-boom")
        assert program.status_code == 500
        assert program.json()["error"]["code"] == "internal_error"


async def test_refused_actions_are_pages_in_the_signed_in_frame(site: Site) -> None:
    async with site.session("viewer@pagesa.test") as (viewer, csrf):
        refused = await viewer.post(
            f"/ui/accounts/{site.account_a}/refresh", data={"csrf_token": csrf}, headers=PAGE
        )
        text = assert_page(refused, 403, "forbidden")
        assert "You may not do this" in text and "this needs the admin role" in text
        assert "Sign out" in text and "viewer@pagesa.test" in text  # the person's own frame
        forged = await viewer.post(f"/ui/accounts/{site.account_a}/refresh", headers=PAGE)
        assert "out of date or was sent from another site" in assert_page(
            forged, 403, "csrf_failed"
        )
        # A script's fetch (Accept */*) keeps the JSON it always had.
        assert (await viewer.post(f"/ui/accounts/{site.account_a}/refresh")).json()["error"][
            "code"
        ] == "csrf_failed"
    async with site.session("admin@pagesa.test") as (admin, csrf):
        too_long = await admin.post(
            "/ui/webhooks", data={"csrf_token": csrf, "url": "https://x.test/" + "a" * 3000}
        )
        assert too_long.status_code == 422
        assert too_long.json()["error"]["code"] == "validation_error"
        too_long = await admin.post(
            "/ui/webhooks",
            data={"csrf_token": csrf, "url": "https://x.test/" + "a" * 3000},
            headers=PAGE,
        )
        text = assert_page(too_long, 422, "validation_error")
        assert "Nothing was changed" in text and "url" in text


async def test_a_debug_refresh_redirects_to_its_exchange_and_a_reload_never_refreshes_again(
    site: Site,
) -> None:
    journal = site.runtime.journal
    async with site.session("admin@pagesa.test") as (admin, csrf):
        before = await journal.exchanges(organization_id=site.org_a, limit=100)
        done = await admin.post(
            f"/ui/accounts/{site.account_a}/debug", data={"csrf_token": csrf}, headers=PAGE
        )
        assert done.status_code == 303, done.text
        location = done.headers["location"]
        match = re.fullmatch(r"/exchanges/(\d+)", location)
        assert match, location
        after = await journal.exchanges(organization_id=site.org_a, limit=100)
        assert len(after) == len(before) + 1
        assert after[0].id == int(match.group(1))
        for _ in range(3):  # reloads
            shown = await admin.get(location, headers=PAGE)
            assert shown.status_code == 200
            assert 'data-outcome="ok"' in shown.text
            assert "Debug refresh · pages_seller" in shown.text
            assert "> POST " in shown.text.replace("&gt;", ">")
        assert len(await journal.exchanges(organization_id=site.org_a, limit=100)) == len(after)
        missing = await admin.get("/exchanges/999999", headers=PAGE)
        assert_page(missing, 404, "exchange_not_found")
        assert (await admin.get("/exchanges/999999")).json()["error"]["code"] == (
            "exchange_not_found"
        )
    async with site.session("admin@pagesb.test") as (other, _):
        hidden = await other.get(location, headers=PAGE)
        assert_page(hidden, 404, "exchange_not_found")  # another organization's: unknown
        assert "pages_seller" not in hidden.text
