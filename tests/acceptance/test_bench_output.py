"""Benchmark smoke tier: every ``bench/*.py`` still runs, and what it prints adds up.

Each benchmark runs once with ``--json`` and settings small enough for seconds (not its
figures: no speed is asserted). Its JSON object must carry the keys a reader relies on, its
counts must add up (every account refreshed exactly once, no double, nothing missed, the ratio
present and consistent with the figures it divides), and its whole output (stdout and stderr)
must hold no eBay token (the emulator's tokens are a header plus 60+ characters of base64; a
masked prefix is much shorter), no ciphertext, no API key and no client secret.

The benchmarks are independent processes that mostly wait (process start-up, latency, lease
expiry), so the module starts every selected one at once and each test collects its own: the
tier takes about as long as the slowest run instead of the sum of all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ebay_connector.settings import EMULATOR_CLIENT_SECRET, ENV_PREFIX
from tests.conftest import POSTGRES_URL, postgres_unavailable_reason, require_postgres

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
FULL_TOKEN = re.compile(r"v\^1\.1#[^\s\"',]*?[A-Za-z0-9+/=]{40,}")
CIPHERTEXT = re.compile(r"ENC:v1:[A-Za-z0-9_-]+:[A-Za-z0-9_-]{16,}")
API_KEY = re.compile(r"ebc_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}")
RUN_TIMEOUT_S = 240.0  # from the common start; far above a run on a busy 2-core machine
STOP_GRACE_S = 15.0

ACCOUNTS = 20
BASELINE_ACCOUNTS = 4
SOAK_ACCOUNTS = 8
SOAK_KILLS = 1
REPLICAS = 2
TOKEN_API_REQUESTS = 50
TOKEN_API_LEVELS = (1, 4)
TRANSPORT_REQUESTS = 50
QUOTA_ACCOUNTS = 200
QUOTA_DAYS = 2
QUOTA_LIMIT = 500  # under what serving every request takes (~540 a day): the guard must hold

# The small setting of each benchmark; PostgreSQL ones get the suite's server appended.
SMOKE_ARGS: dict[str, list[str]] = {
    "quota": [
        "--accounts",
        str(QUOTA_ACCOUNTS),
        "--days",
        str(QUOTA_DAYS),
        "--daily-limit",
        str(QUOTA_LIMIT),
    ],
    "client_transport": [
        "--requests",
        str(TRANSPORT_REQUESTS),
        "--concurrency",
        "4",
        "--latency-ms",
        "1",
    ],
    "token_api": [
        "--requests",
        str(TOKEN_API_REQUESTS),
        "--warmup",
        "0",
        "--concurrency",
        ",".join(map(str, TOKEN_API_LEVELS)),
        "--quiet-wait-s",
        "0",
        "--budget-s",
        "180",
    ],
    "catch_up": [
        "--accounts",
        str(ACCOUNTS),
        "--baseline-accounts",
        str(BASELINE_ACCOUNTS),
        "--concurrency",
        "8",
        "--latency-ms",
        "1",
        "--quiet-wait-s",
        "0",
        "--timeout-s",
        "180",
    ],
    "replicas": [
        "--accounts",
        str(ACCOUNTS),
        "--replicas",
        str(REPLICAS),
        "--concurrency",
        "4",
        "--latency-ms",
        "1",
        "--quiet-wait-s",
        "0",
        "--timeout-s",
        "180",
    ],
    "soak": [
        "--accounts",
        str(SOAK_ACCOUNTS),
        "--duration",
        "2",
        "--kills",
        str(SOAK_KILLS),
        "--outage-s",
        "2",
        "--latency-ms",
        "200",
        "--timeout-s",
        "180",
    ],
}
SMOKE_ARGS["cli_startup"] = ["--runs", "1"]
PROXY_REQUESTS = 50
SMOKE_ARGS["proxy"] = [
    "--requests",
    str(PROXY_REQUESTS),
    "--warmup",
    "0",
    "--concurrency",
    "1,4",
    "--quiet-wait-s",
    "0",
    "--budget-s",
    "180",
]
PAGE_ACCOUNTS = 120
PAGE_REQUESTS = 5
SMOKE_ARGS["accounts_page"] = [
    "--accounts",
    str(PAGE_ACCOUNTS),
    "--requests",
    str(PAGE_REQUESTS),
    "--warmup",
    "1",
    "--budget-s",
    "180",
]
ON_POSTGRES = {"replicas", "soak"}


@dataclass
class BenchRun:
    """One benchmark process; its output goes to files (pipes could fill while we wait)."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def finish(self) -> tuple[int, str, str]:
        """Exit code, stdout and stderr once the process has ended (killed at the timeout)."""
        try:
            code = self.process.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"still running after {RUN_TIMEOUT_S:g} s", pytrace=False)
        return code, self.stdout.read_text(), self.stderr.read_text()

    def stop(self) -> None:
        """SIGTERM (the benchmarks stop their children and drop their databases on it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def selected_benchmarks(request: pytest.FixtureRequest) -> set[str]:
    """The benchmarks of this module's tests that this session runs (after -k / deselection)."""
    here = Path(__file__)
    return {
        str(callspec.params["bench"])
        for item in request.session.items
        if item.path == here and (callspec := getattr(item, "callspec", None)) is not None
    }


@pytest.fixture(scope="module")
def bench_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, BenchRun]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    runs: dict[str, BenchRun] = {}
    try:
        for name in sorted(selected_benchmarks(request)):
            argv = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *SMOKE_ARGS[name]]
            if name in ON_POSTGRES:
                if postgres_unavailable_reason() is not None:
                    continue  # the test skips (or fails, where PostgreSQL is required)
                argv += ["--database-url", POSTGRES_URL]
            workdir = tmp_path_factory.mktemp(name)
            with (workdir / "out").open("wb") as out, (workdir / "err").open("wb") as err:
                process = subprocess.Popen(
                    [*argv, "--json"], cwd=workdir, env=env, stdout=out, stderr=err
                )
            runs[name] = BenchRun(process, workdir / "out", workdir / "err")
        yield runs
    finally:
        for run in runs.values():
            run.stop()


def leaks(output: str) -> list[str]:
    """Which kinds of secret ``output`` holds, by name (never the secret itself)."""
    return [
        name
        for name, found in (
            ("an eBay token", FULL_TOKEN.search(output)),
            ("a ciphertext", CIPHERTEXT.search(output)),
            ("an API key", API_KEY.search(output)),
            ("the client secret", EMULATOR_CLIENT_SECRET in output),
        )
        if found
    ]


@pytest.mark.parametrize(
    "bench",
    [
        name if name not in ON_POSTGRES else pytest.param(name, marks=pytest.mark.postgres)
        for name in SMOKE_ARGS
    ],
)
def test_benchmark_runs_small_and_its_json_adds_up(
    bench: str, bench_runs: dict[str, BenchRun]
) -> None:
    if bench in ON_POSTGRES:
        require_postgres()
    code, stdout, stderr = bench_runs[bench].finish()
    found = leaks(stdout + stderr)
    if found:  # named, never printed: the output itself would be the leak
        pytest.fail(f"{bench} output contains {', '.join(found)}", pytrace=False)
    assert code == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"--json prints one object and nothing else: {stdout[-2000:]}"
    doc = json.loads(lines[0])
    assert isinstance(doc, dict)
    CHECKS[bench](doc)


# ------------------------------------------------------------------------- what must add up


def check_quota(doc: dict[str, Any]) -> None:
    workload = doc["workload"]
    assert (workload["accounts"], workload["days"]) == (QUOTA_ACCOUNTS, QUOTA_DAYS)
    assert workload["daily_limit"] == QUOTA_LIMIT
    refused_any = False
    requests = workload["requests"]
    assert requests > 0
    bounds = doc["bounds"]
    for policy in ("proactive", "on_demand", "auto"):
        r = doc[policy]
        assert r["requests"] == requests, policy
        assert r["calls"] == r["worker_calls"] + r["on_demand_calls"], policy
        assert sum(r["worker_calls_by_reason"].values()) == r["worker_calls"], policy
        assert 0 <= r["waited"] + r["refused_requests"] <= requests, policy
        served = requests - r["waited"] - r["refused_requests"]
        assert r["no_wait_share"] == pytest.approx(served / requests), policy
        per_account_day = r["calls"] / (QUOTA_ACCOUNTS * QUOTA_DAYS)
        assert r["calls_per_account_day"] == pytest.approx(per_account_day), policy
        assert r["ratio_to_minimum"] == pytest.approx(r["calls"] / bounds["min_calls"]), policy
        # Never past eBay's limit: no 24 h window holds more, and eBay never had to say 429.
        assert r["peak_24h_calls"] <= min(r["calls"], QUOTA_LIMIT), policy
        refused_any = refused_any or r["refused_requests"] > 0
        if r["refused_requests"]:  # warned before it bit
            assert r["projection_warned_after_h"] is not None, policy
            assert r["projection_warned_after_h"] <= r["first_refusal_after_h"], policy
        assert not r["exceeded_daily_limit"] and r["ebay_429"] == 0, policy
        if r["refused_requests"] == 0:
            assert bounds["min_calls"] <= r["calls"], f"{policy} beat the lower bound"
    assert refused_any, "the smoke run puts no pressure on the limit: the guard is untested"
    expected = doc["auto"]["calls_per_account_day"] / doc["proactive"]["calls_per_account_day"]
    assert doc["ratio"] == pytest.approx(expected)


def check_client_transport(doc: dict[str, Any]) -> None:
    results = {r["name"]: r for r in doc["results"]}
    assert {"httpx-default", "httpx-aiohttp", "aiohttp"} <= set(results)
    for name, r in results.items():
        assert not r["timed_out"], name
        assert r["requests"] == doc["config"]["requests"] == TRANSPORT_REQUESTS, name
        assert r["ok"] + r["errors"] == r["requests"], name
        assert sum(r["error_kinds"].values()) == r["errors"], name
    ratio = doc["ratio"]
    assert ratio is not None, "no ratio: the baseline or every httpx variant failed"
    assert ratio["baseline"] == "httpx-default"
    assert results[ratio["best"]]["httpx_api"] and ratio["best"] != ratio["baseline"]
    assert ratio["rps_ratio"] > 0 and ratio["cpu_per_req_ratio"] > 0


def check_token_api(doc: dict[str, Any]) -> None:
    levels = doc["levels"]
    assert [level["concurrency"] for level in levels] == list(TOKEN_API_LEVELS)
    assert doc["concurrency"] == TOKEN_API_LEVELS[0]
    assert doc["requests"] == TOKEN_API_REQUESTS
    # The warm-up (at least one block per level) is checked too.
    assert doc["token_answers_checked"] >= len(levels) * TOKEN_API_REQUESTS
    for level in levels:
        for kind in ("token", "healthz"):
            row = level[kind]
            assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"], kind
        expected = level["token"]["p99_ms"] / level["healthz"]["p99_ms"]
        assert level["ratio"] == pytest.approx(expected, rel=0.01, abs=0.01)
    assert doc["ratio"] == levels[0]["ratio"]
    assert doc["target_met"] == (doc["p99_ms"] <= doc["target_p99_ms"])


def check_refreshed_once(phase: dict[str, Any], accounts: int) -> None:
    """One worker phase of catch_up.py: every account refreshed once, nothing else."""
    assert phase["accounts"] == accounts
    assert phase["refreshed"] == phase["exactly_once"] == accounts
    assert (phase["failed"], phase["doubles"], phase["missed"]) == (0, 0, 0)
    assert phase["attempts_by_outcome"] == {"ok": accounts}
    assert phase["emulator_refresh_calls"] == {"all": accounts, "ok": accounts}


def check_catch_up(doc: dict[str, Any]) -> None:
    assert doc["every_account_refreshed_once"] is True
    check_refreshed_once(doc["main"], ACCOUNTS)
    check_refreshed_once(doc["baseline"], BASELINE_ACCOUNTS)
    expected = doc["refreshes_per_s"] / doc["baseline_refreshes_per_s"]
    assert doc["ratio"] == pytest.approx(expected, rel=0.01, abs=0.06)


def check_replicas(doc: dict[str, Any]) -> None:
    assert (doc["doubles"], doc["missed"]) == (0, 0)
    one, many = doc["runs"]
    assert (one["replicas"], many["replicas"]) == (1, REPLICAS)
    for run in (one, many):
        n = run["replicas"]
        assert run["accounts"] == run["exactly_once"] == ACCOUNTS, n
        assert (run["doubles"], run["missed"], run["still_leased"]) == (0, 0, 0), n
        assert run["attempts_by_outcome"] == {"ok": ACCOUNTS}, n
        assert run["extra_ebay_calls"] == 0, n
        assert run["emulator_refresh_calls"] == {"all": ACCOUNTS, "ok": ACCOUNTS}, n
        workers = run["workers"]
        assert len(workers) >= n and all(w["exit_code"] == 0 for w in workers), n
        assert sum(w["refreshed"] or 0 for w in workers) == ACCOUNTS, n
    assert doc["refreshes_per_s_1"] == one["refreshes_per_s"]
    assert doc[f"refreshes_per_s_{REPLICAS}"] == many["refreshes_per_s"]
    # The rates are printed to 0.1/s and the ratio (of the unrounded rates) to 0.01: allow what
    # that rounding can move (a smoke run's rates are a few per second, so it is not small).
    slow, fast = one["refreshes_per_s"], many["refreshes_per_s"]
    expected = fast / slow
    rounding = expected * (0.05 / slow + 0.05 / fast) + 0.005
    assert doc["ratio"] == pytest.approx(expected, abs=rounding)


def check_soak(doc: dict[str, Any]) -> None:
    assert doc["ok"] is True
    assert doc["accounts"] == SOAK_ACCOUNTS
    zero = ("accounts_lost", "tokens_lost", "double_refreshes", "stuck_attempts", "half_written")
    assert {key: doc[key] for key in zero} == dict.fromkeys(zero, 0)
    assert doc["kills"] == SOAK_KILLS
    assert 0 <= doc["kills_with_leases"] <= doc["kills"]
    assert doc["server_alive_throughout"] is True and doc["server_exit_code"] == 0
    assert doc["not_ready_seen"] is True and doc["ready_again_s"] is not None
    answers = doc["answers"]
    assert sum(answers.values()) > 0
    # Never a 500 or a transport error: the database's absence is a 503 with its code.
    assert set(answers) <= {"200", "503 store_unavailable"}, answers
    ok_pct = 100 * answers.get("200", 0) / sum(answers.values())
    assert doc["availability_pct"] == pytest.approx(ok_pct, abs=0.01)
    assert doc["availability_pct"] <= doc["availability_outside_outage_pct"] <= 100
    assert doc["availability_outside"] == doc["availability_outside_outage_pct"]
    assert 0 <= doc["availability_during_outage"] <= 100


def check_cli_startup(doc: dict[str, Any]) -> None:
    assert doc["runs"] == 1
    seconds = ("typer_s", "help_s", "sqlalchemy_s", "accounts_json_s")
    assert all(doc[key] > 0 for key in seconds), doc
    assert doc["help_ratio"] == pytest.approx(doc["help_s"] / doc["typer_s"])
    assert doc["accounts_ratio"] == pytest.approx(doc["accounts_json_s"] / doc["sqlalchemy_s"])


def check_accounts_page(doc: dict[str, Any]) -> None:
    assert (doc["accounts"], doc["requests"]) == (PAGE_ACCOUNTS, PAGE_REQUESTS)
    views = doc["views"]
    assert set(views) == {"default", "last_attempt_desc", "search", "far_page"}
    for name, view in views.items():
        assert view["rows"] == 50, name  # a full page of the list, whatever the view
        assert view["bytes"] > 0, name
        assert 0 < view["p50_ms"] <= view["p95_ms"] <= view["max_ms"], name
    healthz = doc["healthz"]
    assert 0 < healthz["p50_ms"] <= healthz["p95_ms"] <= healthz["max_ms"]
    assert doc["max_bytes"] == max(v["bytes"] for v in views.values())
    assert doc["max_p95_ms"] == max(v["p95_ms"] for v in views.values())
    assert doc["ratio"] == pytest.approx(views["default"]["p50_ms"] / healthz["p50_ms"], abs=0.06)
    met = doc["max_bytes"] < doc["target_bytes"] and doc["max_p95_ms"] < doc["target_p95_ms"]
    assert doc["target_met"] is met


def check_proxy(doc: dict[str, Any]) -> None:
    levels = doc["levels"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    assert doc["concurrency"] == 1 and doc["requests"] == PROXY_REQUESTS
    # Every measured call answered: direct and proxied, at each level.
    assert doc["answers_checked"] == 2 * PROXY_REQUESTS * len(levels)
    for level in levels:
        for kind in ("direct", "proxied"):
            assert 0 < level[kind]["p50_ms"] <= level[kind]["p99_ms"] <= level[kind]["max_ms"]
        overhead = level["proxied"]["p99_ms"] - level["direct"]["p99_ms"]
        assert level["overhead_p99_ms"] == pytest.approx(overhead, abs=0.002)
    assert doc["overhead_p99_ms"] == levels[0]["overhead_p99_ms"]
    assert doc["target_met"] is (doc["overhead_p99_ms"] <= doc["target_p99_overhead_ms"])


CHECKS = {
    "proxy": check_proxy,
    "quota": check_quota,
    "client_transport": check_client_transport,
    "token_api": check_token_api,
    "catch_up": check_catch_up,
    "replicas": check_replicas,
    "soak": check_soak,
    "cli_startup": check_cli_startup,
    "accounts_page": check_accounts_page,
}
