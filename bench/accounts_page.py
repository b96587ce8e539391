"""The accounts page at scale: how heavy and how fast ``GET /`` is with many accounts.

Target: under 150 KB and under 300 ms (p95) at 10,000 accounts, on SQLite and PostgreSQL.

Set-up, all on 127.0.0.1:

* a fresh database — a SQLite file in a temp dir, or with ``--database-url postgresql://…`` a new
  database ``bench_<random>`` on that server (created, migrated, dropped at the end);
* an organization and its admin, created through the product's ``Users``;
* ``--accounts`` accounts inserted directly in the database (connecting 10,000 through the
  consent flow would take longer than the measurement): a few in each problem state (0.2 % need
  a reconnect, 0.1 % failing, 1 % expiring soon), the rest healthy, about half never refreshed,
  no token stored (the page never reads one);
* the product's real ``ebay-connector serve --no-worker`` as its own process.

Measured, after a warm-up, ``--requests`` times each, round robin in blocks so that machine noise
hits all alike: the baseline ``GET /healthz`` (no database, no session) and four views of the
page — the default (problems first), the "Last attempt" sort descending, a search, and a page
far down the list. Latency = from sending the request to having read the whole answer
(``time.perf_counter``), keep-alive, one request at a time. Every answer must be 200.

Usage (repository root)::

    .venv/bin/python bench/accounts_page.py
    .venv/bin/python bench/accounts_page.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/accounts_page.py --accounts 1000 --requests 50 --json

The last printed line is ``ratio: p50 accounts page / p50 healthz = X×`` (the default view).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

import _harness as h
from ebay_connector.core.roles import Role
from ebay_connector.db import models as m
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator, EmulatorServer
from ebay_connector.runtime import open_runtime
from ebay_connector.settings import Settings, load
from token_api import server_env, wait_healthy

TARGET_BYTES = 150_000
TARGET_P95_MS = 300.0
ADMIN_EMAIL = "bench-admin@bench.test"
INSERT_BATCH = 1000
VIEWS = {
    "default": "/",
    "last_attempt_desc": "/?sort=last_attempt&dir=desc",
    "search": "/?q=seller_00",
    "far_page": "/?sort=ebay_username&page={far}",
}


def kind_of(i: int) -> str:
    """Which state the ``i``-th account is seeded in (spread through the list, not first)."""
    if i % 500 == 7:
        return "needs_reconnect"
    if i % 1000 == 11:
        return "failing"
    if i % 100 == 13:
        return "expiring"
    return "healthy"


async def seed(settings: Settings, password: str, count: int) -> None:
    async with open_runtime(settings) as runtime:
        org = await runtime.store.create_organization("bench")
        await Users(runtime.db).create(org, ADMIN_EMAIL, Role.ADMIN, password)
        now = runtime.clock()
        for start in range(0, count, INSERT_BATCH):
            accounts, tokens = [], []
            for i in range(start, min(start + INSERT_BATCH, count)):
                kind = kind_of(i)
                accounts.append(
                    {
                        "id": i + 1,
                        "organization_id": org,
                        "environment": runtime.environment,
                        "ebay_user_id": f"uid{i:06d}",
                        "ebay_username": f"seller_{i:05d}",
                        "label": f"Shop {i:05d}",
                        "scopes": " ".join(runtime.settings.scope_list),
                        "created_at": now,
                        "updated_at": now,
                        "last_used_at": now - timedelta(minutes=i % 97) if i % 3 == 0 else None,
                    }
                )
                tokens.append(
                    {
                        "account_id": i + 1,
                        "access_expires_at": now
                        + (timedelta(minutes=5) if kind == "expiring" else timedelta(hours=2)),
                        "refresh_expires_at": now + timedelta(days=500 - i % 400),
                        "state": "needs_reconnect" if kind == "needs_reconnect" else "active",
                        "state_reason": "invalid_grant" if kind == "needs_reconnect" else None,
                        "failures_in_row": 2 if kind == "failing" else 0,
                        "last_error_message": "HTTP 500 from eBay" if kind == "failing" else None,
                        "next_attempt_at": now + timedelta(minutes=2)
                        if kind == "failing"
                        else None,
                        "last_attempt_at": now - timedelta(minutes=i % 50) if i % 2 else None,
                        "version": 0,
                        "updated_at": now,
                    }
                )
            async with runtime.db.transaction() as conn:
                await conn.execute(sa.insert(m.EbayAccount), accounts)
                await conn.execute(sa.insert(m.EbayToken), tokens)


def measure(base_url: str, password: str, args: argparse.Namespace) -> dict[str, Any]:
    far = max(1, args.accounts // 50 - 2)
    paths = {name: path.format(far=far) for name, path in VIEWS.items()}
    times: dict[str, list[float]] = {"healthz": [], **{name: [] for name in paths}}
    sizes: dict[str, int] = {}
    shown: dict[str, int] = {}
    targets = {"healthz": "/healthz", **paths}
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
        login = client.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": password})
        if login.status_code != 200:
            raise h.BenchError(f"login failed: {login.status_code}")
        for round_ in range(args.warmup + args.requests):
            for name, path in targets.items():
                started = time.perf_counter()
                answer = client.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                if answer.status_code != 200:
                    raise h.BenchError(f"GET {path}: {answer.status_code}")
                if name != "healthz":
                    if 'table class="accounts"' not in answer.text:
                        raise h.BenchError(f"GET {path}: no accounts table")
                    sizes[name] = len(answer.content)
                    shown[name] = answer.text.count('<tr id="account-')
                if round_ >= args.warmup:
                    times[name].append(elapsed)

    def pct(values: list[float], q: int) -> float:
        return (
            statistics.quantiles(values, n=100, method="inclusive")[q - 1]
            if len(values) > 1
            else values[0]
        )

    results = {
        name: {
            "path": targets[name],
            "bytes": sizes.get(name),
            "rows": shown.get(name),
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(pct(values, 95), 2),
            "max_ms": round(max(values), 2),
        }
        for name, values in times.items()
    }
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = h.Deadline(args.budget_s)
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-accounts-page-") as tmp:
        workdir = Path(tmp)
        with (
            EmulatorServer(Emulator(seed=1)) as emulator_server,
            h.fresh_database(args.database_url, workdir) as db,
        ):
            h.progress(f"database: {db.description}")

            def settings_for(port: int) -> Settings:
                return load(
                    _env_file=None,
                    database_url=db.url,
                    ebay_environment="emulator",
                    emulator_url=emulator_server.base_url,
                    key_file=workdir / "keyring.json",
                    host="127.0.0.1",
                    port=port,
                    public_url=f"http://127.0.0.1:{port}",
                    max_calls_per_second=0,
                )

            started = time.perf_counter()
            asyncio.run(seed(settings_for(h.free_port()), password, args.accounts))
            h.progress(f"{args.accounts} accounts seeded in {time.perf_counter() - started:.1f} s")
            for attempt in range(3):  # a free port can be taken between probing and binding
                port = h.free_port()
                log = workdir / f"server-{port}.log"
                proc = h.spawn(
                    [str(h.CLI), "serve", "--no-worker"],
                    env=server_env(settings_for(port)),
                    cwd=workdir,
                    log=log,
                )
                try:
                    base_url = f"http://127.0.0.1:{port}"
                    if not wait_healthy(base_url, proc, deadline):
                        if attempt == 2:
                            raise h.BenchError(f"the server did not start:\n{h.tail(log)}")
                        continue
                    results = measure(base_url, password, args)
                    return report(args, db.backend, results)
                finally:
                    h.stop(proc)
    raise h.BenchError("unreachable")


def report(args: argparse.Namespace, backend: str, results: dict[str, Any]) -> dict[str, Any]:
    page, healthz = results["default"], results["healthz"]
    views = {k: v for k, v in results.items() if k != "healthz"}
    heaviest = max(v["bytes"] for v in views.values())
    slowest = max(v["p95_ms"] for v in views.values())
    return {
        "backend": backend,
        "accounts": args.accounts,
        "requests": args.requests,
        "views": views,
        "healthz": healthz,
        "max_bytes": heaviest,
        "max_p95_ms": slowest,
        "ratio": round(page["p50_ms"] / healthz["p50_ms"], 1),
        "target_bytes": TARGET_BYTES,
        "target_p95_ms": TARGET_P95_MS,
        "target_met": heaviest < TARGET_BYTES and slowest < TARGET_P95_MS,
        "environment": h.environment(),
    }


def print_text(doc: dict[str, Any]) -> None:
    env = doc["environment"]
    print(
        f"accounts page · {doc['backend']} · {doc['accounts']:,} accounts · "
        f"{doc['requests']} requests per view · Python {env['python']} · {env['cpus']} CPUs"
    )
    print(f"{'view':>18} {'bytes':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  path")
    for name, row in [*doc["views"].items(), ("healthz", doc["healthz"])]:
        size = f"{row['bytes']:,}" if row["bytes"] is not None else "-"
        print(
            f"{name:>18} {size:>8} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
            f"{row['max_ms']:>8.1f}  {row['path']}"
        )
    verdict = "met" if doc["target_met"] else "NOT met"
    print(
        f"heaviest view {doc['max_bytes']:,} bytes, slowest p95 {doc['max_p95_ms']:.1f} ms "
        f"(target < {TARGET_BYTES:,} bytes and < {TARGET_P95_MS:g} ms: {verdict})"
    )
    print(f"ratio: p50 accounts page / p50 healthz = {doc['ratio']:.1f}×")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts seeded")
    parser.add_argument("--requests", type=int, default=100, help="measured requests per view")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up requests per view")
    parser.add_argument("--database-url", default=None, help="postgresql://… (default: SQLite)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="whole-run time budget")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--accounts and --requests must be ≥ 1, --warmup ≥ 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return h.run_reporting(
        args.json, lambda: run(args), print_text, "server process stopped, bench database dropped"
    )


if __name__ == "__main__":
    sys.exit(main())
