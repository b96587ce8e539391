"""Benchmark output carries no secret: the secret canary (test_canary.py) extended to bench/.

A small real catch-up run (real emulator process, real worker, SQLite) prints its figures; the
output must hold no eBay token (the emulator's tokens are a header plus 60+ characters of
base64; a masked prefix is much shorter), no ciphertext and no client secret.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ebay_connector.settings import EMULATOR_CLIENT_SECRET

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
FULL_TOKEN = re.compile(r"v\^1\.1#[^\s\"',]*?[A-Za-z0-9+/=]{40,}")
CIPHERTEXT = re.compile(r"ENC:v1:[A-Za-z0-9_-]+:[A-Za-z0-9_-]{16,}")


def test_catch_up_benchmark_output_holds_no_secret(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "catch_up.py"),
            "--accounts",
            "40",
            "--baseline-accounts",
            "5",
            "--latency-ms",
            "1",
            "--quiet-wait-s",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode in (0, 1), output[-2000:]  # 1: a target missed, still a full report
    assert "every account refreshed exactly once: yes" in output, output[-2000:]
    leaks = [
        name
        for name, found in (
            ("an eBay token", FULL_TOKEN.search(output)),
            ("a ciphertext", CIPHERTEXT.search(output)),
            ("the client secret", EMULATOR_CLIENT_SECRET in output),
        )
        if found
    ]
    if leaks:  # named, never printed: the output itself would be the leak
        pytest.fail(f"benchmark output contains {', '.join(leaks)}", pytrace=False)
