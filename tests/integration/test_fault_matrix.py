"""The fault matrix: every way eBay's token endpoint fails, against the worker and the on-demand
path, with the end state of every account checked.

One row per fault. Each row connects accounts whose tokens the emulator really issued, makes the
emulator misbehave (seeded, per user or for everyone), runs one worker cycle (FakeClock) over the
due accounts and one on-demand request for another, then asserts per account: state and reason,
the stored ciphertexts untouched (raw columns and the refresh token's fingerprint), the backoff
honoured (counted in the emulator's call log: no call before it expires, exactly one after), the
heartbeat's status and counts, and what ``/readyz`` says. ``invalid_client`` is about the
application, not an account, and has its own tests below.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ebay_connector import cli
from ebay_connector.core.outcome import AppCredentials, Outcome
from ebay_connector.core.token_state import TokenState
from ebay_connector.db.heartbeats import HeartbeatRow
from ebay_connector.db.store import AccountToken
from ebay_connector.ebay.client import looks_like_ebay_token
from ebay_connector.emulator import Emulator, EmulatorServer, Faults
from ebay_connector.errors import NeedsReconnect, RefreshFailed
from ebay_connector.keys.crypto import TokenField
from ebay_connector.runtime import Runtime
from ebay_connector.service.refresh import APP_CREDENTIALS_REJECTED
from ebay_connector.service.worker import CycleStatus, Worker, WorkerConfig
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, in_thread, open_test_runtime
from tests.helpers import seed_account

pytestmark = pytest.mark.integration

HTTP_TIMEOUT_S = 1.0  # hangs and too-slow answers cost this much real time per call
WORKER_ACCOUNTS = 3
QUOTA_LIMIT = WORKER_ACCOUNTS + 1  # the quota row spends it all before the run
CALL_LOG_DEADLINE_S = 10.0  # a hung call is logged when the server notices the disconnect


@dataclass(frozen=True)
class Case:
    """One fault and what it must lead to for the accounts it hits (the "victims")."""

    name: str
    faults: Faults | None  # None: the row sets its fault up itself (the quota)
    outcome: Outcome  # the worker's outcome for a victim that eBay answered
    on_demand: str | None  # RefreshFailed code, "needs_reconnect", or None for a token
    everyone: bool = True  # a global fault; else only the victims' users misbehave
    concurrency: int = 4
    pauses: bool = False  # a 429: the process stops calling eBay after the first one
    daily_limit: int | None = None
    # Also run on PostgreSQL: rows whose writes differ there (pause, quota, permanent state,
    # long-held leases). The rest differ only in what eBay sent, which the backend never sees.
    both_backends: bool = False

    @property
    def permanent(self) -> bool:
        return self.outcome is Outcome.INVALID_GRANT


CASES = [
    Case(
        "5xx_burst",
        Faults(error_rate=1.0, error_status=503),
        Outcome.TRANSIENT,
        "transient",
        both_backends=True,
    ),
    Case("hang", Faults(hang=True, hang_s=30), Outcome.TRANSIENT, "transient", both_backends=True),
    Case("connection_reset", Faults(reset=True), Outcome.TRANSIENT, "transient"),
    Case(
        "very_slow_answer",
        Faults(latency_ms=int(HTTP_TIMEOUT_S * 1000) + 500),
        Outcome.TRANSIENT,
        "transient",
    ),
    Case(
        "429_with_retry_after",
        Faults(rate_limited=True, retry_after_s=600),
        Outcome.RATE_LIMITED,
        "rate_limited",
        concurrency=1,
        pauses=True,
        both_backends=True,
    ),
    Case(
        "429_without_retry_after",
        Faults(rate_limited=True),
        Outcome.RATE_LIMITED,
        "rate_limited",
        concurrency=1,
        pauses=True,
    ),
    Case(
        "quota_exhausted",
        None,
        Outcome.RATE_LIMITED,
        "rate_limited",
        concurrency=1,
        pauses=True,
        daily_limit=QUOTA_LIMIT,
        both_backends=True,
    ),
    Case(
        "malformed_json", Faults(malformed="json"), Outcome.MALFORMED_RESPONSE, "malformed_response"
    ),
    Case("html_error_page", Faults(malformed="html"), Outcome.TRANSIENT, "transient"),
    Case(
        "200_without_access_token",
        Faults(malformed="missing_access_token"),
        Outcome.MALFORMED_RESPONSE,
        "malformed_response",
    ),
    Case(
        "invalid_grant_mid_run",
        Faults(invalid_grant=True),
        Outcome.INVALID_GRANT,
        "needs_reconnect",
        everyone=False,
        both_backends=True,
    ),
]
POSTGRES = pytest.mark.postgres
ROWS = [pytest.param("sqlite", case, id=f"sqlite-{case.name}") for case in CASES] + [
    pytest.param("postgresql", case, marks=POSTGRES, id=f"postgresql-{case.name}")
    for case in CASES
    if case.both_backends
]


# Fixtures: the conftest's, with a short HTTP timeout and a per-row daily quota -----------------


@pytest.fixture
def emulator(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[tuple[Emulator, str]]:
    case = getattr(request.node, "callspec", None)
    row = case.params.get("case") if case is not None else None
    limits = {"refresh_token": row.daily_limit} if row and row.daily_limit else None
    emu = Emulator(clock=clock, seed=1234, daily_limits=limits)
    with EmulatorServer(emu) as server:
        yield emu, server.base_url


@pytest.fixture
async def runtime(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Runtime]:
    async with open_test_runtime(
        database, emulator, tmp_path, clock, http_timeout_seconds=HTTP_TIMEOUT_S
    ) as rt:
        yield rt


# Helpers ------------------------------------------------------------------------------------


async def connect(runtime: Runtime, emu: Emulator, username: str, *, due: bool) -> int:
    """An account with tokens eBay (the emulator) really issued; its access token has expired.

    ``due=False`` keeps it away from the worker (only a program asking for it refreshes it).
    """
    organization = await runtime.store.organization_id("Faults org")
    if organization is None:
        organization = await runtime.store.create_organization("Faults org")
    now = runtime.clock()
    account_id, _ = await seed_account(
        runtime,
        emu,
        organization,
        username,
        access_expires_at=now - timedelta(minutes=1),
        next_attempt_at=now - timedelta(seconds=1) if due else now + timedelta(days=1),
    )
    return account_id


def refresh_calls(emu: Emulator, username: str) -> int:
    return emu.calls.count(endpoint="token", grant_type="refresh_token", username=username)


async def settled_calls(emu: Emulator, usernames: list[str], expected: dict[str, int]) -> None:
    """Wait (bounded) until the call log shows ``expected``; a hung call is logged only once
    the emulator notices the client gave up."""
    deadline = time.monotonic() + CALL_LOG_DEADLINE_S
    while {u: refresh_calls(emu, u) for u in usernames} != expected:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert {u: refresh_calls(emu, u) for u in usernames} == expected


async def snapshot(runtime: Runtime, account_id: int) -> AccountToken:
    account = await runtime.store.account_token(account_id)
    assert account is not None
    return account


def refresh_fingerprint(runtime: Runtime, account: AccountToken) -> str:
    """The stored refresh token, decrypted once, must still be an eBay token: its fingerprint."""
    assert account.refresh_token_ciphertext is not None
    plain = runtime.keys.ring.decrypt(
        account.refresh_token_ciphertext,
        account_id=account.account_id,
        field=TokenField.REFRESH_TOKEN,
    )
    assert looks_like_ebay_token(plain)
    return runtime.keys.ring.fingerprint(plain)


def make_worker(runtime: Runtime, concurrency: int) -> Worker:
    return Worker(
        store=runtime.store,
        journal=runtime.journal,
        heartbeats=runtime.heartbeats,
        refresher=runtime.refresher,
        config=WorkerConfig(interval=timedelta(seconds=60), concurrency=concurrency),
        clock=runtime.clock,
    )


async def readyz(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://connector") as client:
        answer = await client.get("/readyz")
    return answer.status_code, answer.json()


async def spend_quota(base_url: str, runtime: Runtime, calls: int) -> None:
    """Use up the application's daily refresh quota (the emulator counts failed grants too)."""
    form = {"grant_type": "refresh_token", "refresh_token": "v^1.1#i^1#unknown-token-0000"}
    auth = (runtime.settings.app_client_id, runtime.settings.app_client_secret)
    async with httpx.AsyncClient() as client:
        for _ in range(calls):
            answer = await client.post(base_url + "/identity/v1/oauth2/token", data=form, auth=auth)
            assert answer.status_code == 400
        limited = await client.post(base_url + "/identity/v1/oauth2/token", data=form, auth=auth)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) == 86400


@dataclass
class Scene:
    worker_ids: list[int]
    on_demand_id: int
    usernames: dict[int, str]
    victims: set[int]
    before: dict[int, AccountToken] = field(default_factory=dict)
    fingerprints: dict[int, str] = field(default_factory=dict)


async def set_scene(runtime: Runtime, emu: Emulator, base_url: str, case: Case) -> Scene:
    names = [f"{case.name}_{i}" for i in range(WORKER_ACCOUNTS)]
    worker_ids = [await connect(runtime, emu, name, due=True) for name in names]
    on_demand_id = await connect(runtime, emu, f"{case.name}_od", due=False)
    usernames = {aid: name for aid, name in zip(worker_ids, names, strict=True)}
    usernames[on_demand_id] = f"{case.name}_od"
    # Mid-run (not everyone): one of the worker's accounts and the program's; the rest are fine.
    victims = set(usernames) if case.everyone else {worker_ids[1], on_demand_id}
    scene = Scene(worker_ids, on_demand_id, usernames, victims)
    for aid in usernames:
        scene.before[aid] = await snapshot(runtime, aid)
        scene.fingerprints[aid] = refresh_fingerprint(runtime, scene.before[aid])
    if case.faults is not None:
        if case.everyone:
            emu.set_faults(case.faults)
        else:
            for aid in victims:
                emu.set_faults(case.faults, username=usernames[aid])
    elif case.daily_limit is not None:
        await spend_quota(base_url, runtime, case.daily_limit)
    return scene


def clear_faults(emu: Emulator, case: Case, scene: Scene) -> None:
    emu.clear_faults()
    for name in scene.usernames.values():
        emu.clear_faults(name)


# The matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("database", "case"), ROWS, indirect=["database"])
async def test_fault_leaves_every_account_in_the_right_state(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock, case: Case
) -> None:
    emu, base_url = emulator
    scene = await set_scene(runtime, emu, base_url, case)
    names = list(scene.usernames.values())

    # (a) The worker over the due accounts.
    report = await make_worker(runtime, case.concurrency).run_once()
    c = report.counts
    assert c.claimed == c.refreshed + c.failed + c.joined + c.skipped
    worker_victims = [a for a in scene.worker_ids if a in scene.victims]
    healthy = [a for a in scene.worker_ids if a not in scene.victims]
    if case.pauses:
        # The first 429 pauses the whole process: one call, the rest waits for the pause.
        assert (c.claimed, c.failed, c.deferred_pause) == (1, 1, WORKER_ACCOUNTS - 1)
        called = {scene.worker_ids[0]}
    else:
        assert c.claimed == WORKER_ACCOUNTS
        assert (c.refreshed, c.failed) == (len(healthy), len(worker_victims))
        called = set(scene.worker_ids)
    assert c.outcomes == {
        **({case.outcome.value: c.failed} if c.failed else {}),
        **({"ok": c.refreshed} if c.refreshed else {}),
    }
    if case.permanent:
        assert c.needs_reconnect == c.failed
    else:
        assert c.transient == c.failed and c.needs_reconnect == 0
    expected_status = CycleStatus.DEGRADED if c.refreshed else CycleStatus.ERROR
    assert report.status is expected_status
    beat = (await runtime.heartbeats.all())[0]
    assert (beat.status, beat.last_error) == (expected_status.value, None)
    assert beat.counts["failed"] == c.failed and beat.counts["claimed"] == c.claimed
    await settled_calls(
        emu,
        names,
        {scene.usernames[a]: int(a in called) for a in scene.usernames},
    )

    # (b) A program asks for the account the worker did not touch.
    od = scene.on_demand_id
    if case.on_demand == "needs_reconnect":
        with pytest.raises(NeedsReconnect) as reconnect:
            await runtime.refresher.get_access_token(od)
        assert reconnect.value.reason == "invalid_grant"
    else:
        with pytest.raises(RefreshFailed) as failed:
            await runtime.refresher.get_access_token(od)
        assert failed.value.code == case.on_demand
        # Inside the cooldown the last failure is answered again, without calling eBay.
        with pytest.raises(RefreshFailed):
            await runtime.refresher.get_access_token(od)
    od_calls = 0 if case.pauses else 1  # a paused process answers without calling
    await settled_calls(
        emu,
        names,
        {
            scene.usernames[a]: int(a in called) + (od_calls if a == od else 0)
            for a in scene.usernames
        },
    )

    # Every account: state and reason; a failure never touches the stored tokens.
    after = {aid: await snapshot(runtime, aid) for aid in scene.usernames}
    attempted = called | {od}
    for aid, account in after.items():
        before = scene.before[aid]
        assert account.lease_owner is None
        if aid in scene.victims and aid in attempted:
            if case.permanent:
                assert (account.state, account.state_reason) == (
                    TokenState.NEEDS_RECONNECT,
                    "invalid_grant",
                )
                assert account.next_attempt_at is None
            else:
                assert (account.state, account.state_reason) == (TokenState.ACTIVE, None)
                assert account.failures_in_row == 1
                assert account.last_error_code == case.outcome.value
                assert account.next_attempt_at is not None and account.next_attempt_at > clock()
        if aid in scene.victims or aid not in attempted:
            assert account.access_token_ciphertext == before.access_token_ciphertext
            assert account.access_expires_at == before.access_expires_at
        else:  # a healthy account refreshed next to the victims
            assert account.state is TokenState.ACTIVE and account.failures_in_row == 0
            assert account.access_token_ciphertext != before.access_token_ciphertext
        assert account.refresh_token_ciphertext == before.refresh_token_ciphertext
        assert refresh_fingerprint(runtime, account) == scene.fingerprints[aid]
    # What was sent is the stored token, byte for byte (same keyed fingerprint).
    for aid in called:
        rows = await runtime.journal.exchanges(account_id=aid, limit=1)
        assert rows[0].sent and rows[0].token_fingerprint == scene.fingerprints[aid]

    # Transient trouble at eBay is no reason to take the service out of rotation.
    status, ready = await readyz(runtime)
    assert status == 200 and ready["checks"]["ebay"] == "ok (emulator)"

    # The backoff: not a single call before it expires, exactly one per due account after.
    clear_faults(emu, case, scene)
    waits = [a.next_attempt_at for a in after.values() if a.failures_in_row and a.next_attempt_at]
    paused_until = runtime.pacer.paused_until
    assert bool(waits) is not case.permanent or case.everyone is False
    quiet_until = min(waits) if waits else clock() + timedelta(hours=1)
    if paused_until is not None:
        assert case.pauses
        quiet_until = max(quiet_until, paused_until)
    if case.faults is not None and case.faults.retry_after_s:
        assert min(waits) >= clock() + timedelta(seconds=case.faults.retry_after_s)
    if case.daily_limit:
        assert max(waits) >= clock() + timedelta(hours=23)  # until the quota window frees
    counted = {u: refresh_calls(emu, u) for u in names}
    clock.now = max(clock(), quiet_until - timedelta(seconds=1))
    await make_worker(runtime, case.concurrency).run_once()
    assert {u: refresh_calls(emu, u) for u in names} == counted
    clock.now = max([*waits, quiet_until]) + timedelta(seconds=1)
    recovered = await make_worker(runtime, 4).run_once()
    assert recovered.status is CycleStatus.OK, recovered.counts
    for aid, account in after.items():
        due = account.state is TokenState.ACTIVE and (
            account.next_attempt_at is not None and account.next_attempt_at <= clock()
        )
        if aid in scene.victims and not case.permanent:
            assert due  # every account that failed for a passing reason is retried
        name = scene.usernames[aid]
        assert refresh_calls(emu, name) == counted[name] + int(due), name
        final = await snapshot(runtime, aid)
        if account.state is TokenState.NEEDS_RECONNECT:
            assert final.state is TokenState.NEEDS_RECONNECT  # never retried automatically
            continue
        assert (final.state, final.failures_in_row, final.last_error_code) == (
            TokenState.ACTIVE,
            0,
            None,
        )
        if due:
            # The kept refresh token was good all along: eBay accepts it once the fault is gone.
            assert final.access_expires_at == clock() + timedelta(seconds=7200)
            assert refresh_fingerprint(runtime, final) == scene.fingerprints[aid]
    token = await runtime.refresher.get_access_token(scene.worker_ids[0])
    assert looks_like_ebay_token(token.access_token)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_slow_answer_within_the_timeout_is_a_success(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    ids = [await connect(runtime, emu, f"slow_{i}", due=True) for i in range(WORKER_ACCOUNTS)]
    od = await connect(runtime, emu, "slow_od", due=False)
    emu.set_faults(Faults(latency_ms=int(HTTP_TIMEOUT_S * 1000) // 3))
    report = await make_worker(runtime, 4).run_once()
    assert (report.counts.refreshed, report.counts.failed, report.status) == (
        WORKER_ACCOUNTS,
        0,
        CycleStatus.OK,
    )
    token = await runtime.refresher.get_access_token(od)
    assert token.expires_at == clock() + timedelta(seconds=7200)
    for aid in [*ids, od]:
        account = await snapshot(runtime, aid)
        assert (account.state, account.failures_in_row) == (TokenState.ACTIVE, 0)
        assert refresh_calls(emu, account.ebay_username) == 1


# invalid_client: the application, not the accounts ------------------------------------------


def reject_application(emu: Emulator, runtime: Runtime, secret: str) -> None:
    """Re-register the keyset under another secret: eBay now refuses the one in our settings
    (exactly what a wrong EBAY_CONNECTOR_CLIENT_SECRET looks like from our side)."""
    emu.register_app(
        client_id=runtime.settings.app_client_id,
        client_secret=secret,
        ru_name=runtime.settings.app_ru_name,
        accept_url=runtime.settings.callback_url,
    )


def inspect_runtime(database: DatabaseTarget, runtime: Runtime) -> dict[str, object]:
    """`ebay-connector inspect runtime --json`, the real command, on the test's SQLite file."""
    env = {
        "EBAY_CONNECTOR_DATABASE_URL": database.url,
        "EBAY_CONNECTOR_KEY_FILE": str(runtime.settings.key_file),
    }
    done = in_thread(CliRunner().invoke, cli.app, ["inspect", "runtime", "--json"], env=env)
    assert done.exit_code == 0, done.output
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


async def test_invalid_client_stops_the_cycle_and_marks_no_account(
    runtime: Runtime,
    emulator: tuple[Emulator, str],
    clock: FakeClock,
    database: DatabaseTarget,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong client secret is an application-wide failure: no account becomes
    needs_reconnect, the cycle stops after the first answer, and everything says why."""
    emu, _ = emulator
    accounts = 12
    ids = [await connect(runtime, emu, f"app_{i:02d}", due=True) for i in range(accounts)]
    od = await connect(runtime, emu, "app_od", due=False)
    before = {aid: await snapshot(runtime, aid) for aid in [*ids, od]}
    status, _ = await readyz(runtime)
    assert status == 200
    reject_application(emu, runtime, "rotated-on-ebay")
    worker = make_worker(runtime, 2)

    with caplog.at_level(logging.INFO, logger="ebay_connector.service.worker"):
        report = await worker.run_once()
    c = report.counts
    # At most one batch was in flight when eBay first said invalid_client; nothing after it.
    sent = emu.calls.count(endpoint="token", grant_type="refresh_token")
    assert 1 <= sent <= 2
    assert c.claimed == c.failed == c.configuration == sent
    assert c.needs_reconnect == 0 and c.refreshed == 0
    assert c.deferred_config == accounts - sent
    assert c.outcomes == {"invalid_client": sent}
    assert report.status is CycleStatus.ERROR
    assert report.error == APP_CREDENTIALS_REJECTED
    rejected_logs = [
        r for r in caplog.records if getattr(r, "event", None) == "worker.app_rejected"
    ]
    assert [r.levelno for r in rejected_logs] == [logging.ERROR]
    beat = (await runtime.heartbeats.all())[0]
    assert (beat.status, beat.last_error) == ("error", APP_CREDENTIALS_REJECTED)
    assert beat.app_credentials is AppCredentials.REJECTED
    assert beat.counts["deferred_config"] == accounts - sent

    # No account is blamed: all stay active with their tokens untouched.
    for aid in [*ids, od]:
        account = await snapshot(runtime, aid)
        assert (account.state, account.state_reason) == (TokenState.ACTIVE, None)
        assert account.refresh_token_ciphertext == before[aid].refresh_token_ciphertext
        assert account.access_token_ciphertext == before[aid].access_token_ciphertext

    # A program gets a clear error that names the configuration, not a reconnect, and inside
    # the cooldown that answer costs no eBay call (the worker just heard it for everyone).
    for _ in range(3):
        with pytest.raises(RefreshFailed) as failed:
            await runtime.refresher.get_access_token(od)
        assert failed.value.code == "invalid_client"
        assert APP_CREDENTIALS_REJECTED in failed.value.message
    assert refresh_calls(emu, "app_od") == 0
    assert (await snapshot(runtime, od)).state is TokenState.ACTIVE

    status, ready = await readyz(runtime)
    assert status == 503
    assert ready["checks"]["ebay"] == f"invalid_client: {APP_CREDENTIALS_REJECTED}"
    if database.backend == "sqlite":
        doc = inspect_runtime(database, runtime)
        beats = doc["heartbeats"]
        assert isinstance(beats, list)
        assert beats[0]["reported_status"] == "error"
        assert beats[0]["last_error"] == APP_CREDENTIALS_REJECTED
        by_state = doc["accounts_by_state"]
        assert isinstance(by_state, dict) and by_state.get("needs_reconnect", 0) == 0

    # The next cycle probes with one account instead of burning a batch per cycle.
    clock.advance(minutes=1)
    sent = emu.calls.count(endpoint="token", grant_type="refresh_token")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ebay_connector.service.worker"):
        second = await worker.run_once()
    assert emu.calls.count(endpoint="token", grant_type="refresh_token") == sent + 1
    assert (second.counts.claimed, second.status) == (1, CycleStatus.ERROR)
    assert (
        len([r for r in caplog.records if getattr(r, "event", None) == "worker.app_rejected"]) == 1
    )
    assert (await runtime.heartbeats.all())[0].app_credentials is AppCredentials.REJECTED

    # Fixed on eBay's side (or in the settings): the probe succeeds and the cycle goes wide.
    reject_application(emu, runtime, runtime.settings.app_client_secret)
    clock.advance(hours=2)  # past every backoff
    third = await worker.run_once()
    assert third.status is CycleStatus.OK
    assert third.counts.refreshed == accounts
    assert looks_like_ebay_token((await runtime.refresher.get_access_token(od)).access_token)
    status, ready = await readyz(runtime)
    assert status == 200 and ready["checks"]["ebay"] == "ok (emulator)"
    beat = (await runtime.heartbeats.all())[0]
    assert (beat.last_error, beat.app_credentials) == (None, AppCredentials.ACCEPTED)


def heartbeat(
    instance: str,
    at: FakeClock,
    credentials: AppCredentials | None,
    last_error: str | None,
    *,
    minutes_ago: int = 0,
) -> HeartbeatRow:
    """A worker's heartbeat as another process (a worker elsewhere) would have written it."""
    when = at() - timedelta(minutes=minutes_ago)
    return HeartbeatRow(
        instance_id=instance,
        host="elsewhere",
        pid=1,
        version="v",
        started_at=when,
        interval_seconds=60,
        last_cycle_started_at=when,
        last_cycle_finished_at=when,
        status="error" if last_error else "ok",
        counts={"refreshed": 0 if credentials is AppCredentials.REJECTED else 3},
        last_error=last_error,
        app_credentials=credentials,
        cycles=1,
        updated_at=when,
    )


async def test_readiness_reads_a_workers_flag_not_its_message(
    runtime: Runtime, clock: FakeClock
) -> None:
    """A web process without a worker of its own learns eBay's word from the heartbeats: from
    their typed app_credentials flag, whatever their human message says."""
    assert runtime.refresher.app_credentials is None  # no word of its own
    beats = runtime.heartbeats
    # The message alone (an older writer, or a reworded one) decides nothing.
    await beats.save(heartbeat("w1", clock, None, APP_CREDENTIALS_REJECTED))
    assert (await readyz(runtime))[0] == 200
    # The flag decides, whatever the message says.
    await beats.save(heartbeat("w1", clock, AppCredentials.REJECTED, "reworded for people"))
    status, ready = await readyz(runtime)
    assert status == 503
    assert ready == {
        "status": "not_ready",
        "checks": {
            "keyring": f"ok ({len(runtime.keys.ring.key_ids)} keys)",
            "database": "ok",
            "ebay": f"invalid_client: {APP_CREDENTIALS_REJECTED}",
        },
    }
    assert (await beats.all())[0].app_credentials is AppCredentials.REJECTED
    # A newer acceptance by another worker is the last word; a stale rejection is none.
    clock.advance(seconds=30)
    await beats.save(heartbeat("w2", clock, AppCredentials.ACCEPTED, None))
    assert (await readyz(runtime))[0] == 200
    await beats.delete("w2")
    await beats.save(heartbeat("w1", clock, AppCredentials.REJECTED, None, minutes_ago=10))
    assert (await readyz(runtime))[0] == 200


async def test_invalid_client_on_demand_alone_fails_readiness_until_a_success(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    """A process without a worker (serve --no-worker) learns it from its own on-demand calls."""
    emu, _ = emulator
    first = await connect(runtime, emu, "ondemand_a", due=False)
    second = await connect(runtime, emu, "ondemand_b", due=False)
    reject_application(emu, runtime, "wrong")
    with pytest.raises(RefreshFailed) as failed:
        await runtime.refresher.get_access_token(first)
    assert failed.value.code == "invalid_client"
    assert refresh_calls(emu, "ondemand_a") == 1
    assert (await readyz(runtime))[0] == 503
    # Another account inside the cooldown: the same clear answer, no second call to eBay.
    with pytest.raises(RefreshFailed) as again:
        await runtime.refresher.get_access_token(second)
    assert again.value.code == "invalid_client"
    assert refresh_calls(emu, "ondemand_b") == 0
    reject_application(emu, runtime, runtime.settings.app_client_secret)
    clock.advance(seconds=runtime.settings.on_demand_cooldown_seconds + 1)
    assert (await readyz(runtime))[0] == 503  # still the last word until a call succeeds
    token = await runtime.refresher.get_access_token(second)
    assert looks_like_ebay_token(token.access_token)
    assert (await readyz(runtime))[0] == 200
    assert (await snapshot(runtime, first)).state is TokenState.ACTIVE
