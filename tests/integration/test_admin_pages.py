"""The admin UI's account, people and API keys pages over real HTTP: organization scoping,
hostile input answered on the page with what was typed kept and nothing written, the last
admin kept, a new key shown once; the sign-in page keeping the e-mail; Workers' expiries."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from ebay_connector.core.roles import Role
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.helpers import serve_asgi
from tests.integration.test_api import PASSWORD, Api, _org, connect

pytestmark = pytest.mark.integration

HTML = {"Accept": "text/html"}


@pytest.fixture
async def api(runtime: Runtime, emulator: tuple[Emulator, str]) -> AsyncIterator[Api]:
    async with serve_asgi(create_app(runtime)) as base:
        a, b = await _org(runtime, "orga"), await _org(runtime, "orgb")
        yield Api(base, runtime, emulator[0], a, b)


def flat(html: str) -> str:
    return re.sub(r"\s+", " ", html)


async def test_the_account_page_is_its_organizations_only_and_shows_no_token(api: Api) -> None:
    async with api.session(api.a.admin) as admin, api.session(api.b.admin) as other:
        mine = (await connect(api, admin, "page_seller"))["body"]["account_id"]
        shown = await admin.get(f"/accounts/{mine}", headers=HTML)
        assert shown.status_code == 200
        text = flat(shown.text)
        assert "page_seller" in text
        assert f'href="/terminal?account={mine}"' in text
        assert f'action="/ui/accounts/{mine}/debug"' in text
        assert "data-confirm=" in text and 'class="danger">Disconnect' in text
        fingerprints = re.findall(r'data-fingerprint="([0-9a-f]{16})"', text)
        assert len(fingerprints) == 2, text
        assert (
            "code_exchange" in text
            or "authorization_code" in text
            or '<ol class="history">' in text
        )
        token = (await api.runtime.refresher.get_access_token(mine)).access_token
        assert token[10:40] not in shown.text
        assert (await other.get(f"/accounts/{mine}", headers=HTML)).status_code == 404
        missing = await admin.get("/accounts/999999", headers=HTML)
        assert missing.status_code == 404
        assert "No such account" in missing.text and 'href="/"' in missing.text
        foreign = await other.post(f"/ui/accounts/{mine}/label", data={"label": "Mine now"})
        assert foreign.status_code == 404
    async with api.session(api.a.viewer) as viewer:
        seen = await viewer.get(f"/accounts/{mine}", headers=HTML)
        assert seen.status_code == 200
        assert "/label" not in seen.text and "Disconnect" not in seen.text
        refused = await viewer.post(f"/ui/accounts/{mine}/label", data={"label": "Viewer's"})
        assert refused.status_code == 403
    account = await api.runtime.store.account_token(mine)
    assert account is not None and account.label == "page_seller"


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("   ", "cannot be empty"),
        ("x" * 201, "at most 200 characters"),
        ("two\nlines", "control characters"),
        ("zero\u200bwidth", "control characters"),
    ],
)
async def test_a_bad_label_is_refused_on_the_page_with_the_typed_value_kept(
    api: Api, typed: str, says: str
) -> None:
    async with api.session(api.a.admin) as admin:
        mine = (await connect(api, admin, "label_seller"))["body"]["account_id"]
        refused = await admin.post(f"/ui/accounts/{mine}/label", data={"label": typed})
        assert refused.status_code == 422
        assert says in refused.text
        assert 'aria-invalid="true"' in refused.text
        kept = re.search(r'id="label" name="label"[^>]*value="([^"]*)"', refused.text, re.S)
        assert kept is not None and kept.group(1) == typed.replace("\n", "\n")
    account = await api.runtime.store.account_token(mine)
    assert account is not None and account.label == "label_seller"


async def test_a_rename_is_trimmed_and_shown_once_as_a_notice(api: Api) -> None:
    async with api.session(api.a.admin) as admin:
        mine = (await connect(api, admin, "rename_seller"))["body"]["account_id"]
        done = await admin.post(
            f"/ui/accounts/{mine}/label", data={"label": "  Bücher & Co.  "}, headers=HTML
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/accounts/{mine}"
        page = await admin.get(f"/accounts/{mine}", headers=HTML)
        assert "Renamed to Bücher &amp; Co.." in page.text
    account = await api.runtime.store.account_token(mine)
    assert account is not None and account.label == "Bücher & Co."


async def test_people_are_managed_by_admins_and_the_last_admin_stays(api: Api) -> None:
    users = Users(api.runtime.db)
    async with api.session(api.a.admin) as admin:
        listed = await admin.get("/users", headers=HTML)
        assert listed.status_code == 200
        assert api.a.admin in listed.text and api.b.admin not in listed.text
        me = await users.by_email(api.a.admin)
        viewer = await users.by_email(api.a.viewer)
        # Oneself: neither removed nor demoted.
        for path, data in (
            (f"/ui/users/{me.id}/remove", {}),
            (f"/ui/users/{me.id}/role", {"role": "viewer"}),
        ):
            refused = await admin.post(path, data=data)
            assert refused.status_code == 409, refused.text
            assert "ask another admin" in refused.text
        # The operator role is granted by operators only.
        refused = await admin.post(f"/ui/users/{viewer.id}/role", data={"role": "operator"})
        assert refused.status_code == 409
        assert "Only an operator" in refused.text
        # Another organization's member is as unknown as a missing one.
        stranger = await users.by_email(api.b.viewer)
        assert (await admin.post(f"/ui/users/{stranger.id}/remove")).status_code == 404
        assert (await users.by_email(api.b.viewer)).role is Role.VIEWER
        # Added, promoted; then the first admin can be demoted by the second.
        added = await admin.post(
            "/ui/users",
            data={"email": " Second@OrgA.test ", "role": "admin", "password": "long enough pw"},
        )
        assert added.status_code == 303
        second = await users.by_email("second@orga.test")
        assert (second.organization_id, second.role) == (api.a.id, Role.ADMIN)
    async with api.client() as client:
        signed = await client.post(
            "/api/auth/login", json={"email": "second@orga.test", "password": "long enough pw"}
        )
        assert signed.status_code == 200
        client.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
        demoted = await client.post(f"/ui/users/{me.id}/role", data={"role": "viewer"})
        assert demoted.status_code == 303
        # Now the second admin is the last one: removing or demoting them is refused, to all.
        assert (await users.by_email(api.a.admin)).role is Role.VIEWER
    assert (await users.get(second.id)) is not None


async def test_the_last_admin_cannot_be_removed_even_by_a_fresh_admin_race(api: Api) -> None:
    users = Users(api.runtime.db)
    async with api.session(api.a.admin) as admin:
        first = await users.by_email(api.a.admin)
        await users.create(api.a.id, "other@orga.test", Role.ADMIN, PASSWORD)
        other = await users.by_email("other@orga.test")
        removed = await admin.post(f"/ui/users/{other.id}/remove")
        assert removed.status_code == 303
        assert await users.get(other.id) is None
        assert (await users.get(first.id)) is not None


@pytest.mark.parametrize(
    ("email", "says"),
    [
        ("viewer@orga.test", "already exists"),
        ("VIEWER@orga.test", "already exists"),
        ("new\r\nBcc: x@orga.test", "is not an e-mail address"),
        ("x" * 400 + "@orga.test", "is not an e-mail address"),
        ("no-at-sign", "is not an e-mail address"),
    ],
)
async def test_a_bad_person_is_refused_with_the_e_mail_kept_and_nothing_written(
    api: Api, email: str, says: str
) -> None:
    users = Users(api.runtime.db)
    before = await users.list(api.a.id)
    async with api.session(api.a.admin) as admin:
        refused = await admin.post(
            "/ui/users", data={"email": email, "role": "viewer", "password": "long enough pw"}
        )
        assert refused.status_code == 422, refused.text
        assert says in refused.text and "Nothing was changed." in refused.text
        assert "long enough pw" not in refused.text
        kept = re.search(r'id="new-email"[^>]*value="([^"]*)"', refused.text)
        assert kept is not None and kept.group(1).replace("&#34;", '"') != ""
    assert await users.list(api.a.id) == before


async def test_a_new_api_key_is_shown_once_works_and_is_revoked(api: Api) -> None:
    async with api.session(api.a.admin) as admin:
        made = await admin.post("/ui/api-keys", data={"name": "Nightly sync", "tokens": "true"})
        assert made.status_code == 303
        assert made.headers["location"] == "/api-keys/created"
        assert "ebc_" not in made.headers["location"]
        shown = await admin.get("/api-keys/created", headers=HTML)
        assert shown.status_code == 200
        assert shown.headers["cache-control"] == "no-store"
        key = re.search(r"ebc_[0-9a-f]+_[A-Za-z0-9_-]+", shown.text)
        assert key is not None
        again = await admin.get("/api-keys/created", headers=HTML)
        assert "cannot be shown again" in again.text
        assert key.group(0) not in again.text
        key_id = key.group(0).split("_")[1]
        async with api.client() as program:
            program.headers["Authorization"] = f"Bearer {key.group(0)}"
            assert (await program.get("/api/v1/accounts")).status_code == 200
        listed = await admin.get("/api-keys", headers=HTML)
        assert "Nightly sync" in listed.text and key.group(0) not in listed.text
        assert "list accounts, read tokens" in listed.text
        revoked = await admin.post(f"/ui/api-keys/{key_id}/revoke")
        assert revoked.status_code == 303
    rows = await api.runtime.api_keys.list(api.a.id)
    assert next(r for r in rows if r.key_id == key_id).revoked_at is not None


@pytest.mark.parametrize("name", ["", "x" * 201, "evil\x1b[31m"])
async def test_a_bad_key_name_is_refused_and_nothing_is_made(api: Api, name: str) -> None:
    before = await api.runtime.api_keys.list(api.a.id)
    async with api.session(api.a.admin) as admin:
        refused = await admin.post("/ui/api-keys", data={"name": name, "proxy": "true"})
        assert refused.status_code == 422
        assert "No key was created." in refused.text
        assert re.search(r'name="proxy" value="true" checked', refused.text)
    assert await api.runtime.api_keys.list(api.a.id) == before


async def test_viewers_are_told_people_and_keys_are_for_admins(api: Api) -> None:
    async with api.session(api.a.viewer) as viewer:
        for path in ("/users", "/api-keys"):
            page = await viewer.get(path, headers=HTML)
            assert page.status_code == 403
            assert "Admins only" in page.text
            assert 'href="/users"' not in page.text  # not in the viewer's navigation
        assert (await viewer.post("/ui/api-keys", data={"name": "x"})).status_code == 403
        assert (await viewer.post("/ui/users", data={"email": "v@x.test"})).status_code == 403


async def test_a_wrong_password_keeps_the_e_mail_typed_and_never_the_password(api: Api) -> None:
    async with api.client() as browser:
        page = await browser.post(
            "/login", data={"email": api.a.admin, "password": "not the password"}
        )
        assert page.status_code == 401
        assert f'value="{api.a.admin}"' in page.text
        assert "not the password" not in page.text


async def test_workers_list_only_expiries_that_need_a_person(api: Api, clock: object) -> None:
    async with api.session(api.a.admin) as admin:
        fine = (await connect(api, admin, "routine_seller"))["body"]["account_id"]
        ending = (await connect(api, admin, "ending_seller"))["body"]["account_id"]
        await api.runtime.store.set_refresh_expiry(ending, api.runtime.clock() + timedelta(days=9))
        page = flat((await admin.get("/workers", headers=HTML)).text)
    section = page[page.index("Upcoming expiries") :]
    link = f'<a href="/accounts/{ending}">ending_seller</a>: refresh token ends in '
    assert re.search(re.escape(link) + r"(8d 23h|9d 0h)", section), section
    assert "routine_seller" not in section and f"/accounts/{fine}" not in section
    assert "access token" not in section.split("</p>", 1)[1]
