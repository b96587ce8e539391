"""The accounts page at scale, in a real browser: 1,500 sellers connected through the real
connect flow (our /api/ebay/connect → the emulator's consent page → our callback), beside the
demo's eight, then Chromium: the summary bar and its counts as filters, search, pages, sorting
both ways, the page's weight and tab stops, actions that come back to the same view and row,
live updates, the viewer's "who can fix it", an organization with no account yet, and axe-core
at desktop and phone widths.

The sellers are connected over HTTP with httpx (the same requests a browser sends, 1,500 times
would take Chromium many minutes); everything a person does is done in Chromium.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.harness import (
    ADMIN_EMAIL,
    PHONE,
    VIEWER_EMAIL,
    VIEWPORT,
    RunningDemo,
    assert_accessible,
    running_demo,
    screenshot,
    sign_in,
)

pytestmark = pytest.mark.browser

SELLERS = 1500
CONNECTING_AT_ONCE = 6
MAX_PAGE_BYTES = 150_000
MAX_TAB_STOPS = 200  # 50 rows × (Refresh + More) and the page's own controls
EMPTY_ORG = "Empty Shop"
EMPTY_ADMIN = "admin@empty.test"
EMPTY_VIEWER = "viewer@empty.test"
EMPTY_PASSWORD = "correct horse battery"

# What Tab reaches: the buttons of a closed menu are not rendered, so they are no stops.
TAB_STOPS = """() => Array.from(document.querySelectorAll(
    'a[href], button:not([disabled]), input:not([type=hidden]), select, textarea, summary,'
    + ' [tabindex]:not([tabindex="-1"])'
)).filter((e) => e.checkVisibility()).length"""


def seller(i: int) -> str:
    return f"scale_seller_{i:04d}"


async def connect_sellers(base_url: str, password: str, count: int) -> None:
    """``count`` sellers through the real flow, a few at a time; each must answer as a browser's
    would (303 to the consent page, 302 back with a code, 200 from the callback)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as session:
        login = await session.post(
            "/api/auth/login", json={"email": ADMIN_EMAIL, "password": password}
        )
        assert login.status_code == 200, login.text
        session.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        numbers = iter(range(count))

        async def connect_next(consent_client: httpx.AsyncClient) -> None:
            for i in numbers:
                start = await session.post("/api/ebay/connect", follow_redirects=False)
                assert start.status_code == 303, start.text
                consent = urlsplit(start.headers["location"])
                query = {k: v[0] for k, v in parse_qs(consent.query).items()}
                agreed = await consent_client.post(
                    f"{consent.scheme}://{consent.netloc}{consent.path}",
                    data={**query, "new_username": seller(i), "decision": "agree"},
                )
                assert agreed.status_code == 302, agreed.text
                back = parse_qs(urlsplit(agreed.headers["location"]).query)
                done = await session.get(
                    "/api/ebay/callback",
                    params={"code": back["code"][0], "state": back["state"][0]},
                )
                assert done.status_code == 200, done.text
                assert done.json()["created"] is True

        async with httpx.AsyncClient(timeout=60) as consent_client:
            await asyncio.gather(*(connect_next(consent_client) for _ in range(CONNECTING_AT_ONCE)))


@dataclass
class Scale:
    running: RunningDemo
    browser: Browser
    admin: Page
    contexts: list[BrowserContext]

    @property
    def base_url(self) -> str:
        return self.running.demo.base_url

    def context(self, viewport: dict[str, int] | None = None) -> BrowserContext:
        context = self.browser.new_context(
            viewport=viewport or VIEWPORT,  # type: ignore[arg-type]
            base_url=self.base_url,
        )
        context.set_default_timeout(20_000)
        self.contexts.append(context)
        return context


@pytest.fixture(scope="module")
def scale(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scale]:
    with running_demo(tmp_path_factory.mktemp("accounts-scale")) as running:
        # Playwright's sync API runs an event loop in this thread: the sellers connect in another.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(
                asyncio.run,
                connect_sellers(running.demo.base_url, running.admin_password, SELLERS),
            ).result()
        state = Scale(running, browser, None, [])  # type: ignore[arg-type]
        state.admin = state.context().new_page()
        sign_in(state.admin, ADMIN_EMAIL, running.admin_password)
        try:
            yield state
        finally:
            for context in state.contexts:
                context.close()


def rows(page: Page) -> list[dict[str, str]]:
    found: list[dict[str, str]] = page.eval_on_selector_all(
        "table.accounts tbody tr[data-account]",
        """(trs) => trs.map((tr) => ({id: tr.dataset.account, username: tr.dataset.username,
            status: tr.dataset.status, label: tr.querySelector('.label').textContent}))""",
    )
    return found


def summary_text(page: Page) -> str:
    return " ".join(page.locator("#summary").inner_text().split())


# 1. The summary bar, problems first, the page's weight ---------------------------------------


def test_summary_problems_first_and_a_light_page(scale: Scale) -> None:
    page = scale.admin
    answer = page.goto("/")
    assert answer is not None and answer.ok
    size = len(answer.body())
    assert size < MAX_PAGE_BYTES, f"the page weighs {size:,} bytes"
    expect(page.locator("#summary")).to_have_text(
        re.compile(r"^\s*2 need reconnect\s*·\s*1 failing\s*·\s*1,505 healthy\s*$")
    )
    shown = rows(page)
    assert len(shown) == 50
    assert [r["status"] for r in shown[:3]] == ["needs_reconnect", "needs_reconnect", "failing"]
    assert {r["status"] for r in shown[3:]} == {"healthy"}
    expect(page.locator("nav.pages")).to_contain_text("Accounts 1–50 of 1,508 · page 1 of 31")
    expect(page.locator('th[aria-sort="ascending"]')).to_have_text(re.compile(r"^State"))
    expect(page.locator("th a[aria-sort]")).to_have_count(0)  # on the header, not the link
    stops = page.evaluate(TAB_STOPS)
    assert stops <= MAX_TAB_STOPS, f"{stops} tab stops"
    # The reason is a second line, not inside the badge; a failing account says when it retries.
    failing = page.locator('tr[data-username="demo_ebay_500"]')
    expect(failing.locator(".badge")).to_have_text("refresh failing")
    expect(failing.locator(".retry")).to_have_text(re.compile(r"^next retry (in \d+[hms]|due now)"))
    revoked = page.locator('tr[data-username="demo_revoked"]')
    expect(revoked.locator(".badge")).to_have_text("needs reconnect")
    expect(revoked.locator(".reason")).to_contain_text("revoked")
    # One primary action per state, each with a name of its own.
    expect(revoked.get_by_role("button", name="Reconnect Old brand", exact=True)).to_be_visible()
    expect(revoked.get_by_role("button", name=re.compile("^Refresh"))).to_have_count(0)
    expect(failing.get_by_role("button", name="Refresh EU store", exact=True)).to_be_visible()
    # Nothing cut off at 1280 px: the last column's buttons lie inside the window.
    more = failing.locator("details.more > summary")
    box = more.bounding_box()
    assert box is not None and box["x"] + box["width"] <= VIEWPORT["width"], box
    assert_accessible(page)
    screenshot(page, "accounts_scale_desktop")


# 2. The counts filter -------------------------------------------------------------------------


def test_clicking_a_count_filters_and_show_all_comes_back(scale: Scale) -> None:
    page = scale.admin
    page.goto("/")
    page.get_by_role("link", name="1 failing", exact=True).click()
    page.wait_for_url(re.compile(r"/\?state=failing$"))
    assert [r["username"] for r in rows(page)] == ["demo_ebay_500"]
    expect(page.get_by_role("link", name="1 failing", exact=True)).to_have_attribute(
        "aria-current", "true"
    )
    expect(page.locator("#state")).to_have_value("failing")
    page.get_by_role("link", name="2 need reconnect", exact=True).click()
    page.wait_for_url(re.compile(r"/\?state=needs_reconnect$"))
    assert {r["username"] for r in rows(page)} == {"demo_revoked", "demo_undecryptable"}
    page.get_by_role("link", name="show all 1,508", exact=True).click()
    page.wait_for_url(re.compile(r"/$"))
    assert len(rows(page)) == 50


# 3. Search ------------------------------------------------------------------------------------


def test_search_by_username_and_by_label(scale: Scale) -> None:
    page = scale.admin
    page.goto("/")
    page.get_by_label("Search").fill("SCALE_SELLER_014")
    page.get_by_role("button", name="Show", exact=True).click()
    page.wait_for_url(re.compile(r"/\?q=SCALE_SELLER_014&"))  # the form sends every field
    assert [r["username"] for r in rows(page)] == [seller(i) for i in range(140, 150)]
    expect(page.locator("#summary")).to_have_text(re.compile(r"^\s*10 healthy\s*$"))
    page.get_by_label("Search").fill("outlet")
    page.get_by_role("button", name="Show", exact=True).click()
    page.wait_for_url(re.compile(r"/\?q=outlet&"))
    assert [r["label"] for r in rows(page)] == ["Outlet"]  # found by its label's words too
    page.get_by_label("Search").fill("nobody such")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("p.none")).to_contain_text("No account matches “nobody such”")
    assert_accessible(page)


# 4. Pages -------------------------------------------------------------------------------------


def test_pages_of_fifty_in_the_url(scale: Scale) -> None:
    page = scale.admin
    page.goto("/?sort=ebay_username")
    first = rows(page)
    assert [r["username"] for r in first[:2]] == ["demo_ebay_500", "demo_expired"]
    page.get_by_role("link", name="Next page", exact=True).click()
    page.wait_for_url(re.compile(r"/\?sort=ebay_username&page=2$"))
    expect(page.locator("nav.pages")).to_contain_text("Accounts 51–100 of 1,508 · page 2 of 31")
    # 8 demo accounts sort before the sellers: page 2 starts at the 43rd seller.
    assert rows(page)[0]["username"] == seller(42)
    page.goto("/?sort=ebay_username&page=31")
    assert [r["username"] for r in rows(page)] == [seller(i) for i in range(1492, 1500)]
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    page.get_by_role("link", name="Previous page", exact=True).click()
    page.wait_for_url(re.compile(r"page=30$"))


# 5. Sorting by every column, both ways --------------------------------------------------------


def test_every_column_sorts_both_ways_and_says_so_on_its_header(scale: Scale) -> None:
    page = scale.admin
    columns = page.locator("table.accounts thead th a")
    page.goto("/")
    names = columns.all_inner_texts()
    assert len(names) == 8
    for name in names:
        seen: list[str] = []
        for _ in range(2):  # the second click on the same header flips the direction
            with page.expect_response(lambda r: r.request.resource_type == "document") as answer:
                page.locator("table.accounts thead th").get_by_role(
                    "link", name=name, exact=True
                ).click()
            assert answer.value.status == 200, name
            header = page.locator("th[aria-sort]")
            expect(header).to_have_count(1)
            expect(header).to_have_text(re.compile(rf"^{re.escape(name)}"))
            seen.append(header.get_attribute("aria-sort") or "")
            assert len(rows(page)) == 50
        assert sorted(seen) == ["ascending", "descending"], (name, seen)
    # Last attempt: the 1,500 sellers were never refreshed; they come last both ways.
    page.goto("/?sort=last_attempt")
    assert rows(page)[0]["username"].startswith("demo_")
    page.goto("/?sort=last_attempt&dir=desc")
    assert rows(page)[0]["username"].startswith("demo_")
    expect(page.locator('th[aria-sort="descending"]')).to_have_text(re.compile("Last attempt"))


# 6. Refresh comes back to the same view and row ----------------------------------------------


def test_refresh_returns_to_the_same_view_at_the_row_with_a_one_time_notice(scale: Scale) -> None:
    page = scale.admin
    page.goto("/?sort=ebay_username&page=3")
    target = page.locator(f'tr[data-username="{seller(95)}"]')
    account_id = target.get_attribute("data-account")
    # The busy state outlives the page: the next page reads what the button was just after
    # the click (ui.js disables it in the same turn's timeout, registered before this one).
    page.evaluate(
        """() => document.querySelectorAll("form[method=post]").forEach((form) =>
            form.addEventListener("submit", (event) => setTimeout(() => {
                const button = event.submitter;
                sessionStorage.setItem("busy", String(button.disabled &&
                    button.classList.contains("busy") && button.getAttribute("aria-busy")));
            }, 0)))"""
    )
    target.get_by_role("button", name=f"Refresh {seller(95)}", exact=True).click()
    page.wait_for_url(re.compile(rf"/\?sort=ebay_username&page=3#account-{account_id}$"))
    assert page.evaluate("() => sessionStorage.getItem('busy')") == "true"
    expect(page.locator("p.notice")).to_have_text(re.compile(rf"^{seller(95)}: ok — "))
    assert page.evaluate("() => document.querySelector(':target').dataset.username") == seller(95)
    row = page.locator(f'tr[data-username="{seller(95)}"]')
    expect(row).to_be_in_viewport()
    expect(row.locator('td[data-label="Last attempt"]')).to_have_text(re.compile(r"s ago$"))
    screenshot(page, "accounts_after_refresh")
    page.reload()  # the notice was for once
    expect(page.locator("p.notice")).to_have_count(0)


def test_a_forged_return_location_stays_on_this_page(scale: Scale) -> None:
    page = scale.admin
    page.goto("/?q=scale_seller_0007")
    form = page.locator(f'tr[data-username="{seller(7)}"] form[action$="/refresh"]')
    form.locator('input[name="view"]').evaluate(
        "(input) => { input.value = '//evil.example/?state=failing'; }"
    )
    form.get_by_role("button").click()
    page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/#account-\d+$"))


# 7. Disconnect, from the menu, confirmed ------------------------------------------------------


def test_disconnect_is_in_the_menu_confirmed_and_returns_to_the_view(scale: Scale) -> None:
    page = scale.admin
    page.goto(f"/?q={seller(1499)}")
    row = page.locator(f'tr[data-username="{seller(1499)}"]')
    disconnect = row.get_by_role("button", name=f"Disconnect {seller(1499)}", exact=True)
    expect(disconnect).to_be_hidden()  # in the closed menu
    row.locator("details.more > summary").focus()
    page.keyboard.press("Enter")  # the menu opens from the keyboard
    expect(disconnect).to_be_visible()
    expect(disconnect).to_have_class(re.compile(r"\bdanger\b"))
    asked: list[str] = []

    def dismiss_then_accept(dialog: object) -> None:
        asked.append(dialog.message)  # type: ignore[attr-defined]
        if len(asked) == 1:
            dialog.dismiss()  # type: ignore[attr-defined]
        else:
            dialog.accept()  # type: ignore[attr-defined]

    page.on("dialog", dismiss_then_accept)
    disconnect.click()
    expect(row).to_be_visible()  # dismissed: nothing happened
    disconnect.click()
    page.wait_for_url(re.compile(rf"/\?q={seller(1499)}$"))
    page.remove_listener("dialog", dismiss_then_accept)
    assert asked[0].startswith(f"Disconnect {seller(1499)}?")
    expect(page.locator("p.notice")).to_have_text(f"{seller(1499)} disconnected (revoked at eBay)")
    expect(page.locator("table.accounts tbody tr[data-account]")).to_have_count(0)


# 8. Live updates ------------------------------------------------------------------------------


def test_the_page_updates_itself_keeping_focus_and_announcing_politely(scale: Scale) -> None:
    page = scale.admin
    page.goto(f"/?q={seller(300)[:-1]}&sort=label")  # scale_seller_030x: ten rows
    page.evaluate("() => { window.__sameDocument = true; }")
    search = page.get_by_label("Search")
    search.focus()
    row = page.locator(f'tr[data-username="{seller(303)}"]')
    expect(row).to_have_attribute("data-status", "healthy")
    base = scale.base_url
    revoked = httpx.post(f"{base}/emulator/_emulator/users/{seller(303)}/revoke", timeout=30)
    assert revoked.status_code == 200, revoked.text
    with httpx.Client(base_url=base, timeout=30) as api:
        login = api.post(
            "/api/auth/login",
            json={"email": ADMIN_EMAIL, "password": scale.running.admin_password},
        )
        api.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        refreshed = api.post(
            "/api/admin/ebay/token/refresh",
            json={"ebay_account_id": int(row.get_attribute("data-account") or 0)},
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["state"] == "needs_reconnect"
    expect(row).to_have_attribute("data-status", "needs_reconnect")
    expect(row.locator(".badge")).to_have_text("needs reconnect")
    expect(page.locator("#changes")).to_have_text(f"{seller(303)}: needs reconnect")
    expect(page.locator("#changes")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#summary")).to_contain_text("1 need reconnect")
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    assert page.evaluate("() => document.activeElement.id") == "q", "focus moved"


def test_live_updates_pause_politely_when_the_session_ends(scale: Scale) -> None:
    context = scale.context()
    page = context.new_page()
    sign_in(page, ADMIN_EMAIL, scale.running.admin_password)
    other = context.new_page()
    other.goto("/")
    other.get_by_role("button", name="Sign out", exact=True).click()
    live = page.locator("#live")
    expect(live).to_contain_text("your session has ended")
    expect(live.get_by_role("link", name="Sign in again")).to_have_attribute("href", "/login")


# 9. The viewer, at both widths ----------------------------------------------------------------


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_viewer_sees_no_buttons_and_is_told_who_can_fix(scale: Scale, width: str) -> None:
    page = scale.context(VIEWPORT if width == "desktop" else PHONE).new_page()  # type: ignore[arg-type]
    sign_in(page, VIEWER_EMAIL, scale.running.viewer_password)
    expect(page.locator("table.accounts tbody tr[data-account]")).to_have_count(50)
    expect(page.locator("table.accounts button")).to_have_count(0)
    expect(page.locator("table.accounts details")).to_have_count(0)
    revoked = page.locator('tr[data-username="demo_revoked"]')
    expect(revoked.locator(".who-fixes")).to_have_text(
        f"An admin of Demo Shop can reconnect it: {ADMIN_EMAIL}"
    )
    expect(page.locator('tr[data-username="demo_ebay_500"] .who-fixes')).to_have_text(
        f"An admin of Demo Shop can refresh it: {ADMIN_EMAIL}"
    )
    assert_accessible(page)
    screenshot(page, f"accounts_viewer_{width}")


# 10. Phone width: labelled cards, reachable actions, sort and filter --------------------------


def test_phone_cards_are_labelled_with_actions_and_controls_in_reach(scale: Scale) -> None:
    page = scale.context(PHONE).new_page()  # type: ignore[arg-type]
    sign_in(page, ADMIN_EMAIL, scale.running.admin_password)
    labels = page.eval_on_selector_all(
        "table.accounts tbody tr[data-account]:first-child td",
        "(tds) => tds.map((td) => [td.dataset.label, getComputedStyle(td, '::before').content])",
    )
    assert labels and all(content == f'"{label}"' for label, content in labels), labels
    for control in ("Search", "State", "Sort by", "Order"):
        expect(page.get_by_label(control, exact=True)).to_be_visible()
    first = page.locator("table.accounts tbody tr[data-account]").first
    for button in (first.get_by_role("button").first, first.locator("details.more > summary")):
        button.scroll_into_view_if_needed()
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways ({width}px)"
    page.get_by_label("Sort by", exact=True).select_option("last_used")
    page.get_by_label("Order", exact=True).select_option("desc")
    assert "sort=" not in page.url  # no submit on change
    page.get_by_role("button", name="Show", exact=True).click()
    page.wait_for_url(re.compile(r"sort=last_used&dir=desc"))
    assert_accessible(page)
    first.locator("details.more > summary").click()
    screenshot(page, "accounts_phone_admin")
    assert_accessible(page)


# 11. An organization with no account yet ------------------------------------------------------


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_an_empty_organization_is_told_how_to_connect_its_first_account(
    scale: Scale, width: str
) -> None:
    demo = scale.running.demo
    if width == "desktop":
        done = demo.cli("orgs", "create", EMPTY_ORG)
        assert done.returncode == 0, done.stderr
        for email, role in ((EMPTY_ADMIN, "admin"), (EMPTY_VIEWER, "viewer")):
            made = demo.cli(
                "users",
                "create",
                "--org",
                EMPTY_ORG,
                "--email",
                email,
                "--role",
                role,
                "--password",
                EMPTY_PASSWORD,
            )
            assert made.returncode == 0, made.stderr
    viewport = VIEWPORT if width == "desktop" else PHONE
    admin = scale.context(viewport).new_page()  # type: ignore[arg-type]
    sign_in(admin, EMPTY_ADMIN, EMPTY_PASSWORD)
    empty = admin.locator("section.empty")
    expect(empty.get_by_role("heading", name="No eBay account is connected yet")).to_be_visible()
    expect(empty).to_contain_text("Connect a new eBay account")
    expect(empty.get_by_role("button", name="Connect the first eBay account")).to_be_visible()
    expect(admin.locator("table.accounts")).to_have_count(0)
    assert "Demo Shop" not in admin.content()
    assert_accessible(admin)
    screenshot(admin, f"accounts_empty_admin_{width}")
    viewer = scale.context(viewport).new_page()  # type: ignore[arg-type]
    sign_in(viewer, EMPTY_VIEWER, EMPTY_PASSWORD)
    expect(viewer.locator("section.empty")).to_contain_text(
        f"An admin of {EMPTY_ORG} can connect one: {EMPTY_ADMIN}."
    )
    expect(viewer.get_by_role("button", name=re.compile("Connect"))).to_have_count(0)
    assert_accessible(viewer)
    screenshot(viewer, f"accounts_empty_viewer_{width}")
