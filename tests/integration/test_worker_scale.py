"""The worker at scale: replicas claim disjoint work, the quota guard holds, 429 pauses the
process, a lost database connection is survived. Real SQLite / PostgreSQL, real emulator."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import sqlalchemy as sa

from ebay_connector.db.database import Database
from ebay_connector.db.heartbeats import Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.db.store import Store
from ebay_connector.ebay.pacing import Pacer
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.runtime import Runtime, refresh_config
from ebay_connector.service.refresh import Refresher
from ebay_connector.service.worker import CycleStatus, Worker, WorkerConfig
from tests.conftest import OWN_POSTGRES_DATABASE, DatabaseTarget, FakeClock
from tests.helpers import seed_due_accounts

pytestmark = pytest.mark.integration


def replica(
    runtime: Runtime, database: DatabaseTarget, clock: FakeClock, name: str, **config: object
) -> tuple[Worker, Database]:
    """A worker as another process would build it: own engine, own refresher, own owner id."""
    db = Database.open(database.url, clock=clock, schema=database.schema)
    store, journal = Store(db), Journal(db)
    refresher = Refresher(
        store=store,
        journal=journal,
        client=runtime.client,
        keyring=runtime.keys.ring,
        config=refresh_config(runtime.settings),
        owner=name,
        ledger=runtime.refresher.ledger,
        clock=clock,
        pacer=Pacer(),
    )
    worker = Worker(
        store=store,
        journal=journal,
        heartbeats=Heartbeats(db),
        refresher=refresher,
        # **config is typed object; the callers pass WorkerConfig fields with their own types.
        config=dataclasses.replace(WorkerConfig(), **config),  # type: ignore[arg-type]
        clock=clock,
    )
    return worker, db


@pytest.mark.parametrize("replicas", [2, 4])
async def test_replicas_never_refresh_an_account_twice_and_miss_none(
    runtime: Runtime,
    emulator: tuple[Emulator, str],
    database: DatabaseTarget,
    clock: FakeClock,
    replicas: int,
) -> None:
    emu, _ = emulator
    ids = await seed_due_accounts(runtime, emu, 120, "replica")
    emu.set_faults(Faults(latency_ms=20))
    workers = [
        replica(runtime, database, clock, f"replica-{n}", concurrency=8) for n in range(replicas)
    ]
    try:
        reports = await asyncio.gather(*(w.run_once() for w, _ in workers))
    finally:
        for _, db in workers:
            await db.close()
    assert sum(r.counts.refreshed for r in reports) == len(ids)
    assert all(r.status is CycleStatus.OK for r in reports)
    for i in range(len(ids)):
        assert emu.calls.count(grant_type="refresh_token", username=f"replica_{i:04d}") == 1
    if database.backend == "postgresql":
        # SKIP LOCKED lets every replica take part instead of queueing behind one.
        assert sum(1 for r in reports if r.counts.claimed > 0) >= 2
    assert await runtime.store.due_count(clock()) == 0
    leased = [a for a in await runtime.store.accounts() if a.lease_owner is not None]
    assert leased == []


async def test_quota_guard_stops_proactive_work_at_the_reserve(
    runtime: Runtime, emulator: tuple[Emulator, str], database: DatabaseTarget, clock: FakeClock
) -> None:
    emu, _ = emulator
    ids = await seed_due_accounts(runtime, emu, 20, "quota")
    quota = dataclasses.replace(
        runtime.settings.quota, limits={"refresh_token": 10}, reserve_share=0.2
    )
    worker, db = replica(runtime, database, clock, "quota-worker", concurrency=4, quota=quota)
    try:
        report = await worker.run_once()
    finally:
        await db.close()
    assert report.counts.refreshed == 8  # 80 % of 10: the rest is kept for on-demand
    assert report.counts.deferred_quota == 12
    assert report.quota is not None
    assert report.quota.proactive_budget() == 8
    assert emu.calls.count(grant_type="refresh_token") == 8
    beat = (await runtime.heartbeats.all())[0]
    assert beat.counts["deferred_quota"] == 12
    assert beat.counts["quota"]["refresh_token"]["limit"] == 10
    # On-demand may still use the reserve.
    token = await runtime.refresher.get_access_token(ids[-1])
    assert token.access_token
    assert emu.calls.count(grant_type="refresh_token") == 9


async def test_a_429_pauses_the_whole_process(
    runtime: Runtime, emulator: tuple[Emulator, str], database: DatabaseTarget, clock: FakeClock
) -> None:
    emu, _ = emulator
    await seed_due_accounts(runtime, emu, 10, "paused")
    emu.set_faults(Faults(rate_limited=True, retry_after_s=120))
    worker, db = replica(runtime, database, clock, "pause-worker", concurrency=1)
    try:
        report = await worker.run_once()
        assert emu.calls.count(grant_type="refresh_token") == 1  # one 429, then nobody calls
        assert report.counts.failed == 1
        assert report.counts.deferred_pause == 9
        assert report.status is CycleStatus.ERROR
        emu.clear_faults()
        clock.advance(seconds=121)
        resumed = await worker.run_once()
    finally:
        await db.close()
    assert resumed.counts.refreshed == 10
    assert resumed.status is CycleStatus.OK


@pytest.mark.parametrize(
    "database",
    [pytest.param(OWN_POSTGRES_DATABASE, marks=pytest.mark.postgres, id="postgresql")],
    indirect=True,
)
async def test_worker_survives_a_lost_database_connection(
    runtime: Runtime, emulator: tuple[Emulator, str], database: DatabaseTarget, clock: FakeClock
) -> None:
    """Server-side connection kills (a PostgreSQL feature) are survived via pool pre-ping."""
    emu, _ = emulator
    await seed_due_accounts(runtime, emu, 5, "lost")
    worker, db = replica(runtime, database, clock, "lost-worker", concurrency=2)
    try:
        assert (await worker.run_once()).counts.refreshed == 5
        async with runtime.db.engine.connect() as conn:
            killed = await conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            assert killed.scalar_one() >= 1
        clock.advance(hours=3)
        await runtime.store.set_access_expiry(
            (await runtime.store.accounts())[0].account_id, clock(), due=clock()
        )
        again = await worker.run_once()
    finally:
        await db.close()
    assert again.error is None
    assert again.counts.refreshed >= 1
