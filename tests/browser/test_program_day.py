"""A program's whole day, with a seller in a real browser (Debian's Chromium, Playwright):

create a connect session → the seller opens the link, presses the button, consents on eBay's
(the emulator's) page and lands on the program's return URL → the program finds the account by
its own end_user_id → lists inventory through the proxy → eBay rejects the access token mid-day
and the proxy recovers (one refresh, one retry) → the seller revokes the grant and the program
gets NeedsReconnect. On SQLite and PostgreSQL.

The product runs in a thread with its own event loop (the browser and the program's blocking
client run in the test's thread); the emulator is the test suite's usual one.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, expect

from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.return_urls import ReturnUrls
from ebay_connector.emulator import Emulator
from ebay_connector.web.app import create_app
from ebay_connector_client import Connector, NeedsReconnect
from tests.browser.harness import ARTIFACTS, VIEWPORT
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.helpers import bound_socket, serve_asgi

pytestmark = pytest.mark.browser

INVENTORY = "sell/inventory/v1/inventory_item"


class _ProgramPage(http.server.BaseHTTPRequestHandler):
    """The program's own return page: where the seller lands."""

    def do_GET(self) -> None:
        body = b"<!doctype html><html lang='en'><title>Program</title><h1>Thanks</h1></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def program_site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProgramPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Product:
    base: str
    key: str


@contextlib.contextmanager
def product(
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
    return_origin: str,
) -> Iterator[Product]:
    """The real product on its own loop in a thread: one organization, one API key."""
    sock = bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        found["stop"] = (asyncio.get_running_loop(), stop)
        async with open_test_runtime(
            database, emulator, tmp_path, clock, http_timeout_seconds=5, public_url=base
        ) as runtime:
            org = await runtime.store.create_organization("Agency Day")
            _, found["key"] = await ApiKeys(runtime.db).create(
                org, "lister", can_read_tokens=True, can_connect=True, can_proxy=True
            )
            await ReturnUrls(runtime.db).add(org, f"{return_origin}/done")
            async with serve_asgi(create_app(runtime), sock):
                ready.set()
                await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            found["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "the product did not start"
    assert "error" not in found, found.get("error")
    try:
        yield Product(base, found["key"])
    finally:
        loop, stop = found["stop"]
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert "error" not in found, found.get("error")


def test_a_programs_whole_day(
    browser: Browser,
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    emu, emulator_url = emulator
    with (
        program_site() as site,
        product(database, emulator, tmp_path, clock, site) as running,
        Connector(running.base, running.key) as program,
    ):
        # Morning: a new seller signs up in the program, which hands them a connect link.
        session = program.create_connect_session(
            "shop-7", f"{site}/done?step=ebay", end_user_label="Shop Seven"
        )
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        try:
            page.goto(session.url)
            heading = page.get_by_role("heading", level=1)
            expect(heading).to_have_text("Connect your eBay account to Agency Day")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"program_day_{database.backend}.png"))
            page.get_by_role("button", name="Continue to eBay").click()
            page.wait_for_url(re.compile(re.escape(emulator_url)))
            page.get_by_label("Or a new eBay username").fill("day_seller")
            page.get_by_role("button", name="Agree").click()
            page.wait_for_url(re.compile(re.escape(f"{site}/done?")))
            landed = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
        finally:
            context.close()
        assert landed["status"] == "connected" and landed["step"] == "ebay"
        assert landed["session_id"] == session.id

        # The program finds the seller's account by its own id.
        accounts = program.accounts(end_user_id="shop-7")
        assert [a.id for a in accounts] == [int(landed["account_id"])]
        assert accounts[0].ebay_username == "day_seller"
        account_id = accounts[0].id

        with program.proxy(account_id) as ebay:
            # Noon: it lists the seller's inventory through the proxy.
            put = ebay.put(
                f"{INVENTORY}/LAMP-7",
                json={"product": {"title": "Desk lamp"}},
                headers={"Content-Language": "en-US"},
            )
            assert put.status_code == 204
            assert ebay.get(INVENTORY).json()["total"] == 1

            # Afternoon: eBay rejects the seller's access token; the proxy recovers by itself.
            refreshes = emu.calls.count(endpoint="token", grant_type="refresh_token")
            emu.reject_access_tokens("day_seller")
            listed = ebay.get(INVENTORY)
            assert (
                listed.status_code == 200 and listed.json()["inventoryItems"][0]["sku"] == "LAMP-7"
            )
            assert emu.calls.count(endpoint="token", grant_type="refresh_token") == refreshes + 1

            # Evening: the seller revokes the grant on eBay; only they can fix it now.
            emu.revoke_user("day_seller")
            with pytest.raises(NeedsReconnect) as gone:
                ebay.get(INVENTORY)
        assert gone.value.reason == "invalid_grant"
        with pytest.raises(NeedsReconnect):
            program.access_token(account_id)
