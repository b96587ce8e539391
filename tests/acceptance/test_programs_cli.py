"""The CLI of programs' permissions and return URLs, as a real process on a SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.test_demo_cli import CLI

pytestmark = pytest.mark.acceptance


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
    env.update(
        HOME=str(tmp_path),
        EBAY_CONNECTOR_DATABASE_URL=f"sqlite:///{tmp_path}/programs.db",
        EBAY_CONNECTOR_KEY_FILE=str(tmp_path / "keyring.json"),
    )
    return subprocess.run(
        [CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_key_permissions_and_return_urls(tmp_path: Path) -> None:
    assert cli(tmp_path, "db", "upgrade").returncode == 0
    assert cli(tmp_path, "orgs", "create", "Lister").returncode == 0
    made = cli(tmp_path, "api-keys", "create", "--org", "Lister", "--connect", "--proxy")
    assert made.returncode == 0, made.stderr
    assert "may connect, proxy" in made.stderr
    assert made.stdout.startswith("ebc_")
    (key,) = json.loads(cli(tmp_path, "api-keys", "list", "--org", "Lister", "--json").stdout)[
        "api_keys"
    ]
    assert (key["can_read_tokens"], key["can_connect"], key["can_proxy"]) == (False, True, True)

    added = cli(tmp_path, "orgs", "return-urls", "add", "--org", "Lister", "HTTPS://App.Test/ebay")
    assert added.returncode == 0, added.stderr
    again = cli(tmp_path, "orgs", "return-urls", "add", "--org", "Lister", "https://app.test/ebay")
    assert "already allowed" in again.stdout
    listed = cli(tmp_path, "orgs", "return-urls", "list", "--org", "Lister", "--json")
    assert json.loads(listed.stdout) == {"return_urls": ["https://app.test/ebay"]}

    bad = cli(tmp_path, "orgs", "return-urls", "add", "--org", "Lister", "https://a.test/x?y=1")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: usage_error: URL an allowed return URL is an origin and a path prefix, "
        "without ? or #"
    ]
    removed = cli(
        tmp_path, "orgs", "return-urls", "remove", "--org", "Lister", "https://app.test/ebay"
    )
    assert removed.returncode == 0, removed.stderr
    gone = cli(
        tmp_path, "orgs", "return-urls", "remove", "--org", "Lister", "https://app.test/ebay"
    )
    assert gone.returncode == 2 and gone.stderr.startswith("error: not_found:")
