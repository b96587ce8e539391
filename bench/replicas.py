"""Replicas on PostgreSQL: does a second..fourth worker process add throughput, and do
replicas claiming with ``FOR UPDATE SKIP LOCKED`` still refresh every account exactly once?

Two runs, each on a fresh emulator process and a fresh PostgreSQL database ``bench_<random>``
(created on the server of ``--database-url``, migrated, seeded with 20,000 accounts all expired
and due, dropped afterwards): first ONE worker process, then ``--replicas`` (4) worker processes
started together. Each worker is a real process, the product's CLI::

    ebay-connector worker --once      # one cycle: claims until nothing is due, then exits

configured only through its environment (``EBAY_CONNECTOR_DATABASE_URL``, ``…_EMULATOR_URL``,
``…_KEY_FILE`` — the key file the seeding encrypted with —, ``…_MAX_CALLS_PER_SECOND=0``,
``…_WORKER_CONCURRENCY``, a huge ``…_DAILY_REFRESH_LIMIT``). With several replicas one may run
out of work and exit while others still refresh; if accounts are still due once all have
exited, the processes are started again (a second "round", counted and reported).

Measured per run:

* refreshes/s — accounts / wall time from spawning the processes until all have exited (all
  rounds); so it includes each process's start-up (imports, engine, HTTP client);
* doubles — accounts with more than one scheduled ``ok`` attempt in ``refresh_attempts``;
  missed — accounts with none (cross-checked with the emulator's refresh-token call count);
* CPU — each worker's user+system time and peak RSS from ``wait4``; the emulator's from
  ``/proc``; PostgreSQL's (every postgres process, reaped backends included) and the machine's
  busy share from ``/proc``: with 2 cores shared by the emulator, PostgreSQL and the workers,
  these say what bounds the throughput (printed as ``bound:``).

Usage (repository root)::

    .venv/bin/python bench/replicas.py
    .venv/bin/python bench/replicas.py --accounts 5000 --latency-ms 100 --json
    .venv/bin/python bench/replicas.py --database-url postgresql://postgres@127.0.0.1:5432/test

The last printed line is ``ratio: X× (4 replicas vs 1)``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h
from ebay_connector.db.database import DEFAULT_POOL_SIZE, Database
from ebay_connector.db.store import Store
from ebay_connector.runtime import open_runtime
from ebay_connector.settings import Settings

MAX_ROUNDS = 5
POOL_SIZE = DEFAULT_POOL_SIZE  # database.create_engine: a fixed pool, no overflow

BUSY_PCT = 90.0  # the machine counts as CPU-saturated above this share of all cores
SATURATED_CORE_PCT = 85.0  # one process counts as saturated above this share of one core
CYCLE_LINE = re.compile(r"^cycle (\w+): due (\d+), refreshed (\d+), failed (\d+)")


@dataclass(frozen=True)
class WorkerExit:
    """One ``worker --once`` process, as ``wait4`` saw it end."""

    pid: int
    exit_code: int
    wall_s: float  # spawn → exit
    cpu_s: float
    max_rss_mb: float
    cycle: str  # the CLI's summary line ("cycle ok: due …, refreshed …")
    refreshed: int | None
    log: Path  # inside the run's temp dir: gone once the run is over
    problems: list[str]  # distinct WARNING/ERROR events, read while the log exists


@dataclass(frozen=True)
class Round:
    workers: list[WorkerExit]
    wall_s: float  # spawn → all exited
    due_after: int


@dataclass(frozen=True)
class ReplicaRun:
    replicas: int
    accounts: int
    concurrency: int
    latency_ms: int
    seed: h.SeedReport
    rounds: list[Round]
    usage: h.Usage
    check: h.RefreshCheck
    emulator_calls: dict[str, int]
    load_before_pct: float | None
    server: dict[str, int]  # PostgreSQL max_connections / connections in use before the run

    @property
    def wall_s(self) -> float:
        return sum(r.wall_s for r in self.rounds)

    @property
    def refreshes_per_s(self) -> float:
        return self.accounts / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def latency_bound(self) -> float:
        in_flight = self.replicas * self.concurrency
        return in_flight * 1000 / self.latency_ms if self.latency_ms else float("inf")

    @property
    def extra_calls(self) -> int:
        """eBay calls beyond one per account (a refresh whose result was not recorded, then
        done again), from the emulator's count."""
        return max(
            0, self.emulator_calls.get("all", 0) - self.check.exactly_once - self.check.doubles
        )

    @property
    def emulator_ms_per_call(self) -> float | None:
        calls = self.emulator_calls.get("all", 0)
        if self.usage.emulator_cpu_s is None or not calls:
            return None
        return 1000 * self.usage.emulator_cpu_s / calls

    @property
    def workers_cpu_s(self) -> float:
        return sum(w.cpu_s for r in self.rounds for w in r.workers)

    @property
    def others_pct(self) -> float | None:
        u = self.usage
        known = self.workers_cpu_s + (u.emulator_cpu_s or 0.0) + (u.postgres_cpu_s or 0.0)
        return h.others_pct_of_core(u, known + u.cpu_s)

    def bound(self) -> str:
        """What limited this run, read from the measured CPU shares."""
        u = self.usage
        workers = u.pct_of_core(self.workers_cpu_s) or 0.0
        emulator = u.pct_of_core(u.emulator_cpu_s)
        postgres = u.pct_of_core(u.postgres_cpu_s)
        shares = (
            f"workers {workers:.0f}%, emulator {h.fmt_opt(emulator, '.0f', '%')}, PostgreSQL "
            f"{h.fmt_opt(postgres, '.0f', '%')}, other processes "
            f"{h.fmt_opt(self.others_pct, '.0f', '%')} of one core"
        )
        cores = os.cpu_count() or 1
        if u.machine_busy_pct is not None and u.machine_busy_pct >= BUSY_PCT:
            return (
                f"CPU — the machine's {cores} cores were {u.machine_busy_pct:.0f}% busy "
                f"({shares}); more worker processes only split the same cores"
            )
        if emulator is not None and emulator >= SATURATED_CORE_PCT:
            return f"the single emulator process ({shares})"
        if self.refreshes_per_s >= 0.85 * self.latency_bound:
            return f"latency × concurrency: {self.latency_bound:.0f}/s ({shares})"
        per_process = workers / max(self.replicas, 1)
        if per_process >= SATURATED_CORE_PCT:
            return f"the worker processes' own CPU ({shares})"
        return (
            f"no resource saturated ({shares}): each refresh holds its slot longer than the eBay "
            "latency — event-loop turns of a busy process and the wait for its group commit "
            "(bench/catch_up.py prints the claim-to-commit split)"
        )

    def to_dict(self) -> dict[str, Any]:
        u = self.usage
        return {
            "replicas": self.replicas,
            "accounts": self.accounts,
            "concurrency": self.concurrency,
            "latency_ms": self.latency_ms,
            "rounds": len(self.rounds),
            "wall_s": round(self.wall_s, 3),
            "refreshes_per_s": round(self.refreshes_per_s, 1),
            "latency_bound_per_s": round(self.latency_bound, 1),
            "workers": [
                {
                    "round": n,
                    "exit_code": w.exit_code,
                    "wall_s": round(w.wall_s, 2),
                    "cpu_s": round(w.cpu_s, 2),
                    "max_rss_mb": round(w.max_rss_mb, 1),
                    "refreshed": w.refreshed,
                }
                for n, r in enumerate(self.rounds, start=1)
                for w in r.workers
            ],
            "workers_cpu_s": round(self.workers_cpu_s, 2),
            "cpu_ms_per_refresh": round(1000 * self.workers_cpu_s / max(self.accounts, 1), 3),
            "emulator_cpu_s": None if u.emulator_cpu_s is None else round(u.emulator_cpu_s, 2),
            "postgres_cpu_s": None if u.postgres_cpu_s is None else round(u.postgres_cpu_s, 2),
            "machine_busy_pct": None
            if u.machine_busy_pct is None
            else round(u.machine_busy_pct, 1),
            "machine_busy_before_pct": None
            if self.load_before_pct is None
            else round(self.load_before_pct, 1),
            "others_pct_of_core": None if self.others_pct is None else round(self.others_pct, 1),
            "exactly_once": self.check.exactly_once,
            "doubles": self.check.doubles,
            "missed": self.check.missed,
            "attempts_by_outcome": self.check.attempts_by_outcome,
            "emulator_refresh_calls": self.emulator_calls,
            "extra_ebay_calls": self.extra_calls,
            "seed_s": round(self.seed.wall_s, 2),
            "still_leased": self.check.still_leased,
            "postgres_server": self.server,
            "bound": self.bound(),
        }


# ----------------------------------------------------------------------------- processes


def problems(log: Path, limit: int = 5) -> list[str]:
    """The distinct WARNING/ERROR events of a worker's log (timestamps and ids stripped)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    seen: dict[str, int] = {}
    for line in lines:
        if " WARNING " not in line and " ERROR " not in line:
            continue
        text = re.sub(r"^\S+ \S+ ", "", line)  # the timestamp
        text = re.sub(r"(account|instance)=\S+ ?", "", text)
        seen[text] = seen.get(text, 0) + 1
    return [f"{k}× {text[:300]}" for text, k in list(seen.items())[:limit]]


def _cycle_line(log: Path) -> tuple[str, int | None]:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "", None
    for line in reversed(lines):
        match = CYCLE_LINE.match(line.strip())
        if match:
            return line.strip(), int(match.group(3))
    return "", None


def run_round(
    replicas: int, settings: Settings, workdir: Path, deadline: h.Deadline, label: str
) -> list[WorkerExit]:
    """Spawn ``replicas`` × ``ebay-connector worker --once``; wait for all (bounded)."""
    env = h.worker_env(settings)
    procs = []
    started = time.perf_counter()
    try:
        for n in range(replicas):
            log = workdir / f"worker-{label}-{n}.log"
            procs.append(
                (h.spawn([str(h.CLI), "worker", "--once"], env=env, cwd=workdir, log=log), log)
            )
        exits: dict[int, WorkerExit] = {}
        while len(exits) < len(procs):
            deadline.remaining()  # raises TimeoutError once the budget is spent
            for proc, log in procs:
                if proc.pid in exits:
                    continue
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                code = os.waitstatus_to_exitcode(status)
                proc.returncode = code  # reaped here: Popen must not wait for it again
                line, refreshed = _cycle_line(log)
                exits[proc.pid] = WorkerExit(
                    pid=proc.pid,
                    exit_code=code,
                    wall_s=time.perf_counter() - started,
                    cpu_s=usage.ru_utime + usage.ru_stime,
                    max_rss_mb=usage.ru_maxrss / 1024,
                    cycle=line,
                    refreshed=refreshed,
                    log=log,
                    problems=problems(log) if code != 0 else [],
                )
            time.sleep(0.01)
        return [exits[proc.pid] for proc, _ in procs]
    finally:
        for proc, _ in procs:
            h.stop(proc)


async def _seed(settings: Settings, emulator_url: str, accounts: int) -> h.SeedReport:
    async with open_runtime(settings) as runtime:
        seed = await h.seed_expired_accounts(runtime, emulator_url, accounts)
        due = await runtime.store.due_count(runtime.clock())
    if due != accounts:
        raise h.BenchError(f"{due} accounts due after seeding, expected {accounts}")
    return seed


async def _due(settings: Settings) -> int:
    db = Database.open(settings.database_url)
    try:
        return await Store(db).due_count(db.clock())
    finally:
        await db.close()


async def _check(settings: Settings, emulator_url: str) -> tuple[h.RefreshCheck, dict[str, int]]:
    db = Database.open(settings.database_url)
    try:
        check = await h.check_refreshed_once(db.engine)
    finally:
        await db.close()
    return check, await h.emulator_refresh_calls(emulator_url)


def run_replicas(
    args: argparse.Namespace, replicas: int, workdir: Path, deadline: h.Deadline
) -> ReplicaRun:
    """Fresh emulator + fresh database, seed, then rounds of ``replicas`` processes."""
    label = f"{replicas}x"
    with (
        h.running_emulator(args.latency_ms, workdir, deadline) as emulator,
        h.fresh_database(args.database_url, workdir) as database,
    ):
        settings = h.bench_settings(
            database_url=database.url,
            emulator_url=emulator.base_url,
            key_file=workdir / "keyring.json",
            concurrency=args.concurrency,
        )
        h.progress(f"{label}: seeding {args.accounts} expired accounts in {database.description}")
        seed = asyncio.run(
            asyncio.wait_for(
                _seed(settings, emulator.base_url, args.accounts), deadline.remaining()
            )
        )
        load_before = h.wait_for_quiet(min(args.quiet_wait_s, deadline.remaining()))
        server = h.pg_server(database.url)
        rounds: list[Round] = []
        meter = h.Meter(emulator.pid)
        while True:
            n = len(rounds) + 1
            h.progress(f"{label}: round {n}: {replicas} × `ebay-connector worker --once` ...")
            started = time.perf_counter()
            workers = run_round(replicas, settings, workdir, deadline, f"{label}-r{n}")
            wall = time.perf_counter() - started
            due_after = asyncio.run(asyncio.wait_for(_due(settings), deadline.remaining()))
            rounds.append(Round(workers, wall, due_after))
            if due_after == 0 or n >= MAX_ROUNDS:
                break
        usage = meter.stop()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in [emulator.log, *(w.log for r in rounds for w in r.workers)]:
                shutil.copy2(log, args.keep_logs / log.name)
        check, calls = asyncio.run(
            asyncio.wait_for(_check(settings, emulator.base_url), deadline.remaining())
        )
    return ReplicaRun(
        replicas=replicas,
        accounts=args.accounts,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
        seed=seed,
        rounds=rounds,
        usage=usage,
        check=check,
        emulator_calls=calls,
        load_before_pct=load_before,
        server=server,
    )


# ------------------------------------------------------------------------------ printing


def describe(run: ReplicaRun) -> list[str]:
    u = run.usage
    title = "1 worker process" if run.replicas == 1 else f"{run.replicas} worker processes"
    lines = [
        f"{title} (concurrency {run.concurrency} each), {run.accounts} accounts:",
        f"  seeded in {run.seed.wall_s:.1f} s (minting grants {run.seed.mint_s:.1f} s, "
        f"encrypt + insert {run.seed.insert_s:.1f} s)",
        f"  PostgreSQL max_connections {run.server.get('max_connections', '?')}, "
        f"{run.server.get('connections_in_use', '?')} in use before the run; each worker "
        f"process's engine opens up to {POOL_SIZE} (a fixed pool, database.create_engine)",
    ]
    for n, r in enumerate(run.rounds, start=1):
        codes = ", ".join(str(w.exit_code) for w in r.workers)
        per = ", ".join("?" if w.refreshed is None else str(w.refreshed) for w in r.workers)
        lines.append(
            f"  round {n}: wall {r.wall_s:.2f} s (spawn → all exited); exit codes [{codes}]; "
            f"refreshed per process [{per}]; still due afterwards {r.due_after}"
        )
        for w in r.workers:
            lines.append(f"    pid {w.pid}: {w.cycle or '(no cycle line)'}")
            lines.extend(f"      {p}" for p in w.problems)
    if len(run.rounds) > 1:
        lines.append(f"  needed {len(run.rounds)} rounds: accounts were still due after round 1")
    cpu = run.workers_cpu_s
    rss = max(w.max_rss_mb for r in run.rounds for w in r.workers)
    lines += [
        f"  refreshes/s         {run.refreshes_per_s:.1f}  (accounts / wall {run.wall_s:.2f} s; "
        f"latency bound {run.latency_bound:.0f}/s)",
        f"  worker CPU          {cpu:.2f} s in total = {u.pct_of_core(cpu) or 0:.0f}% of one "
        f"core, {1000 * cpu / max(run.accounts, 1):.2f} ms per account (start-up included); "
        f"peak RSS per process ≤ {rss:.1f} MB",
        f"  emulator CPU        {h.fmt_opt(u.emulator_cpu_s, '.2f', ' s')} = "
        f"{h.fmt_opt(u.pct_of_core(u.emulator_cpu_s), '.0f', '%')} of one core",
        f"  PostgreSQL CPU      {h.fmt_opt(u.postgres_cpu_s, '.2f', ' s')} = "
        f"{h.fmt_opt(u.pct_of_core(u.postgres_cpu_s), '.0f', '%')} of one core",
        f"  machine CPU busy    {h.fmt_opt(u.machine_busy_pct, '.0f', '%')} of "
        f"{os.cpu_count()} cores (before {h.fmt_opt(run.load_before_pct, '.0f', '%')}; other "
        f"processes meanwhile {h.fmt_opt(run.others_pct, '.0f', '%')} of one core)",
        f"  doubles {run.check.doubles}, missed {run.check.missed} — {run.check.line()}",
        f"  emulator refresh-token calls: {run.emulator_calls.get('all', 0)} "
        f"({run.emulator_calls.get('ok', 0)} answered 200; {run.extra_calls} beyond one per "
        "refreshed account)",
        f"  bound: {run.bound()}",
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000, help="due accounts per run")
    parser.add_argument("--latency-ms", type=int, default=100, help="emulator token latency")
    parser.add_argument(
        "--database-url",
        default=h.DEFAULT_POSTGRES_URL,
        help="PostgreSQL server to create the bench_<random> databases on",
    )
    parser.add_argument("--replicas", type=int, default=4, help="processes of the second run")
    parser.add_argument("--concurrency", type=int, default=64, help="per worker process")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="budget of the run")
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=120.0,
        help="before each measured run, wait up to this long for other work on the machine "
        "to stop (0: do not wait)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the worker and emulator logs here"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not h.is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL: replicas need PostgreSQL")
    if args.accounts < 1 or args.replicas < 2 or args.concurrency < 1 or args.latency_ms < 0:
        parser.error("need --accounts >= 1, --replicas >= 2, --concurrency >= 1, latency >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h.install_signal_handlers()
    h.set_quiet(args.json)
    dropped = h.clean_environment()
    deadline = h.Deadline(args.timeout_s)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
            workdir = Path(tmp)
            one = run_replicas(args, 1, workdir, deadline)
            many = run_replicas(args, args.replicas, workdir, deadline)
    except KeyboardInterrupt:
        print(
            "interrupted; worker and emulator processes stopped, databases dropped", file=sys.stderr
        )
        return 130
    except (TimeoutError, h.BenchError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    ratio = many.refreshes_per_s / one.refreshes_per_s if one.refreshes_per_s else 0.0
    doubles = one.check.doubles + many.check.doubles
    missed = one.check.missed + many.check.missed
    if args.json:
        h.print_json(
            {
                "refreshes_per_s_1": round(one.refreshes_per_s, 1),
                f"refreshes_per_s_{args.replicas}": round(many.refreshes_per_s, 1),
                "doubles": doubles,
                "missed": missed,
                "ratio": round(ratio, 2),
                "backend": "postgresql",
                "runs": [one.to_dict(), many.to_dict()],
                "environment": h.environment(),
            }
        )
        return 0 if doubles == missed == 0 else 1
    env = h.environment()
    print(
        f"replicas: `ebay-connector worker --once` processes on "
        f"{h.describe_backend(args.database_url)}, one emulator process with "
        f"{args.latency_ms} ms latency "
        f"[python {env['python']}, {env['cpus']} cpus]"
    )
    if dropped:
        print(f"(ignored the environment's {', '.join(dropped)})")
    for run in (one, many):
        print()
        for line in describe(run):
            print(line)
    print()
    print(
        f"doubles {doubles}, missed {missed} (both runs): "
        + ("every account refreshed exactly once" if doubles == missed == 0 else "NOT exactly once")
    )
    per_call = many.emulator_ms_per_call or one.emulator_ms_per_call
    capacity = (
        f"it used {per_call:.2f} ms of CPU per token call, so one emulator process could answer "
        f"≈{1000 / per_call:.0f} calls/s on a core of its own"
        if per_call
        else "its CPU could not be read"
    )
    print(
        f"what bounds the throughput: the emulator is ONE process ({capacity}); the machine has "
        f"{env['cpus']} cores shared by the emulator, PostgreSQL and every worker process. "
        f"1 process: {one.bound()}. {args.replicas} processes: {many.bound()}."
    )
    print(f"ratio: {ratio:.2f}× ({args.replicas} replicas vs 1)")
    return 0 if doubles == missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
