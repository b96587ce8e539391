"""`GET /metrics` scraped over real HTTP and parsed with prometheus_client's parser: every metric
is present from the first scrape and moves when its event happens. Also the standalone worker's
`--metrics-port` and `--log-format json`, as real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from ebay_connector.core.exchange import Trigger
from ebay_connector.db import migrate
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.heartbeats import HeartbeatRow
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.service import metrics
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, in_thread, open_test_runtime
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "ebay-connector")
PROCESS_TIMEOUT_S = 60.0
P = "ebay_connector_"

# Families every scrape must carry, as the parser names them (counters lose their `_total`).
EXPECTED_FAMILIES = {
    P + "refreshes": "counter",
    P + "refresh_duration_seconds": "histogram",
    P + "accounts": "gauge",
    P + "due_backlog": "gauge",
    P + "quota_used": "gauge",
    P + "quota_limit": "gauge",
    P + "quota_projected": "gauge",
    P + "quota_projected_exceeded": "gauge",
    P + "token_api_requests": "counter",
    P + "token_api_duration_seconds": "histogram",
    P + "webhook_deliveries": "counter",
    P + "worker_cycle_duration_seconds": "histogram",
    P + "worker_last_success_timestamp_seconds": "gauge",
}


class Scrape:
    """One parsed exposition: family types and every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.label_names: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
                self.label_names.setdefault(sample.name, set()).update(sample.labels)

    def get(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when a labelled child has not been seen yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples


@dataclass
class Served:
    base: str
    runtime: Runtime
    emulator: Emulator
    clock: FakeClock
    organization_id: int
    key: str  # an API key that may read tokens

    async def scrape(self, token: str | None = None) -> Scrape:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            answer = await client.get("/metrics", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        return Scrape(answer.text)

    async def connect(self, username: str) -> int:
        return await connect_seller(self.runtime, self.organization_id, username)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def served(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> AsyncIterator[Served]:
    emu, _ = emulator
    async with serve_asgi(create_app(runtime)) as base:
        org = await runtime.store.create_organization("Metrics org")
        _, key = await ApiKeys(runtime.db).create(org, "sync", can_read_tokens=True)
        yield Served(base, runtime, emu, clock, org, key)


async def test_every_metric_is_present_in_the_first_scrape(served: Served) -> None:
    scrape = await served.scrape()
    for name, kind in EXPECTED_FAMILIES.items():
        assert scrape.types.get(name) == kind, name
    # Labelled gauges and the webhook counter are there at zero before anything happened.
    assert scrape.get(P + "accounts", state="active") == 0
    assert scrape.has(P + "accounts", state="needs_reconnect")
    assert scrape.has(P + "due_backlog")
    for outcome in ("delivered", "retrying", "failed"):
        assert scrape.has(P + "webhook_deliveries_total", outcome=outcome)
        assert scrape.get(P + "webhook_deliveries_total", outcome=outcome) == 0
    limits = served.runtime.settings.quota.limits
    for grant, limit in limits.items():
        assert scrape.get(P + "quota_limit", grant=grant) == limit
        assert scrape.has(P + "quota_used", grant=grant)
    assert scrape.get(P + "worker_last_success_timestamp_seconds") == 0
    assert scrape.get(P + "worker_cycle_duration_seconds_count") == 0
    assert scrape.has(P + "quota_projected", grant="refresh_token")
    assert scrape.get(P + "quota_projected_exceeded", grant="refresh_token") == 0


async def test_each_metric_moves_when_its_event_happens(served: Served) -> None:
    rt, emu, clock = served.runtime, served.emulator, served.clock
    start = await served.scrape()

    # Connecting sends an authorization_code grant: quota used moves, accounts are counted.
    healthy = await served.connect("metrics_healthy")
    doomed = await served.connect("metrics_doomed")
    s = await served.scrape()
    assert s.get(P + "accounts", state="active") == 2
    code_used = s.get(P + "quota_used", grant="authorization_code")
    assert code_used == start.get(P + "quota_used", grant="authorization_code") + 2

    # The token API: counted by status, timed, never labelled by account.
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        auth = {"Authorization": f"Bearer {served.key}"}
        ok = await client.get(f"/api/v1/accounts/{healthy}/access-token", headers=auth)
        missing = await client.get("/api/v1/accounts/999999/access-token", headers=auth)
        anonymous = await client.get(f"/api/v1/accounts/{healthy}/access-token")
        listing = await client.get("/api/v1/accounts", headers=auth)  # not the token API
    assert (ok.status_code, missing.status_code, anonymous.status_code) == (200, 404, 401)
    assert listing.status_code == 200
    after_api = await served.scrape()
    assert after_api.get(P + "token_api_requests_total", status="200") == 1
    assert after_api.get(P + "token_api_requests_total", status="404") == 1
    assert after_api.get(P + "token_api_requests_total", status="401") == 1
    assert after_api.get(P + "token_api_duration_seconds_count") == 3
    assert after_api.label_names[P + "token_api_requests_total"] == {"status"}

    # A refresh: counted by trigger and outcome, timed, and its eBay call counts on the quota.
    result = await rt.refresher.refresh(healthy, Trigger.ADMIN, actor="test")
    assert result.ok
    after_refresh = await served.scrape()
    assert (
        after_refresh.get(P + "refreshes_total", trigger="admin", outcome="ok", kind="attempted")
        == 1
    )
    assert after_refresh.get(P + "refresh_duration_seconds_count", trigger="admin") == 1
    assert after_refresh.get(P + "refresh_duration_seconds_bucket", trigger="admin", le="+Inf") == 1
    assert (
        after_refresh.get(P + "quota_used", grant="refresh_token")
        == after_api.get(P + "quota_used", grant="refresh_token") + 1
    )

    # A revoked grant moves its account to needs_reconnect.
    emu.revoke_user("metrics_doomed")
    failed = await rt.refresher.refresh(doomed, Trigger.ADMIN, actor="test")
    assert failed.outcome.value == "invalid_grant"
    s = await served.scrape()
    assert s.get(P + "accounts", state="active") == 1
    assert s.get(P + "accounts", state="needs_reconnect") == 1
    assert s.get(P + "refreshes_total", trigger="admin", outcome="invalid_grant", kind="attempted")
    assert s.get(P + "due_backlog") == 0

    # An access token past its refresh point is due: the backlog moves.
    now = clock.advance(minutes=1)
    await rt.store.set_access_expiry(healthy, now - timedelta(minutes=1), due=now)
    s = await served.scrape()
    assert s.get(P + "due_backlog") == 1

    # A worker cycle refreshes it: cycle timed, success time set, backlog drained.
    clock.advance(seconds=5)
    report = await rt.worker().run_once()
    assert report.status.value == "ok" and report.counts.refreshed == 1
    s = await served.scrape()
    assert s.get(P + "worker_cycle_duration_seconds_count") == 1
    assert s.get(P + "worker_last_success_timestamp_seconds") == report.finished_at.timestamp()
    assert s.get(P + "due_backlog") == 0
    assert s.get(P + "refreshes_total", trigger="scheduled", outcome="ok", kind="attempted") == 1
    assert s.get(P + "workers", status="ok") == 1

    # Webhook deliveries, through the handle the dispatcher calls (its `pending` = retrying).
    rt.metrics.webhook_delivery("delivered")
    rt.metrics.webhook_delivery("pending")
    rt.metrics.webhook_delivery(metrics.WebhookOutcome.FAILED)
    s = await served.scrape()
    assert s.get(P + "webhook_deliveries_total", outcome="delivered") == 1
    assert s.get(P + "webhook_deliveries_total", outcome="retrying") == 1
    assert s.get(P + "webhook_deliveries_total", outcome="failed") == 1
    with pytest.raises(ValueError, match="exploded"):
        rt.metrics.webhook_delivery("exploded")


async def test_last_success_comes_from_heartbeats_of_workers_in_other_processes(
    served: Served,
) -> None:
    """A worker this process does not observe (another replica) still moves the gauge."""
    other = served.runtime.worker()
    other.cycle_observers.clear()  # as if it ran elsewhere: only its heartbeat is shared
    served.clock.advance(minutes=3)
    report = await other.run_once()
    scrape = await served.scrape()
    assert scrape.get(P + "worker_cycle_duration_seconds_count") == 0  # not this process's
    assert scrape.get(P + "worker_last_success_timestamp_seconds") == (
        report.finished_at.timestamp()
    )


async def test_metrics_token_guards_the_scrape(served: Served) -> None:
    served.runtime.settings = served.runtime.settings.model_copy(
        update={"metrics_token": SecretStr("metrics-scrape-token")}
    )
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        bare = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    for answer in (bare, wrong):
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"
        assert "metrics-scrape-token" not in answer.text
    scrape = await served.scrape(token="metrics-scrape-token")
    assert P + "accounts" in scrape.types


# Pure parts ------------------------------------------------------------------------------------


def _beat(clock: FakeClock, status: str, finished_minutes_ago: float | None) -> HeartbeatRow:
    now = clock()
    finished = (
        None if finished_minutes_ago is None else now - timedelta(minutes=finished_minutes_ago)
    )
    return HeartbeatRow(
        instance_id=f"w-{status}-{finished_minutes_ago}",
        host="h",
        pid=1,
        version="v",
        started_at=now - timedelta(hours=1),
        interval_seconds=60,
        last_cycle_started_at=finished,
        last_cycle_finished_at=finished,
        status=status,
        counts={},
        last_error=None,
        app_credentials=None,
        cycles=1,
        updated_at=finished or now,
    )


def test_last_success_ignores_error_cycles_and_counts_degraded_ones(clock: FakeClock) -> None:
    beats = [_beat(clock, "error", 1), _beat(clock, "degraded", 5), _beat(clock, "ok", 9)]
    assert metrics.last_successful_cycle(beats) == clock() - timedelta(minutes=5)
    assert metrics.last_successful_cycle([_beat(clock, "error", 1)]) is None
    assert metrics.last_successful_cycle([_beat(clock, "starting", None)]) is None


def test_workers_by_status_reports_silent_workers_as_stale(clock: FakeClock) -> None:
    beats = [_beat(clock, "ok", 1), _beat(clock, "ok", 30), _beat(clock, "error", 0.5)]
    counts = metrics.workers_by_status(beats, clock())
    assert counts == {"ok": 1, "degraded": 0, "error": 1, "starting": 0, "stale": 1}


# Real processes --------------------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
    env.update(
        EBAY_CONNECTOR_DATABASE_URL=f"sqlite:///{tmp_path}/cli.db",
        EBAY_CONNECTOR_KEY_FILE=str(tmp_path / "keyring.json"),
        **extra,
    )
    return env


def _json_lines(stderr: str) -> list[dict[str, object]]:
    """Every stderr line must be one JSON object with the documented keys."""
    docs = []
    for line in stderr.splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        assert {"ts", "level", "event", "fields", "logger"} <= doc.keys(), line
        docs.append(doc)
    return docs


def test_log_format_setting_makes_every_stderr_line_json(tmp_path: Path) -> None:
    env = _env(tmp_path, EBAY_CONNECTOR_LOG_FORMAT="json")
    in_thread(migrate.upgrade, env["EBAY_CONNECTOR_DATABASE_URL"])
    done = subprocess.run(
        [CLI, "worker", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    docs = _json_lines(done.stderr)
    cycle = [d for d in docs if d["event"] == "worker.cycle"]
    assert len(cycle) == 1
    fields = cycle[0]["fields"]
    assert isinstance(fields, dict) and fields["status"] == "ok" and fields["due"] == 0


def poll_scrape(
    process: subprocess.Popen[str], port: int, ready: Callable[[Scrape], bool]
) -> Scrape | None:
    """Scrape a real process's /metrics until ``ready`` (bounded); the last scrape, if any."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    scrape = None
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code == 200:
            scrape = Scrape(answer.text)
            if ready(scrape):
                break
        time.sleep(0.1)
    return scrape


def test_worker_metrics_port_serves_its_cycles_and_logs_json(tmp_path: Path) -> None:
    env = _env(tmp_path, EBAY_CONNECTOR_WORKER_INTERVAL_SECONDS="1")
    in_thread(migrate.upgrade, env["EBAY_CONNECTOR_DATABASE_URL"])
    port = free_port()
    process = subprocess.Popen(
        [CLI, "--log-format", "json", "worker", "--metrics-port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        scrape = poll_scrape(
            process, port, lambda got: got.get(P + "worker_cycle_duration_seconds_count") >= 2
        )
        assert scrape is not None, "the worker's metrics port never answered"
        assert scrape.get(P + "worker_cycle_duration_seconds_count") >= 2
        assert scrape.get(P + "worker_cycles_total", status="ok") >= 2
        assert scrape.get(P + "worker_last_success_timestamp_seconds") > 0
        assert scrape.has(P + "webhook_deliveries_total", outcome="delivered")
        assert P + "accounts" not in scrape.types  # database gauges: the API's /metrics
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=PROCESS_TIMEOUT_S)
    assert process.returncode == 0, err
    assert f"worker metrics on http://127.0.0.1:{port}/metrics" in out
    docs = _json_lines(err)
    assert sum(1 for d in docs if d["event"] == "worker.cycle") >= 2
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_serve_answers_metrics_and_logs_json_with_its_in_process_worker(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, EBAY_CONNECTOR_WORKER_INTERVAL_SECONDS="1", EBAY_CONNECTOR_PORT=str(port))
    process = subprocess.Popen(
        [CLI, "--log-format", "json", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The database gauges are read before the process counters are rendered, so a scrape
        # can land between a cycle's heartbeat and its count: wait for both.
        scrape = poll_scrape(
            process,
            port,
            lambda got: (
                got.get(P + "worker_cycles_total", status="ok") >= 1
                and got.get(P + "workers", status="ok") == 1
            ),
        )
        assert scrape is not None, "the server never answered /metrics"
        for name, kind in EXPECTED_FAMILIES.items():
            assert scrape.types.get(name) == kind, name
        assert scrape.get(P + "worker_cycles_total", status="ok") >= 1
        assert scrape.get(P + "workers", status="ok") == 1
        assert scrape.get(P + "worker_last_success_timestamp_seconds") > 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=PROCESS_TIMEOUT_S)
    assert process.returncode == 0, err
    assert any(d["event"] == "worker.cycle" for d in _json_lines(err))


async def test_the_projection_says_when_the_recent_pace_passes_the_daily_limit(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> None:
    emu, _ = emulator
    async with (
        open_test_runtime(database, emulator, tmp_path, clock, daily_refresh_limit=10) as rt,
        serve_asgi(create_app(rt)) as base,
    ):
        org = await rt.store.create_organization("Projection org")
        served = Served(base, rt, emu, clock, org, "")
        account = await served.connect("metrics_pace")
        for _ in range(2):
            assert (await rt.refresher.refresh(account, Trigger.ADMIN, actor="test")).ok
        under = await served.scrape()
        # Two calls within the first hours: a pace of 8 a day, under the limit of 10.
        assert under.get(P + "quota_projected", grant="refresh_token") == 8
        assert under.get(P + "quota_projected_exceeded", grant="refresh_token") == 0
        assert (await rt.refresher.refresh(account, Trigger.ADMIN, actor="test")).ok
        over = await served.scrape()
        assert over.get(P + "quota_projected", grant="refresh_token") == 12
        assert over.get(P + "quota_projected_exceeded", grant="refresh_token") == 1
        # Twelve hours later the same three calls are a pace of 6 a day, yet the last 24 h
        # still hold them: the projection never falls below what was used.
        clock.advance(hours=13)
        later = await served.scrape()
        assert later.get(P + "quota_projected", grant="refresh_token") == 3
        assert later.get(P + "quota_projected_exceeded", grant="refresh_token") == 0
