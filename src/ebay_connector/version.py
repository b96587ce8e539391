"""Which code is running: the package version plus the git commit when it can be known.

The team of a real system of this kind could not tell which image their worker ran; every
heartbeat and the start-up line carry this.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from ebay_connector import __version__

COMMIT_ENV_VARS = ("EBAY_CONNECTOR_GIT_COMMIT", "SOURCE_COMMIT", "GIT_COMMIT")


@functools.cache
def git_commit() -> str | None:
    for name in COMMIT_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value[:12]
    source_dir = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607
            cwd=source_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@functools.cache
def code_version() -> str:
    commit = git_commit()
    return f"{__version__}+g{commit}" if commit else __version__
