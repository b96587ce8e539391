"""CLI start-up: how long an operator waits for ``ebay-connector`` to answer.

Measured as whole processes (``subprocess.run``, wall time), each ``--runs`` times after one
warm-up, the median reported, and every figure as a ratio against its baseline measured in the
same run on the same machine:

* ``--help`` against ``python -c "import typer"`` (the least any Typer CLI can cost);
* ``accounts --json`` beside a running demo (SQLite, eight accounts) against
  ``python -c "import sqlalchemy.ext.asyncio, aiosqlite"`` (the least a command that reads the
  database can cost).

The demo is started in a temporary directory with the product's own ``ebay-connector demo`` on
a free loopback port and stopped at the end.

Usage (repository root)::

    .venv/bin/python bench/cli_startup.py
    .venv/bin/python bench/cli_startup.py --runs 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
CLI = str(BIN / "ebay-connector")
START_TIMEOUT_S = 90.0
HELP_TARGET, ACCOUNTS_TARGET = 4.0, 3.0


def timed(argv: Sequence[str], *, env: dict[str, str], cwd: Path, runs: int) -> float:
    """Median wall seconds of ``runs`` runs of ``argv`` (after one warm-up run)."""
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
        if i:
            times.append(elapsed)
    return statistics.median(times)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_demo(cwd: Path, env: dict[str, str], base_url: str) -> subprocess.Popen[bytes]:
    log = (cwd / "demo.log").open("wb")
    process = subprocess.Popen([CLI, "demo"], cwd=cwd, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the demo exited: {(cwd / 'demo.log').read_text()[-1000:]}")
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the demo did not answer /healthz in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        cwd = Path(tmp)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
        env.update(
            HOME=str(cwd),
            EBAY_CONNECTOR_PORT=str(port),
            EBAY_CONNECTOR_PUBLIC_URL=f"http://127.0.0.1:{port}",
            EBAY_CONNECTOR_EMULATOR_URL=f"http://127.0.0.1:{port}/emulator",
        )
        python = sys.executable
        figures = {
            "typer_s": timed([python, "-c", "import typer"], env=env, cwd=cwd, runs=runs),
            "help_s": timed([CLI, "--help"], env=env, cwd=cwd, runs=runs),
        }
        demo = start_demo(cwd, env, f"http://127.0.0.1:{port}")
        try:
            figures["sqlalchemy_s"] = timed(
                [python, "-c", "import sqlalchemy.ext.asyncio, aiosqlite"],
                env=env,
                cwd=cwd,
                runs=runs,
            )
            figures["accounts_json_s"] = timed(
                [CLI, "accounts", "--json"], env=env, cwd=cwd, runs=runs
            )
        finally:
            stop(demo)
    figures["help_ratio"] = figures["help_s"] / figures["typer_s"]
    figures["accounts_ratio"] = figures["accounts_json_s"] / figures["sqlalchemy_s"]
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    figures = measure(args.runs)
    if args.json:
        print(json.dumps({**figures, "runs": args.runs}))
        return 0
    for label, key in (
        ("python -c 'import typer'", "typer_s"),
        ("ebay-connector --help", "help_s"),
        ("python -c 'import sqlalchemy.ext.asyncio, aiosqlite'", "sqlalchemy_s"),
        ("ebay-connector accounts --json (beside the demo)", "accounts_json_s"),
    ):
        print(f"{label:<54} {figures[key] * 1000:7.0f} ms")
    print(
        f"ratio: --help {figures['help_ratio']:.1f}× import typer (target ≤ {HELP_TARGET:g}×); "
        f"accounts --json {figures['accounts_ratio']:.1f}× import sqlalchemy.ext.asyncio, "
        f"aiosqlite (target ≤ {ACCOUNTS_TARGET:g}×)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
