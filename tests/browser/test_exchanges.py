"""Exchanges, errors, the terminal and webhooks in a real browser: results at their own URL that a
reload never repeats, error pages a person can act on, a terminal that loses no entry of a
burst, and a webhook that a reload never adds twice.

One real `ebay-connector demo` for the module; Debian's Chromium with the reader in Tokyo (so a
time shown in the reader's zone is told apart from UTC). Every page is checked with axe-core
(WCAG 2.2 AA) at desktop and phone widths, and screenshotted to artifacts/browser/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect

from ebay_connector.core.exchange import Action, Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.db.journal import Journal
from ebay_connector.ebay.client import not_sent
from tests.acceptance.test_demo_cli import Demo
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
from tests.conftest import in_thread

pytestmark = pytest.mark.browser

BURST = 400
ZONE = "Asia/Tokyo"  # UTC+9, no daylight saving: a local time is UTC plus nine hours
HOOK = "https://hooks.shop.test/ebay-connector"  # .test never resolves: nothing is sent


@pytest.fixture(scope="module")
def demo_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    with running_demo(tmp_path_factory.mktemp("browser-exchanges")) as started:
        yield started


@pytest.fixture(scope="module")
def context(browser: Browser, demo_running: RunningDemo) -> Iterator[BrowserContext]:
    opened = browser.new_context(
        viewport=VIEWPORT, base_url=demo_running.demo.base_url, timezone_id=ZONE
    )
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def admin(context: BrowserContext, demo_running: RunningDemo) -> Page:
    page = context.new_page()
    sign_in(page, ADMIN_EMAIL, demo_running.admin_password)
    return page


def both_widths(page: Page, name: str) -> None:
    """Zero WCAG 2.2 AA violations at 1280×900 and 390×844, a screenshot of each."""
    assert_accessible(page)
    screenshot(page, name)
    page.set_viewport_size(PHONE)
    try:
        assert_accessible(page)
        screenshot(page, f"{name}-phone")
    finally:
        page.set_viewport_size(VIEWPORT)


def database_url(demo: Demo) -> str:
    return f"sqlite:///{demo.cwd}/var/ebay-connector.db"  # the demo's default, in its directory


def write_burst(demo: Demo, username: str, count: int) -> list[int]:
    """``count`` journal entries for the account, as fast as the demo's database takes them,
    alternately ok and failed, written while the demo runs."""

    async def write() -> list[int]:
        db = Database.open(database_url(demo))
        try:
            async with db.read() as conn:
                found = (
                    await conn.execute(
                        sa.select(m.EbayAccount.id, m.EbayAccount.organization_id).where(
                            m.EbayAccount.ebay_username == username
                        )
                    )
                ).one()
            journal = Journal(db)
            ids = []
            for i in range(count):
                outcome = Outcome.OK if i % 2 == 0 else Outcome.TRANSIENT
                record = not_sent(
                    Action.REFRESH_TOKEN, "https://api.test/token", outcome, f"burst {i}"
                )
                ids.append(
                    await journal.record_exchange(
                        record,
                        trigger=Trigger.ADMIN,
                        environment="sandbox",
                        account_id=found.id,
                        organization_id=found.organization_id,
                    )
                )
            return ids
        finally:
            await db.close()

    ids: list[int] = in_thread(asyncio.run, write())  # Playwright's own loop runs here
    return ids


def shown_ids(page: Page) -> list[int]:
    return [
        int(i)
        for i in page.eval_on_selector_all("#entries .entry", "e => e.map(x => x.dataset.id)")
    ]


# 1. A debug refresh's result at its own URL --------------------------------------------------


def debug_from_menu(page: Page, username: str) -> None:
    """Debug refresh sits in the row's menu on the accounts page."""
    row = page.locator(f'tr[data-username="{username}"]')
    row.locator("details.more > summary").click()
    row.get_by_role("button", name=re.compile(r"^Debug refresh\b")).click()


def test_a_debug_result_has_its_own_url_and_a_reload_does_not_refresh_again(
    admin: Page, demo_running: RunningDemo
) -> None:
    demo = demo_running.demo
    admin.goto("/")
    debug_from_menu(admin, "demo_main_store")
    admin.wait_for_url(re.compile(r"/exchanges/\d+$"))
    url = admin.url
    expect(admin.get_by_role("heading", level=1)).to_contain_text("Debug refresh · Main store")
    expect(admin.locator("[data-outcome]")).to_have_attribute("data-outcome", "ok")
    debug_runs = len(demo.json("logs", "--trigger", "debug")["entries"])
    assert debug_runs == 1
    admin.reload()
    assert admin.url == url
    expect(admin.locator("[data-outcome]")).to_have_attribute("data-outcome", "ok")
    expect(admin.locator("pre.terminal")).to_contain_text("grant_type=refresh_token")
    assert len(demo.json("logs", "--trigger", "debug")["entries"]) == debug_runs  # not again
    both_widths(admin, "exchange-page")

    # Nothing sent (a token that cannot be decrypted): the result still has its page.
    admin.goto("/")
    debug_from_menu(admin, "demo_undecryptable")
    admin.wait_for_url(re.compile(r"/exchanges/\d+$"))
    assert admin.url != url
    expect(admin.locator(".nosend")).to_contain_text("No request was sent to eBay")
    admin.reload()
    expect(admin.locator(".nosend")).to_contain_text("No request was sent to eBay")
    assert len(demo.json("logs", "--trigger", "debug")["entries"]) == debug_runs + 1
    both_widths(admin, "exchange-page-nosend")


# 2. Error pages ----------------------------------------------------------------------------------


def test_errors_are_pages_in_the_app_frame_with_a_next_step(
    admin: Page, browser: Browser, demo_running: RunningDemo
) -> None:
    answer = admin.goto("/no-such-page")
    assert answer is not None and answer.status == 404
    expect(admin.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(admin.get_by_role("navigation", name="Main")).to_be_visible()  # the signed-in frame
    both_widths(admin, "error-404")
    admin.get_by_role("link", name="Back to accounts").click()
    admin.wait_for_url(re.compile(r"/$"))

    answer = admin.goto("/exchanges/99999999")
    assert answer is not None and answer.status == 404
    expect(admin.get_by_role("heading", level=1)).to_have_text("Page not found")

    answer = admin.goto("/ui/logout")  # a form's address, opened by hand
    assert answer is not None and answer.status == 405
    expect(admin.get_by_role("heading", level=1)).to_have_text(
        "This address cannot be used that way"
    )
    both_widths(admin, "error-405")

    # A session that ends while the page is open: the next button says so, in a page.
    ended = browser.new_context(viewport=VIEWPORT, base_url=demo_running.demo.base_url)
    try:
        page = ended.new_page()
        sign_in(page, ADMIN_EMAIL, demo_running.admin_password)
        ended.clear_cookies()
        page.locator('tr[data-username="demo_outlet"]').get_by_role(
            "button", name=re.compile(r"^Refresh\b")
        ).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your session has ended")
        both_widths(page, "error-session-ended")
        page.get_by_role("link", name="Sign in again").click()
        page.wait_for_url(re.compile(r"/login$"))
    finally:
        ended.close()

    # A viewer's forged form: refused with a page, in the viewer's own frame.
    viewer = browser.new_context(viewport=VIEWPORT, base_url=demo_running.demo.base_url)
    try:
        page = viewer.new_page()
        sign_in(page, VIEWER_EMAIL, demo_running.viewer_password)
        page.evaluate(
            """() => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = "/ui/accounts/1/refresh";
                document.body.appendChild(form);
                form.submit();
            }"""
        )
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.locator("section.problem")).to_have_attribute("data-status", "403")
        expect(page.locator("header .role")).to_have_text(f"{VIEWER_EMAIL} · viewer")
        both_widths(page, "error-403")
    finally:
        viewer.close()


# 3. The terminal: a burst, older entries, filters, times --------------------------------------


def test_a_burst_of_400_exchanges_is_never_skipped(
    admin: Page, context: BrowserContext, demo_running: RunningDemo
) -> None:
    admin.goto("/terminal")
    expect(admin.locator("#live")).to_have_text("live")
    # The page is offline while the burst is written (a laptop waking up, a slow network):
    # when it comes back, far more than one page of entries waits for it.
    context.set_offline(True)
    expect(admin.locator("#live")).to_have_text(re.compile("paused"), timeout=10_000)
    started = datetime.now(UTC)
    burst = write_burst(demo_running.demo, "demo_outlet", BURST)
    took = datetime.now(UTC) - started
    assert took < timedelta(seconds=30), took  # a burst, not a trickle
    context.set_offline(False)
    more = admin.locator("#load-newer")
    expect(more).to_be_visible(timeout=10_000)
    expect(more).to_have_text(re.compile(r"^\d+ more — load$"))
    shown, label = admin.evaluate(
        """() => [Array.from(document.querySelectorAll("#entries .entry"), (e) => e.dataset.id),
                  document.getElementById("load-newer").textContent]"""
    )  # one look: the list and the count as one poll left them
    loaded = {int(i) for i in shown} & set(burst)
    waiting = int(label.split()[0])
    # Every entry of the burst is on the page or counted by the control (other entries, such
    # as the worker's, may be among the waiting ones).
    assert len(loaded) + waiting >= BURST, (len(loaded), waiting)
    assert len(loaded) < BURST
    screenshot(admin, "terminal-burst-more")
    assert_accessible(admin)
    more.click()
    expect(admin.locator("#newer")).to_be_hidden(timeout=20_000)
    ids = shown_ids(admin)
    assert set(burst) <= set(ids), sorted(set(burst) - set(ids))[:10]
    assert len(ids) == len(set(ids)), "an entry is shown twice"
    assert ids == sorted(ids, reverse=True), "entries out of order"
    screenshot(admin, "terminal-burst-loaded")


def test_load_older_filters_and_local_times(admin: Page) -> None:
    admin.goto("/terminal")
    first_page = shown_ids(admin)
    assert len(first_page) == 100
    admin.get_by_role("link", name="Load older").click()
    expect(admin.locator("#entries .entry")).to_have_count(200)
    ids = shown_ids(admin)
    assert ids[:100] == first_page
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 200
    assert ids[100] < first_page[-1]
    both_widths(admin, "terminal-older")

    # Times: the reader's zone in the text, UTC on hover.
    first = admin.locator("#entries .entry time").first
    stamp = first.get_attribute("datetime") or ""
    assert stamp.endswith("Z")
    utc = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    tokyo = (utc + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")
    expect(first).to_have_text(tokyo)
    expect(first).to_have_attribute("title", utc.strftime("%Y-%m-%d %H:%M:%S") + " UTC")
    expect(admin.locator("[data-tz-note]")).to_contain_text(ZONE)

    # Account search (label or username, on the server) and "all failures", by a submit.
    admin.get_by_label("Account", exact=True).fill("OUTL")
    admin.get_by_label("Outcome", exact=True).select_option(label="all failures (not ok)")
    assert "outcome=" not in admin.url  # nothing submits on change
    admin.get_by_role("button", name="Filter", exact=True).click()
    admin.wait_for_url(re.compile(r"q=OUTL.*outcome=failures"))
    accounts = admin.locator("#entries .entry .acct").all_inner_texts()
    assert accounts and set(accounts) == {"Outlet"}
    badges = admin.locator("#entries .entry .badge").all_inner_texts()
    assert badges and "ok" not in badges
    both_widths(admin, "terminal-filtered")

    admin.get_by_label("Account", exact=True).fill("nobody by that name")
    admin.get_by_role("button", name="Filter", exact=True).click()
    expect(admin.locator("#empty")).to_have_text(re.compile("^No exchanges match these filters"))
    expect(admin.locator("#entries .entry")).to_have_count(0)
    both_widths(admin, "terminal-no-match")
    admin.locator("#empty").get_by_role("link", name="Clear the filters").click()
    admin.wait_for_url(re.compile(r"/terminal$"))
    expect(admin.locator("#entries .entry")).to_have_count(100)

    # Each entry leads to its exchange's own page.
    entry = admin.locator("#entries .entry").first
    entry_id = entry.get_attribute("data-id")
    entry.locator("summary").click()
    entry.get_by_role("link", name=f"Exchange {entry_id} on its own page").click()
    admin.wait_for_url(re.compile(rf"/exchanges/{entry_id}$"))


# 4. Webhooks ------------------------------------------------------------------------------------


def test_adding_a_webhook_then_reloading_never_adds_it_twice(admin: Page) -> None:
    admin.goto("/webhooks")
    admin.get_by_label("URL", exact=True).fill(HOOK)
    admin.get_by_label("Description", exact=True).fill("orders")
    admin.get_by_role("button", name="Add", exact=True).click()
    admin.wait_for_url(re.compile(r"/webhooks$"))
    secret = admin.locator("[data-secret]")
    expect(secret).to_have_text(re.compile(r"^whsec_"))
    assert "whsec_" not in admin.url
    both_widths(admin, "webhooks-secret-once")
    admin.reload()
    expect(admin.locator("[data-secret]")).to_have_count(0)  # shown once
    expect(admin.locator("tr[data-webhook]")).to_have_count(1)

    admin.get_by_label("URL", exact=True).fill(HOOK)
    admin.get_by_label("Description", exact=True).fill("again")
    admin.get_by_role("button", name="Add", exact=True).click()
    expect(admin.locator("#add-error")).to_contain_text("already has an endpoint")
    expect(admin.get_by_label("URL", exact=True)).to_have_value(HOOK)
    expect(admin.get_by_label("Description", exact=True)).to_have_value("again")
    expect(admin.locator("tr[data-webhook]")).to_have_count(1)
    both_widths(admin, "webhooks-duplicate")

    remove = admin.get_by_role("button", name=re.compile(r"^Remove webhook #\d+$"))
    expect(remove).to_have_class(re.compile(r"\bdanger\b"))
    messages: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    admin.once("dialog", dismiss)
    remove.click()
    expect(admin.locator("tr[data-webhook]")).to_have_count(1)  # cancelled: still there
    assert messages and HOOK in messages[0]
    admin.once("dialog", lambda dialog: dialog.accept())
    remove.click()
    expect(admin.locator("p.notice")).to_contain_text("removed")
    expect(admin.locator("tr[data-webhook]")).to_have_count(0)
