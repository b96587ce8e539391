"""What the browser tests share: Debian's Chromium, a running demo, signing in, screenshots and
the accessibility check (axe-core, pinned in tests/browser/node, injected into the page).

Without /usr/bin/chromium a browser test is skipped with a visible reason, unless
EBAY_CONNECTOR_TEST_REQUIRE_BROWSER=1 (set by CI), where that is a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from tests.acceptance.test_demo_cli import CLI, Demo, base_env, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER = os.environ.get("EBAY_CONNECTOR_TEST_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
START_TIMEOUT_S = 60
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}

ADMIN_EMAIL = "admin@demo.local"
VIEWER_EMAIL = "viewer@demo.local"
# WCAG 2.2 A and AA, as axe-core tags them (2.0, 2.1 and 2.2 criteria of both levels).
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@contextmanager
def launched_browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        reason = f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason}; EBAY_CONNECTOR_TEST_REQUIRE_BROWSER=1 requires it")
        pytest.skip(reason)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class RunningDemo:
    demo: Demo
    admin_password: str
    viewer_password: str


@contextmanager
def running_demo(cwd: Path, extra_env: dict[str, str] | None = None) -> Iterator[RunningDemo]:
    """A real `ebay-connector demo` in ``cwd`` on a free port, after its first worker cycle;
    stopped with SIGTERM."""
    port = free_port()
    env = dict(base_env(cwd, port), PYTHONUNBUFFERED="1", **(extra_env or {}))
    log_path = cwd / "demo.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [CLI, "demo"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    demo = Demo(cwd, env, process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, log_path.read_text()
            text = log_path.read_text()
            admin = re.search(rf"sign in as {re.escape(ADMIN_EMAIL)} / (\S+) \(admin\)", text)
            viewer = re.search(rf"or {re.escape(VIEWER_EMAIL)} / (\S+) \(viewer\)", text)
            if admin and viewer:
                passwords = admin.group(1), viewer.group(1)
                break
            assert time.monotonic() < deadline, f"demo printed no sign-in line in time:\n{text}"
            time.sleep(0.2)
        while True:
            try:
                if httpx.get(demo.base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "demo did not answer /healthz in time"
            time.sleep(0.2)
        # The in-process worker runs its first cycle right after seeding; the badges shown are
        # the states after that cycle, so wait until its heartbeat counts one cycle.
        while True:
            beats = demo.json("inspect", "runtime")["heartbeats"]
            if beats and beats[0]["cycles"] >= 1:
                break
            assert time.monotonic() < deadline, "no worker cycle in time"
            time.sleep(0.3)
        yield RunningDemo(demo, *passwords)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/(\?.*)?$"))


def screenshot(page: Page, name: str) -> None:
    """artifacts/browser/<name>.png of the whole page (artifacts/ is git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 A/AA violations on the page as it is now."""
    assert AXE.exists(), f"{AXE} is missing: run `npm ci` in tests/browser/node"
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated over the DevTools protocol: a <script> element would break the product's
        # content security policy (scripts from its own files only), which stays on in tests.
        page.evaluate(AXE.read_text())
    result: dict[str, Any] = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
        WCAG_AA,
    )
    return list(result["violations"])


def assert_accessible(page: Page) -> None:
    """Zero axe-core WCAG 2.2 AA violations, each one named with its nodes when there are."""
    violations = axe_violations(page)
    described = [
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"][:5])
        for v in violations
    ]
    assert not violations, f"{page.url}:\n" + "\n".join(described)
