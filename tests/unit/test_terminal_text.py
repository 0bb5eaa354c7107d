"""Names and transcripts from outside reach terminals and logs escaped: no forged lines, no ANSI."""

from __future__ import annotations

from connectors.terminal_sink import format_transcript
from quantcoach.records import Transcript
from quantcoach.tail import format_record
from quantcoach.text import escape_control

EVIL_NAME = "Riley\x1b[2J\x1b[31m"
EVIL_TEXT = "fine\nforged line\r\x07"


def test_escape_control_keeps_text_and_shows_controls() -> None:
    assert escape_control("Black-Scholes, Itô") == "Black-Scholes, Itô"
    assert escape_control("a\nb\x1b[31m") == "a\\nb\\x1b[31m"


def test_tail_prints_one_line_per_transcript_with_controls_escaped() -> None:
    t = Transcript("mock-42", "cand-3", "candidate", EVIL_NAME, "S:cand-3:0", EVIL_TEXT, True, 1.0, 2.0,
                   "whisper", session_id="S")  # fmt: skip
    line = format_record(t.to_record())
    assert "\n" not in line and "\x1b" not in line and "\r" not in line and "\x07" not in line
    assert "\\x1b[2J" in line and "fine\\nforged line" in line


def test_replay_terminal_view_escapes_names_and_text() -> None:
    t = Transcript("mock-42", "cand-3", "candidate", EVIL_NAME, "S:cand-3:0", EVIL_TEXT, True, 1.0, 2.0,
                   "whisper", session_id="S")  # fmt: skip
    shown = format_transcript(t)
    assert "\x1b" not in shown and "\n" not in shown
