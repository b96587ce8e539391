"""The product as a new user meets it: `demo` in a fresh directory, the CLI beside it.

Real processes, real HTTP, the real SQLite file; stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.acceptance

CLI = str(Path(sys.executable).parent / "ebay-connector")
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    cwd: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    base_url: str

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args],
            cwd=self.cwd,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)


def base_env(tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBAY_CONNECTOR_")}
    env.update(
        HOME=str(tmp),
        EBAY_CONNECTOR_PORT=str(port),
        EBAY_CONNECTOR_PUBLIC_URL=f"http://127.0.0.1:{port}",
        EBAY_CONNECTOR_EMULATOR_URL=f"http://127.0.0.1:{port}/emulator",
    )
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    cwd = tmp_path_factory.mktemp("fresh-clone")
    port = free_port()
    env = base_env(cwd, port)
    log = (cwd / "demo.log").open("w")
    process = subprocess.Popen(
        [CLI, "demo"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    running = Demo(cwd, env, process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (cwd / "demo.log").read_text()
            try:
                if httpx.get(running.base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "demo did not answer /healthz in time"
            time.sleep(0.2)
        # The in-process worker runs its first cycle right after seeding.
        while True:
            beats = running.json("inspect", "runtime")["heartbeats"]
            if beats and beats[0]["cycles"] >= 1:
                break
            assert time.monotonic() < deadline, "no worker cycle in time"
            time.sleep(0.3)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def by_username(demo: Demo) -> dict[str, dict[str, Any]]:
    return {a["ebay_username"]: a for a in demo.json("accounts")["accounts"]}


def test_demo_accounts_reach_the_states_of_the_field_report(demo: Demo) -> None:
    accounts = by_username(demo)
    assert len(accounts) == 8
    assert (accounts["demo_revoked"]["state"], accounts["demo_revoked"]["reason"]) == (
        "needs_reconnect",
        "invalid_grant",
    )
    assert accounts["demo_undecryptable"]["reason"] == "decrypt_failed"
    assert accounts["demo_ebay_500"]["state"] == "active"
    assert accounts["demo_ebay_500"]["failures_in_row"] >= 1
    assert accounts["demo_ebay_500"]["display_state"] == "refresh failing"
    assert accounts["demo_expired"]["failures_in_row"] == 0
    assert accounts["demo_main_store"]["display_state"] == "active"
    beat = demo.json("inspect", "runtime")["heartbeats"][0]
    assert beat["reported_status"] in ("degraded", "error")  # never ok while accounts fail
    assert beat["version"].startswith("0.1.0")
    table = demo.cli("accounts")
    assert table.returncode == 0
    assert "needs reconnect (decrypt_failed)" in table.stdout


def test_debug_refresh_matches_the_worker_refresh_in_the_terminal(demo: Demo) -> None:
    done = demo.cli("refresh", "demo_expiring", "--debug", "--json")
    assert done.returncode == 0, done.stderr
    debug = json.loads(done.stdout)
    assert debug["outcome"] == "ok"
    assert debug["trigger"] == "debug"
    entries = demo.json("logs", "--account", "demo_expiring")["entries"]
    triggers = [e["trigger"] for e in entries]
    assert triggers[0] == "debug"
    assert "scheduled" in triggers
    scheduled = next(e for e in entries if e["trigger"] == "scheduled")
    assert entries[0]["token_fingerprint"] == scheduled["token_fingerprint"]
    assert entries[0]["request"] == scheduled["request"]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)  # newest first
    text = demo.cli("refresh", "demo_expiring", "--debug")
    assert "> POST " in text.stdout
    assert "grant_type=refresh_token" in text.stdout
    assert "< HTTP 200" in text.stdout


def test_undecryptable_account_sends_no_request(demo: Demo) -> None:
    done = demo.cli("refresh", "demo_undecryptable", "--debug")
    assert done.returncode == 1
    assert "no request was sent" in done.stdout
    entries = demo.json("logs", "--account", "demo_undecryptable")["entries"]
    refreshes = [e for e in entries if e["action"] == "refresh_token"]
    assert refreshes
    assert all(e["sent"] is False and e["status"] is None for e in refreshes)


def test_token_is_printed_only_by_token_and_nowhere_else(demo: Demo) -> None:
    done = demo.cli("token", "demo_main_store")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("v^1.1#")
    secret_tail = token[40:80]
    outputs = [
        demo.cli("accounts", "--json").stdout,
        demo.cli("logs", "--json", "--limit", "200").stdout,
        demo.cli("logs", "--full", "--limit", "200").stdout,
        demo.cli("inspect", "tokens", "--json").stdout,
        demo.cli("inspect", "runtime", "--json").stdout,
        demo.cli("refresh", "demo_main_store", "--debug").stdout,
        (demo.cwd / "demo.log").read_text(),
    ]
    for text in outputs:
        assert secret_tail not in text
    database = b"".join(p.read_bytes() for p in (demo.cwd / "var").glob("ebay-connector.db*"))
    assert secret_tail.encode() not in database


def test_usage_and_configuration_errors_are_one_line_and_exit_2(demo: Demo) -> None:
    missing = demo.cli("refresh", "no_such_account")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "account_not_found" in missing.stderr
    bad_env = dict(demo.env, EBAY_CONNECTOR_REFRESH_AHEAD_SECONDS="soon")
    broken = demo.cli("accounts", env=bad_env)
    assert broken.returncode == 2
    assert broken.stderr.startswith("error: config_invalid: EBAY_CONNECTOR_REFRESH_AHEAD_SECONDS")
    assert broken.stderr.strip().count("\n") == 0
    unknown = demo.cli("logs", "--trigger", "sometimes")
    assert unknown.returncode == 2


def test_key_file_is_generated_once_with_mode_0600(demo: Demo) -> None:
    key_file = demo.cwd / "var" / "keyring.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "token key ring:" in (demo.cwd / "demo.log").read_text()


def test_logs_follow_streams_new_exchanges_as_they_happen(demo: Demo) -> None:
    follower = subprocess.Popen(
        [CLI, "logs", "--follow", "--json", "--limit", "1", "--account", "demo_outlet"],
        cwd=demo.cwd,
        env=demo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # the newest existing entry
        assert first["account_label"] == "Outlet"
        assert demo.cli("refresh", "demo_outlet", "--debug").returncode == 0
        new = json.loads(follower.stdout.readline())  # arrives without a restart
        assert new["trigger"] == "debug"
        assert new["id"] > first["id"]
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_policy_can_be_set_per_account(demo: Demo) -> None:
    done = demo.cli("policy", "demo_outlet", "proactive")
    assert done.returncode == 0, done.stderr
    assert "policy proactive" in done.stdout
    accounts = by_username(demo)
    assert accounts["demo_outlet"]["refresh_policy"] == "proactive"
    assert demo.cli("policy", "demo_outlet", "sometimes").returncode == 2
    runtime_doc = demo.json("inspect", "runtime")
    assert runtime_doc["quota"]["refresh_token"]["limit"] == 50000
    assert runtime_doc["quota"]["authorization_code"]["used"] >= 8


def test_sigterm_stops_the_demo_and_unregisters_the_worker(demo: Demo) -> None:
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(timeout=30) == 0
    assert demo.json("inspect", "runtime")["heartbeats"] == []
