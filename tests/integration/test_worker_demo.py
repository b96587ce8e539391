"""The worker over the demo accounts: honest counts, honest status, the states the report lacked."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ebay_connector import demo
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.token_state import TokenState
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.service.worker import CycleStatus, Worker, WorkerConfig
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration


def make_worker(runtime: Runtime) -> Worker:
    return Worker(
        store=runtime.store,
        journal=runtime.journal,
        heartbeats=runtime.heartbeats,
        refresher=runtime.refresher,
        config=WorkerConfig(interval=timedelta(seconds=60), concurrency=4),
        clock=runtime.clock,
    )


async def seeded(runtime: Runtime, emu: Emulator) -> dict[str, int]:
    seeded_demo = await demo.seed(runtime, emu)
    return {a.demo.username: a.account_id for a in seeded_demo.accounts}


async def test_demo_seed_connects_eight_accounts_through_consent_and_code_exchange(
    runtime: Runtime, emulator: tuple[Emulator, str]
) -> None:
    emu, _ = emulator
    ids = await seeded(runtime, emu)
    assert len(ids) == 8
    assert emu.calls.count(endpoint="token", grant_type="authorization_code") == 8
    assert emu.calls.count(endpoint="user") == 8
    # Seeding twice recreates the organization instead of piling up accounts.
    again = await seeded(runtime, emu)
    assert len(await runtime.store.accounts()) == 8
    assert set(again) == set(ids)


async def test_first_cycle_reaches_the_report_states_and_is_degraded(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    ids = await seeded(runtime, emu)
    worker = make_worker(runtime)
    report = await worker.run_once()
    c = report.counts
    # expiring, expired, revoked, undecryptable, eBay-500 are due; the rest are fresh.
    assert c.due == 5
    assert (c.refreshed, c.failed, c.needs_reconnect, c.transient) == (2, 3, 2, 1)
    assert c.claimed == c.due == c.refreshed + c.failed + c.joined + c.skipped
    assert report.status is CycleStatus.DEGRADED  # never "ok" while accounts fail
    # The report names the failed accounts (a bounded sample), not every refreshed one.
    failed = {f.account_id: f.outcome.value for f in report.failures}
    assert failed == {
        ids["demo_revoked"]: "invalid_grant",
        ids["demo_undecryptable"]: "decrypt_failed",
        ids["demo_ebay_500"]: "transient",
    }

    states = {a.ebay_username: a for a in await runtime.store.accounts()}
    assert states["demo_revoked"].state is TokenState.NEEDS_RECONNECT
    assert states["demo_revoked"].state_reason == "invalid_grant"
    assert states["demo_undecryptable"].state_reason == "decrypt_failed"
    assert states["demo_ebay_500"].state is TokenState.ACTIVE
    assert states["demo_ebay_500"].failures_in_row == 1
    for name in ("demo_expiring", "demo_expired", "demo_main_store"):
        assert states[name].state is TokenState.ACTIVE
        assert states[name].failures_in_row == 0
    # No request for the undecryptable account ever reached eBay.
    assert emu.calls.count(grant_type="refresh_token", username="demo_undecryptable") == 0

    beats = await runtime.heartbeats.all()
    assert len(beats) == 1
    assert beats[0].status == "degraded"
    assert beats[0].counts["failed"] == 3
    assert beats[0].version

    # Later cycles skip the needs_reconnect accounts instead of counting failures.
    revoked_calls = emu.calls.count(grant_type="refresh_token", status=400)
    clock.advance(hours=3)  # everything that backs off is due again
    second = await worker.run_once()
    assert second.counts.waiting_reconnect == 2
    assert emu.calls.count(grant_type="refresh_token", status=400) == revoked_calls
    undecryptable_attempts = await runtime.journal.attempts(ids["demo_undecryptable"], limit=10)
    assert [a.trigger for a in undecryptable_attempts] == ["scheduled", "connect"]


async def test_worker_refresh_and_debug_refresh_match_in_the_terminal(
    runtime: Runtime, emulator: tuple[Emulator, str]
) -> None:
    emu, _ = emulator
    ids = await seeded(runtime, emu)
    healthy = ids["demo_main_store"]
    now = runtime.clock()
    await runtime.store.set_access_expiry(healthy, now + timedelta(minutes=5), due=now)
    await make_worker(runtime).run_once()
    await runtime.refresher.refresh(healthy, Trigger.DEBUG)
    entries = await runtime.journal.exchanges(account_id=healthy, limit=2)
    assert [e.trigger for e in entries] == ["debug", "scheduled"]
    debug, scheduled = entries
    assert debug.token_fingerprint == scheduled.token_fingerprint
    assert debug.request == scheduled.request
    assert (debug.status, scheduled.status) == (200, 200)
