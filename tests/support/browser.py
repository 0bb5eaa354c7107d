"""Headless Chromium (Debian's `chromium`) for pages the product renders: DOM after scripts, screenshots.

Started with the flags this closed network needs (no background networking, no first run, a fresh
profile). In CI a missing Chromium fails; locally the test skips and says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"missing in CI: {message}")
    pytest.skip(message)


def _run(url: str, *extra: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="qc-chromium-") as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


def dump_dom(url: str) -> str:
    """The page's DOM once its scripts have run."""
    proc = _run(url, "--dump-dom")
    assert proc.returncode == 0 and proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def screenshot(url: str, path: Path, size: tuple[int, int] = (1200, 1400)) -> Path:
    proc = _run(url, f"--screenshot={path}", f"--window-size={size[0]},{size[1]}")
    assert proc.returncode == 0 and path.is_file(), proc.stderr[-2000:]
    return path
