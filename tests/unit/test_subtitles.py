"""Subtitle exports, read back by independent parsers (webvtt-py, srt)."""

from __future__ import annotations

import io

import pytest
import srt
import webvtt

from connectors.subtitles import render, to_srt, to_vtt

FINALS = [
    {"participant": "cand-1", "name": "Riley", "text": "Four outcomes, <b>so</b> a & b --> c.", "start": 10.8,
     "end": 15.612, "is_final": True},
    {"participant": "iv-1", "name": "Morgan", "text": "Good morning.", "start": 0.5, "end": 4.489,
     "is_final": True},
    {"participant": "iv-1", "name": "Morgan", "text": "partial", "start": 5.0, "end": 6.0, "is_final": False},
    {"participant": "iv-1", "name": "Morgan", "text": "   ", "start": 7.0, "end": 8.0, "is_final": True},
    {"participant": "iv-1", "name": "Dr. <Evil>", "text": "Hour two.", "start": 3725.25, "end": 3726.0},
]  # fmt: skip


def test_vtt_parses_with_voices_times_and_escaped_text() -> None:
    text = to_vtt(FINALS)
    assert text.startswith("WEBVTT\n")
    cues = webvtt.from_buffer(io.StringIO(text))
    assert [(c.start, c.end) for c in cues] == [
        ("00:00:00.500", "00:00:04.489"),
        ("00:00:10.800", "00:00:15.612"),
        ("01:02:05.250", "01:02:06.000"),
    ]
    assert cues[0].voice == "Morgan" and cues[1].voice == "Riley"
    assert "<b>" not in cues[1].raw_text and "&lt;b&gt;" in cues[1].raw_text and "-->" not in cues[1].raw_text


def test_srt_parses_in_order_with_speaker_names() -> None:
    subs = list(srt.parse(to_srt(FINALS)))
    assert [s.index for s in subs] == [1, 2, 3]
    assert subs[0].start.total_seconds() == pytest.approx(0.5) and subs[0].content == "Morgan: Good morning."
    assert subs[2].start.total_seconds() == pytest.approx(3725.25)


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="vtt or srt"):
        render(FINALS, "txt")
