"""Concurrency under load: 500 programs asking for tokens over real HTTP while the worker runs
and an admin debug-refreshes; one eBay call per account per due window, every caller served.

The API is the real app under uvicorn on 127.0.0.1; programs use a real API key; the emulator
(real HTTP, 30 ms per answer so that callers really overlap) counts every call. Latency is printed,
never asserted: it depends on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from httpx_aiohttp import AiohttpTransport

from ebay_connector.core.exchange import Trigger
from ebay_connector.core.roles import Role
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.runtime import Runtime
from ebay_connector.service.worker import CycleStatus, Worker, WorkerConfig
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.helpers import seed_account

pytestmark = pytest.mark.integration

ACCOUNTS = 50
EXPIRED = 25
REQUESTS = 500
CONNECTIONS = 100  # programs' keep-alive connections to the API
EBAY_LATENCY_MS = 30
PASSWORD = "correct horse battery"
USER_PATH = "/commerce/identity/v1/user/"
HTTP_TIMEOUT_S = 30.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Fleet:
    base: str
    org_id: int
    key: str
    admin: str
    expired: list[int]
    fresh: list[int]
    usernames: dict[int, str]
    old_tokens: dict[int, str]  # the access token each account held before the run


async def _account(
    runtime: Runtime, emu: Emulator, org_id: int, username: str, *, expired: bool
) -> tuple[int, str]:
    now = runtime.clock()
    account_id, grant = await seed_account(
        runtime,
        emu,
        org_id,
        username,
        access_expires_at=now + (-timedelta(minutes=1) if expired else timedelta(hours=2)),
        next_attempt_at=now - timedelta(seconds=1) if expired else now + timedelta(hours=1),
    )
    return account_id, str(grant["access_token"])


@pytest.fixture
async def runtime(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Runtime]:
    """The conftest's runtime with the product's default HTTP timeout: 500 requests on one
    event loop may delay reading eBay's answer by seconds on a busy machine, and that is not
    the eBay failure this test is about."""
    async with open_test_runtime(
        database, emulator, tmp_path, clock, http_timeout_seconds=HTTP_TIMEOUT_S
    ) as rt:
        yield rt


@pytest.fixture
async def fleet(runtime: Runtime, emulator: tuple[Emulator, str]) -> AsyncIterator[Fleet]:
    emu, _ = emulator
    org_id = await runtime.store.create_organization("Load org")
    await Users(runtime.db).create(org_id, "admin@load.test", Role.ADMIN, PASSWORD)
    _, key = await ApiKeys(runtime.db).create(org_id, "load", can_read_tokens=True)
    expired: list[int] = []
    fresh: list[int] = []
    usernames: dict[int, str] = {}
    old: dict[int, str] = {}
    for i in range(ACCOUNTS):
        name = f"load_{i:02d}"
        account_id, token = await _account(runtime, emu, org_id, name, expired=i < EXPIRED)
        (expired if i < EXPIRED else fresh).append(account_id)
        usernames[account_id], old[account_id] = name, token
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            backlog=2048,
            timeout_keep_alive=75,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    try:
        yield Fleet(
            f"http://127.0.0.1:{port}",
            org_id,
            key,
            "admin@load.test",
            expired,
            fresh,
            usernames,
            old,
        )
    finally:
        server.should_exit = True
        await task


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def test_500_concurrent_token_requests_with_worker_and_debug_refresh(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock, fleet: Fleet
) -> None:
    emu, emulator_url = emulator
    emu.set_faults(Faults(latency_ms=EBAY_LATENCY_MS))
    rng = random.Random(6)
    targets = [aid for aid in fleet.usernames for _ in range(REQUESTS // ACCOUNTS)]
    rng.shuffle(targets)
    debug_expired, debug_fresh = fleet.expired[3], fleet.fresh[3]
    worker = Worker(
        store=runtime.store,
        journal=runtime.journal,
        heartbeats=runtime.heartbeats,
        refresher=runtime.refresher,
        config=WorkerConfig(interval=timedelta(seconds=60), concurrency=8),
        clock=runtime.clock,
    )
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=CONNECTIONS))
    async with (
        httpx.AsyncClient(base_url=fleet.base, transport=transport, timeout=60) as programs,
        httpx.AsyncClient(base_url=fleet.base, timeout=60) as admin,
    ):
        login = await admin.post(
            "/api/auth/login", json={"email": fleet.admin, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        admin.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        programs.headers["Authorization"] = f"Bearer {fleet.key}"

        async def ask(account_id: int) -> tuple[int, httpx.Response, float]:
            started = time.perf_counter()
            answer = await programs.get(f"/api/v1/accounts/{account_id}/access-token")
            return account_id, answer, time.perf_counter() - started

        async def debug(account_id: int) -> httpx.Response:
            await asyncio.sleep(0)  # let the first requests and the worker's claim go first
            return await admin.post(
                "/api/admin/ebay/token/refresh-debug", json={"ebay_account_id": account_id}
            )

        began = time.perf_counter()
        cycle = asyncio.create_task(worker.run_once())
        debugging = {aid: asyncio.create_task(debug(aid)) for aid in (debug_expired, debug_fresh)}
        answers = await asyncio.gather(*(ask(aid) for aid in targets))
        report = await cycle
        debugs = {aid: await task for aid, task in debugging.items()}
        elapsed = time.perf_counter() - began

    # Every caller got a token valid well past the margin (no caller waited for a failure).
    now = clock()
    tokens: dict[int, set[str]] = {aid: set() for aid in fleet.usernames}
    for account_id, answer, _ in answers:
        assert answer.status_code == 200, (account_id, answer.status_code, answer.text)
        body = answer.json()
        assert body["token_type"] == "Bearer"
        assert datetime.fromisoformat(body["expires_at"]) > now + timedelta(minutes=5)
        tokens[account_id].add(body["access_token"])
    for account_id in fleet.expired:
        # An expired account is never answered with its old token.
        assert fleet.old_tokens[account_id] not in tokens[account_id]

    # The debug refreshes: explicit extra calls, unless one joined a refresh in flight.
    extra: dict[int, int] = {}
    for account_id, answer in debugs.items():
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["outcome"] == "ok" and result["trigger"] == "debug"
        extra[account_id] = int(result["called_ebay"] and not result["joined"])
    assert extra[debug_fresh] == 1  # nobody else refreshes a fresh account

    # One eBay call per account in this due window: expired ones once, fresh ones never; a
    # debug refresh that called is one explicit extra call (or, if it came first, the window's).
    total = 0
    for account_id, name in fleet.usernames.items():
        rows = await runtime.journal.exchanges(account_id=account_id, limit=20)
        sent = [r.trigger for r in reversed(rows) if r.sent and r.action == "refresh_token"]
        calls = emu.calls.count(endpoint="token", grant_type="refresh_token", username=name)
        assert calls == len(sent), (name, sent)  # what the journal recorded is what eBay saw
        assert sent.count(Trigger.DEBUG) == extra.get(account_id, 0), (name, sent)
        window = [t for t in sent if t is not Trigger.DEBUG]
        assert set(window) <= {Trigger.SCHEDULED, Trigger.ON_DEMAND}
        if account_id in fleet.expired:
            assert len(window) == (0 if sent[0] == "debug" else 1), (name, sent)
        else:
            assert window == [], (name, sent)
            if account_id != debug_fresh:
                assert tokens[account_id] == {fleet.old_tokens[account_id]}
        # Callers see only tokens its refreshes issued (and a fresh account's old one).
        assert len(tokens[account_id]) <= len(sent) + int(account_id in fleet.fresh)
        total += calls
    assert total == emu.calls.count(endpoint="token", grant_type="refresh_token")
    assert EXPIRED <= total <= EXPIRED + len(debugs)
    usage = await runtime.journal.quota_usage(now - timedelta(hours=1))
    assert usage.get("refresh_token") == total

    # The worker's counts add up and it shared the work with the programs, not doubled it.
    c = report.counts
    assert c.claimed == c.refreshed + c.failed + c.joined + c.skipped
    assert c.failed == 0 and report.status is CycleStatus.OK
    assert await runtime.store.due_count(now) == 0

    # eBay (the emulator) recognises every token handed out as a live user token.
    async with httpx.AsyncClient(base_url=emulator_url) as identity:
        for account_id, seen in tokens.items():
            for token in seen:
                who = await identity.get(USER_PATH, headers={"Authorization": f"Bearer {token}"})
                assert who.status_code == 200, (fleet.usernames[account_id], who.text)
                assert who.json()["username"] == fleet.usernames[account_id]

    latencies = [seconds * 1000 for _, _, seconds in answers]
    expired_ms = [s * 1000 for aid, _, s in answers if aid in fleet.expired]
    fresh_ms = [s * 1000 for aid, _, s in answers if aid not in fleet.expired]
    print(
        f"\ntoken API under load ({REQUESTS} requests, {ACCOUNTS} accounts, {EXPIRED} expired, "
        f"eBay latency {EBAY_LATENCY_MS} ms, {CONNECTIONS} connections): "
        f"p50 {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
        f"max {max(latencies):.1f} ms; expired accounts p99 {percentile(expired_ms, 0.99):.1f} "
        f"ms, fresh accounts p99 {percentile(fresh_ms, 0.99):.1f} ms; {REQUESTS / elapsed:.0f} "
        f"req/s; eBay refresh calls {total} (debug refreshes that called {sum(extra.values())}); "
        f"worker claimed {c.claimed}, refreshed {c.refreshed}, joined {c.joined}"
    )
