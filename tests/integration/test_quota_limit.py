"""eBay's daily limit holds under concurrency: calls in flight together, in one process or in
several over one database, worker and programs together, never pass it (the quota ledger)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from ebay_connector.core.roles import Role
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.helpers import connect_seller, serve_asgi

PASSWORD = "correct horse battery"


async def _due_accounts(runtime: Runtime, clock: FakeClock, count: int) -> tuple[list[int], str]:
    """``count`` connected sellers whose access tokens expire now (due for the worker too), and
    an API key of their organization that may read tokens."""
    org = await runtime.store.create_organization("limited")
    await runtime.users.create(org, "admin@limited.test", Role.ADMIN, PASSWORD)
    _, key = await ApiKeys(runtime.db).create(org, "program", can_read_tokens=True)
    ids = [await connect_seller(runtime, org, f"quota_seller_{n}") for n in range(count)]
    for account_id in ids:
        await runtime.store.set_access_expiry(account_id, clock(), clock())
    return ids, key


@asynccontextmanager
async def _replicas(
    n: int, database: DatabaseTarget, emulator: tuple[Emulator, str], tmp: Path, clock: FakeClock
) -> AsyncIterator[list[tuple[Runtime, str]]]:
    """``n`` processes of the product over one database, each serving the API."""
    async with AsyncExitStack() as stack:
        served = []
        for _ in range(n):
            runtime = await stack.enter_async_context(
                open_test_runtime(database, emulator, tmp, clock, daily_refresh_limit=LIMIT)
            )
            served.append(
                (runtime, await stack.enter_async_context(serve_asgi(create_app(runtime))))
            )
        yield served


LIMIT = 5


async def _ask(base: str, key: str, account_ids: list[int]) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as program:
        return list(
            await asyncio.gather(
                *(program.get(f"/api/v1/accounts/{a}/access-token") for a in account_ids)
            )
        )


def _statuses(answers: list[httpx.Response]) -> Counter[Any]:
    return Counter(
        (a.status_code, a.json().get("error", {}).get("code") if a.status_code != 200 else None)
        for a in answers
    )


async def test_concurrent_token_requests_never_pass_the_daily_limit(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> None:
    emu = emulator[0]
    async with _replicas(1, database, emulator, tmp_path, clock) as [(runtime, base)]:
        ids, key = await _due_accounts(runtime, clock, 30)
        calls = emu.calls.count(grant_type="refresh_token")
        answers = await _ask(base, key, ids)
    assert _statuses(answers) == {(200, None): LIMIT, (503, "quota_exhausted"): 30 - LIMIT}
    assert emu.calls.count(grant_type="refresh_token") - calls == LIMIT
    refused = next(a for a in answers if a.status_code == 503)
    assert int(refused.headers["Retry-After"]) > 23 * 3600  # the window frees a call tomorrow


async def test_replicas_together_never_pass_the_daily_limit(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> None:
    emu = emulator[0]
    async with _replicas(2, database, emulator, tmp_path, clock) as served:
        ids, key = await _due_accounts(served[0][0], clock, 30)
        calls = emu.calls.count(grant_type="refresh_token")
        halves = await asyncio.gather(
            _ask(served[0][1], key, ids[::2]), _ask(served[1][1], key, ids[1::2])
        )
    answers = halves[0] + halves[1]
    assert _statuses(answers) == {(200, None): LIMIT, (503, "quota_exhausted"): 30 - LIMIT}
    assert emu.calls.count(grant_type="refresh_token") - calls == LIMIT


async def test_workers_and_programs_together_never_pass_the_daily_limit(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> None:
    """Two workers (each read the same budget at its cycle's start) and a program at once: the
    workers stop at the proactive ceiling (80 % of 5 = 4) together, the program gets the rest."""
    emu = emulator[0]
    async with _replicas(2, database, emulator, tmp_path, clock) as served:
        ids, key = await _due_accounts(served[0][0], clock, 30)
        calls = emu.calls.count(grant_type="refresh_token")
        reports = await asyncio.gather(*(runtime.worker().run_once() for runtime, _ in served))
        worker_calls = emu.calls.count(grant_type="refresh_token") - calls
        # The four the workers refreshed are served as stored; one more call fits the limit.
        answers = await _ask(served[1][1], key, ids)
    assert worker_calls == 4
    assert sum(r.counts.refreshed for r in reports) == 4
    assert any(r.counts.deferred_quota for r in reports)
    assert _statuses(answers) == {(200, None): 4 + 1, (503, "quota_exhausted"): 30 - 4 - 1}
    assert emu.calls.count(grant_type="refresh_token") - calls == LIMIT
