"""The accounts list in SQL, on SQLite and PostgreSQL: the states the database computes are the
core's, every column sorts both ways with never-set values last, the search takes its text
literally, and the page behind it (``GET /``) answers every sort — also with accounts that were
never refreshed (sorting by "Last attempt" once compared naive and aware datetimes: a 500)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from ebay_connector.core.account_list import (
    COLUMNS,
    PAGE_SIZE,
    ListQuery,
    SortKey,
    Status,
    status_of,
)
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.roles import Role
from ebay_connector.db.store import AccountToken
from ebay_connector.emulator import Emulator
from ebay_connector.emulator.wire import Faults
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.helpers import seed_account, serve_asgi

PASSWORD = "correct horse battery"


@dataclass
class Seeded:
    organization_id: int
    other_organization_id: int
    ids: dict[str, int]


async def seed(runtime: Runtime, emu: Emulator) -> Seeded:
    """One account of each state, three never refreshed, and another organization's account."""
    now = runtime.clock()
    org = await runtime.store.create_organization("Listing Shop")
    other = await runtime.store.create_organization("Other Shop")
    ids: dict[str, int] = {}
    ahead = runtime.settings.refresh_ahead
    for name, expires in (
        ("alpha_1", now + timedelta(hours=2)),
        ("Beta", now + timedelta(hours=3)),
        ("gamma%2", now + timedelta(hours=1)),
        ("Expiring", now + ahead / 2),
        ("Refreshed", now + timedelta(hours=2)),
        ("Revoked", now + timedelta(hours=2)),
        ("Failing", now + timedelta(hours=2)),
    ):
        ids[name], _ = await seed_account(
            runtime, emu, org, name, access_expires_at=expires, next_attempt_at=None
        )
    ids["Foreign"], _ = await seed_account(
        runtime, emu, other, "Foreign", access_expires_at=now, next_attempt_at=None
    )
    await runtime.refresher.refresh(ids["Refreshed"], Trigger.ADMIN, actor="test")
    emu.revoke_user("Revoked")
    await runtime.refresher.refresh(ids["Revoked"], Trigger.ADMIN, actor="test")
    emu.set_faults(Faults(error_rate=1.0), "Failing")
    await runtime.refresher.refresh(ids["Failing"], Trigger.ADMIN, actor="test")
    used = await runtime.store.account_token(ids["Beta"])
    assert used is not None
    await runtime.store.touch_last_used(ids["Beta"], used.use.observed(now), now)
    return Seeded(org, other, ids)


async def listing(runtime: Runtime, seeded: Seeded, view: ListQuery) -> list[AccountToken]:
    page = await runtime.account_list.page(
        seeded.organization_id,
        view,
        now=runtime.clock(),
        refresh_ahead=runtime.settings.refresh_ahead,
    )
    return [account for account, _ in page.rows]


async def test_the_database_computes_the_cores_states_and_counts(
    runtime: Runtime, emulator: tuple[Emulator, str]
) -> None:
    seeded = await seed(runtime, emulator[0])
    now, ahead = runtime.clock(), runtime.settings.refresh_ahead
    page = await runtime.account_list.page(
        seeded.organization_id, ListQuery(), now=now, refresh_ahead=ahead
    )
    assert {a.label for a, _ in page.rows} == set(seeded.ids) - {"Foreign"}
    for account, status in page.rows:
        assert status is status_of(
            needs_reconnect=account.state.value == "needs_reconnect",
            failures_in_row=account.failures_in_row,
            access_expires_at=account.access_expires_at,
            now=now,
            refresh_ahead=ahead,
        ), account.label
    assert page.counts == {
        Status.NEEDS_RECONNECT: 1,
        Status.FAILING: 1,
        Status.EXPIRING: 1,
        Status.HEALTHY: 4,
    }
    # Problems first: the default order is the states' order, then the label.
    assert [a.label for a, _ in page.rows] == [
        "Revoked",
        "Failing",
        "Expiring",
        "alpha_1",
        "Beta",
        "gamma%2",
        "Refreshed",
    ]
    failing = await runtime.account_list.page(
        seeded.organization_id, ListQuery(Status.FAILING), now=now, refresh_ahead=ahead
    )
    assert [a.label for a, _ in failing.rows] == ["Failing"]
    assert failing.pages.total == 1
    assert failing.everything == 7


@pytest.mark.parametrize("key", list(SortKey))
async def test_every_column_sorts_both_ways_with_missing_values_last(
    runtime: Runtime, emulator: tuple[Emulator, str], key: SortKey
) -> None:
    seeded = await seed(runtime, emulator[0])
    up = await listing(runtime, seeded, ListQuery(sort=key))
    down = await listing(runtime, seeded, ListQuery(sort=key, descending=True))
    assert len(up) == len(down) == 7
    values_of: dict[SortKey, Callable[[AccountToken], Any]] = {
        SortKey.LABEL: lambda a: a.label.lower(),
        SortKey.EBAY_USERNAME: lambda a: a.ebay_username.lower(),
        SortKey.ACCESS: lambda a: a.access_expires_at,
        SortKey.REFRESH: lambda a: a.refresh_expires_at,
        SortKey.FAILURES: lambda a: -a.failures_in_row,
        SortKey.LAST_ATTEMPT: lambda a: a.last_attempt_at,
        SortKey.LAST_USED: lambda a: a.last_used_at,
        SortKey.STATE: lambda a: None,
    }
    value = values_of[key]
    if key is SortKey.STATE:
        assert up[0].label == "Revoked"
        assert down[-1].label == "Revoked"
        return
    for rows, descending in ((up, False), (down, True)):
        values = [value(a) for a in rows]
        present = [v for v in values if v is not None]
        assert values[: len(present)] == present, "missing values come last"
        assert present == sorted(present, reverse=descending)
    if key is SortKey.LAST_ATTEMPT:
        never = {"alpha_1", "Beta", "gamma%2", "Expiring"}
        assert {a.label for a in up[-4:]} == never
        assert {a.label for a in down[-4:]} == never


async def test_search_by_label_or_username_takes_its_text_literally(
    runtime: Runtime, emulator: tuple[Emulator, str]
) -> None:
    seeded = await seed(runtime, emulator[0])

    async def found(q: str) -> list[str]:
        return [a.label for a in await listing(runtime, seeded, ListQuery(q=q, sort=SortKey.LABEL))]

    assert await found("BETA") == ["Beta"]
    assert await found("demo") == []
    assert await found("%") == ["gamma%2"]  # a wildcard in SQL, a character here
    assert await found("a_") == ["alpha_1"]
    assert await found("foreign") == []  # another organization's account


async def test_pages_of_fifty(runtime: Runtime, emulator: tuple[Emulator, str]) -> None:
    emu = emulator[0]
    org = await runtime.store.create_organization("Many")
    now = runtime.clock()
    for i in range(PAGE_SIZE + 7):
        await seed_account(
            runtime,
            emu,
            org,
            f"seller_{i:03d}",
            access_expires_at=now + timedelta(hours=2),
            next_attempt_at=None,
        )
    seen: list[str] = []
    for number in (1, 2, 3):
        page = await runtime.account_list.page(
            org,
            ListQuery(sort=SortKey.EBAY_USERNAME, page=number),
            now=now,
            refresh_ahead=runtime.settings.refresh_ahead,
        )
        seen.extend(a.ebay_username for a, _ in page.rows)
    # Page 3 is past the end: the last page again.
    assert seen[: PAGE_SIZE + 7] == [f"seller_{i:03d}" for i in range(PAGE_SIZE + 7)]
    assert seen[PAGE_SIZE + 7 :] == seen[PAGE_SIZE : PAGE_SIZE + 7]


async def test_the_page_answers_every_sort_with_never_refreshed_accounts(
    runtime: Runtime, emulator: tuple[Emulator, str]
) -> None:
    seeded = await seed(runtime, emulator[0])
    await runtime.users.create(seeded.organization_id, "admin@listing.test", Role.ADMIN, PASSWORD)
    async with (
        serve_asgi(create_app(runtime)) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        signed = await client.post(
            "/api/auth/login", json={"email": "admin@listing.test", "password": PASSWORD}
        )
        assert signed.status_code == 200, signed.text
        for key, _ in COLUMNS:
            for direction in ("asc", "desc"):
                answer = await client.get("/", params={"sort": key.value, "dir": direction})
                assert answer.status_code == 200, (key, direction, answer.text[:500])
                sorted_header = re.findall(
                    r'<th scope="col" class="col-(\w+)" aria-sort="(\w+)"', answer.text
                )
                expected = "ascending" if direction == "asc" else "descending"
                assert sorted_header == [(key.value, expected)]
        answer = await client.get("/", params={"sort": "last_attempt", "dir": "desc"})
        labels = re.findall(r'<a class="label" href="/accounts/\d+">([^<]+)</a>', answer.text)
        assert labels[:3] and set(labels[-4:]) == {"alpha_1", "Beta", "gamma%2", "Expiring"}
        live = await client.get("/ui/accounts/live", params={"sort": "last_attempt"})
        assert live.status_code == 200
        assert "Foreign" not in answer.text + live.text
