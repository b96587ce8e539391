"""The trust boundary, tried as an attacker and as a careless operator would: sessions that end,
sign-in and connect that cannot be forged cross-site, limits on what one organization can spend,
an emulator that never faces a network, and answers that tell nothing of the server.

Each test here failed before its rule existed (see docs/security.md for the rules).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ebay_connector import cli
from tests.conftest import in_thread

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_the_emulator_environment_refuses_a_non_loopback_host(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    host: str,
) -> None:
    monkeypatch.setenv("EBAY_CONNECTOR_DATABASE_URL", f"sqlite:///{tmp_path}/never.db")
    monkeypatch.setenv("EBAY_CONNECTOR_KEY_FILE", str(tmp_path / "keyring.json"))
    monkeypatch.setenv("EBAY_CONNECTOR_HOST", host)
    for command in (["serve", "--no-worker"], ["demo"]):
        assert in_thread(cli.main, command) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: config_invalid: EBAY_CONNECTOR_HOST:")
        assert "bind 127.0.0.1" in lines[0] and "EBAY_CONNECTOR_EBAY_ENVIRONMENT" in lines[0]
    assert not (tmp_path / "never.db").exists()  # refused before anything was created
