"""Token API latency: how fast ``GET /api/v1/accounts/{id}/access-token`` answers a fresh token.

Target: a valid token in ≤ 5 ms at p99 on the development machine.

Set-up, all on 127.0.0.1:

* a fresh database — a SQLite file in a temp dir, or with ``--database-url postgresql://…`` a new
  database ``bench_<random>`` on that server (created, migrated to head with
  ``ebay_connector.db.migrate.upgrade``, dropped ``WITH (FORCE)`` at the end, also after a failure);
* the emulator in this process (``EmulatorServer``, a thread; idle while measuring);
* an organization, an admin and an API key that may read tokens, created through the product's
  ``Users`` / ``ApiKeys``;
* the API server as its own process: the product's real ``ebay-connector serve --no-worker``
  (uvicorn, same settings as a deployment on the emulator). A separate process because the
  client's own work (httpx building and parsing every request) would otherwise run on the
  server's event loop, be counted as server latency and delay the server's answers; in its own
  process the server gets its own core (2 cores here) and the figures are what a program on
  the same machine sees. The worker is left out: it is not part of answering a request;
* ``--accounts`` seller accounts connected through the real OAuth flow (our ``/connect`` → the
  emulator's consent → our ``/callback``): their access tokens are fresh (valid ~2 h), so every
  request is served from the database without calling eBay.

Measured, for each ``--concurrency`` (default 1 and 8; the first is the headline): after a
warm-up, ``--requests`` token requests (round robin over the accounts) and, as the baseline in
the same run, as many ``GET /healthz`` (no database, no auth), interleaved in blocks so that
machine noise hits both alike. One keep-alive ``httpx.AsyncClient`` per concurrency level with
as many connections as workers. Latency = from sending the request to having read the whole
answer, in this process (``time.perf_counter``). Printed: p50/p90/p99/max in ms, requests/s,
server CPU ms per request (``/proc/<pid>/stat``) and the CPU other processes used meanwhile.

Checked: every answer is 200; every token answer carries a non-empty ``access_token`` and
``token_type``, always the same token per account; the emulator saw no refresh-token call (the
tokens really were fresh).

Usage (repository root)::

    .venv/bin/python bench/token_api.py
    .venv/bin/python bench/token_api.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/token_api.py --requests 5000 --concurrency 1,8,32 --json

The last printed line is ``ratio: p99 token API / p99 healthz = X.X×`` (headline concurrency).
The run is bounded (``--budget-s``), talks to 127.0.0.1 only and stops the server process and
drops the database on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from httpx_aiohttp import AiohttpTransport

import _harness as h
from ebay_connector.core.roles import Role
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator, EmulatorServer
from ebay_connector.runtime import open_runtime
from ebay_connector.settings import ENV_PREFIX, Settings, load

TARGET_P99_MS = 5.0
BLOCK = 250  # requests per interleaved block (healthz block, token block, …)
REQUEST_TIMEOUT_S = 10.0
SERVER_START_TIMEOUT_S = 30.0
ADMIN_EMAIL = "bench-admin@bench.test"
TOKEN_PATH = "/api/v1/accounts/{}/access-token"
HEALTH_PATH = "/healthz"


@dataclass
class Latencies:
    """One kind of request at one concurrency, accumulated over its blocks."""

    name: str
    samples_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0  # sum of the wall time of its blocks
    client_cpu_s: float = 0.0  # this process (httpx building / parsing), during its blocks
    server_cpu_s: float | None = 0.0  # the server process during its blocks (None: unreadable)

    def pct(self, q: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.samples_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    @property
    def rps(self) -> float:
        return len(self.samples_ms) / self.wall_s if self.wall_s > 0 else float("nan")

    def per_request_ms(self, cpu_s: float | None) -> float | None:
        return None if cpu_s is None else 1000 * cpu_s / max(1, len(self.samples_ms))

    def as_dict(self) -> dict[str, float | None]:
        server = self.per_request_ms(self.server_cpu_s)
        return {
            "p50_ms": round(self.pct(50), 3),
            "p90_ms": round(self.pct(90), 3),
            "p99_ms": round(self.pct(99), 3),
            "max_ms": round(max(self.samples_ms), 3),
            "rps": round(self.rps, 1),
            "server_cpu_ms_per_request": None if server is None else round(server, 3),
            "client_cpu_ms_per_request": round(self.per_request_ms(self.client_cpu_s) or 0.0, 3),
        }


@dataclass(frozen=True)
class Level:
    """Everything measured at one concurrency."""

    concurrency: int
    token: Latencies
    healthz: Latencies
    others_pct_of_core: float | None  # CPU used meanwhile by processes not part of the run

    @property
    def ratio(self) -> float:
        return self.token.pct(99) / self.healthz.pct(99)


# ----------------------------------------------------------------------------- set-up


def server_env(settings: Settings) -> dict[str, str]:
    """The environment of ``ebay-connector serve`` equivalent to ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        {
            f"{ENV_PREFIX}DATABASE_URL": settings.database_url,
            f"{ENV_PREFIX}EBAY_ENVIRONMENT": settings.ebay_environment.value,
            f"{ENV_PREFIX}EMULATOR_URL": settings.emulator_url,
            f"{ENV_PREFIX}KEY_FILE": str(settings.key_file),
            f"{ENV_PREFIX}HOST": settings.host,
            f"{ENV_PREFIX}PORT": str(settings.port),
            f"{ENV_PREFIX}PUBLIC_URL": settings.public_url,
            f"{ENV_PREFIX}MAX_CALLS_PER_SECOND": "0",
        }
    )
    return env


async def create_org(settings: Settings, password: str, *, can_proxy: bool = False) -> str:
    """Organization, admin and a token-reading API key (and proxy use); returns the key."""
    async with open_runtime(settings) as runtime:
        org_id = await runtime.store.create_organization("bench")
        await Users(runtime.db).create(org_id, ADMIN_EMAIL, Role.ADMIN, password)
        _, key = await ApiKeys(runtime.db).create(
            org_id, "bench", can_read_tokens=True, can_proxy=can_proxy
        )
    return key


@dataclass(frozen=True)
class Served:
    base_url: str
    pid: int
    key: str  # the organization's API key


@contextmanager
def serving(
    database_url: str,
    emulator_url: str,
    register: Callable[[Settings], None],
    workdir: Path,
    deadline: h.Deadline,
    password: str,
    *,
    can_proxy: bool = False,
) -> Iterator[Served]:
    """``ebay-connector serve --no-worker`` as its own process on a free port, with one
    organization, its admin (``password``) and an API key; ``register`` tells the emulator this
    server's callback. Stopped on exit."""

    def settings_for(port: int) -> Settings:
        return load(
            _env_file=None,
            database_url=database_url,
            ebay_environment="emulator",
            emulator_url=emulator_url,
            key_file=workdir / "keyring.json",
            host="127.0.0.1",
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            max_calls_per_second=0,
        )

    key = asyncio.run(create_org(settings_for(h.free_port()), password, can_proxy=can_proxy))
    for attempt in range(3):  # a free port can be taken between probing and binding
        port = h.free_port()
        settings = settings_for(port)
        register(settings)
        log = workdir / f"server-{port}.log"
        proc = h.spawn(
            [str(h.CLI), "serve", "--no-worker"], env=server_env(settings), cwd=workdir, log=log
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            if not wait_healthy(base_url, proc, deadline):
                if attempt == 2:
                    raise h.BenchError(f"the server did not start:\n{h.tail(log)}")
                continue
            h.progress(f"server pid {proc.pid} on {base_url}")
            yield Served(base_url, proc.pid, key)
            return
        finally:
            h.stop(proc)
    raise h.BenchError("unreachable")


def wait_healthy(base_url: str, proc: Any, deadline: h.Deadline) -> bool:
    until = time.monotonic() + min(SERVER_START_TIMEOUT_S, deadline.remaining())
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < until:
            if proc.poll() is not None:
                return False
            try:
                if client.get(base_url + HEALTH_PATH).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


async def connect_accounts(base_url: str, password: str, count: int) -> list[int]:
    """``count`` sellers through the real flow: /connect → consent (agree) → /callback."""
    ids = []
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as session:
        login = await session.post(
            "/api/auth/login", json={"email": ADMIN_EMAIL, "password": password}
        )
        if login.status_code != 200:
            raise h.BenchError(f"login failed: {login.status_code} {login.text[:200]}")
        session.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False) as browser:
            for i in range(count):
                start = await session.post("/api/ebay/connect", follow_redirects=False)
                if start.status_code != 303:
                    raise h.BenchError(f"/connect: {start.status_code} {start.text[:200]}")
                consent = urlsplit(start.headers["location"])
                query = {k: v[0] for k, v in parse_qs(consent.query).items()}
                agreed = await browser.post(
                    f"{consent.scheme}://{consent.netloc}{consent.path}",
                    data={**query, "username": f"bench_seller_{i}", "decision": "agree"},
                )
                if agreed.status_code != 302:
                    raise h.BenchError(f"consent: {agreed.status_code} {agreed.text[:200]}")
                back = parse_qs(urlsplit(agreed.headers["location"]).query)
                done = await session.get(
                    "/api/ebay/callback",
                    params={"code": back["code"][0], "state": back["state"][0]},
                )
                if done.status_code != 200:
                    raise h.BenchError(f"/callback: {done.status_code} {done.text[:200]}")
                ids.append(int(done.json()["account_id"]))
    return ids


# --------------------------------------------------------------------------- measuring


Check = Callable[[str, httpx.Response], None]


def make_client(base_url: str, key: str, concurrency: int, transport: str) -> httpx.AsyncClient:
    """A keep-alive client with one connection per worker.

    ``aiohttp`` (default): httpx's API over ``httpx_aiohttp.AiohttpTransport``, as the product's
    own client — it spends about a third of the CPU per request of httpx's own transport
    (bench/client_transport.py), so less of the measured latency is the client's.
    ``httpcore``: httpx's own transport, keep-alive pool sized to the concurrency.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    common: dict[str, Any] = {
        "base_url": base_url,
        "headers": {"Authorization": f"Bearer {key}"},
        "timeout": REQUEST_TIMEOUT_S,
        "trust_env": False,
    }
    if transport == "aiohttp":
        return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), **common)
    return httpx.AsyncClient(limits=limits, **common)


async def run_block(
    client: httpx.AsyncClient, paths: list[str], concurrency: int, check: Check
) -> tuple[list[float], float]:
    """Send ``paths`` with ``concurrency`` workers; returns latencies (ms) and wall time (s)."""
    latencies = [0.0] * len(paths)
    answers: list[httpx.Response | None] = [None] * len(paths)
    indexes = iter(range(len(paths)))

    async def worker() -> None:
        for i in indexes:  # shared: each index is taken by exactly one worker
            t0 = time.perf_counter()
            answer = await client.get(paths[i])
            latencies[i] = (time.perf_counter() - t0) * 1000
            answers[i] = answer

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    for path, answer in zip(paths, answers, strict=True):
        assert answer is not None
        check(path, answer)
    return latencies, wall


class TokenCheck:
    """Every token answer: 200, a non-empty token, and the same token per account throughout."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.checked = 0

    def __call__(self, path: str, answer: httpx.Response) -> None:
        if answer.status_code != 200:
            raise h.BenchError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
        body = answer.json()
        token = body.get("access_token")
        if not isinstance(token, str) or not token or not body.get("token_type"):
            raise h.BenchError(f"GET {path}: no token in {answer.text[:200]}")
        if self.tokens.setdefault(path, token) != token:
            raise h.BenchError(f"GET {path}: the token changed during the run (a refresh?)")
        self.checked += 1


def health_check(path: str, answer: httpx.Response) -> None:
    if answer.status_code != 200 or answer.json().get("status") != "ok":
        raise h.BenchError(f"GET {path}: {answer.status_code} {answer.text[:200]}")


async def measure_level(
    base_url: str,
    key: str,
    account_ids: list[int],
    concurrency: int,
    args: argparse.Namespace,
    server_pid: int,
    tokens: TokenCheck,
) -> Level:
    token_paths = [TOKEN_PATH.format(account_ids[i % len(account_ids)]) for i in range(BLOCK)]
    async with make_client(base_url, key, concurrency, args.transport) as client:

        async def block(into: Latencies | None, paths: list[str], check: Check) -> None:
            server0, client0 = h.pid_cpu_s(server_pid), time.process_time()
            latencies, wall = await run_block(client, paths, concurrency, check)
            client1, server1 = time.process_time(), h.pid_cpu_s(server_pid)
            if into is not None:
                into.samples_ms.extend(latencies)
                into.wall_s += wall
                into.client_cpu_s += client1 - client0
                if into.server_cpu_s is None or server0 is None or server1 is None:
                    into.server_cpu_s = None
                else:
                    into.server_cpu_s += server1 - server0

        for _ in range(max(1, args.warmup // BLOCK)):
            await block(None, [HEALTH_PATH] * BLOCK, health_check)
            await block(None, token_paths, tokens)
        token, healthz = Latencies("token"), Latencies("healthz")
        gc.collect()  # start each level without the warm-up's garbage in this process
        meter = h.Meter(server_pid)
        while len(token.samples_ms) < args.requests:
            n = min(BLOCK, args.requests - len(token.samples_ms))
            await block(healthz, [HEALTH_PATH] * n, health_check)
            await block(token, token_paths[:n], tokens)
        usage = meter.stop()
    known = (
        token.client_cpu_s
        + healthz.client_cpu_s
        + (usage.emulator_cpu_s or 0.0)  # Meter's "other process" is the server here
        + (usage.postgres_cpu_s or 0.0)
    )
    return Level(concurrency, token, healthz, h.others_pct_of_core(usage, known))


async def measure(
    base_url: str,
    emulator: Emulator,
    password: str,
    key: str,
    args: argparse.Namespace,
    server_pid: int,
    deadline: h.Deadline,
) -> tuple[list[Level], int]:
    async with h.bounded(deadline):
        account_ids = await connect_accounts(base_url, password, args.accounts)
    h.progress(f"connected {len(account_ids)} accounts (fresh tokens): {account_ids}")
    refreshes_before = emulator.calls.count(grant_type="refresh_token")
    tokens = TokenCheck()
    levels = []
    for concurrency in args.concurrency:
        if args.quiet_wait_s > 0:
            busy = h.wait_for_quiet(min(args.quiet_wait_s, deadline.remaining()))
            if busy is not None:
                h.progress(f"machine {busy:.0f}% busy before concurrency {concurrency}")
        async with h.bounded(deadline):
            level = await measure_level(
                base_url, key, account_ids, concurrency, args, server_pid, tokens
            )
        levels.append(level)
        h.progress(
            f"concurrency {concurrency}: token p99 {level.token.pct(99):.2f} ms, "
            f"healthz p99 {level.healthz.pct(99):.2f} ms"
        )
    refreshes = emulator.calls.count(grant_type="refresh_token") - refreshes_before
    if refreshes:
        raise h.BenchError(f"the emulator saw {refreshes} refresh calls: the tokens were not fresh")
    return levels, tokens.checked


# ---------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = h.Deadline(args.budget_s)
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-token-api-") as tmp:
        workdir = Path(tmp)
        emulator = Emulator(seed=1)
        with (
            EmulatorServer(emulator) as emulator_server,
            h.fresh_database(args.database_url, workdir) as db,
        ):
            h.progress(f"database: {db.description}")

            def register(settings: Settings) -> None:  # its accept URL is this server's callback
                emulator.register_app(
                    client_id=settings.app_client_id,
                    client_secret=settings.app_client_secret,
                    ru_name=settings.app_ru_name,
                    accept_url=settings.callback_url,
                )

            with serving(
                db.url, emulator_server.base_url, register, workdir, deadline, password
            ) as server:
                levels, checked = asyncio.run(
                    measure(
                        server.base_url, emulator, password, server.key, args, server.pid, deadline
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
        "accounts": args.accounts,
        "transport": args.transport,
        **head.token.as_dict(),
        "healthz_p99_ms": round(head.healthz.pct(99), 3),
        "ratio": round(head.ratio, 2),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": head.token.pct(99) <= TARGET_P99_MS,
        "token_answers_checked": checked,
        "levels": [
            {
                "concurrency": level.concurrency,
                "token": level.token.as_dict(),
                "healthz": level.healthz.as_dict(),
                "ratio": round(level.ratio, 2),
                "others_pct_of_core": (
                    None if level.others_pct_of_core is None else round(level.others_pct_of_core, 1)
                ),
            }
            for level in levels
        ],
        "environment": h.environment(),
    }


def print_text(doc: dict[str, Any]) -> None:
    env = doc["environment"]
    print(
        f"token API latency · {doc['backend']} · {doc['accounts']} fresh accounts · "
        f"httpx client over {doc['transport']} · "
        f"{doc['requests']} requests per kind and concurrency · Python {env['python']} · "
        f"{env['cpus']} CPUs"
    )
    print(
        f"{'concurrency':>11} {'endpoint':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'req/s':>7} {'server CPU ms/req':>17} {'client CPU ms/req':>17}"
    )
    for level in doc["levels"]:
        for name in ("token", "healthz"):
            row = level[name]
            print(
                f"{level['concurrency']:>11} {name:>9} {row['p50_ms']:>8.2f} {row['p90_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f} {row['rps']:>7.0f} "
                f"{h.fmt_opt(row['server_cpu_ms_per_request'], '.2f'):>17} "
                f"{row['client_cpu_ms_per_request']:>17.2f}"
            )
        others = h.fmt_opt(level["others_pct_of_core"], ".0f", "%")
        print(f"{'':>11} other processes used {others} of a core meanwhile")
    checked = doc["token_answers_checked"]
    print(f"every answer 200; {checked} token answers checked (one token per account)")
    verdict = h.verdict(doc["p99_ms"], TARGET_P99_MS, at_most=True)
    print(
        f"token API p99 at concurrency {doc['concurrency']}: {doc['p99_ms']:.2f} ms "
        f"(target ≤ {TARGET_P99_MS:g} ms: {verdict})"
    )
    print(f"ratio: p99 token API / p99 healthz = {doc['ratio']:.1f}×")


def concurrency_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of integers ≥ 1")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per kind")
    parser.add_argument(
        "--concurrency",
        type=concurrency_list,
        default=[1, 8],
        help="comma-separated levels; the first is the headline (default 1,8)",
    )
    parser.add_argument("--accounts", type=int, default=4, help="connected accounts")
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
        "--transport",
        choices=("aiohttp", "httpcore"),
        default="aiohttp",
        help="the httpx client's transport (default: aiohttp, as the product's client)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.accounts < 1:
        parser.error("--requests and --accounts must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return h.run_reporting(
        args.json, lambda: run(args), print_text, "server process stopped, bench database dropped"
    )


if __name__ == "__main__":
    sys.exit(main())
