"""Crashes: a real ``ebay-connector worker`` SIGKILLed at a seeded point of a cycle, and the real
API process SIGKILLed during a connect callback, on a fresh PostgreSQL database.

Afterwards nothing is lost or half-written: every account is refreshed or due again once its lease
expires (another worker then takes it over), no account is refreshed twice for one due window,
every attempt row is complete, every stored token decrypts and is one eBay (the emulator) still
honours. The helpers below (:func:`check_invariants`, :class:`ServerProcess`,
:func:`connect_seller`) are shared with tests/acceptance/test_db_outage.py and bench/soak.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from ebay_connector import settings
from ebay_connector.core.clock import utcnow
from ebay_connector.core.roles import Role
from ebay_connector.db import models as m
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import CryptoError
from ebay_connector.keys.crypto import TokenField
from ebay_connector.runtime import Runtime, open_runtime
from tests.acceptance import test_worker_process as process_tests
from tests.acceptance.test_demo_cli import CLI
from tests.acceptance.test_worker_process import LATENCY_MS, _wait_for_leases, worker_env
from tests.conftest import FakeClock

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres]

# The fixtures of the SIGTERM/SIGKILL tests: a fresh database, the slow emulator, seeded accounts.
fresh_database = process_tests.fresh_database
slow_emulator = process_tests.slow_emulator
seeded = process_tests.seeded

ADMIN_EMAIL = "crash-admin@example.test"
ADMIN_PASSWORD = "crash-admin-password-1"
POLL_S = 0.05
DEADLINE_S = 60.0


# ------------------------------------------------------------------------------ invariants


@dataclass(frozen=True)
class Invariants:
    """What a crash or an outage must not cost; every field but the last two must be 0."""

    accounts: int
    accounts_lost: int  # gone, not active, or neither holding a valid token nor scheduled
    tokens_lost: int  # a stored token that does not decrypt or that eBay no longer honours
    double_refreshes: int  # two applied refreshes that started from the same token
    stuck_attempts: int  # incomplete attempt rows + leases held past their expiry
    half_written: int  # an account without its token row, an exchange without its attempt
    unrecorded_ebay_calls: int  # eBay answered a refresh the crash kept us from recording
    leased_now: int  # leases still running (not yet expired)

    def failures(self) -> dict[str, int]:
        keys = ("accounts_lost", "tokens_lost", "double_refreshes", "stuck_attempts")
        return {k: v for k, v in asdict(self).items() if k in (*keys, "half_written") and v}


async def _scalar(runtime: Runtime, statement: Any) -> int:
    async with runtime.db.read() as conn:
        return int((await conn.execute(statement)).scalar_one())


def emulator_honours(emu: Emulator, username: str, refresh_token: str) -> bool:
    """Whether eBay (the emulator) still knows this refresh token as ``username``'s grant."""
    _, owner = emu.faults_for(form={"grant_type": "refresh_token", "refresh_token": refresh_token})
    return owner == username


async def check_invariants(
    runtime: Runtime, emu: Emulator, *, usernames: set[str] | None = None
) -> Invariants:
    """Read the database (directly, not through any proxy) and the emulator's records."""
    now = utcnow()
    ring = runtime.keys.ring
    accounts = await runtime.store.accounts()
    lost = tokens_lost = 0
    present = set()
    for account in accounts:
        present.add(account.ebay_username)
        try:
            refresh = ring.decrypt(
                account.refresh_token_ciphertext or "",
                account_id=account.account_id,
                field=TokenField.REFRESH_TOKEN,
            )
            if account.access_token_ciphertext:
                ring.decrypt(
                    account.access_token_ciphertext,
                    account_id=account.account_id,
                    field=TokenField.ACCESS_TOKEN,
                )
            if not emulator_honours(emu, account.ebay_username, refresh):
                tokens_lost += 1
        except CryptoError:
            tokens_lost += 1
        fresh = account.access_expires_at is not None and account.access_expires_at > now
        if account.state.value != "active" or not (fresh or account.next_attempt_at is not None):
            lost += 1
    if usernames is not None:
        lost += len(usernames - present)
    per_start = (
        sa.select(sa.func.count().label("n"))
        .where(m.RefreshAttempt.new_expires_at.is_not(None), m.RefreshAttempt.outcome == "ok")
        .group_by(m.RefreshAttempt.account_id, m.RefreshAttempt.old_expires_at)
        .subquery()
    )
    doubles = await _scalar(
        runtime, sa.select(sa.func.count()).select_from(per_start).where(per_start.c.n > 1)
    )
    incomplete = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.RefreshAttempt)
        .where(sa.or_(m.RefreshAttempt.finished_at.is_(None), m.RefreshAttempt.outcome.is_(None))),
    )
    expired_leases = sum(
        1 for a in accounts if a.lease_owner is not None and (a.lease_until or now) < now
    )
    leased_now = sum(1 for a in accounts if a.lease_owner is not None) - expired_leases
    without_token = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.EbayAccount)
        .outerjoin(m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
        .where(m.EbayToken.account_id.is_(None)),
    )
    # A scheduled refresh's exchange is written in the same transaction as its attempt.
    orphan_exchanges = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.EbayExchange)
        .outerjoin(m.RefreshAttempt, m.RefreshAttempt.exchange_id == m.EbayExchange.id)
        .where(
            m.EbayExchange.trigger == "scheduled",
            m.EbayExchange.account_id.is_not(None),
            m.RefreshAttempt.id.is_(None),
        ),
    )
    recorded = await _scalar(
        runtime,
        sa.select(sa.func.count())
        .select_from(m.EbayExchange)
        .where(m.EbayExchange.action == "refresh_token", m.EbayExchange.status == 200),
    )
    answered = emu.calls.count(grant_type="refresh_token", status=200)
    return Invariants(
        accounts=len(accounts),
        accounts_lost=lost,
        tokens_lost=tokens_lost,
        double_refreshes=doubles,
        stuck_attempts=incomplete + expired_leases,
        half_written=without_token + orphan_exchanges,
        unrecorded_ebay_calls=max(0, answered - recorded),
        leased_now=leased_now,
    )


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``ebay-connector serve`` as a real process on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path, *, worker: bool) -> None:
        self.port = int(env["EBAY_CONNECTOR_PORT"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env, self.log_path, self.worker = env, log, worker
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        argv = [CLI, "serve"] if self.worker else [CLI, "serve", "--no-worker"]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_healthy(self, timeout_s: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise AssertionError(f"the server exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(POLL_S)
        raise AssertionError(f"the server never answered /healthz:\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def server_env(
    database_url: str, emulator_url: str, key_file: Path, port: int, **extra: str
) -> dict[str, str]:
    env = worker_env(database_url, emulator_url, key_file)
    env.update(
        EBAY_CONNECTOR_HOST="127.0.0.1",
        EBAY_CONNECTOR_PORT=str(port),
        EBAY_CONNECTOR_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    env.update(extra)
    return env


async def admin_session(base_url: str) -> httpx.AsyncClient:
    """A signed-in admin session (cookie + CSRF header)."""
    session = httpx.AsyncClient(base_url=base_url, timeout=30.0)
    login = await session.post(
        "/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert login.status_code == 200, login.text
    session.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    return session


async def consent(session: httpx.AsyncClient, username: str) -> dict[str, str]:
    """/connect → eBay's consent page (agree); returns the callback's query (code, state)."""
    start = await session.post("/api/ebay/connect", follow_redirects=False)
    assert start.status_code == 303, start.text
    page = urlsplit(start.headers["location"])
    query = {k: v[0] for k, v in parse_qs(page.query).items()}
    async with httpx.AsyncClient(timeout=30.0) as browser:
        agreed = await browser.post(
            f"{page.scheme}://{page.netloc}{page.path}",
            data={**query, "username": username, "decision": "agree"},
        )
    assert agreed.status_code == 302, agreed.text
    back = parse_qs(urlsplit(agreed.headers["location"]).query)
    return {"code": back["code"][0], "state": back["state"][0]}


async def connect_seller(session: httpx.AsyncClient, username: str) -> httpx.Response:
    """The whole connect flow; the callback's answer."""
    return await session.get("/api/ebay/callback", params=await consent(session, username))


async def create_admin(runtime: Runtime, organization: str) -> int:
    org_id = await runtime.store.create_organization(organization)
    await Users(runtime.db).create(org_id, ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD)
    return org_id


async def poll(predicate: Any, what: str, timeout_s: float = DEADLINE_S) -> None:
    """Wait until ``await predicate()`` is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------- worker crash

# Kill points 0.71 s, 1.36 s, 1.64 s after the first claim: first wave in flight, first wave
# finishing, second wave in flight.
WORKER_SEEDS = [3, 11, 29]
CYCLE_S = 2 * LATENCY_MS / 1000  # two waves of refreshes (6 accounts, concurrency 4)


@pytest.mark.parametrize("seed", WORKER_SEEDS)
async def test_sigkill_at_a_seeded_point_of_a_cycle_loses_and_doubles_nothing(
    seeded: tuple[Runtime, Emulator, dict[str, str]], tmp_path: Path, seed: int
) -> None:
    runtime, emu, env = seeded
    usernames = {a.ebay_username for a in await runtime.store.accounts()}
    delay = random.Random(seed).uniform(0.0, CYCLE_S)
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen([CLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await _wait_for_leases(runtime, process)
        await asyncio.sleep(delay)  # the seeded kill point; every point must be safe
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()

    after_kill = await check_invariants(runtime, emu, usernames=usernames)
    assert after_kill.failures() == {}, after_kill
    orphaned = {a.account_id for a in await runtime.store.accounts() if a.lease_owner is not None}
    # Every account is either refreshed by the killed worker or due again (claimable now, or
    # once the killed worker's lease expires): nothing is parked outside the schedule.
    for account in await runtime.store.accounts():
        refreshed = account.last_success_at is not None and account.failures_in_row == 0
        assert refreshed or account.next_attempt_at is not None, account.account_id

    # A second worker, past the 15 s lease on its clock, takes over and finishes everything.
    emu.clear_faults()
    clock = FakeClock(utcnow() + timedelta(seconds=16))
    async with open_runtime(runtime.settings, clock=clock, rng=random.Random(seed)) as later:
        await later.worker().run_once()
    accounts = await runtime.store.accounts()
    assert all(a.lease_owner is None for a in accounts), "a lease outlived its expiry"
    final = await check_invariants(runtime, emu, usernames=usernames)
    assert final.failures() == {}, final
    assert final.leased_now == 0
    for account in accounts:
        attempts = await runtime.journal.attempts(account.account_id, limit=50)
        applied = [
            a
            for a in attempts
            if a.trigger == "scheduled" and a.outcome == "ok" and a.new_expires_at is not None
        ]
        assert len(applied) == 1, (account.account_id, attempts)
        # eBay answered at most one call the crash kept us from recording, and only for an
        # account the killed worker held.
        answered = emu.calls.count(
            grant_type="refresh_token", status=200, username=account.ebay_username
        )
        lost_calls = answered - len(applied)
        assert lost_calls in ((0, 1) if account.account_id in orphaned else (0,)), account


# --------------------------------------------------------------------------- API crash

# Kill points 0.4 s (inside the code exchange) and 1.87 s (inside getUser, the code spent).
API_SEEDS = [1, 5]
EXCHANGE_LATENCY_MS = 1500


@pytest.mark.parametrize("seed", API_SEEDS)
async def test_sigkill_of_the_api_during_a_connect_callback_leaves_no_half_account(
    fresh_database: str,
    slow_emulator: tuple[Emulator, str],
    tmp_path: Path,
    seed: int,
) -> None:
    emu, emulator_url = slow_emulator
    port = free_port()
    key_file = tmp_path / "keyring.json"
    env = server_env(fresh_database, emulator_url, key_file, port)
    conf = settings.load(
        _env_file=None, database_url=fresh_database, emulator_url=emulator_url, key_file=key_file
    )
    emu.register_app(
        settings.EMULATOR_CLIENT_ID,
        settings.EMULATOR_CLIENT_SECRET,
        settings.EMULATOR_RU_NAME,
        f"http://127.0.0.1:{port}/api/ebay/callback",
    )
    server = ServerProcess(env, tmp_path / "serve.log", worker=False)
    async with open_runtime(conf) as runtime:
        await create_admin(runtime, "crash org")
        server.start()
        try:
            await server.wait_healthy()
            session = await admin_session(server.base_url)
            callback = await consent(session, "seller_killed")
            # The code exchange and getUser each take 1.5 s: the kill lands inside the callback.
            emu.set_faults(Faults(latency_ms=EXCHANGE_LATENCY_MS))
            pending = asyncio.create_task(session.get("/api/ebay/callback", params=callback))

            async def state_consumed() -> bool:
                return await _scalar(runtime, sa.select(sa.func.count(m.ConnectState.nonce))) == 0

            await poll(state_consumed, "the callback to use up its state")
            await asyncio.sleep(random.Random(seed).uniform(0.0, 2 * EXCHANGE_LATENCY_MS / 1000))
            await asyncio.to_thread(server.kill)
            with pytest.raises(httpx.TransportError):
                await pending
            await session.aclose()

            # Either the account exists with tokens eBay honours, or it does not exist at all.
            killed = await check_invariants(runtime, emu)
            assert killed.failures() == {}, killed
            assert killed.accounts in (0, 1)
            assert await _scalar(runtime, sa.select(sa.func.count(m.ConnectState.nonce))) == 0

            emu.clear_faults()
            server = ServerProcess(env, tmp_path / "serve.log", worker=False).start()
            await server.wait_healthy()
            session = await admin_session(server.base_url)
            replay = await session.get("/api/ebay/callback", params=callback)
            assert replay.status_code == 400, replay.text  # the state was used up
            assert replay.json()["error"]["code"] == "invalid_state"
            done = await connect_seller(session, "seller_after")
            assert done.status_code == 200, done.text
            await session.aclose()
            final = await check_invariants(runtime, emu)
            assert final.failures() == {}, final
            names = {a.ebay_username for a in await runtime.store.accounts()}
            assert "seller_after" in names
            assert server.stop() == 0
        finally:
            if server.alive():
                server.kill()
