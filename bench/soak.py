"""Soak: crashes and a database outage under load — is anything lost, doubled or stuck?

Set-up, all on 127.0.0.1: a fresh PostgreSQL database ``bench_<random>`` on the server of
``--database-url`` (migrated, dropped at the end), the emulator in this process (a thread, seeded,
``--latency-ms`` on the token endpoint so refreshes are in flight when a process dies), a TCP proxy
(``_tcp_proxy.py``) in front of PostgreSQL, and ``--accounts`` accounts whose tokens the emulator
really issued. Through the proxy run two real processes of the product:

* ``ebay-connector serve`` — the token API and an in-process worker (never killed here);
* ``ebay-connector worker`` — the crash victim: every ``duration / kills`` seconds a batch of
  accounts is made due, and once the victim holds leases it is SIGKILLed at a seeded point
  (``--seed``) and started again. Its orphaned leases expire and the other worker takes over.

Once, at 40 % of the run, the proxy is cut for ``--outage-s`` (every connection closed, new ones
refused: PostgreSQL "stopped" for the processes), then restored. Meanwhile a client asks the token
API for a token in a loop; availability = share of answers that were 200.

After the run (and a bounded recovery: leases expire, nothing due) the database and the emulator
are checked (``_invariants.py``, the invariants of the suite's crash tests): accounts lost,
tokens lost (a stored token that does not decrypt or that eBay no longer honours), double
refreshes (two applied refreshes that started from the same token), stuck attempts (incomplete
attempt rows, leases held past their expiry) — all must be 0 — plus eBay answers that a kill kept
from being recorded (expected: at most the refreshes in flight at each kill).

Usage (repository root)::

    .venv/bin/python bench/soak.py                          # 120 s, 20 kills, a 30 s outage
    .venv/bin/python bench/soak.py --duration 60 --outage-s 10 --json

The last printed line is ``soak: lost 0, tokens lost 0, doubles 0, stuck 0, availability X%``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

import _harness as h
from _invariants import Invariants, check_invariants
from _tcp_proxy import TcpProxy
from ebay_connector import settings as product_settings
from ebay_connector.core.clock import utcnow
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.emulator import Emulator, EmulatorServer, Faults
from ebay_connector.runtime import Runtime, open_runtime
from ebay_connector.settings import ENV_PREFIX

HTTP_TIMEOUT_S = 3
LEASE_S = 13  # the product's minimum for a 3 s HTTP timeout (timeout + 10 s)
LEASE_WAIT_S = 5.0
VICTIM_START_S = 30.0  # how long a kill waits for the victim to hold leases
RECOVERY_S = LEASE_S + 45.0
POLL_S = 0.05
REQUEST_PAUSE_S = 0.02


@dataclass
class Availability:
    """Token API answers by phase (``run`` / ``outage`` / ``recovery``) and kind."""

    phase: str = "run"
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    outage_started: float | None = None  # monotonic; set once, when the outage begins

    def share_ok(self, phases: tuple[str, ...] | None = None) -> float:
        chosen = [(p, k) for (p, k) in self.answers if phases is None or p in phases]
        total = sum(self.answers[key] for key in chosen)
        ok = sum(self.answers[key] for key in chosen if key[1] == "200")
        return 100.0 * ok / total if total else 0.0

    def kinds(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, kind), n in self.answers.items():
            out[kind] += n
        return dict(out)


@dataclass
class Report:
    duration_s: float
    kills: int = 0
    kills_with_leases: int = 0
    restarts: int = 0
    outage_s: float = 0.0
    not_ready_seen: bool = False
    ready_again_s: float | None = None  # restore → /readyz 200
    server_exit_code: int | None = None
    server_alive_throughout: bool = True
    invariants: Invariants | None = None
    availability: Availability = field(default_factory=Availability)

    def zero(self) -> bool:
        inv = self.invariants
        return (
            inv is not None
            and inv.accounts_lost == inv.tokens_lost == inv.double_refreshes == 0
            and inv.stuck_attempts == inv.half_written == 0
        )

    def to_dict(self) -> dict[str, Any]:
        inv = asdict(self.invariants) if self.invariants else {}
        return {
            "duration_s": round(self.duration_s, 1),
            "kills": self.kills,
            "kills_with_leases": self.kills_with_leases,
            "outage_s": round(self.outage_s, 1),
            "not_ready_seen": self.not_ready_seen,
            "ready_again_s": None if self.ready_again_s is None else round(self.ready_again_s, 2),
            "server_alive_throughout": self.server_alive_throughout,
            "server_exit_code": self.server_exit_code,
            **inv,
            "availability_pct": round(self.availability.share_ok(), 2),
            # Token requests for accounts used before the outage, answered 200 during it (percent).
            "availability_during_outage": round(self.availability.share_ok(("outage",)), 2),
            "availability_outside": round(self.availability.share_ok(("run", "recovery")), 2),
            "availability_outside_outage_pct": round(
                self.availability.share_ok(("run", "recovery")), 2
            ),
            "answers": self.availability.kinds(),
            "ok": self.zero(),
        }


def process_env(database_url: str, emulator_url: str, key_file: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    p = ENV_PREFIX
    env.update(
        {
            f"{p}DATABASE_URL": database_url,
            f"{p}EBAY_ENVIRONMENT": "emulator",
            f"{p}EMULATOR_URL": emulator_url,
            f"{p}KEY_FILE": str(key_file),
            f"{p}HOST": "127.0.0.1",
            f"{p}PORT": str(port),
            f"{p}PUBLIC_URL": f"http://127.0.0.1:{port}",
            f"{p}HTTP_TIMEOUT_SECONDS": str(HTTP_TIMEOUT_S),
            f"{p}LEASE_SECONDS": str(LEASE_S),
            f"{p}WORKER_INTERVAL_SECONDS": "1",
            f"{p}WORKER_CONCURRENCY": "8",
            f"{p}WORKER_DRAIN_SECONDS": "5",
            f"{p}MAX_CALLS_PER_SECOND": "0",
            f"{p}DAILY_REFRESH_LIMIT": str(h.HUGE_DAILY_LIMIT),
        }
    )
    return env


async def token_client(base_url: str, key: str, ids: list[int], seen: Availability) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    served_before: set[int] = set()  # accounts the API answered 200 for before the outage
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=15.0) as client:
        i = 0
        while True:
            account_id = ids[i % len(ids)]
            try:
                answer = await client.get(f"/api/v1/accounts/{account_id}/access-token")
                kind = str(answer.status_code)
                if answer.status_code != 200:
                    kind += " " + str(answer.json().get("error", {}).get("code"))
            except httpx.TransportError as exc:
                kind = f"transport {exc.__class__.__name__}"
            phase = seen.phase
            if phase == "run" and kind == "200" and seen.outage_started is None:
                served_before.add(account_id)
            if phase == "outage" and account_id not in served_before:
                phase = "outage_unused"  # never used before the outage: nothing to serve from
            seen.answers[(phase, kind)] += 1
            i += 1
            await asyncio.sleep(REQUEST_PAUSE_S)


async def _leased(runtime: Runtime) -> int:
    return sum(1 for a in await runtime.store.accounts() if a.lease_owner is not None)


async def _ready(client: httpx.AsyncClient) -> int:
    try:
        return (await client.get("/readyz")).status_code
    except httpx.TransportError:
        return 0


async def soak(args: argparse.Namespace, database_url: str, workdir: Path) -> Report:
    rng = random.Random(args.seed)
    report = Report(duration_s=args.duration)
    emu = Emulator(seed=args.seed)
    port = h.free_port()
    key_file = workdir / "keyring.json"
    emu.register_app(
        product_settings.EMULATOR_CLIENT_ID,
        product_settings.EMULATOR_CLIENT_SECRET,
        product_settings.EMULATOR_RU_NAME,
        f"http://127.0.0.1:{port}/api/ebay/callback",
    )
    with EmulatorServer(emu) as emulator, TcpProxy() as proxy:
        conf = product_settings.load(
            _env_file=None,
            database_url=database_url,
            emulator_url=emulator.base_url,
            key_file=key_file,
        )
        env = process_env(proxy.url(database_url), emulator.base_url, key_file, port)
        async with open_runtime(conf) as runtime:  # straight to PostgreSQL: the observer
            h.progress(f"seeding {args.accounts} accounts")
            seeded = await h.seed_expired_accounts(runtime, emulator.base_url, args.accounts)
            _, key = await ApiKeys(runtime.db).create(
                seeded.organization_id, "soak", can_read_tokens=True
            )
            accounts = await runtime.store.accounts()
            ids = [a.account_id for a in accounts]
            usernames = {a.ebay_username for a in accounts}
            emu.set_faults(Faults(latency_ms=args.latency_ms))
            server = h.spawn([str(h.CLI), "serve"], env=env, cwd=workdir, log=workdir / "s.log")
            victim: subprocess.Popen[bytes] | None = None
            client_task: asyncio.Task[None] | None = None
            try:
                await _wait_healthy(server, f"http://127.0.0.1:{port}")
                base = f"http://127.0.0.1:{port}"
                client_task = asyncio.create_task(token_client(base, key, ids, report.availability))
                started = time.monotonic()
                outage_at = started + 0.4 * args.duration
                outage_done = False
                interval = args.duration / args.kills
                async with httpx.AsyncClient(base_url=base, timeout=10.0) as probe:
                    for n in range(args.kills):
                        tick = started + n * interval
                        if not outage_done and time.monotonic() >= outage_at:
                            await _outage(args, proxy, probe, report)
                            outage_done = True
                        await asyncio.sleep(max(0.0, tick - time.monotonic()))
                        if victim is None or victim.poll() is not None:
                            victim = _spawn_victim(env, workdir, n)
                            report.restarts += 1
                        await _wait_beating(runtime, victim, VICTIM_START_S)
                        batch = rng.sample(ids, max(1, len(ids) // 2))
                        now = utcnow()
                        for account_id in batch:
                            await runtime.store.reschedule(account_id, now)
                        leased = await _wait_leased(runtime, victim, LEASE_WAIT_S)
                        await asyncio.sleep(rng.uniform(0.0, 2 * args.latency_ms / 1000))
                        _kill(victim)
                        victim = _spawn_victim(env, workdir, n + 1)  # warm by the next tick
                        report.restarts += 1
                        report.kills += 1
                        report.kills_with_leases += int(leased)
                        report.server_alive_throughout &= server.poll() is None
                        h.progress(f"kill {report.kills}/{args.kills} (leases held: {leased})")
                    if not outage_done:
                        await _outage(args, proxy, probe, report)
                    report.availability.phase = "recovery"
                    h.progress("recovery: leases expire, the serving worker takes over")
                    emu.clear_faults()
                    deadline = time.monotonic() + RECOVERY_S
                    while time.monotonic() < deadline:
                        due = await runtime.store.due_count(utcnow())
                        if due == 0 and await _leased(runtime) == 0:
                            break
                        await asyncio.sleep(0.5)
                report.server_alive_throughout &= server.poll() is None
            finally:
                if client_task is not None:
                    client_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await client_task
                if victim is not None:
                    _kill(victim)
                if server.poll() is None:
                    server.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        report.server_exit_code = await asyncio.to_thread(server.wait, 40)
                h.stop(server)
            report.invariants = await check_invariants(runtime, emu, usernames=usernames)
    return report


def _spawn_victim(env: dict[str, str], workdir: Path, n: int) -> subprocess.Popen[bytes]:
    log = workdir / f"victim-{n}.log"
    return h.spawn([str(h.CLI), "worker"], env=env, cwd=workdir, log=log)


async def _wait_beating(runtime: Runtime, victim: subprocess.Popen[bytes], wait_s: float) -> None:
    """Until the victim has written its first heartbeat (it is up and about to claim)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and victim.poll() is None:
        if any(b.pid == victim.pid for b in await runtime.heartbeats.all()):
            return
        await asyncio.sleep(POLL_S)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)


async def _wait_healthy(server: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise h.BenchError("the server exited during start-up")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(POLL_S)
    raise h.BenchError("the server never answered /healthz")


async def _wait_leased(runtime: Runtime, victim: subprocess.Popen[bytes], wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and victim.poll() is None:
        if any(
            a.lease_owner is not None and f":{victim.pid}:" in a.lease_owner
            for a in await runtime.store.accounts()
        ):
            return True
        await asyncio.sleep(POLL_S)
    return False


async def _outage(
    args: argparse.Namespace, proxy: TcpProxy, probe: httpx.AsyncClient, report: Report
) -> None:
    h.progress(f"outage: the proxy cuts PostgreSQL off for {args.outage_s:g} s")
    report.availability.phase = "outage"
    report.availability.outage_started = time.monotonic()
    cut = time.monotonic()
    proxy.cut()
    while time.monotonic() - cut < args.outage_s:
        if await _ready(probe) == 503:
            report.not_ready_seen = True
        await asyncio.sleep(0.5)
    proxy.restore()
    report.outage_s = time.monotonic() - cut
    restored = time.monotonic()
    while time.monotonic() - restored < 60:
        if await _ready(probe) == 200:
            report.ready_again_s = time.monotonic() - restored
            break
        await asyncio.sleep(POLL_S)
    report.availability.phase = "run"
    h.progress(f"outage over; ready again after {report.ready_again_s} s")


def describe(report: Report) -> list[str]:
    inv = report.invariants
    assert inv is not None
    a = report.availability
    return [
        f"run: {report.duration_s:g} s, {report.kills} SIGKILLs of `ebay-connector worker` "
        f"({report.kills_with_leases} while it held leases), one outage of "
        f"{report.outage_s:.1f} s",
        f"accounts             {inv.accounts}",
        f"accounts lost        {inv.accounts_lost}",
        f"tokens lost          {inv.tokens_lost}",
        f"double refreshes     {inv.double_refreshes}",
        f"stuck attempts       {inv.stuck_attempts}",
        f"half-written rows    {inv.half_written}",
        f"eBay answers not recorded (killed in flight) {inv.unrecorded_ebay_calls}",
        f"/readyz not ready during the outage: {'yes' if report.not_ready_seen else 'NO'}; "
        f"ready again {h.fmt_opt(report.ready_again_s, '.2f', ' s')} after the restore",
        f"serve process alive throughout: {'yes' if report.server_alive_throughout else 'NO'}; "
        f"exit code on SIGTERM {report.server_exit_code}",
        f"token API availability {a.share_ok():.2f}% overall, "
        f"{a.share_ok(('run', 'recovery')):.2f}% outside the outage, "
        f"{a.share_ok(('outage',)):.2f}% during it for accounts used before it; "
        f"answers {a.kinds()}",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of crashes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the worker")
    parser.add_argument("--outage-s", type=float, default=30.0, help="how long PostgreSQL is cut")
    parser.add_argument("--latency-ms", type=int, default=500, help="emulator token latency")
    parser.add_argument("--database-url", default=h.DEFAULT_POSTGRES_URL)
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="budget of the run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not h.is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL (the proxy forwards TCP)")
    if args.kills < 1 or args.accounts < 4 or args.duration <= 0 or args.outage_s < 0:
        parser.error("need --kills >= 1, --accounts >= 4, --duration > 0, --outage-s >= 0")
    if args.latency_ms >= HTTP_TIMEOUT_S * 1000:
        parser.error(f"--latency-ms must stay below the {HTTP_TIMEOUT_S} s HTTP timeout")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h.install_signal_handlers()
    h.set_quiet(args.json)
    h.clean_environment()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            workdir = Path(tmp)
            with h.fresh_database(args.database_url, workdir) as database:
                report = asyncio.run(
                    asyncio.wait_for(soak(args, database.url, workdir), args.timeout_s)
                )
    except KeyboardInterrupt:
        print("interrupted; processes stopped, database dropped", file=sys.stderr)
        return 130
    except (TimeoutError, h.BenchError) as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 1
    inv = report.invariants
    assert inv is not None
    if args.json:
        h.print_json({**report.to_dict(), "seed": args.seed, "environment": h.environment()})
        return 0 if report.zero() else 1
    for line in describe(report):
        print(line)
    print(
        f"soak: lost {inv.accounts_lost}, tokens lost {inv.tokens_lost}, doubles "
        f"{inv.double_refreshes}, stuck {inv.stuck_attempts}, availability "
        f"{report.availability.share_ok():.2f}% — {'ok' if report.zero() else 'FAILED'}"
    )
    return 0 if report.zero() else 1


if __name__ == "__main__":
    sys.exit(main())
