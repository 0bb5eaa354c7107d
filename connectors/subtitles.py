"""A session's final transcripts as subtitles: WebVTT (with ``<v Name>`` voice tags) and SubRip.

Cues are the finals in media order; text is escaped for each format (WebVTT treats ``<`` and ``&`` as
markup, and a line holding only ``-->`` would start a new cue), so untrusted speech text cannot break
the file. Replay writes ``transcript.vtt``; ``GET /sessions/<id>/transcript?format=vtt|srt`` serves both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMATS = {"vtt": "text/vtt; charset=utf-8", "srt": "application/x-subrip; charset=utf-8"}


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    return " ".join(text.replace("-->", "->").split())


def _vtt_escape(text: str) -> str:
    return _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cues(transcripts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    finals = [t for t in transcripts if t.get("is_final", True) and _one_line(t.get("text", ""))]
    return sorted(finals, key=lambda t: (t["start"], t["participant"]))


def to_vtt(transcripts: Iterable[dict[str, Any]]) -> str:
    lines = ["WEBVTT", ""]
    for t in _cues(transcripts):
        who = _vtt_escape(t.get("name") or t["participant"])
        end = max(t["end"], t["start"] + 0.001)
        timing = f"{_stamp(t['start'], '.')} --> {_stamp(end, '.')}"
        lines += [timing, f"<v {who}>{_vtt_escape(t['text'])}", ""]
    return "\n".join(lines)


def to_srt(transcripts: Iterable[dict[str, Any]]) -> str:
    blocks = []
    for n, t in enumerate(_cues(transcripts), start=1):
        who = _one_line(t.get("name") or t["participant"])
        end = max(t["end"], t["start"] + 0.001)
        timing = f"{_stamp(t['start'], ',')} --> {_stamp(end, ',')}"
        blocks.append(f"{n}\n{timing}\n{who}: {_one_line(t['text'])}\n")
    return "\n".join(blocks)


def render(transcripts: Iterable[dict[str, Any]], fmt: str) -> str:
    if fmt == "vtt":
        return to_vtt(transcripts)
    if fmt == "srt":
        return to_srt(transcripts)
    raise ValueError(f"unknown subtitle format {fmt!r} (vtt or srt)")
