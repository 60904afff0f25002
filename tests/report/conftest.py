"""A real headless browser for the viewer tests: Debian's chromium.

The viewer's numbers and its hover panel are produced by JavaScript, so a test must run it in a
browser. ``make test-browser`` installs one (CI runs it before ``make test``); elsewhere set
``RLALIGN_BROWSER`` to a Chromium or Chrome binary. A missing browser fails the tests: it never
skips them silently, and no test installs software.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_browser() -> str | None:
    if os.environ.get("RLALIGN_BROWSER"):
        return os.environ["RLALIGN_BROWSER"]
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_browser()
    if path is None:
        pytest.fail(
            "no chromium to test the viewer in: `make test-browser` installs Debian's chromium "
            "(as root or with passwordless sudo), or set RLALIGN_BROWSER=/path/to/chrome"
        )
    return path


@pytest.fixture
def browse(chromium, tmp_path):
    """``browse(page, *flags) -> str``: run chromium headless on a local page (stdout)."""

    def run(page: Path, *flags: str) -> str:
        proc = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *flags, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    return run
