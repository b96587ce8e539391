"""`ebay-connector worker` as a real process on PostgreSQL: SIGTERM drains, SIGKILL's leases are
taken over. The emulator answers slowly so the signal lands while refreshes are in flight."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ebay_connector import settings
from ebay_connector.core.clock import utcnow
from ebay_connector.emulator import Emulator, EmulatorServer, Faults
from ebay_connector.runtime import Runtime, open_runtime
from tests.acceptance.test_demo_cli import CLI
from tests.conftest import FakeClock, postgres_database
from tests.helpers import seed_due_accounts

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres]

ACCOUNTS = 6
LATENCY_MS = 1500
CONCURRENCY = 4


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database (a process cannot be handed a schema)."""
    with postgres_database("ebc", migrated=True) as url:
        yield url


@pytest.fixture
def slow_emulator() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(seed=5)
    emu.register_app(
        settings.EMULATOR_CLIENT_ID,
        settings.EMULATOR_CLIENT_SECRET,
        settings.EMULATOR_RU_NAME,
        "http://127.0.0.1:9/cb",
    )
    with EmulatorServer(emu) as server:
        yield emu, server.base_url


def worker_env(url: str, emulator_url: str, key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
    env.update(
        EBAY_CONNECTOR_DATABASE_URL=url,
        EBAY_CONNECTOR_EMULATOR_URL=emulator_url,
        EBAY_CONNECTOR_KEY_FILE=str(key_file),
        EBAY_CONNECTOR_HTTP_TIMEOUT_SECONDS="5",
        EBAY_CONNECTOR_LEASE_SECONDS="15",
        EBAY_CONNECTOR_WORKER_DRAIN_SECONDS="10",
        EBAY_CONNECTOR_WORKER_CONCURRENCY=str(CONCURRENCY),
    )
    return env


@pytest.fixture
async def seeded(
    fresh_database: str, slow_emulator: tuple[Emulator, str], tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Emulator, dict[str, str]]]:
    emu, base = slow_emulator
    key_file = tmp_path / "keyring.json"
    conf = settings.load(
        _env_file=None, database_url=fresh_database, emulator_url=base, key_file=key_file
    )
    async with open_runtime(conf) as runtime:
        await seed_due_accounts(runtime, emu, ACCOUNTS, "proc")
        emu.set_faults(Faults(latency_ms=LATENCY_MS))
        yield runtime, emu, worker_env(fresh_database, base, key_file)


async def _wait_for_leases(runtime: Runtime, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "worker exited early"
        leased = [a for a in await runtime.store.accounts() if a.lease_owner is not None]
        if leased:
            return len(leased)
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never claimed anything")


async def test_sigterm_drains_in_flight_refreshes_and_unregisters(
    seeded: tuple[Runtime, Emulator, dict[str, str]], tmp_path: Path
) -> None:
    runtime, emu, env = seeded
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen([CLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The worker claims a little ahead of its free slots: of what it holds, at most
        # CONCURRENCY are refreshes in flight; the rest it gives back unstarted on SIGTERM.
        in_flight = min(await _wait_for_leases(runtime, process), CONCURRENCY)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0
        assert time.monotonic() - started < 12
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    accounts = await runtime.store.accounts()
    assert [a for a in accounts if a.lease_owner is not None] == []
    assert await runtime.heartbeats.all() == []
    attempts = [a for acc in accounts for a in await runtime.journal.attempts(acc.account_id)]
    scheduled = [a for a in attempts if a.trigger == "scheduled"]
    # Every refresh that was in flight finished and was recorded; none was cut off.
    assert len(scheduled) >= in_flight
    assert all(a.outcome == "ok" for a in scheduled)
    assert len(scheduled) == emu.calls.count(grant_type="refresh_token", status=200)


async def test_sigkilled_workers_leases_expire_and_are_taken_over(
    seeded: tuple[Runtime, Emulator, dict[str, str]], tmp_path: Path
) -> None:
    runtime, emu, env = seeded
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen([CLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await _wait_for_leases(runtime, process)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    finally:
        log.close()
    orphaned = [a for a in await runtime.store.accounts() if a.lease_owner is not None]
    assert orphaned, "the killed worker's claims are still leased"
    # Another worker, 16 s later on its clock (past the 15 s lease), takes them over.
    clock = FakeClock(utcnow() + timedelta(seconds=16))
    emu.clear_faults()
    async with open_runtime(runtime.settings, clock=clock, rng=random.Random(1)) as later:
        report = await later.worker().run_once()
        accounts = await later.store.accounts()
    assert report.counts.claimed >= len(orphaned)
    assert all(a.failures_in_row == 0 for a in accounts)
    assert all(a.lease_owner is None for a in accounts)
    assert all(a.last_success_at is not None and a.last_attempt_at is not None for a in accounts), (
        "an account was left behind"
    )
