"""The per-session files a replay leaves next to its JSONL records: ``report.html`` and ``transcript.vtt``.

Both are built from the JSONL files themselves (what the sinks wrote), so they show exactly the records
that Kafka and the store got.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connectors.report import render_report
from connectors.subtitles import to_vtt


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_session_files(where: Path) -> None:
    """Write ``report.html`` and ``transcript.vtt`` into the session directory ``where``."""
    transcripts = read_jsonl(where / "transcripts.jsonl")
    windows = read_jsonl(where / "windows.jsonl")
    sessions = read_jsonl(where / "sessions.jsonl")
    metrics = read_jsonl(where / "metrics.jsonl")
    first = sessions[0] if sessions else {}
    final = [m for m in metrics if m.get("final")] or metrics
    room = first.get("room") or where.parent.name
    html = render_report(
        room=room,
        session_id=first.get("session_id") or where.name,
        participants=(sessions[-1] if sessions else {}).get("participants", []),
        transcripts=transcripts,
        windows=windows,
        metrics=final[-1] if final else None,
    )
    (where / "report.html").write_text(html, encoding="utf-8")
    (where / "transcript.vtt").write_text(to_vtt(transcripts), encoding="utf-8")
