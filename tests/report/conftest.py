"""A real headless browser for the viewer tests: Debian's chromium, installed when missing.

The viewer's numbers and its hover panel are produced by JavaScript, so a test must run it in a
browser. On a fresh (Debian/Ubuntu) CI machine ``apt-get install -y chromium`` runs once per
session (as root, or through passwordless sudo). Elsewhere set ``RLALIGN_BROWSER`` to a
Chromium or Chrome binary. A missing browser fails the tests: it never skips them silently.
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


def install_chromium() -> str:
    """apt-get install chromium; returns what went wrong, or '' on success."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available on this machine"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        return "not root and no sudo"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        proc = subprocess.run(
            prefix + command, capture_output=True, text=True, env=env, timeout=1200
        )
        if proc.returncode != 0:
            return f"{' '.join(command)} failed: {(proc.stderr or proc.stdout)[-500:]}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_browser()
    if path is None:
        problem = install_chromium()
        path = find_browser()
        if path is None:
            pytest.fail(
                f"no chromium to test the viewer in ({problem or 'installed, yet not on PATH'}); "
                "install it (apt-get install -y chromium) or set RLALIGN_BROWSER=/path/to/chrome"
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
