"""Shared machinery of the worker benchmarks (``catch_up.py``, ``replicas.py``, ``soak.py``).

What it provides, and exactly what each measure means:

* **The emulator** (:func:`running_emulator`): ``ebay-connector emulator`` as its own process on
  a free 127.0.0.1 port, with the product's emulator app (``EMULATOR_CLIENT_ID`` / ``SECRET`` /
  ``RU_NAME``) registered and a global latency fault (which the emulator applies to the token
  endpoint, not to its control API). Started when ``GET /_emulator/health`` answers.
* **A fresh database** (:func:`fresh_database`): a SQLite file in the run's temp dir, or, for a
  ``postgresql://`` URL, a new database ``bench_<random>`` on that server (created, migrated to
  head, dropped with ``WITH (FORCE)`` at the end, also after a failure).
* **Seeding** (:func:`seed_expired_accounts`): N accounts whose refresh tokens the emulator really
  issued (``POST /_emulator/grants``, concurrently), bulk-inserted with SQLAlchemy Core in
  batches: ``organizations`` (one), ``ebay_accounts`` (``INSERT … RETURNING id`` first: the
  ciphertexts are bound to the account id), then ``ebay_tokens`` with both tokens encrypted by the
  runtime's key ring for that account and field. Every account is due and expired:
  ``access_expires_at`` and ``next_attempt_at`` lie in the past; state ``active``, version 0.
* **Measures**: wall time (``time.perf_counter``), CPU of this process (``time.process_time``:
  all its threads, so also aiosqlite's), CPU of another process (``/proc/<pid>/stat``), machine
  CPU busy share (``/proc/stat``, all processes: other work on the machine shows up here),
  peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``: the process's lifetime peak, KB on Linux).
* **Database round trips** (:class:`DbCounter`): SQLAlchemy events on the engine's
  ``sync_engine`` — every ``before_cursor_execute`` (each statement SQLAlchemy sends, including
  SQLite's ``BEGIN IMMEDIATE``, which the product issues as a statement), every ``commit`` and
  ``rollback``; that sum is the headline "round trips". Also counted, and shown separately: the
  ``begin`` events (on PostgreSQL the asyncpg adapter sends its ``BEGIN`` without a cursor
  execute) and pool ``checkout`` / ``connect`` events (the product sets ``pool_pre_ping`` on
  PostgreSQL: every checkout of a pooled connection is pinged, which the asyncpg adapter does
  with ``BEGIN``, ``;``, ``ROLLBACK`` — 3 round trips). Not counted: asyncpg's one-off
  statement preparation per connection and statement text (cached afterwards).

Every run is bounded (:class:`Deadline`), talks to 127.0.0.1 only, and stops its child processes
on exit — normal, exception, Ctrl-C or SIGTERM (children also get ``PR_SET_PDEATHSIG``, so even a
SIGKILL of the benchmark ends them).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa
from httpx_aiohttp import AiohttpTransport
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.token_state import TokenState
from ebay_connector.db import migrate
from ebay_connector.db import models as m
from ebay_connector.keys.crypto import TokenField
from ebay_connector.runtime import Runtime
from ebay_connector.settings import (
    EMULATOR_CLIENT_ID,
    EMULATOR_CLIENT_SECRET,
    EMULATOR_RU_NAME,
    ENV_PREFIX,
    Settings,
    load,
)

BENCH_DIR = Path(__file__).resolve().parent
# The CLI next to the interpreter running the benchmark (.venv/bin/ebay-connector).
CLI = Path(sys.executable).with_name("ebay-connector")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
HUGE_DAILY_LIMIT = 1_000_000_000  # keeps the quota guard out of the measurement
ACCEPT_URL = "http://127.0.0.1:9/callback"  # never visited: consent is skipped via /grants
EMULATOR_START_TIMEOUT_S = 30.0
CHILD_STOP_GRACE_S = 5.0
PREPING_ROUND_TRIPS = 3  # asyncpg adapter's pre-ping: BEGIN, ";", ROLLBACK
PR_SET_PDEATHSIG = 1
QUIET_WINDOW_S = 2.0  # how long the machine must stay below the threshold
QUIET_GLANCE_S = 0.25  # the busy reading when not waiting (--quiet-wait-s 0)
MB = 1024 * 1024


class BenchError(Exception):
    """The benchmark could not run as designed (not a product failure)."""


# ------------------------------------------------------------------------------ time budget


class Deadline:
    """A wall-clock budget for a whole run; every wait is bounded by what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the run's time budget of {self.seconds:g} s is exhausted")
        return left


# ------------------------------------------------------------------------- child processes

_children: list[subprocess.Popen[bytes]] = []


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the benchmark process dies (even SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C reaches only us; we stop it), output to ``log``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # one prctl call: safe between fork and exec
        )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace_s: float = CHILD_STOP_GRACE_S) -> None:
    """SIGTERM, wait ``grace_s``, then SIGKILL; idempotent."""
    if proc.returncode is None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(grace_s)
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def stop_all_children() -> None:
    for proc in list(reversed(_children)):
        stop(proc)


atexit.register(stop_all_children)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGINT (even when inherited as ignored, e.g. a background job) and SIGTERM unwind as
    KeyboardInterrupt, so every ``finally`` (children, databases) runs."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)


def clean_environment() -> list[str]:
    """Drop the operator's ``EBAY_CONNECTOR_*`` variables from this process (and so from the
    children): every setting a benchmark relies on is then passed explicitly. Returns the names.
    """
    names = sorted(name for name in os.environ if name.startswith(ENV_PREFIX))
    for name in names:
        del os.environ[name]
    return names


class _Output:
    quiet = False


def set_quiet(quiet: bool) -> None:
    """With ``--json`` the progress lines are not printed (stdout carries only the object)."""
    _Output.quiet = quiet


def progress(message: str) -> None:
    """A progress line on stderr."""
    if not _Output.quiet:
        print(message, file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------- measures


def peak_rss_mb() -> float:
    """Lifetime peak RSS of this process (``ru_maxrss`` is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Restart the RSS high-water mark (``VmHWM``) from the current RSS (Linux ``clear_refs``), so
    a phase's own peak is not hidden under an earlier one; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset_mb() -> float:
    """``VmHWM``: the peak RSS since :func:`reset_peak_rss` (the lifetime peak without one)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def _stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on; None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def pid_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from ``/proc/<pid>/stat``."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float | None:
    """CPU seconds of the PostgreSQL server on this machine (every database, every client):
    the live ``postgres`` processes plus, from the postmaster, its reaped children (backends
    that came and went — one per new connection — would otherwise be missed)."""
    ticks, found = 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue
        ticks += int(fields[11]) + int(fields[12])
        found = True
        parent = fields[1]
        try:
            postmaster = (Path("/proc") / parent / "comm").read_text().strip() != "postgres"
        except OSError:
            postmaster = True
        if postmaster:
            ticks += int(fields[13]) + int(fields[14])  # cutime + cstime: reaped backends
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs since boot, from ``/proc/stat``."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    values = [float(v) for v in first[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values)
    return total - idle, total


@dataclass(frozen=True)
class Usage:
    """What a measured phase cost. ``*_cpu_s`` of other processes are None when unreadable."""

    wall_s: float
    cpu_s: float  # this process, all threads
    emulator_cpu_s: float | None
    postgres_cpu_s: float | None  # every postgres process on the machine
    machine_busy_pct: float | None  # share of ALL cores busy (100 % = every core)

    def pct_of_core(self, cpu_s: float | None) -> float | None:
        if cpu_s is None or self.wall_s <= 0:
            return None
        return 100 * cpu_s / self.wall_s


class Meter:
    """Starts the clocks of a phase; :meth:`stop` returns its :class:`Usage`."""

    def __init__(self, emulator_pid: int | None) -> None:
        self.emulator_pid = emulator_pid
        self.emulator0 = pid_cpu_s(emulator_pid) if emulator_pid else None
        self.postgres0 = postgres_cpu_s()
        self.machine0 = machine_cpu()
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def stop(self) -> Usage:
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        emulator1 = pid_cpu_s(self.emulator_pid) if self.emulator_pid else None
        postgres1 = postgres_cpu_s()
        busy1, total1 = machine_cpu()
        busy0, total0 = self.machine0
        return Usage(
            wall_s=wall,
            cpu_s=cpu,
            emulator_cpu_s=_delta(self.emulator0, emulator1),
            postgres_cpu_s=_delta(self.postgres0, postgres1),
            machine_busy_pct=100 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else None,
        )


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def others_pct_of_core(usage: Usage, known_cpu_s: float) -> float | None:
    """CPU used meanwhile by processes the benchmark does not account for (other people's
    work on a shared machine), in % of one core; ``known_cpu_s`` is what it does account for."""
    if usage.machine_busy_pct is None or usage.wall_s <= 0:
        return None
    cores = os.cpu_count() or 1
    busy_core_s = usage.machine_busy_pct / 100 * cores * usage.wall_s
    return max(0.0, 100 * (busy_core_s - known_cpu_s) / usage.wall_s)


def wait_for_quiet(max_wait_s: float, threshold_pct: float = 20.0) -> float | None:
    """Wait (at most ``max_wait_s``) until the machine has been below ``threshold_pct`` busy
    for 2 s in a row, so other work does not distort the measurement. Returns the busy share
    of the last 2 s (None if it cannot be read). With ``max_wait_s`` 0 it does not wait: the
    share is read over a short glance instead (a smoke run should not spend 2 s per phase)."""
    if max_wait_s <= 0:
        return _busy_pct(QUIET_GLANCE_S)
    until = time.monotonic() + max_wait_s
    announced = False
    while True:
        pct = _busy_pct(QUIET_WINDOW_S)
        if pct is None:
            return None
        if pct < threshold_pct or time.monotonic() >= until:
            if pct >= threshold_pct:
                progress(f"machine still {pct:.0f}% busy after {max_wait_s:g} s; measuring anyway")
            return pct
        if not announced:
            progress(f"machine {pct:.0f}% busy with other work; waiting up to {max_wait_s:g} s")
            announced = True


def _busy_pct(window_s: float) -> float | None:
    """Share of all cores busy over the next ``window_s`` (None if /proc/stat is unreadable)."""
    busy0, total0 = machine_cpu()
    time.sleep(window_s)
    busy1, total1 = machine_cpu()
    if total1 <= total0:
        return None
    return 100 * (busy1 - busy0) / (total1 - total0)


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "machine": platform.machine(),
    }


# -------------------------------------------------------------------------- round trips


@dataclass
class DbCounts:
    """Database activity counted by :class:`DbCounter` (see the module docstring)."""

    statements: int = 0
    commits: int = 0
    rollbacks: int = 0
    begins: int = 0
    checkouts: int = 0
    connects: int = 0
    verbs: Counter[str] = field(default_factory=Counter)

    @property
    def round_trips(self) -> int:
        """The headline: statements + COMMITs + ROLLBACKs."""
        return self.statements + self.commits + self.rollbacks

    def wire_round_trips(self, backend: str) -> int:
        """Estimate of what reaches the server: on PostgreSQL adds the adapter's implicit BEGIN
        and the 3-round-trip pre-ping of every checkout of an already pooled connection."""
        if backend != "postgresql":
            return self.round_trips
        pings = max(0, self.checkouts - self.connects)
        return self.round_trips + self.begins + PREPING_ROUND_TRIPS * pings

    def per(self, n: int, backend: str) -> dict[str, Any]:
        """Everything per unit of work (e.g. per refresh), rounded for printing / JSON."""
        d = max(n, 1)
        return {
            "round_trips": round(self.round_trips / d, 3),
            "wire_round_trips_estimate": round(self.wire_round_trips(backend) / d, 3),
            "statements": round(self.statements / d, 3),
            "commits": round(self.commits / d, 3),
            "rollbacks": round(self.rollbacks / d, 3),
            "begins": round(self.begins / d, 3),
            "pool_checkouts": round(self.checkouts / d, 3),
            "new_connections": self.connects,
            "by_verb": {verb: round(k / d, 3) for verb, k in self.verbs.most_common()},
        }


class DbCounter:
    """Counts statements, COMMITs, ROLLBACKs, BEGINs and pool checkouts on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sync_engine = engine.sync_engine
        self.counts = DbCounts()
        self._paused = 0
        self._listeners: list[tuple[Any, str, Any]] = [
            (self.sync_engine, "before_cursor_execute", self._on_execute),
            (self.sync_engine, "commit", self._on_commit),
            (self.sync_engine, "rollback", self._on_rollback),
            (self.sync_engine, "begin", self._on_begin),
            (self.sync_engine.pool, "checkout", self._on_checkout),
            (self.sync_engine.pool, "connect", self._on_connect),
        ]
        for target, name, fn in self._listeners:
            event.listen(target, name, fn)

    def close(self) -> None:
        for target, name, fn in self._listeners:
            event.remove(target, name, fn)

    def reset(self) -> None:
        self.counts = DbCounts()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The benchmark's own queries (checks) are not the product's round trips."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def snapshot(self) -> DbCounts:
        c = self.counts
        return DbCounts(
            c.statements, c.commits, c.rollbacks, c.begins, c.checkouts, c.connects, +c.verbs
        )

    def _on_execute(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if not self._paused:
            self.counts.statements += 1
            verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
            self.counts.verbs[verb] += 1

    def _on_commit(self, conn: Any) -> None:
        if not self._paused:
            self.counts.commits += 1

    def _on_rollback(self, conn: Any) -> None:
        if not self._paused:
            self.counts.rollbacks += 1

    def _on_begin(self, conn: Any) -> None:
        if not self._paused:
            self.counts.begins += 1

    def _on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if not self._paused:
            self.counts.checkouts += 1

    def _on_connect(self, dbapi_conn: Any, record: Any) -> None:
        if not self._paused:
            self.counts.connects += 1


# ------------------------------------------------------------------------------ emulator


@dataclass(frozen=True)
class EmulatorProcess:
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(base_url: str, proc: subprocess.Popen[bytes], until: float) -> bool:
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < until:
            if proc.poll() is not None:
                return False
            try:
                answer = client.get(base_url + "/_emulator/health")
                if answer.status_code == 200 and answer.json().get("ok") is True:
                    return True
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def running_emulator(
    latency_ms: int,
    workdir: Path,
    deadline: Deadline,
    *,
    daily_limits: Mapping[str, int] | None = None,
) -> Iterator[EmulatorProcess]:
    """``ebay-connector emulator`` on a free loopback port, healthy, stopped on exit.

    ``daily_limits`` (grant type → calls a day) replace eBay's, e.g. to refresh more than 50,000
    accounts in one run."""
    if not CLI.exists():
        raise BenchError(f"{CLI} not found: run the benchmark with the project's .venv/bin/python")
    last_log: Path | None = None
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log = workdir / f"emulator-{port}.log"
        argv = [
            str(CLI),
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--client-id",
            EMULATOR_CLIENT_ID,
            "--client-secret",
            EMULATOR_CLIENT_SECRET,
            "--ru-name",
            EMULATOR_RU_NAME,
            "--accept-url",
            ACCEPT_URL,
            "--latency-ms",
            str(latency_ms),
            *(
                arg
                for grant, n in (daily_limits or {}).items()
                for arg in ("--daily-limit", f"{grant}={n}")
            ),
        ]
        proc = spawn(argv, env=dict(os.environ), cwd=workdir, log=log)
        until = time.monotonic() + min(EMULATOR_START_TIMEOUT_S, deadline.remaining())
        if _healthy(base_url, proc, until):
            try:
                yield EmulatorProcess(base_url, proc, log)
            finally:
                stop(proc)
            return
        stop(proc)
        last_log = log
    detail = tail(last_log) if last_log else ""
    raise BenchError(f"the emulator did not become healthy:\n{detail}")


async def emulator_refresh_calls(base_url: str) -> dict[str, int]:
    """How many refresh-token grants the emulator answered: all, and with 200."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        counts = {}
        for key, status in (("all", None), ("ok", 200)):
            params: dict[str, str | int] = {
                "endpoint": "token",
                "grant_type": "refresh_token",
                "limit": 1,
            }
            if status is not None:
                params["status"] = status
            answer = await client.get(base_url + "/_emulator/calls", params=params)
            answer.raise_for_status()
            counts[key] = int(answer.json()["count"])
        return counts


# ------------------------------------------------------------------------------ database


@dataclass(frozen=True)
class BenchDatabase:
    url: str
    backend: str  # "sqlite" or "postgresql"
    description: str


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def describe_backend(url: str | None) -> str:
    if not is_postgres(url):
        return "SQLite (a fresh file per phase in a temp dir)"
    admin = _admin_url(url or "")
    where = f"{admin.host or '127.0.0.1'}:{admin.port or 5432}"
    return f"PostgreSQL (a fresh bench_<random> database per phase on {where})"


def _admin_url(url: str) -> URL:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    return make_url(url)


async def _pg_admin_async(admin: URL, sql: str) -> None:
    conn = await asyncpg.connect(
        host=admin.host or "127.0.0.1",
        port=admin.port or 5432,
        user=admin.username or "postgres",
        password=admin.password,
        database=admin.database or "postgres",
        timeout=10,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_admin(admin: URL, sql: str) -> None:
    asyncio.run(asyncio.wait_for(_pg_admin_async(admin, sql), 60))


async def _pg_server_async(admin: URL) -> dict[str, int]:
    conn = await asyncpg.connect(
        host=admin.host or "127.0.0.1",
        port=admin.port or 5432,
        user=admin.username or "postgres",
        password=admin.password,
        database=admin.database or "postgres",
        timeout=10,
    )
    try:
        limit = int(await conn.fetchval("SHOW max_connections"))
        in_use = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity"))
    finally:
        await conn.close()
    return {"max_connections": limit, "connections_in_use": in_use}


def pg_server(database_url: str) -> dict[str, int]:
    """The server's ``max_connections`` and how many connections exist now (all clients)."""
    return dict(asyncio.run(asyncio.wait_for(_pg_server_async(_admin_url(database_url)), 30)))


@contextlib.contextmanager
def fresh_database(database_url: str | None, workdir: Path) -> Iterator[BenchDatabase]:
    """A new, migrated database: SQLite in ``workdir`` unless ``database_url`` is PostgreSQL.

    Blocking (``migrate.upgrade`` runs its own event loop): call it outside ``asyncio.run``.
    """
    if not is_postgres(database_url):
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        yield BenchDatabase(url, "sqlite", f"SQLite file {path}")
        return
    assert database_url is not None
    admin = _admin_url(database_url)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    _pg_admin(admin, f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)
        where = f"{admin.host or '127.0.0.1'}:{admin.port or 5432}"
        yield BenchDatabase(url, "postgresql", f"PostgreSQL database {name} on {where}")
    finally:
        _pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------------ settings


def bench_settings(
    *, database_url: str, emulator_url: str, key_file: Path, concurrency: int
) -> Settings:
    """The product's settings for a benchmark: emulator, no pacing ceiling, no quota guard."""
    return load(
        _env_file=None,
        database_url=database_url,
        ebay_environment="emulator",
        emulator_url=emulator_url,
        key_file=key_file,
        token_keys=None,
        max_calls_per_second=0,
        worker_concurrency=concurrency,
        daily_refresh_limit=HUGE_DAILY_LIMIT,
    )


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``ebay-connector worker`` process equivalent to ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        {
            f"{ENV_PREFIX}DATABASE_URL": settings.database_url,
            f"{ENV_PREFIX}EBAY_ENVIRONMENT": settings.ebay_environment.value,
            f"{ENV_PREFIX}EMULATOR_URL": settings.emulator_url,
            f"{ENV_PREFIX}KEY_FILE": str(settings.key_file),
            f"{ENV_PREFIX}MAX_CALLS_PER_SECOND": "0",
            f"{ENV_PREFIX}WORKER_CONCURRENCY": str(settings.worker_concurrency),
            f"{ENV_PREFIX}DAILY_REFRESH_LIMIT": str(settings.daily_refresh_limit),
        }
    )
    return env


# ------------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class SeedReport:
    accounts: int
    organization_id: int
    mint_s: float  # minting grants through the emulator's control API
    insert_s: float  # encrypting and bulk-inserting
    wall_s: float


async def _mint(
    client: httpx.AsyncClient, base_url: str, scopes: list[str], usernames: list[str], limit: int
) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(limit)

    async def one(username: str) -> dict[str, Any]:
        async with gate:
            answer = await client.post(
                base_url + "/_emulator/grants",
                json={"client_id": EMULATOR_CLIENT_ID, "username": username, "scopes": scopes},
            )
        if answer.status_code != 201:
            raise BenchError(f"minting a grant failed: {answer.status_code} {answer.text[:200]}")
        body: dict[str, Any] = answer.json()
        return body

    return list(await asyncio.gather(*(one(u) for u in usernames)))


async def seed_expired_accounts(
    runtime: Runtime,
    emulator_url: str,
    count: int,
    *,
    batch_size: int = 1000,
    mint_concurrency: int = 32,
) -> SeedReport:
    """Seed ``count`` connected accounts, all expired and due now (see the module docstring).

    Memory stays bounded by ``batch_size``: each batch is minted, encrypted, inserted and
    dropped before the next, so the seeding hardly shows in the process's peak RSS.
    """
    settings = runtime.settings
    engine = runtime.db.engine
    ring = runtime.keys.ring
    scopes = list(settings.scope_list)
    environment_name = settings.ebay_environment.value
    started = time.perf_counter()
    now = runtime.clock()
    tag = uuid.uuid4().hex[:6]
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.insert(m.Organization)
            .values(name=f"bench-{tag}", created_at=now - timedelta(days=30))
            .returning(m.Organization.id)
        )
        organization_id = int(result.scalar_one())
    mint_s = insert_s = 0.0
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=mint_concurrency))
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(30.0)) as client:
        for first in range(0, count, batch_size):
            indexes = range(first, min(count, first + batch_size))
            usernames = [f"bench_{tag}_{i:06d}" for i in indexes]
            t0 = time.perf_counter()
            grants = await _mint(client, emulator_url, scopes, usernames, mint_concurrency)
            t1 = time.perf_counter()
            await _insert_batch(
                engine,
                ring_encrypt=ring.encrypt,
                organization_id=organization_id,
                environment_name=environment_name,
                scopes=settings.scopes,
                usernames=usernames,
                indexes=indexes,
                grants=grants,
                now=now,
            )
            mint_s += t1 - t0
            insert_s += time.perf_counter() - t1
    return SeedReport(count, organization_id, mint_s, insert_s, time.perf_counter() - started)


async def _insert_batch(
    engine: AsyncEngine,
    *,
    ring_encrypt: Any,
    organization_id: int,
    environment_name: str,
    scopes: str,
    usernames: list[str],
    indexes: range,
    grants: list[dict[str, Any]],
    now: datetime,
) -> None:
    connected = now - timedelta(hours=6)
    accounts = [
        {
            "organization_id": organization_id,
            "environment": environment_name,
            "ebay_user_id": f"uid-{name}",
            "ebay_username": name,
            "label": name,
            "scopes": scopes,
            "refresh_policy": None,
            "last_used_at": None,
            "created_at": connected,
            "updated_at": connected,
        }
        for name in usernames
    ]
    async with engine.begin() as conn:
        inserted = await conn.execute(
            sa.insert(m.EbayAccount).returning(m.EbayAccount.id, sort_by_parameter_order=True),
            accounts,
        )
        ids = [int(row[0]) for row in inserted.all()]
        if len(ids) != len(usernames):
            raise BenchError(f"inserted {len(ids)} accounts, expected {len(usernames)}")
        tokens = []
        for account_id, index, grant in zip(ids, indexes, grants, strict=True):
            tokens.append(
                {
                    "account_id": account_id,
                    "access_token_ciphertext": ring_encrypt(
                        str(grant["access_token"]),
                        account_id=account_id,
                        field=TokenField.ACCESS_TOKEN,
                    ),
                    "access_expires_at": now - timedelta(hours=1),
                    "refresh_token_ciphertext": ring_encrypt(
                        str(grant["refresh_token"]),
                        account_id=account_id,
                        field=TokenField.REFRESH_TOKEN,
                    ),
                    "refresh_expires_at": connected
                    + timedelta(seconds=int(grant["refresh_token_expires_in"])),
                    "state": TokenState.ACTIVE.value,
                    "state_reason": None,
                    "last_error_code": None,
                    "last_error_message": None,
                    "failures_in_row": 0,
                    # Due since the outage began; a stable order ("most urgent first").
                    "next_attempt_at": now - timedelta(hours=1) + timedelta(milliseconds=index),
                    "last_attempt_at": connected,
                    "last_success_at": connected,
                    "version": 0,
                    "lease_owner": None,
                    "lease_until": None,
                    "updated_at": connected,
                }
            )
        await conn.execute(sa.insert(m.EbayToken), tokens)


# -------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class RefreshCheck:
    """Per account: how many *scheduled* attempts ended ``ok`` (from ``refresh_attempts``)."""

    accounts: int
    exactly_once: int
    doubles: int  # more than one scheduled ok attempt
    missed: int  # no scheduled ok attempt
    attempts_by_outcome: dict[str, int]
    still_leased: int  # token rows whose lease an (exited) worker still holds

    @property
    def ok(self) -> bool:
        return self.exactly_once == self.accounts

    def line(self) -> str:
        others = {k: v for k, v in self.attempts_by_outcome.items() if k != Outcome.OK.value}
        extra = f"; non-ok attempts {others}" if others else ""
        if self.still_leased:
            extra += f"; {self.still_leased} accounts still leased (until their lease expires)"
        verdict = "yes" if self.ok else "NO"
        return (
            f"every account refreshed exactly once: {verdict} — {self.exactly_once}/"
            f"{self.accounts} exactly once, doubles {self.doubles}, missed {self.missed}{extra}"
        )


async def check_refreshed_once(engine: AsyncEngine) -> RefreshCheck:
    ok = (
        sa.select(m.RefreshAttempt.account_id, sa.func.count().label("n"))
        .where(
            m.RefreshAttempt.outcome == Outcome.OK.value,
            m.RefreshAttempt.trigger == Trigger.SCHEDULED.value,
        )
        .group_by(m.RefreshAttempt.account_id)
        .subquery()
    )
    per_account = (
        sa.select(sa.func.coalesce(ok.c.n, 0).label("n"))
        .select_from(m.EbayAccount)
        .outerjoin(ok, ok.c.account_id == m.EbayAccount.id)
        .subquery()
    )
    async with engine.connect() as conn:
        histogram = {
            int(n): int(k)
            for n, k in (
                await conn.execute(
                    sa.select(per_account.c.n, sa.func.count()).group_by(per_account.c.n)
                )
            ).all()
        }
        outcomes = {
            str(o): int(k)
            for o, k in (
                await conn.execute(
                    sa.select(m.RefreshAttempt.outcome, sa.func.count()).group_by(
                        m.RefreshAttempt.outcome
                    )
                )
            ).all()
        }
        leased = int(
            (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(m.EbayToken)
                    .where(m.EbayToken.lease_owner.is_not(None))
                )
            ).scalar_one()
        )
    return RefreshCheck(
        still_leased=leased,
        accounts=sum(histogram.values()),
        exactly_once=histogram.get(1, 0),
        doubles=sum(k for n, k in histogram.items() if n > 1),
        missed=histogram.get(0, 0),
        attempts_by_outcome=outcomes,
    )


# ------------------------------------------------------------------------------ printing


def verdict(value: float, target: float, *, at_most: bool = False) -> str:
    met = value <= target if at_most else value >= target
    return "met" if met else "MISSED"


def fmt_opt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{format(value, spec)}{suffix}"


def print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")


@contextlib.asynccontextmanager
async def bounded(deadline: Deadline) -> AsyncIterator[None]:
    """An ``asyncio.timeout`` for what is left of the run's budget."""
    async with asyncio.timeout(deadline.remaining()):
        yield


def run_reporting(
    json_out: bool,
    run: Callable[[], dict[str, Any]],
    print_text: Callable[[dict[str, Any]], None],
    stopped: str,
) -> int:
    """A measuring benchmark's main: signals handled, environment cleaned, the run's document
    printed (JSON or text). 0 even when a target is missed (a result, not a failure), 1 when the
    run failed, 130 when interrupted (``stopped`` says what was cleaned up)."""
    install_signal_handlers()
    clean_environment()
    set_quiet(json_out)
    try:
        doc = run()
    except KeyboardInterrupt:
        print(f"interrupted; {stopped}", file=sys.stderr)
        return 130
    except (BenchError, TimeoutError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    if json_out:
        print_json(doc)
    else:
        print_text(doc)
    return 0
