"""`ebay-connector doctor` as a real process against a deployment on loopback: the real emulator
(eBay), the product's web app (callback and account-deletion endpoint), a real SQLite or
PostgreSQL database, a worker's heartbeat. Each check's ok, and the failures an operator meets:
a wrong secret, a RuName not the app's, the database down, a key missing, no worker, a stale
worker of another version."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ebay_connector import settings
from ebay_connector.core.clock import utcnow
from ebay_connector.db import migrate
from ebay_connector.db import models as m
from ebay_connector.db.heartbeats import HeartbeatRow
from ebay_connector.emulator import Emulator, EmulatorServer
from ebay_connector.keys.crypto import KeyRing, TokenField, token_context
from ebay_connector.runtime import Runtime, open_runtime
from ebay_connector.version import code_version
from ebay_connector.web.app import create_app
from tests.acceptance.test_demo_cli import CLI
from tests.conftest import in_thread, postgres_database
from tests.helpers import bound_socket, seed_account, serve_asgi

pytestmark = pytest.mark.acceptance

DELETION_TOKEN = "doctor-verification-token-0123456789abcdef"
# A hang guard, not a speed test: each check has its own 8 s deadline (a check that ran out
# says "timed out", which the tests would see); the process start on a loaded machine took up
# to 15.6 s here, so the bound only catches a run that waits on something without a deadline.
RUN_LIMIT_S = 60.0
CHECKS = [
    "settings",
    "database",
    "key_ring",
    "credentials",
    "consent",
    "ru_name",
    "callback",
    "account_deletion",
    "workers",
    "clock",
    "quota",
]


@dataclass
class Deployment:
    runtime: Runtime
    emulator: Emulator
    env: dict[str, str]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database another process can open (PostgreSQL: a database of its own)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/doctor.db"
        in_thread(migrate.upgrade, url)
        yield url
        return
    with postgres_database("doctor", migrated=True) as url:
        yield url


@pytest.fixture
def emulator() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(seed=3)
    with EmulatorServer(emu) as server:
        yield emu, server.base_url


@pytest.fixture
async def deployment(
    database_url: str, emulator: tuple[Emulator, str], tmp_path: Path
) -> AsyncIterator[Deployment]:
    """The product serving on loopback, a connected seller, a fresh worker heartbeat."""
    emu, base = emulator
    sock = bound_socket()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    key_file = tmp_path / "keyring.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
    env.update(
        EBAY_CONNECTOR_DATABASE_URL=database_url,
        EBAY_CONNECTOR_EMULATOR_URL=base,
        EBAY_CONNECTOR_KEY_FILE=str(key_file),
        EBAY_CONNECTOR_PUBLIC_URL=public_url,
        EBAY_CONNECTOR_DELETION_VERIFICATION_TOKEN=DELETION_TOKEN,
    )
    conf = settings.load(
        _env_file=None,
        database_url=database_url,
        emulator_url=base,
        key_file=key_file,
        public_url=public_url,
        deletion_verification_token=DELETION_TOKEN,
    )
    emu.register_app(
        conf.app_client_id, conf.app_client_secret, conf.app_ru_name, conf.callback_url
    )
    async with open_runtime(conf) as runtime:
        org = await runtime.store.create_organization("doctor org")
        now = runtime.clock()
        await seed_account(
            runtime,
            emu,
            org,
            "seller1",
            access_expires_at=now + timedelta(hours=2),
            next_attempt_at=now + timedelta(hours=1),
        )
        await beat(runtime, version=code_version(), age=timedelta(0))
        async with serve_asgi(create_app(runtime), sock):
            yield Deployment(runtime, emu, env)


async def beat(runtime: Runtime, *, version: str, age: timedelta) -> None:
    at = utcnow() - age
    await runtime.heartbeats.save(
        HeartbeatRow(
            instance_id=f"worker-{version}",
            host=socket.gethostname(),
            pid=4242,
            version=version,
            started_at=at - timedelta(minutes=5),
            interval_seconds=60,
            last_cycle_started_at=at,
            last_cycle_finished_at=at,
            status="ok",
            counts={},
            last_error=None,
            app_credentials=None,
            cycles=3,
            updated_at=at,
        )
    )


@dataclass(frozen=True)
class Run:
    code: int
    doc: dict[str, Any]
    stdout: str
    stderr: str
    seconds: float

    def check(self, name: str) -> dict[str, str]:
        return next(c for c in self.doc["checks"] if c["name"] == name)

    def status(self, name: str) -> str:
        return self.check(name)["status"]


async def doctor(env: dict[str, str], *args: str, **overrides: str) -> Run:
    """The CLI in its own process while this event loop keeps serving the product."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        CLI,
        "doctor",
        *args,
        env={**env, **overrides},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    seconds = time.monotonic() - started
    assert process.returncode is not None
    text = out.decode()
    doc = json.loads(text) if "--json" in args and text.strip() else {}
    return Run(process.returncode, doc, text, err.decode(), seconds)


async def counts(runtime: Runtime) -> tuple[int, int]:
    async with runtime.db.read() as conn:
        exchanges = (await conn.execute(sa.select(sa.func.count(m.EbayExchange.id)))).scalar_one()
        app_tokens = (
            await conn.execute(sa.select(sa.func.count()).select_from(m.AppToken))
        ).scalar_one()
    return int(exchanges), int(app_tokens)


async def test_a_sound_deployment_passes_every_check_and_changes_nothing(
    deployment: Deployment,
) -> None:
    before = await counts(deployment.runtime)
    run = await doctor(deployment.env, "--json")
    assert run.code == 0, run.stdout + run.stderr
    assert set(run.doc) == {"checks", "ok"} and run.doc["ok"] is True
    assert [c["name"] for c in run.doc["checks"]] == CHECKS
    for check in run.doc["checks"]:
        assert set(check) == {"name", "status", "detail", "remedy"}
        assert check["status"] == "ok", check
    assert run.seconds < RUN_LIMIT_S
    # One client-credentials grant at eBay, nothing written.
    assert deployment.emulator.calls.count(grant_type="client_credentials") == 1
    assert await counts(deployment.runtime) == before
    assert DELETION_TOKEN not in run.stdout + run.stderr


async def test_text_is_one_line_per_check(deployment: Deployment) -> None:
    run = await doctor(deployment.env)
    assert run.code == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", name] for name in CHECKS]


async def test_a_wrong_secret_is_named_invalid_client(deployment: Deployment) -> None:
    secret = "not-the-cert-id-of-this-keyset"
    run = await doctor(deployment.env, "--json", EBAY_CONNECTOR_CLIENT_SECRET=secret)
    assert run.code == 1 and run.doc["ok"] is False
    credentials = run.check("credentials")
    assert credentials["status"] == "fail"
    assert credentials["detail"].startswith("invalid_client")
    assert "EBAY_CONNECTOR_CLIENT_SECRET" in credentials["remedy"]
    assert secret not in run.stdout + run.stderr


async def test_a_runame_not_the_apps(deployment: Deployment) -> None:
    run = await doctor(deployment.env, "--json", EBAY_CONNECTOR_RU_NAME="Someone_Else-RuName")
    assert run.code == 1
    assert run.status("consent") == "fail"
    assert "error page" in run.check("consent")["detail"]
    ru_name = run.check("ru_name")
    assert ru_name["status"] == "fail"
    assert "is not the keyset's" in ru_name["detail"]
    assert f"EBAY_CONNECTOR_RU_NAME={settings.EMULATOR_RU_NAME}" in ru_name["remedy"]


async def test_an_accept_url_elsewhere(deployment: Deployment) -> None:
    emu, conf = deployment.emulator, deployment.runtime.settings
    emu.register_app(
        conf.app_client_id, conf.app_client_secret, conf.app_ru_name, "https://old.example/cb"
    )
    run = await doctor(deployment.env, "--json")
    assert run.code == 1
    assert run.status("consent") == "ok"
    assert run.status("ru_name") == "fail"
    assert "https://old.example/cb" in run.check("ru_name")["detail"]


async def test_a_key_missing_from_the_ring(deployment: Deployment) -> None:
    gone = KeyRing.from_spec("gone:" + "A" * 43)
    ciphertext = gone.seal(
        "v^1.1#i^1#a-token-sealed-elsewhere", context=token_context(1, TokenField.ACCESS_TOKEN)
    )
    async with deployment.runtime.db.transaction() as conn:
        await conn.execute(sa.update(m.EbayToken).values(access_token_ciphertext=ciphertext))
    run = await doctor(deployment.env, "--json")
    assert run.code == 1
    key_ring = run.check("key_ring")
    assert key_ring["status"] == "fail"
    assert "'gone' (1)" in key_ring["detail"]
    full = await doctor(deployment.env, "--json", "--full")
    assert "unknown_key" in full.check("key_ring")["detail"]


async def test_no_worker(deployment: Deployment) -> None:
    async with deployment.runtime.db.transaction() as conn:
        await conn.execute(sa.delete(m.WorkerHeartbeat))
    run = await doctor(deployment.env, "--json")
    assert run.code == 1
    workers = run.check("workers")
    assert workers["status"] == "fail"
    assert "no worker" in workers["detail"]
    assert "ebay-connector worker" in workers["remedy"]


async def test_a_stale_worker_of_another_version(deployment: Deployment) -> None:
    async with deployment.runtime.db.transaction() as conn:
        await conn.execute(sa.delete(m.WorkerHeartbeat))
    await beat(deployment.runtime, version="0.0.1+gdeadbeef0000", age=timedelta(hours=1))
    run = await doctor(deployment.env, "--json")
    assert run.code == 1
    workers = run.check("workers")
    assert workers["status"] == "fail"
    assert "no fresh heartbeat" in workers["detail"]
    assert "0.0.1+gdeadbeef0000" in workers["detail"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("closed-port", id="postgresql-closed-port"),
        pytest.param("missing-file", id="sqlite-missing-file"),
    ],
)
async def test_the_database_down(url: str, emulator: tuple[Emulator, str], tmp_path: Path) -> None:
    """The database check fails; the checks that need it say they could not run."""
    base = emulator[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # closed once the block ends
    database_url = (
        f"postgresql://postgres@127.0.0.1:{closed}/nothing"
        if url == "closed-port"
        else f"sqlite:///{tmp_path}/absent/doctor.db"
    )
    key_file = tmp_path / "keyring.json"
    KeyRing.load_or_create_file(key_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
    env.update(
        EBAY_CONNECTOR_DATABASE_URL=database_url,
        EBAY_CONNECTOR_EMULATOR_URL=base,
        EBAY_CONNECTOR_KEY_FILE=str(key_file),
    )
    run = await doctor(env, "--json")
    assert run.code == 1
    assert run.status("database") == "fail"
    for name in ("key_ring", "workers", "quota"):
        assert run.status(name) == "warn"
        assert run.check(name)["detail"].startswith("not checked")
    assert not (tmp_path / "absent").exists()  # doctor creates no database
    assert run.seconds < RUN_LIMIT_S


async def test_a_configuration_error_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
    env.update(EBAY_CONNECTOR_EBAY_ENVIRONMENT="production")
    run = await doctor(env, "--json")
    assert run.code == 2
    assert run.stderr.strip().startswith("error: config_invalid: EBAY_CONNECTOR_CLIENT_ID")
