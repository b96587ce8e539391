"""Two `ebay-connector serve` processes and a worker process on one PostgreSQL database never
send more refresh grants than eBay's daily limit, however many token requests race for the last
places (the emulator counts the calls, over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from ebay_connector import settings
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.emulator import Emulator, EmulatorServer, Faults
from ebay_connector.runtime import open_runtime
from tests.acceptance.test_crash import ServerProcess, free_port, server_env
from tests.acceptance.test_demo_cli import CLI
from tests.acceptance.test_worker_process import worker_env
from tests.conftest import postgres_database
from tests.helpers import seed_account

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres]

LIMIT = 10
USED_BEFORE = 7
RACING = 40
DUE = 4


@pytest.fixture
def fresh_database() -> Iterator[str]:
    with postgres_database("ebc_quota", migrated=True) as url:
        yield url


async def test_two_servers_and_a_worker_never_pass_the_daily_limit(
    fresh_database: str, tmp_path: Path
) -> None:
    emu = Emulator(seed=9)
    emu.register_app(
        settings.EMULATOR_CLIENT_ID,
        settings.EMULATOR_CLIENT_SECRET,
        settings.EMULATOR_RU_NAME,
        "http://127.0.0.1:9/cb",
    )
    key_file = tmp_path / "keyring.json"
    limit = {"EBAY_CONNECTOR_DAILY_REFRESH_LIMIT": str(LIMIT)}
    with EmulatorServer(emu) as server:
        conf = settings.load(
            _env_file=None,
            database_url=fresh_database,
            emulator_url=server.base_url,
            key_file=key_file,
            daily_refresh_limit=LIMIT,
        )
        async with open_runtime(conf) as runtime:
            org = await runtime.store.create_organization("processes")
            _, key = await ApiKeys(runtime.db).create(org, "sync", can_read_tokens=True)
            now = runtime.clock()
            ids = [
                (
                    await seed_account(
                        runtime,
                        emu,
                        org,
                        f"racing_{i:03d}",
                        access_expires_at=now - timedelta(minutes=1),
                        next_attempt_at=None,
                    )
                )[0]
                for i in range(USED_BEFORE + RACING)
            ]
            for i in range(DUE):  # the worker's share: due now, up to the reserve (8 of 10)
                await seed_account(
                    runtime,
                    emu,
                    org,
                    f"due_{i}",
                    access_expires_at=now - timedelta(minutes=1),
                    next_attempt_at=now - timedelta(seconds=5),
                )
            for account_id in ids[:USED_BEFORE]:  # seven of ten places taken, by this process
                await runtime.refresher.get_access_token(account_id)
            before = emu.calls.count(grant_type="refresh_token")
            assert before == USED_BEFORE
        # Slow answers: the racing calls overlap in flight, across processes.
        emu.set_faults(Faults(latency_ms=300))
        servers = [
            ServerProcess(
                server_env(fresh_database, server.base_url, key_file, free_port(), **limit),
                tmp_path / f"serve-{n}.log",
                worker=False,
            ).start()
            for n in range(2)
        ]
        worker_log = (tmp_path / "worker.log").open("wb")
        env = worker_env(fresh_database, server.base_url, key_file) | limit
        worker = subprocess.Popen(
            [CLI, "worker"], env=env, stdout=worker_log, stderr=subprocess.STDOUT
        )
        try:
            for process in servers:
                await process.wait_healthy()
            racing = ids[USED_BEFORE:]
            headers = {"Authorization": f"Bearer {key}"}
            clients = [httpx.AsyncClient(base_url=s.base_url, timeout=60) for s in servers]
            try:
                answers = await asyncio.gather(
                    *(
                        clients[n % 2].get(f"/api/v1/accounts/{i}/access-token", headers=headers)
                        for n, i in enumerate(racing)
                    )
                )
            finally:
                for client in clients:
                    await client.aclose()
            await asyncio.sleep(2)  # the worker's first cycle has run meanwhile
        finally:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(30)
            worker_log.close()
            for process in servers:
                process.stop()
        sent = emu.calls.count(grant_type="refresh_token") - before
        served = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert sent <= LIMIT - USED_BEFORE, (sent, [s.log_tail() for s in servers])
        assert 1 <= len(served) <= sent
        for answer in refused:
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "quota_exhausted"
            assert int(answer.headers["retry-after"]) >= 1
