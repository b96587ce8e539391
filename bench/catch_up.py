"""Outage recovery: how fast ONE worker process catches up when every account is overdue.

Scenario: eBay (the emulator, 100 ms per token call) was unreachable; now 10,000 accounts are
all expired and due. One worker — the product's ``Worker`` built by ``runtime.worker()`` in this
process, concurrency 64 — runs ``run_once()`` until ``Store.due_count`` is 0. Then the
sequential design (concurrency 1: one refresh after the other, as a real system of this kind
refreshed) runs on 300 fresh accounts against the same latency: the sequential baseline. Each
phase gets a fresh emulator process and a fresh database (SQLite file in a temp dir, or a new
PostgreSQL database ``bench_<random>``).

Measured over the worker phase only (seeding excluded):

* refreshes/s — successful refreshes / wall time from the first ``run_once`` until nothing is
  due (the latency bound is concurrency / latency: 640/s at 64 and 100 ms);
* CPU s and CPU ms per refresh — ``time.process_time`` of this process (every thread: with
  SQLite also aiosqlite's); the emulator's CPU is another process and is shown beside it;
* peak RSS — ``ru_maxrss`` of this process at the end of the phase (lifetime peak, so it
  includes imports and seeding), beside the RSS just before the worker phase and the phase's own
  peak (``VmHWM`` restarted at the phase's start): their difference is what the worker phase
  added, which must not grow with the number of accounts;
* database round trips per refresh — see ``_harness.DbCounter``: statements + COMMITs +
  ROLLBACKs on the runtime's engine, everything the worker does in the phase (claims, per-cycle
  bookkeeping, the refreshes) divided by the refreshes; the benchmark's own checks are excluded;
* correctness — every account has exactly one scheduled ``ok`` row in ``refresh_attempts``
  (cross-checked with the emulator's count of refresh-token calls).

Usage (repository root)::

    .venv/bin/python bench/catch_up.py                      # SQLite, 10,000 accounts
    .venv/bin/python bench/catch_up.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/catch_up.py --accounts 2000 --baseline-accounts 100 --json
    .venv/bin/python bench/catch_up.py --profile /tmp/catch_up.pstats   # cProfile, main phase

The last printed line is ``ratio: N× (concurrency 64 vs sequential baseline)``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import cProfile
import gc
import io
import pstats
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h
from ebay_connector import loop as product_loop
from ebay_connector.runtime import open_runtime

TARGET_RPS = 400.0
TARGET_RATIO = 40.0
TARGET_RSS_MB = 200.0
TARGET_ROUND_TRIPS = 4.0
MAX_CYCLES = 20  # run_once until nothing is due, but never forever
# The emulator enforces eBay's 50,000 refresh grants a day; a run over more accounts raises it.
EBAY_DAILY_REFRESH_LIMIT = 50_000


@dataclass(frozen=True)
class Phase:
    """One measured worker phase."""

    label: str
    accounts: int
    concurrency: int
    latency_ms: int
    backend: str
    database: str
    seed: h.SeedReport
    cycles: int
    refreshed: int
    failed: int
    usage: h.Usage
    rss_before_mb: float
    phase_peak_rss_mb: float  # since the phase started (the lifetime peak where not resettable)
    peak_rss_mb: float
    db: h.DbCounts
    check: h.RefreshCheck
    emulator_calls: dict[str, int]
    load_before_pct: float | None  # machine busy share just before the phase

    @property
    def others_pct(self) -> float | None:
        """Other processes' CPU during the phase (not this one, the emulator or PostgreSQL)."""
        u = self.usage
        postgres = (u.postgres_cpu_s or 0.0) if self.backend == "postgresql" else 0.0
        known = u.cpu_s + (u.emulator_cpu_s or 0.0) + postgres
        return h.others_pct_of_core(u, known)

    @property
    def refreshes_per_s(self) -> float:
        return self.refreshed / self.usage.wall_s if self.usage.wall_s > 0 else 0.0

    @property
    def latency_bound(self) -> float:
        return self.concurrency * 1000 / self.latency_ms if self.latency_ms else float("inf")

    @property
    def cpu_ms_per_refresh(self) -> float:
        return 1000 * self.usage.cpu_s / max(self.refreshed, 1)

    @property
    def round_trips_per_refresh(self) -> float:
        return self.db.round_trips / max(self.refreshed, 1)

    def to_dict(self) -> dict[str, Any]:
        u = self.usage
        return {
            "accounts": self.accounts,
            "concurrency": self.concurrency,
            "latency_ms": self.latency_ms,
            "cycles": self.cycles,
            "refreshed": self.refreshed,
            "failed": self.failed,
            "wall_s": round(u.wall_s, 3),
            "refreshes_per_s": round(self.refreshes_per_s, 1),
            "latency_bound_per_s": round(self.latency_bound, 1),
            "cpu_s": round(u.cpu_s, 3),
            "cpu_ms_per_refresh": round(self.cpu_ms_per_refresh, 3),
            "cpu_pct_of_core": round(u.pct_of_core(u.cpu_s) or 0.0, 1),
            "emulator_cpu_s": None if u.emulator_cpu_s is None else round(u.emulator_cpu_s, 3),
            "postgres_cpu_s": None
            if u.postgres_cpu_s is None or self.backend != "postgresql"
            else round(u.postgres_cpu_s, 3),
            "machine_busy_pct": None
            if u.machine_busy_pct is None
            else round(u.machine_busy_pct, 1),
            "machine_busy_before_pct": None
            if self.load_before_pct is None
            else round(self.load_before_pct, 1),
            "others_pct_of_core": None if self.others_pct is None else round(self.others_pct, 1),
            "rss_before_mb": round(self.rss_before_mb, 1),
            "phase_peak_rss_mb": round(self.phase_peak_rss_mb, 1),
            "phase_added_rss_mb": round(self.phase_peak_rss_mb - self.rss_before_mb, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "db_per_refresh": self.db.per(self.refreshed, self.backend),
            "seed_s": round(self.seed.wall_s, 2),
            "exactly_once": self.check.exactly_once,
            "doubles": self.check.doubles,
            "missed": self.check.missed,
            "attempts_by_outcome": self.check.attempts_by_outcome,
            "emulator_refresh_calls": self.emulator_calls,
        }


async def _measure(
    args: argparse.Namespace,
    *,
    label: str,
    accounts: int,
    concurrency: int,
    emulator: h.EmulatorProcess,
    database: h.BenchDatabase,
    workdir: Path,
    deadline: h.Deadline,
    profile: Path | None,
    profiler_kind: str,
) -> Phase:
    settings = h.bench_settings(
        database_url=database.url,
        emulator_url=emulator.base_url,
        key_file=workdir / "keyring.json",
        concurrency=concurrency,
    )
    async with h.bounded(deadline), open_runtime(settings) as runtime:
        counter = h.DbCounter(runtime.db.engine)
        with counter.paused():
            h.progress(f"{label}: seeding {accounts} expired accounts ...")
            seed = await h.seed_expired_accounts(runtime, emulator.base_url, accounts)
            due = await runtime.store.due_count(runtime.clock())
        if due != accounts:
            raise h.BenchError(f"{due} accounts due after seeding, expected {accounts}")
        load_before = await asyncio.to_thread(h.wait_for_quiet, args.quiet_wait_s)
        gc.collect()
        rss_before = h.current_rss_mb()
        peak_before = h.peak_rss_mb()  # the reset below restarts ru_maxrss too
        h.reset_peak_rss()
        worker = runtime.worker()
        # Per refresh: the whole refresh in ms, and of it the eBay call in ms (16 bytes a refresh,
        # not a tuple's ~100: the benchmark must not add to the memory it measures).
        whole_ms, ebay_ms = array.array("d"), array.array("d")

        def timed(result: Any, seconds: float) -> None:
            whole_ms.append(seconds * 1000)
            ebay_ms.append(float(result.exchange.duration_ms or 0.0) if result.exchange else 0.0)

        runtime.refresher.observers.append(timed)
        h.progress(f"{label}: refreshing with concurrency {concurrency} ...")
        profiler = Profiler(profiler_kind) if profile else None
        counter.reset()
        cycles = refreshed = failed = 0
        meter = h.Meter(emulator.pid)
        if profiler:
            profiler.start()
        while True:
            report = await worker.run_once()
            cycles += 1
            refreshed += report.counts.refreshed
            failed += report.counts.failed
            with counter.paused():
                left = await runtime.store.due_count(runtime.clock())
            if left == 0 or cycles >= MAX_CYCLES:
                break
        if profiler:
            profiler.stop()
        usage = meter.stop()
        phase_peak = h.peak_rss_since_reset_mb()
        peak = max(peak_before, h.peak_rss_mb(), phase_peak)
        if whole_ms:
            whole, ebay = sorted(whole_ms), sorted(ebay_ms)
            h.progress(
                f"{label}: one refresh from claim to commit p50 {whole[len(whole) // 2]:.0f} ms,"
                f" p90 {whole[len(whole) * 9 // 10]:.0f} ms; of which the eBay call p50"
                f" {ebay[len(ebay) // 2]:.0f} ms, p90 {ebay[len(ebay) * 9 // 10]:.0f} ms"
            )
        counts = counter.snapshot()
        with counter.paused():
            check = await h.check_refreshed_once(runtime.db.engine)
        counter.close()
    calls = await h.emulator_refresh_calls(emulator.base_url)
    if profiler and profile:
        profiler.report(profile)
    return Phase(
        label=label,
        accounts=accounts,
        concurrency=concurrency,
        latency_ms=args.latency_ms,
        backend=database.backend,
        database=database.description,
        seed=seed,
        cycles=cycles,
        refreshed=refreshed,
        failed=failed,
        usage=usage,
        rss_before_mb=rss_before,
        phase_peak_rss_mb=phase_peak,
        peak_rss_mb=peak,
        db=counts,
        check=check,
        emulator_calls=calls,
        load_before_pct=load_before,
    )


class Profiler:
    """cProfile (built in) or pyinstrument (a sampling profiler; not a project dependency:
    install it into a separate venv and put that venv's site-packages on PYTHONPATH).

    Either profiles only the main thread: with SQLite, aiosqlite's thread is not seen. The
    figures of a profiled run are inflated by the profiler's overhead; use its shares, and a
    run without ``--profile`` for the figures.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._cprofile: cProfile.Profile | None = None
        self._pyinstrument: Any = None
        if kind == "pyinstrument":
            try:
                import pyinstrument  # type: ignore[import-not-found,unused-ignore]
            except ImportError as exc:
                raise h.BenchError(
                    "pyinstrument is not importable: pip install it into a separate venv and "
                    "set PYTHONPATH to that venv's site-packages"
                ) from exc
            # Wall-clock samples of what the main thread runs (async_mode off: idle time shows
            # as the event loop's select, not as the awaiting coroutine).
            self._pyinstrument = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")
        else:
            self._cprofile = cProfile.Profile()

    def start(self) -> None:
        if self._pyinstrument is not None:
            self._pyinstrument.start()
        elif self._cprofile is not None:
            self._cprofile.enable()

    def stop(self) -> None:
        if self._pyinstrument is not None:
            self._pyinstrument.stop()
        elif self._cprofile is not None:
            self._cprofile.disable()

    def report(self, path: Path) -> None:
        """Save the profile to ``path`` and print a summary to stderr."""
        if self._pyinstrument is not None:
            path.write_text(self._pyinstrument.output_html(), encoding="utf-8")
            session = path.with_suffix(".pyisession")
            self._pyinstrument.last_session.save(str(session))  # `pyinstrument --load` it
            text = self._pyinstrument.output_text(unicode=True, show_all=False)
            print(f"--- pyinstrument (HTML saved to {path}) ---", file=sys.stderr)
            print(text, file=sys.stderr)
            return
        if self._cprofile is None:
            return
        self._cprofile.dump_stats(path)
        for key in ("tottime", "cumulative"):
            buffer = io.StringIO()
            stats = pstats.Stats(self._cprofile, stream=buffer)
            stats.strip_dirs().sort_stats(key).print_stats(30)
            print(f"--- cProfile, sorted by {key} (stats saved to {path}) ---", file=sys.stderr)
            print(buffer.getvalue(), file=sys.stderr)


def run_phase(
    args: argparse.Namespace,
    *,
    label: str,
    accounts: int,
    concurrency: int,
    workdir: Path,
    deadline: h.Deadline,
    profile: Path | None = None,
) -> Phase:
    """A fresh emulator and a fresh database, seeded, then the measured worker phase."""
    with (
        h.running_emulator(
            args.latency_ms,
            workdir,
            deadline,
            daily_limits={"refresh_token": max(EBAY_DAILY_REFRESH_LIMIT, 2 * accounts)},
        ) as emulator,
        h.fresh_database(args.database_url, workdir) as database,
    ):
        return product_loop.run(
            _measure(
                args,
                label=label,
                accounts=accounts,
                concurrency=concurrency,
                emulator=emulator,
                database=database,
                workdir=workdir,
                deadline=deadline,
                profile=profile,
                profiler_kind=args.profiler,
            )
        )


def describe(phase: Phase) -> list[str]:
    u = phase.usage
    db = phase.db.per(phase.refreshed, phase.backend)
    verbs = ", ".join(f"{verb} {k:.2f}" for verb, k in db["by_verb"].items())
    lines = [
        f"{phase.label} — concurrency {phase.concurrency}, {phase.accounts} accounts:",
        f"  seeded in {phase.seed.wall_s:.1f} s (minting grants {phase.seed.mint_s:.1f} s, "
        f"encrypt + insert {phase.seed.insert_s:.1f} s)",
        f"  refreshed           {phase.refreshed} in {phase.cycles} cycle(s), failed "
        f"{phase.failed}",
        f"  wall                {u.wall_s:.2f} s",
        f"  refreshes/s         {phase.refreshes_per_s:.1f}  (latency bound "
        f"{phase.latency_bound:.0f}/s)",
        f"  CPU (this process)  {u.cpu_s:.2f} s = {u.pct_of_core(u.cpu_s) or 0:.0f}% of one core",
        f"  CPU ms / refresh    {phase.cpu_ms_per_refresh:.2f}",
        f"  emulator CPU        {h.fmt_opt(u.emulator_cpu_s, '.2f', ' s')} = "
        f"{h.fmt_opt(u.pct_of_core(u.emulator_cpu_s), '.0f', '%')} of one core",
        *(
            [
                f"  PostgreSQL CPU      {h.fmt_opt(u.postgres_cpu_s, '.2f', ' s')} = "
                f"{h.fmt_opt(u.pct_of_core(u.postgres_cpu_s), '.0f', '%')} of one core "
                "(every postgres process on the machine)"
            ]
            if phase.backend == "postgresql"
            else []
        ),
        f"  machine CPU busy    {h.fmt_opt(u.machine_busy_pct, '.0f', '%')} of "
        f"{h.environment()['cpus']} cores (before the phase "
        f"{h.fmt_opt(phase.load_before_pct, '.0f', '%')}; other processes meanwhile "
        f"{h.fmt_opt(phase.others_pct, '.0f', '%')} of one core)",
        f"  RSS                 {phase.rss_before_mb:.1f} MB before the worker phase, its peak "
        f"{phase.phase_peak_rss_mb:.1f} MB (+{phase.phase_peak_rss_mb - phase.rss_before_mb:.1f}"
        f" MB); lifetime peak {phase.peak_rss_mb:.1f} MB",
        f"  DB round trips      {db['round_trips']:.2f} / refresh = statements "
        f"{db['statements']:.2f} + COMMIT {db['commits']:.2f} + ROLLBACK {db['rollbacks']:.2f}",
        f"    statements by verb / refresh: {verbs}",
    ]
    lines.append(
        f"    pool checkouts {db['pool_checkouts']:.2f} / refresh; new connections opened in "
        f"the phase: {db['new_connections']}"
    )
    if phase.backend == "postgresql":
        lines.append(
            f"    not in that figure, also on the wire: the adapter's BEGIN {db['begins']:.2f} / "
            f"refresh and the pool pre-ping (3 round trips per checkout of a pooled "
            f"connection) → ≈ {db['wire_round_trips_estimate']:.2f} / refresh"
        )
    lines.append(f"  {phase.check.line()}")
    lines.append(
        f"  emulator refresh-token calls: {phase.emulator_calls.get('all', 0)} "
        f"({phase.emulator_calls.get('ok', 0)} answered 200)"
    )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000, help="expired accounts")
    parser.add_argument("--concurrency", type=int, default=64, help="worker concurrency")
    parser.add_argument("--latency-ms", type=int, default=100, help="emulator token latency")
    parser.add_argument(
        "--baseline-accounts", type=int, default=300, help="accounts of the concurrency-1 run"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="postgresql://… (a bench_<random> database is created there); default: SQLite "
        "in a temp dir",
    )
    parser.add_argument("--timeout-s", type=float, default=1200.0, help="budget of the run")
    parser.add_argument(
        "--profile", type=Path, default=None, help="cProfile the main phase, save pstats here"
    )
    parser.add_argument(
        "--profiler", choices=("cprofile", "pyinstrument"), default="cprofile", help="for --profile"
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=120.0,
        help="before each measured phase, wait up to this long for other work on the machine "
        "to stop (0: do not wait)",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="main phase only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.baseline_accounts < 1 or args.concurrency < 1:
        parser.error("--accounts, --baseline-accounts and --concurrency must be >= 1")
    if args.latency_ms < 0:
        parser.error("--latency-ms must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h.install_signal_handlers()
    h.set_quiet(args.json)
    dropped = h.clean_environment()
    deadline = h.Deadline(args.timeout_s)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-catch-up-") as tmp:
            workdir = Path(tmp)
            main_phase = run_phase(
                args,
                label="concurrent worker",
                accounts=args.accounts,
                concurrency=args.concurrency,
                workdir=workdir,
                deadline=deadline,
                profile=args.profile,
            )
            baseline = (
                None
                if args.skip_baseline
                else run_phase(
                    args,
                    label="sequential baseline (the field report's design)",
                    accounts=args.baseline_accounts,
                    concurrency=1,
                    workdir=workdir,
                    deadline=deadline,
                )
            )
    except KeyboardInterrupt:
        print("interrupted; child processes stopped, bench databases dropped", file=sys.stderr)
        return 130
    except (TimeoutError, h.BenchError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return report(args, main_phase, baseline, dropped)


def report(
    args: argparse.Namespace, main_phase: Phase, baseline: Phase | None, dropped: list[str]
) -> int:
    rps = main_phase.refreshes_per_s
    base_rps = baseline.refreshes_per_s if baseline else None
    ratio = rps / base_rps if base_rps else None
    round_trips = main_phase.round_trips_per_refresh
    correct = main_phase.check.ok and (baseline is None or baseline.check.ok)
    if args.json:
        h.print_json(
            {
                "refreshes_per_s": round(rps, 1),
                "baseline_refreshes_per_s": None if base_rps is None else round(base_rps, 2),
                "ratio": None if ratio is None else round(ratio, 1),
                "rss_before_mb": round(main_phase.rss_before_mb, 1),
                "phase_peak_rss_mb": round(main_phase.phase_peak_rss_mb, 1),
                "peak_rss_mb": round(main_phase.peak_rss_mb, 1),
                "db_round_trips_per_refresh": round(round_trips, 3),
                "backend": main_phase.backend,
                "cpu_ms_per_refresh": round(main_phase.cpu_ms_per_refresh, 3),
                "wall_s": round(main_phase.usage.wall_s, 3),
                "every_account_refreshed_once": correct,
                "targets": {
                    "refreshes_per_s": TARGET_RPS,
                    "ratio": TARGET_RATIO,
                    "peak_rss_mb": TARGET_RSS_MB,
                    "db_round_trips_per_refresh": TARGET_ROUND_TRIPS,
                },
                "main": main_phase.to_dict(),
                "baseline": None if baseline is None else baseline.to_dict(),
                "environment": h.environment(),
            }
        )
        return 0 if correct else 1
    env = h.environment()
    print(
        f"catch-up after an outage: 1 worker process (in-process runtime.worker()), emulator "
        f"latency {args.latency_ms} ms, {h.describe_backend(args.database_url)} "
        f"[python {env['python']}, {env['cpus']} cpus]"
    )
    if dropped:
        print(f"(ignored the environment's {', '.join(dropped)})")
    print()
    for line in describe(main_phase):
        print(line)
    if baseline:
        print()
        for line in describe(baseline):
            print(line)
    print()
    print("targets:")
    print(
        f"  refreshes/s ≥ {TARGET_RPS:.0f} at concurrency {main_phase.concurrency}: "
        f"{rps:.1f} → {h.verdict(rps, TARGET_RPS)}"
    )
    if ratio is not None:
        print(
            f"  ≥ {TARGET_RATIO:.0f}× the sequential baseline: {ratio:.1f}× → "
            f"{h.verdict(ratio, TARGET_RATIO)}"
        )
    print(
        f"  peak RSS ≤ {TARGET_RSS_MB:.0f} MB at {main_phase.accounts} accounts: "
        f"{main_phase.peak_rss_mb:.1f} MB → "
        f"{h.verdict(main_phase.peak_rss_mb, TARGET_RSS_MB, at_most=True)}"
    )
    print(
        f"  ≤ {TARGET_ROUND_TRIPS:.0f} database round trips per refresh: {round_trips:.2f} → "
        f"{h.verdict(round_trips, TARGET_ROUND_TRIPS, at_most=True)}"
    )
    print(f"  every account refreshed exactly once: {'yes' if correct else 'NO'}")
    if ratio is None:
        print("ratio: n/a (baseline skipped)")
    else:
        print(f"ratio: {ratio:.1f}× (concurrency {main_phase.concurrency} vs sequential baseline)")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
