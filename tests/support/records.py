"""Wire records as plain dicts for the tests: v2 transcripts, windows, session events and metrics.

Each builder checks its record with ``quantcoach.wire.validate``; the store, migration and web tests
store them.
"""

from __future__ import annotations

import json
from typing import Any

from quantcoach.wire import validate

PEOPLE = {
    "interviewer": {"identity": "iv-7", "name": "Morgan", "role": "interviewer"},
    "candidate": {"identity": "cand-3", "name": "Riley", "role": "candidate"},
}
ROSTER = list(PEOPLE.values())


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def transcript(
    session: str, n: int, start: float, speaker: str = "interviewer", *, room: str = "r", final: bool = True
) -> dict[str, Any]:
    who = PEOPLE[speaker]
    record = {
        "schema": "quantcoach.transcript/2",
        "room": room,
        "session_id": session,
        "participant": who["identity"],
        "speaker": speaker,
        "name": who["name"],
        "utterance_id": f"{session}:{who['identity']}:{n}",
        "text": f"sentence {n}",
        "is_final": final,
        "start": start,
        "end": start + 1.0,
        "language": "en",
        "confidence": 0.9,
        "engine": "t",
        "emitted_at": "2026-01-02T03:04:05.000Z",
    }
    validate(record)
    return record


def window(session: str, seq: int, *, room: str = "r", started_at: str | None = None) -> dict[str, Any]:
    segments = [
        {
            "utterance_id": f"{session}:iv-7:{seq}",
            "participant": "iv-7",
            "speaker": "interviewer",
            "name": "Morgan",
            "text": f"words {seq}",
            "start": seq * 10.0,
            "end": seq * 10.0 + 5,
            "context": False,
        }
    ]
    record = {
        "schema": "quantcoach.window/2",
        "room": room,
        "session_id": session,
        "window_id": f"{session}:{seq}",
        "seq": seq,
        "start": seq * 10.0,
        "end": seq * 10.0 + 5,
        "reason": "length",
        "participants": ROSTER,
        "started_at": started_at,
        "segments": segments,
        "text": f"Interviewer: words {seq}",
        "emitted_at": "2026-01-02T03:04:06.000Z",
    }
    validate(record)
    return record


def session_event(
    session: str, event: str, *, room: str = "r", at: str = "2026-01-02T03:00:00.000Z"
) -> dict[str, Any]:
    record = {
        "schema": "quantcoach.session/1",
        "room": room,
        "session_id": session,
        "event": event,
        "participants": ROSTER,
        "started_at": "2026-01-02T03:00:00Z",
        "at": at,
    }
    validate(record)
    return record


def metrics(
    session: str,
    media_s: float,
    final: bool = False,
    *,
    room: str = "r",
    at: str = "2026-01-02T03:05:00.000Z",
) -> dict[str, Any]:
    speaker = {
        "identity": "iv-7",
        "name": "Morgan",
        "role": "interviewer",
        "talk_s": media_s / 2,
        "turns": 1,
        "words": 10,
        "wpm": 120.0,
        "longest_turn_s": 3.0,
        "questions": 1,
        "fillers": 0,
        "response_latency_s": None,
        "interruptions": 0,
    }
    record = {
        "schema": "quantcoach.metrics/1",
        "room": room,
        "session_id": session,
        "final": final,
        "media_s": media_s,
        "speakers": [speaker],
        "longest_silence_s": 1.5,
        "overlaps": 0,
        "speaker_changes": 2,
        "emitted_at": at,
    }
    validate(record)
    return record
