"""The first release's records (``quantcoach.transcript/1``, ``quantcoach.window/1``), rewritten as v2.

The first release kept no sessions: every record of a room was one interview, with ids under the room
name. Migration ``0002`` makes each room's rows one session whose id is ``legacy_session_id(room)``
and rewrites its records with these pure functions (kept apart from the migration so that tests call
them, and frozen: they describe data that no longer changes).

- **The legacy id**: ``"legacy-" + room`` when the room name is made of ``A-Za-z0-9_-`` and the whole
  fits 64 characters; otherwise every other character becomes ``_``, the result is cut to 48
  characters, and ``-`` plus the first 8 hex digits of the room name's SHA-1 are appended, so two
  rooms never share a legacy id (``mock.1`` -> ``legacy-mock_1-3f0c...``). The id always matches
  ``^[A-Za-z0-9_-]{1,64}$``.
- **Transcripts**: ``session_id`` added; ``utterance_id`` ``<room>:<identity>:<n>`` becomes
  ``<legacy id>:<identity>:<n>``; ``language`` and ``confidence`` are null (v1 did not record them).
- **Windows**: ``window_id`` = ``<legacy id>:<seq>``; ``started_at`` null; ``participants`` = everyone
  seen in the session's segments up to and including this window (identity, name, role = speaker);
  each segment gets the ``utterance_id`` of the session's transcript with the same participant and
  bounds (a segment with no stored transcript gets a new ``n`` after that participant's highest), and
  ``context`` = the same segment (participant, bounds, text) was in the previous window.
- **The end**: the session gets one ``quantcoach.session/1`` ``ended`` record after its last record
  (``at`` = the latest ``emitted_at``): the first release's interviews are over, and nothing can be
  added to them now that records carry session ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

LEGACY_PREFIX = "legacy-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX = 64


def legacy_session_id(room: str) -> str:
    """The session id of a room's first-release records (rule in the module docstring)."""
    if not _UNSAFE.search(room) and room and len(LEGACY_PREFIX) + len(room) <= _MAX:
        return LEGACY_PREFIX + room
    digest = hashlib.sha1(room.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{LEGACY_PREFIX}{_UNSAFE.sub('_', room)[:48]}-{digest}"


def _bounds(item: dict[str, Any]) -> tuple[str, float, float]:
    return (item["participant"], float(item["start"]), float(item["end"]))


class LegacySession:
    """One room's v1 records -> its v2 records (``transcripts``, then ``windows`` in seq order)."""

    def __init__(self, room: str) -> None:
        self.room = room
        self.session_id = legacy_session_id(room)
        self._ids: dict[tuple[str, float, float], str] = {}  # segment bounds -> utterance id
        self._next_n: dict[str, int] = {}  # participant -> next free n
        self._roster: dict[str, dict[str, str]] = {}
        self.latest_emitted = ""

    def _new_id(self, participant: str) -> str:
        n = self._next_n.get(participant, 0)
        self._next_n[participant] = n + 1
        return f"{self.session_id}:{participant}:{n}"

    def _seen(self, item: dict[str, Any]) -> None:
        self._roster.setdefault(
            item["participant"],
            {"identity": item["participant"], "name": item.get("name", ""), "role": item["speaker"]},
        )

    def transcripts(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """v2 transcripts for the room's v1 transcripts (all of them, before any window)."""
        records = list(records)
        prefix = self.room + ":"
        for r in records:  # the n of each v1 id, so that ids made up later never collide with them
            tail = r["utterance_id"].removeprefix(prefix)
            who, _, n = tail.rpartition(":")
            if r["utterance_id"].startswith(prefix) and who == r["participant"] and n.isdigit():
                self._next_n[who] = max(self._next_n.get(who, 0), int(n) + 1)
        out = []
        for r in records:
            tail = r["utterance_id"].removeprefix(prefix)
            if r["utterance_id"].startswith(prefix) and ":" in tail:
                uid = f"{self.session_id}:{tail}"
            else:
                uid = self._new_id(r["participant"])
            self._ids.setdefault(_bounds(r), uid)
            self.latest_emitted = max(self.latest_emitted, r["emitted_at"])
            out.append(
                {
                    "schema": "quantcoach.transcript/2",
                    "room": r["room"],
                    "session_id": self.session_id,
                    "participant": r["participant"],
                    "speaker": r["speaker"],
                    "name": r["name"],
                    "utterance_id": uid,
                    "text": r["text"],
                    "is_final": r["is_final"],
                    "start": r["start"],
                    "end": r["end"],
                    "language": None,
                    "confidence": None,
                    "engine": r["engine"],
                    "emitted_at": r["emitted_at"],
                }
            )
        return out

    def windows(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """v2 windows for the room's v1 windows, taken in seq order."""
        out = []
        previous: set[tuple[str, float, float, str]] = set()
        for w in sorted(records, key=lambda r: r["seq"]):
            segments = []
            here = set()
            for s in w["segments"]:
                key = (*_bounds(s), s["text"])
                here.add(key)
                self._seen(s)
                uid = self._ids.get(_bounds(s))
                if uid is None:
                    uid = self._ids[_bounds(s)] = self._new_id(s["participant"])
                segments.append(
                    {
                        "utterance_id": uid,
                        "participant": s["participant"],
                        "speaker": s["speaker"],
                        "name": s["name"],
                        "text": s["text"],
                        "start": s["start"],
                        "end": s["end"],
                        "context": key in previous,
                    }
                )
            previous = here
            self.latest_emitted = max(self.latest_emitted, w["emitted_at"])
            out.append(
                {
                    "schema": "quantcoach.window/2",
                    "room": w["room"],
                    "session_id": self.session_id,
                    "window_id": f"{self.session_id}:{w['seq']}",
                    "seq": w["seq"],
                    "start": w["start"],
                    "end": w["end"],
                    "reason": w["reason"],
                    "participants": [dict(p) for p in self._roster.values()],
                    "started_at": None,
                    "segments": segments,
                    "text": w["text"],
                    "emitted_at": w["emitted_at"],
                }
            )
        return out

    def ended(self, transcripts: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
        """The session's ``ended`` record: everyone seen in its transcripts and windows."""
        for t in transcripts:
            self._seen(t)
        return {
            "schema": "quantcoach.session/1",
            "room": self.room,
            "session_id": self.session_id,
            "event": "ended",
            "participants": [dict(p) for p in self._roster.values()],
            "started_at": None,
            "at": self.latest_emitted or "1970-01-01T00:00:00.000Z",
        }
