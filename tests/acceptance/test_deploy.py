"""The deployment files run as written: the Procfile's lines and the systemd units' ExecStart=
lines, started exactly as a platform or systemd would start them, against a fresh PostgreSQL
database, with the environment of deploy/ebay-connector.env.example.

Only what cannot be the same here is replaced: the installed command's directory becomes this
virtualenv's, and the example environment's database, eBay keyset and key ring become a fresh
database, the emulator (on loopback, standing in for eBay) and a freshly generated key ring.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ebay_connector import settings
from ebay_connector.emulator import Emulator, EmulatorServer
from ebay_connector.keys import crypto
from ebay_connector.runtime import Runtime, open_runtime
from tests.acceptance.test_demo_cli import free_port
from tests.conftest import postgres_database
from tests.helpers import seed_due_accounts

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"
UNITS = ROOT / "deploy" / "systemd"
ENV_EXAMPLE = ROOT / "deploy" / "ebay-connector.env.example"
INSTALLED_BIN = "/opt/ebay-connector/venv/bin/"  # where the units expect the install
VENV_BIN = str(Path(sys.executable).parent) + "/"
WORKERS = 2
ACCOUNTS = 4
DEADLINE_S = 60


def procfile() -> dict[str, str]:
    """The Procfile's process types and their command lines."""
    types = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            types[name.strip()] = command.strip()
    return types


def exec_start(unit: str) -> list[str]:
    """The unit's ExecStart= command line, split as systemd splits it, from this virtualenv."""
    lines = [
        line.removeprefix("ExecStart=")
        for line in (UNITS / unit).read_text().splitlines()
        if line.startswith("ExecStart=")
    ]
    assert len(lines) == 1, f"{unit}: expected one ExecStart= line"
    argv = shlex.split(lines[0])
    assert argv[0].startswith(INSTALLED_BIN), argv
    return [VENV_BIN + argv[0].removeprefix(INSTALLED_BIN), *argv[1:]]


def example_environment() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_deployment_files_agree_with_the_product() -> None:
    """Every variable of the example is a real setting, and both the Procfile and the units run
    the same three commands."""
    known = {settings.ENV_PREFIX + name.upper() for name in settings.Settings.model_fields}
    assert set(example_environment()) - known == set()
    assert procfile() == {
        "release": "ebay-connector db upgrade",
        "web": "EBAY_CONNECTOR_HOST=${EBAY_CONNECTOR_HOST:-0.0.0.0} "
        "EBAY_CONNECTOR_PORT=${PORT:-8000} ebay-connector serve --no-worker",
        "worker": "ebay-connector worker",
    }
    assert exec_start("ebay-connector-migrate.service")[1:] == ["db", "upgrade"]
    assert exec_start("ebay-connector-web.service")[1:] == ["serve", "--no-worker"]
    assert exec_start("ebay-connector-worker@.service")[1:] == ["worker"]
    for unit in UNITS.iterdir():
        text = unit.read_text()
        assert "EnvironmentFile=/etc/ebay-connector/ebay-connector.env" in text, unit.name


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new PostgreSQL database without a schema (the release step creates it)."""
    with postgres_database("ebc_deploy", migrated=False) as url:
        yield url


@dataclass(frozen=True)
class Site:
    url: str  # the database
    emulator: Emulator
    env: dict[str, str]
    port: int
    conf: settings.Settings


@pytest.fixture
def site(empty_database: str, tmp_path: Path) -> Iterator[Site]:
    """The example environment, pointed at a fresh database and the emulator on loopback."""
    emu = Emulator(seed=11)
    emu.register_app(
        settings.EMULATOR_CLIENT_ID,
        settings.EMULATOR_CLIENT_SECRET,
        settings.EMULATOR_RU_NAME,
        "http://127.0.0.1:9/cb",
    )
    port = free_port()
    keys = crypto.format_key("k1", crypto.generate_key())
    fingerprint_key = crypto.format_key("fp", crypto.generate_key()).removeprefix("fp:")
    with EmulatorServer(emu) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(settings.ENV_PREFIX)}
        env.update(example_environment())
        # No eBay here: the emulator's own demo application instead of the example's keyset.
        for name in ("CLIENT_ID", "CLIENT_SECRET", "RU_NAME"):
            env.pop(settings.ENV_PREFIX + name)
        overrides = {
            "DATABASE_URL": empty_database,
            "DATABASE_POOL_SIZE": "4",  # the test server is shared
            "EBAY_ENVIRONMENT": "emulator",
            "EMULATOR_URL": server.base_url,
            "TOKEN_KEYS": keys,
            "FINGERPRINT_KEY": fingerprint_key,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKER_CONCURRENCY": "4",
        }
        env.update({settings.ENV_PREFIX + k: v for k, v in overrides.items()})
        env["PORT"] = str(port)  # what a platform gives its `web` process
        # Where a platform's buildpack or the install puts the command.
        env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
        conf = settings.load(
            _env_file=None,
            database_url=empty_database,
            emulator_url=server.base_url,
            token_keys=keys,
            fingerprint_key=fingerprint_key,
        )
        yield Site(empty_database, emu, env, port, conf)


class Processes:
    def __init__(self, site: Site, logs: Path) -> None:
        self.site = site
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(
            command,
            env=self.site.env,
            cwd=self.logs,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, signalled as a whole
        )
        log.close()

    def alive(self) -> None:
        for name, process in self.running.items():
            assert process.poll() is None, f"{name} exited: {self.log(name)}"

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> dict[str, int | None]:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in self.running.items():
            try:
                codes[name] = process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[name] = None
        return codes


def release(site: Site, command: list[str], logs: Path) -> None:
    done = subprocess.run(
        command, env=site.env, cwd=logs, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def check_site(site: Site, seed: Runtime, accounts: list[int], processes: Processes) -> None:
    """Health, readiness, one heartbeat per worker, every due account refreshed, SIGTERM."""
    base = f"http://127.0.0.1:{site.port}"
    deadline = time.monotonic() + DEADLINE_S
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            processes.alive()
            try:
                health = await http.get(f"{base}/healthz")
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, processes.log("web")
            await asyncio.sleep(0.2)
        assert health.json()["status"] == "ok"
        ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"

    while True:
        processes.alive()
        beats = await seed.heartbeats.all()
        # A connected account already has a last success (its connect); what proves the
        # workers ran is a refresh of their own: one attempt per account, written by a worker.
        done = [a for a in await seed.store.accounts() if a.last_attempt_at is not None]
        if len(beats) == WORKERS and len(done) == len(accounts):
            break
        assert time.monotonic() < deadline, (beats, processes.log("worker.1"))
        await asyncio.sleep(0.2)
    assert len({beat.instance_id for beat in beats}) == WORKERS
    attempts = [a for acc in accounts for a in await seed.journal.attempts(acc)]
    scheduled = Counter(a.account_id for a in attempts if a.trigger == "scheduled")
    assert scheduled == Counter(accounts)
    assert all(a.outcome == "ok" for a in attempts if a.trigger == "scheduled")
    assert site.emulator.calls.count(grant_type="refresh_token", status=200) == ACCOUNTS

    codes = await asyncio.to_thread(processes.stop)
    assert codes == dict.fromkeys(processes.running, 0), {n: processes.log(n) for n in codes}
    assert await seed.heartbeats.all() == []  # the workers unregistered
    assert [a for a in await seed.store.accounts() if a.lease_owner is not None] == []


async def test_procfile_runs_release_web_and_workers_on_postgresql(
    site: Site, tmp_path: Path
) -> None:
    """`release`, then one `web` and two `worker` processes, each line run by `bash -c` as
    Heroku-style platforms run it (bash then execs the command, so SIGTERM reaches it and its
    exit code is the process's), with `PORT` given to web."""
    types = procfile()
    await asyncio.to_thread(release, site, ["bash", "-c", types["release"]], tmp_path)
    processes = Processes(site, tmp_path)
    try:
        async with open_runtime(site.conf) as seed:
            accounts = await seed_due_accounts(seed, site.emulator, ACCOUNTS, "deploy")
            processes.start("web", ["bash", "-c", types["web"]])
            for n in range(1, WORKERS + 1):
                processes.start(f"worker.{n}", ["bash", "-c", types["worker"]])
            await check_site(site, seed, accounts, processes)
    finally:
        await asyncio.to_thread(processes.stop)


async def test_systemd_units_run_migrations_web_and_worker_replicas_on_postgresql(
    site: Site, tmp_path: Path
) -> None:
    """ebay-connector-migrate, ebay-connector-web and ebay-connector-worker@1/@2: their
    ExecStart= command lines, with the example EnvironmentFile."""
    await asyncio.to_thread(release, site, exec_start("ebay-connector-migrate.service"), tmp_path)
    processes = Processes(site, tmp_path)
    try:
        async with open_runtime(site.conf) as seed:
            accounts = await seed_due_accounts(seed, site.emulator, ACCOUNTS, "deploy")
            processes.start("web", exec_start("ebay-connector-web.service"))
            for n in range(1, WORKERS + 1):
                processes.start(f"worker.{n}", exec_start("ebay-connector-worker@.service"))
            await check_site(site, seed, accounts, processes)
    finally:
        await asyncio.to_thread(processes.stop)
