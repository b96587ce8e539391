"""Refresh the README's screenshots (docs/img/*.png) from a real demo in Debian's Chromium.

Usage (repository root, after ./scripts/test has installed the dev tools):

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the browser tests' harness: the same demo and sign-in

from tests.browser.harness import (  # noqa: E402
    ADMIN_EMAIL,
    VIEWPORT,
    launched_browser,
    running_demo,
    sign_in,
)

IMAGES = ROOT / "docs" / "img"
PAGES = {"accounts": "/", "terminal": "/terminal", "workers": "/workers"}


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="screenshots-") as tmp,
        running_demo(Path(tmp)) as started,
        launched_browser() as browser,
    ):
        context = browser.new_context(viewport=VIEWPORT, base_url=started.demo.base_url)
        page = context.new_page()
        sign_in(page, ADMIN_EMAIL, started.admin_password)
        for name, path in PAGES.items():
            page.goto(path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(IMAGES / f"{name}.png"), full_page=False)
            print(f"docs/img/{name}.png")
        context.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
