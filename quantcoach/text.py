"""Text from outside (names, transcripts, URLs) made safe for a terminal or a log line."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_control(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``): a newline cannot
    forge a log line and an ANSI escape cannot drive the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
