"""The terminal's pages over a real app and database: keyset pages of older entries, the live
feed's catch-up after a burst (oldest first, with the count still waiting), the account search,
the "all failures" filter, and an empty filter told apart from an empty journal."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from ebay_connector.core.exchange import Action, Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.roles import Role
from ebay_connector.db.users import Users
from ebay_connector.ebay.client import not_sent
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
IDS = re.compile(r'<li class="entry[^"]*" data-id="(\d+)"')


@dataclass
class Terminal:
    client: httpx.AsyncClient
    runtime: Runtime
    organization_id: int
    outlet: int
    main: int


@pytest.fixture
async def terminal(runtime: Runtime) -> AsyncIterator[Terminal]:
    org = await runtime.store.create_organization("terminal shop")
    await Users(runtime.db).create(org, "admin@terminal.test", Role.ADMIN, PASSWORD)
    other = await runtime.store.create_organization("other shop")
    main = await connect_seller(runtime, org, "term_main")
    outlet = await connect_seller(runtime, org, "term_outlet")
    elsewhere = await connect_seller(runtime, other, "term_elsewhere")
    await write(runtime, other, elsewhere, 3)  # never shown to this organization
    async with (
        serve_asgi(create_app(runtime)) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        signed = await client.post(
            "/api/auth/login", json={"email": "admin@terminal.test", "password": PASSWORD}
        )
        assert signed.status_code == 200, signed.text
        yield Terminal(client, runtime, org, outlet, main)


async def write(runtime: Runtime, organization_id: int, account_id: int, n: int) -> list[int]:
    """``n`` journal entries, alternately ok and transient (a failure)."""
    ids = []
    for i in range(n):
        outcome = Outcome.OK if i % 2 == 0 else Outcome.TRANSIENT
        record = not_sent(Action.REFRESH_TOKEN, "https://api.test/token", outcome, f"entry {i}")
        ids.append(
            await runtime.journal.record_exchange(
                record,
                trigger=Trigger.ADMIN,
                environment=runtime.environment,
                account_id=account_id,
                organization_id=organization_id,
            )
        )
    return ids


def ids_of(html: str) -> list[int]:
    return [int(i) for i in IDS.findall(html)]


async def test_the_live_feed_catches_up_on_a_burst_in_order_and_says_how_many_wait(
    terminal: Terminal,
) -> None:
    client = terminal.client
    first = await client.get("/terminal")
    assert first.status_code == 200
    after = int(re.search(r'data-after="(\d+)"', first.text).group(1))  # type: ignore[union-attr]
    burst = await write(terminal.runtime, terminal.organization_id, terminal.outlet, 250)
    seen: list[int] = []
    waiting_seen = []
    while True:
        page = await client.get(f"/ui/terminal/entries?after={after}")
        assert page.status_code == 200
        got = ids_of(page.text)
        assert got == sorted(got, reverse=True)  # newest first in the HTML
        waiting = int(page.headers["X-Newer-Entries"])
        waiting_seen.append(waiting)
        if not got:
            break
        seen.extend(got)
        after = max(got)
        if waiting == 0:
            break
    assert waiting_seen[:3] == [150, 50, 0]  # what the page shows as "N more — load"
    assert sorted(seen) == burst  # every one, none twice


async def test_older_pages_search_failures_and_the_two_empty_states(terminal: Terminal) -> None:
    client = terminal.client
    outlet = await write(terminal.runtime, terminal.organization_id, terminal.outlet, 150)
    main = await write(terminal.runtime, terminal.organization_id, terminal.main, 30)
    everything = [
        row.id
        for row in await terminal.runtime.journal.exchanges(
            organization_id=terminal.organization_id, limit=1000
        )
    ]
    assert len(everything) > 180  # the burst and the connects' own exchanges
    newest = await client.get("/terminal")
    shown = ids_of(newest.text)
    assert shown == everything[:100]
    assert 'id="load-older"' in newest.text and "hidden" not in re.search(  # type: ignore[union-attr]
        r'<div id="older"[^>]*>', newest.text
    ).group(0)
    older = await client.get(f"/ui/terminal/entries?before={shown[-1]}")
    older_ids = ids_of(older.text)
    assert older_ids == everything[100:200]  # the next page: no gap, no repeat
    assert older.headers["X-Older-Entries"] == ("1" if len(everything) > 200 else "0")
    without_js = await client.get(f"/terminal?before={shown[-1]}")  # the link, scripts off
    assert ids_of(without_js.text)[:5] == older_ids[:5]
    assert 'data-live="off"' in without_js.text

    for search in ("OUTL", "term_out", "Term_Outlet"):
        found = await client.get("/terminal", params={"q": search})
        assert set(ids_of(found.text)) <= set(outlet) and ids_of(found.text), search
    failures = await client.get("/terminal", params={"outcome": "failures"})
    failing = set(ids_of(failures.text))
    assert failing and failing <= {i for n, i in enumerate(outlet) if n % 2} | {
        i for n, i in enumerate(main) if n % 2
    }
    assert "badge-ok" not in failures.text
    nothing = await client.get("/terminal", params={"q": "nobody_at_all_%"})
    assert ids_of(nothing.text) == []
    assert "No exchanges match these filters." in nothing.text
    assert 'href="/terminal">Clear the filters' in nothing.text
    assert "No exchanges yet." not in nothing.text
    # Times: UTC in the page's own text, said so; the browser turns them local.
    assert re.search(
        r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="[^"]+ UTC" data-utc>'
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>",
        newest.text,
    )
    # Each entry links to its exchange's own page.
    assert f'href="/exchanges/{shown[0]}"' in newest.text


async def test_an_empty_journal_says_so(terminal: Terminal) -> None:
    empty = await terminal.runtime.store.create_organization("empty shop")
    await Users(terminal.runtime.db).create(empty, "admin@empty.test", Role.ADMIN, PASSWORD)
    base = str(terminal.client.base_url)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        signed = await client.post(
            "/api/auth/login", json={"email": "admin@empty.test", "password": PASSWORD}
        )
        assert signed.status_code == 200
        page = await client.get("/terminal")
        assert ids_of(page.text) == []  # the other organizations' entries are not shown
        assert "No exchanges yet." in page.text
        assert "No exchanges match" not in page.text
        filtered = await client.get("/terminal", params={"outcome": "failures"})
        assert "No exchanges match these filters." in filtered.text
