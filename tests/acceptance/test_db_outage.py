"""Database outage: ``ebay-connector serve`` (API + in-process worker) reaches PostgreSQL through a
proxy the test cuts and restores (the machine's PostgreSQL itself is never stopped).

While the database is gone, under load (token API requests in a loop, accounts due): the process
stays up, ``/healthz`` answers 200, ``/readyz`` answers 503 ``not_ready`` promptly, the token API
keeps serving the tokens it served before (still valid for an hour and more) from its memory,
and answers 503 ``store_unavailable`` with ``Retry-After`` for an account it never served (never
a 500). Once the proxy lets connections through again the
work resumes by itself (ready, the due accounts refreshed, the heartbeat written) and nothing is
half-written. Every wait polls for an observed state; nothing depends on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from ebay_connector import settings
from ebay_connector.core.clock import utcnow
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime, open_runtime
from tests.acceptance import test_worker_process as process_tests
from tests.acceptance.test_crash import (
    ServerProcess,
    check_invariants,
    free_port,
    poll,
    server_env,
)
from tests.helpers import seed_due_accounts
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres]

fresh_database = process_tests.fresh_database
slow_emulator = process_tests.slow_emulator

ACCOUNTS = 8
READY_TIMEOUT_S = 10.0  # /readyz must answer within this even while the database is gone


@dataclass
class Load:
    """The token API, asked in a loop; answers counted by phase and status/code."""

    phase: str = "before"
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    slowest_s: float = 0.0

    def seen(self, phase: str, what: str) -> int:
        return self.answers[(phase, what)]

    def statuses(self) -> set[str]:
        return {what for (_, what) in self.answers}


async def token_load(base_url: str, key: str, ids: list[int], load: Load) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0) as client:
        i = 0
        while True:
            started = time.monotonic()
            try:
                answer = await client.get(f"/api/v1/accounts/{ids[i % len(ids)]}/access-token")
                what = str(answer.status_code)
                if answer.status_code != 200:
                    what += " " + answer.json()["error"]["code"]
            except httpx.TransportError as exc:
                what = f"transport {exc.__class__.__name__}"
            load.slowest_s = max(load.slowest_s, time.monotonic() - started)
            load.answers[(load.phase, what)] += 1
            i += 1
            await asyncio.sleep(0.02)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy() as running:
        yield running


@pytest.mark.parametrize("blackhole", [False, True], ids=["refused", "blackholed"])
async def test_database_outage_under_load_is_survived_and_work_resumes(
    fresh_database: str,
    slow_emulator: tuple[Emulator, str],
    proxy: TcpProxy,
    tmp_path: Path,
    blackhole: bool,
) -> None:
    emu, emulator_url = slow_emulator
    key_file = tmp_path / "keyring.json"
    port = free_port()
    env = server_env(
        proxy.url(fresh_database),
        emulator_url,
        key_file,
        port,
        EBAY_CONNECTOR_WORKER_INTERVAL_SECONDS="1",
    )
    conf = settings.load(
        _env_file=None, database_url=fresh_database, emulator_url=emulator_url, key_file=key_file
    )
    server = ServerProcess(env, tmp_path / "serve.log", worker=True)
    loader: asyncio.Task[None] | None = None
    async with open_runtime(conf) as runtime:  # straight to PostgreSQL, not through the proxy
        *ids, unserved = await seed_due_accounts(runtime, emu, ACCOUNTS + 1, "outage")
        org_id = await runtime.store.organization_id("outage org")
        assert org_id is not None
        _, key = await ApiKeys(runtime.db).create(org_id, "load", can_read_tokens=True)
        server.start()
        try:
            await server.wait_healthy()
            await poll(lambda: _all_refreshed(runtime, since=None), "the first refreshes")
            load = Load()
            loader = asyncio.create_task(token_load(server.base_url, key, ids, load))
            # Round robin: every held account served once before the cut.
            await poll(lambda: _true(load.seen("before", "200") >= len(ids)), "token answers")
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as probe:
                assert (await probe.get("/readyz")).status_code == 200

                load.phase = "cut"
                cut_at = utcnow()
                proxy.cut(blackhole=blackhole)
                for account_id in [*ids, unserved]:  # due while the database is gone
                    await runtime.store.reschedule(account_id, cut_at)

                async def not_ready() -> bool:
                    started = time.monotonic()
                    answer = await probe.get("/readyz")
                    assert time.monotonic() - started < READY_TIMEOUT_S, "readyz hung"
                    assert (await probe.get("/healthz")).status_code == 200
                    return answer.status_code == 503 and answer.json()["status"] == "not_ready"

                await poll(not_ready, "/readyz to say not ready")
                body = (await probe.get("/readyz")).json()
                assert body["checks"]["database"] == "store_unavailable", body
                # What this process served before the cut, it serves from memory through it.
                await poll(
                    lambda: _true(load.seen("cut", "200") >= 3),
                    "the token API to serve held tokens through the outage",
                )
                never_served = await probe.get(
                    f"/api/v1/accounts/{unserved}/access-token",
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert never_served.status_code == 503
                assert never_served.json()["error"]["code"] == "store_unavailable"
                assert int(never_served.headers["retry-after"]) > 0
                await poll(
                    lambda: _true("worker.cycle" in server.log_tail(200) and _cycle_failed(server)),
                    "a worker cycle to fail on the database",
                )
                assert server.alive()

                load.phase = "restored"
                restored_at = utcnow()
                proxy.restore()

                async def ready() -> bool:
                    return (await probe.get("/readyz")).status_code == 200

                await poll(ready, "/readyz to be ready again")
                await poll(
                    lambda: _all_refreshed(runtime, since=cut_at), "the due accounts refreshed"
                )
                await poll(lambda: _beat_since(runtime, restored_at), "a heartbeat after restore")
                await poll(
                    lambda: _true(load.seen("restored", "200") >= 5), "token answers after restore"
                )
        finally:
            if loader is not None:
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            code = server.stop()
        assert code == 0, server.log_tail()
        assert not any(what.startswith("500") for what in load.statuses()), load.answers
        assert load.seen("before", "200") and load.seen("restored", "200")
        # Every answer for a held account during the cut was its token, never an error.
        assert {what for (phase, what) in load.answers if phase == "cut"} == {"200"}, load.answers
        final = await check_invariants(runtime, emu)
        assert final.failures() == {}, final
        assert "Traceback" not in server.log_tail(2000), server.log_tail(2000)


async def _true(value: bool) -> bool:
    return value


def _cycle_failed(server: ServerProcess) -> bool:
    tail = server.log_tail(400)
    return any(
        ("worker.cycle " in line and "status=error" in line) or "worker.cycle_failed" in line
        for line in tail.splitlines()
    )


async def _all_refreshed(runtime: Runtime, since: datetime | None) -> bool:
    accounts = await runtime.store.accounts()
    return all(
        a.lease_owner is None
        and a.failures_in_row == 0
        and a.last_success_at is not None
        and (since is None or a.last_success_at > since)
        for a in accounts
    )


async def _beat_since(runtime: Runtime, when: datetime) -> bool:
    beats = await runtime.heartbeats.all()
    return any(b.updated_at > when for b in beats)
