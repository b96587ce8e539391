"""The CLI starts light: a command loads only what it uses.

`--help` runs in a fresh interpreter and must not import the web stack, the HTTP clients, the
database layer or the emulator; the CLI's copies of two defaults stay equal to their owners'.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ebay_connector.cli import keys, running
from ebay_connector.emulator.serve import DEFAULT_PORT
from ebay_connector.keys.rotation import DEFAULT_BATCH_SIZE

pytestmark = pytest.mark.acceptance

HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "aiohttp",
    "httpx",
    "sqlalchemy",
    "pydantic_settings",
    "ebay_connector.emulator",
    "ebay_connector.web",
    "ebay_connector.runtime",
)

PROBE = """
import json, sys
from ebay_connector.cli import main
code = main(sys.argv[1:])
loaded = sorted(sys.modules)
sys.stderr.write(json.dumps({"code": code, "modules": loaded}))
"""


def loaded_by(*argv: str) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc = json.loads(done.stderr.strip().splitlines()[-1])
    return doc["code"], set(doc["modules"])


@pytest.mark.parametrize(
    "argv", [("--help",), ("keys", "--help"), ("accounts", "--help"), ("doctor", "--help")]
)
def test_help_imports_neither_the_web_stack_nor_the_emulator(argv: tuple[str, ...]) -> None:
    code, modules = loaded_by(*argv)
    assert code == 0
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []


def test_the_probe_sees_what_a_command_imports() -> None:
    """Guards the test above against a probe that cannot see imports at all."""
    code, modules = loaded_by("keys", "generate")
    assert code == 0
    assert "ebay_connector.keys.crypto" in modules


def test_the_cli_copies_of_defaults_equal_their_owners() -> None:
    assert running.EMULATOR_PORT == DEFAULT_PORT
    assert keys.ROTATION_BATCH_SIZE == DEFAULT_BATCH_SIZE
