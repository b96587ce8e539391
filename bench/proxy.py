"""Proxy overhead: what ``/api/v1/accounts/{id}/proxy/{path}`` adds over calling eBay directly.

Target: p99 overhead ≤ 5 ms at concurrency 1 on the development machine.

Set-up, all on 127.0.0.1: a fresh database (SQLite, or ``--database-url postgresql://…``: a new
database, dropped at the end); the emulator as its own process (``ebay-connector emulator``: it
is the upstream of every measured call, so it must not share this process's interpreter); the
product's real ``ebay-connector serve --no-worker`` as its own process; one organization, one
API key with ``--tokens --proxy``, one seller connected through the real OAuth flow (our
``/connect`` → the emulator's consent → our ``/callback``) and one inventory item put through
the proxy.

Measured, for each ``--concurrency`` (default 1 and 32; the first is the headline), in
interleaved blocks so that machine noise hits both alike: ``GET sell/inventory/v1/inventory_item``
*direct* (to the emulator, with the seller's token from the token API) and *proxied* (to the
product's proxy, with the API key). Latency = from sending the request to having read the whole
answer (``time.perf_counter``), one keep-alive client per kind with one connection per worker.
Overhead at a percentile = proxied minus direct at that percentile.

Checked: every answer (warm-up included: ``answers_checked``) is 200 with the same inventory;
the emulator saw no refresh-token call (every proxied call used the stored token).

Usage (repository root)::

    .venv/bin/python bench/proxy.py
    .venv/bin/python bench/proxy.py --requests 5000 --concurrency 1,32 --json

The run is bounded (``--budget-s``), talks to 127.0.0.1 only, and stops both processes and
drops the database on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import _harness as h
import token_api as t
from ebay_connector.settings import Settings

TARGET_P99_OVERHEAD_MS = 5.0
INVENTORY = "sell/inventory/v1/inventory_item"
PROXY_PATH = "/api/v1/accounts/{}/proxy/" + INVENTORY


@dataclass(frozen=True)
class Level:
    concurrency: int
    direct: t.Latencies
    proxied: t.Latencies

    def overhead(self, q: float) -> float:
        return self.proxied.pct(q) - self.direct.pct(q)

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "direct": self.direct.as_dict(),
            "proxied": self.proxied.as_dict(),
            "overhead_p50_ms": round(self.overhead(50), 3),
            "overhead_p99_ms": round(self.overhead(99), 3),
        }


class InventoryCheck:
    def __init__(self) -> None:
        self.checked = 0

    def __call__(self, path: str, answer: httpx.Response) -> None:
        if answer.status_code != 200 or answer.json().get("total") != 1:
            raise h.BenchError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
        self.checked += 1


async def measure(
    base_url: str,
    emulator_url: str,
    password: str,
    key: str,
    args: argparse.Namespace,
    server_pid: int,
) -> tuple[list[Level], int]:
    (account,) = await t.connect_accounts(base_url, password, 1)
    proxy_path = PROXY_PATH.format(account)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, trust_env=False
    ) as setup:
        put = await setup.put(
            proxy_path + "/BENCH-1",
            json={"product": {"title": "Bench lamp"}},
            headers={"Content-Language": "en-US"},
        )
        token = await setup.get(t.TOKEN_PATH.format(account))
    if put.status_code != 204 or token.status_code != 200:
        raise h.BenchError(f"set-up failed: {put.status_code} {token.status_code}")
    seller_token = token.json()["access_token"]
    check = InventoryCheck()
    levels = []
    for concurrency in args.concurrency:
        if args.quiet_wait_s > 0:
            h.wait_for_quiet(args.quiet_wait_s)
        direct_client = t.make_client(emulator_url, seller_token, concurrency, args.transport)
        proxy_client = t.make_client(base_url, key, concurrency, args.transport)
        async with direct_client as direct_http, proxy_client as proxy_http:

            async def block(
                client: httpx.AsyncClient,
                into: t.Latencies | None,
                path: str,
                n: int,
                workers: int = concurrency,
            ) -> None:
                server0, client0 = h.pid_cpu_s(server_pid), time.process_time()
                latencies, wall = await t.run_block(client, [path] * n, workers, check)
                client1, server1 = time.process_time(), h.pid_cpu_s(server_pid)
                if into is not None:
                    into.samples_ms.extend(latencies)
                    into.wall_s += wall
                    into.client_cpu_s += client1 - client0
                    if into.server_cpu_s is None or server0 is None or server1 is None:
                        into.server_cpu_s = None
                    else:
                        into.server_cpu_s += server1 - server0

            direct_path = "/" + INVENTORY
            warm = args.warmup
            while warm > 0:
                n = min(t.BLOCK, warm)
                await block(direct_http, None, direct_path, n)
                await block(proxy_http, None, proxy_path, n)
                warm -= n
            direct, proxied = t.Latencies("direct"), t.Latencies("proxied")
            gc.collect()
            while len(proxied.samples_ms) < args.requests:
                n = min(t.BLOCK, args.requests - len(proxied.samples_ms))
                await block(direct_http, direct, direct_path, n)
                await block(proxy_http, proxied, proxy_path, n)
        levels.append(Level(concurrency, direct, proxied))
    refreshes = (await h.emulator_refresh_calls(emulator_url))["all"]
    if refreshes:
        raise h.BenchError(f"the emulator saw {refreshes} refresh calls: the token was not fresh")
    return levels, check.checked


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = h.Deadline(args.budget_s)
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        workdir = Path(tmp)
        with (
            h.running_emulator(0, workdir, deadline) as emulator,
            h.fresh_database(args.database_url, workdir) as db,
        ):
            h.progress(f"database: {db.description}; emulator pid {emulator.pid}")

            def register(settings: Settings) -> None:  # its accept URL is this server's callback
                registered = httpx.post(
                    f"{emulator.base_url}/_emulator/apps",
                    json={
                        "client_id": settings.app_client_id,
                        "client_secret": settings.app_client_secret,
                        "ru_name": settings.app_ru_name,
                        "accept_url": settings.callback_url,
                    },
                    trust_env=False,
                )
                if registered.status_code != 201:
                    raise h.BenchError(f"registering the app: {registered.status_code}")

            with t.serving(
                db.url, emulator.base_url, register, workdir, deadline, password, can_proxy=True
            ) as server:
                levels, checked = asyncio.run(
                    measure(
                        server.base_url, emulator.base_url, password, server.key, args, server.pid
                    )
                )
                return report(args, db.backend, levels, checked)


def report(
    args: argparse.Namespace, backend: str, levels: list[Level], checked: int
) -> dict[str, Any]:
    head = levels[0]
    return {
        "backend": backend,
        "concurrency": head.concurrency,
        "requests": args.requests,
        "transport": args.transport,
        "overhead_p50_ms": round(head.overhead(50), 3),
        "overhead_p99_ms": round(head.overhead(99), 3),
        "target_p99_overhead_ms": TARGET_P99_OVERHEAD_MS,
        "target_met": head.overhead(99) <= TARGET_P99_OVERHEAD_MS,
        "answers_checked": checked,
        "levels": [level.as_dict() for level in levels],
        "environment": h.environment(),
    }


def print_text(doc: dict[str, Any]) -> None:
    env = doc["environment"]
    print(
        f"proxy overhead · {doc['backend']} · {doc['requests']} requests per kind and "
        f"concurrency · httpx over {doc['transport']} · Python {env['python']} · "
        f"{env['cpus']} CPUs"
    )
    print(f"{'concurrency':>11} {'kind':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>7}")
    for level in doc["levels"]:
        for name in ("direct", "proxied"):
            row = level[name]
            print(
                f"{level['concurrency']:>11} {name:>8} {row['p50_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f} {row['rps']:>7.0f}"
            )
        print(
            f"{'':>11} overhead p50 {level['overhead_p50_ms']:.2f} ms, "
            f"p99 {level['overhead_p99_ms']:.2f} ms"
        )
    print(f"every answer 200; {doc['answers_checked']} answers checked")
    verdict = h.verdict(doc["overhead_p99_ms"], TARGET_P99_OVERHEAD_MS, at_most=True)
    print(
        f"proxy p99 overhead at concurrency {doc['concurrency']}: "
        f"{doc['overhead_p99_ms']:.2f} ms (target ≤ {TARGET_P99_OVERHEAD_MS:g} ms: {verdict})"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per kind")
    parser.add_argument(
        "--concurrency",
        type=t.concurrency_list,
        default=[1, 32],
        help="comma-separated levels; the first is the headline (default 1,32)",
    )
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests per kind")
    parser.add_argument("--database-url", default=None, help="postgresql://… (default: SQLite)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="whole-run time budget")
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=20.0,
        help="wait up to this long for the machine to be quiet before each level (0: never)",
    )
    parser.add_argument(
        "--transport", choices=("aiohttp", "httpcore"), default="aiohttp", help="client transport"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return h.run_reporting(
        args.json, lambda: run(args), print_text, "processes stopped, bench database dropped"
    )


if __name__ == "__main__":
    sys.exit(main())
