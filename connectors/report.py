"""A session's report as one self-contained HTML page: no CDN, no network, works from a file.

The page embeds the session's records as JSON and draws everything in the browser from them (an SVG
timeline with one lane per speaker, talk share, each answer's response latency, the transcript with
its window boundaries), so a live page can draw again, with the same code, as records arrive over
the API's SSE stream. Replay writes it next to the JSONL files; ``GET /sessions/<id>/report`` serves it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

PLACEHOLDER = "__REPORT_DATA__"


@cache
def _template() -> str:
    return resources.files("connectors").joinpath("templates", "report.html").read_text(encoding="utf-8")


def embed_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: no "</script>", no HTML comment openers."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_report(
    *,
    room: str,
    session_id: str,
    participants: list[dict[str, Any]],
    transcripts: list[dict[str, Any]],
    windows: list[dict[str, Any]],
    metrics: dict[str, Any] | None = None,
    live: bool = False,
    events_url: str | None = None,
) -> str:
    """The page for one session; with ``live`` it follows ``events_url`` (the SSE stream) until the
    session's ``ended`` event."""
    media_s = max([t["end"] for t in transcripts] + [float((metrics or {}).get("media_s", 0.0))], default=0.0)
    data = {
        "room": room,
        "session_id": session_id,
        "participants": [
            {"identity": p["identity"], "name": p.get("name", ""), "role": p.get("role", "")}
            for p in participants
        ],
        "transcripts": [t for t in transcripts if t.get("is_final", True)],
        "windows": windows,
        "metrics": metrics,
        "media_s": media_s,
        "live": live,
        "events_url": events_url,
    }
    return _template().replace(PLACEHOLDER, embed_json(data), 1)
