"""CI or not: in CI (``CI`` set to anything but "", 0, false, no) nothing may skip."""

from __future__ import annotations

import os


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
