"""The records that flow through the dataflow and onto the wire.

Media time (seconds since the session's start) is carried on every record so that a replay gives the
same windows at any speed; wall-clock time appears only in ``emitted_at``.

The wire format is defined once, by the pydantic models in ``quantcoach.wire``: they validate what comes
in (``Transcript.from_record``, ``window_record_is_valid``), and ``quantcoach.schemas`` generates
``schemas/*.json`` and the API's OpenAPI components from them. Every record belongs to a session
(``session_id``): a room name is not an interview, names are reused.

This module imports nothing of ours but the wire models (see DESIGN.md: dependencies point one way).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from quantcoach.wire import SESSION_SCHEMA, TRANSCRIPT_SCHEMA, WINDOW_SCHEMA, validate


def utc_now_iso() -> str:
    """ISO 8601 UTC with milliseconds and a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def participant_key(room: str, identity: str, session_id: str = "") -> str:
    """The Bytewax key of a participant stream: ``room/session_id/identity`` (rooms never contain '/').

    The session is part of it so that two interviews under one reused room name never share state."""
    return f"{room}/{session_id}/{identity}"


def session_key(room: str, session_id: str) -> str:
    """The Bytewax key of a session's windowing and metrics: ``room/session_id``."""
    return f"{room}/{session_id}"


@dataclass(frozen=True, slots=True)
class Participant:
    """Who speaks on one audio track."""

    room: str
    identity: str
    name: str
    role: str
    offset_s: float = 0.0  # media time at which the track starts
    session_id: str = ""
    started_at: str | None = None  # the session's wall-clock start (ISO 8601), when known

    @property
    def key(self) -> str:
        return participant_key(self.room, self.identity, self.session_id)

    def roster_entry(self) -> dict[str, str]:
        return {"identity": self.identity, "name": self.name, "role": self.role}


@dataclass(frozen=True, slots=True)
class ParticipantAnnounce:
    """First item of a participant stream: who it is and everyone else the source knows in the room.

    The roster lets the room's windowing step wait for tracks that have not produced anything yet
    (a late joiner on another worker), which keeps windows independent of arrival order.
    """

    participant: Participant
    roster: tuple[Participant, ...]


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """About 200 ms of int16 PCM from one participant, shaped (frames, channels)."""

    room: str
    participant: str
    samples: np.ndarray
    sample_rate: int
    start: float  # media seconds of the first frame
    session_id: str = ""

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[1])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class TrackEnd:
    """The participant's track ended (end of file, unpublished, left the room, room finished)."""

    room: str
    participant: str
    at: float  # media seconds
    reason: str = "end"
    session_id: str = ""


#: ``ProgressMark.ended`` of a participant whose speech-to-text gave up (a replay then fails loudly).
STT_FAILED = "stt_failed"


@dataclass(frozen=True, slots=True)
class ProgressMark:
    """Promise from a participant stream: no final transcript of mine starts before ``settled``.

    ``position`` is the media time of audio processed so far (for progress display);
    both are +inf once the track has ended and every transcript of it was emitted.
    """

    room: str
    participant: str
    settled: float
    position: float
    session_id: str = ""
    ended: str = ""  # once finished: the track end's reason ("end" of a file, "room_finished", ...)

    @property
    def finished(self) -> bool:
        return math.isinf(self.settled)


@dataclass(frozen=True, slots=True)
class Transcript:
    room: str
    participant: str
    speaker: str
    name: str
    utterance_id: str  # <session_id>:<identity>:<n>
    text: str
    is_final: bool
    start: float  # media seconds, speech bounds
    end: float
    engine: str
    emitted_at: str = field(default_factory=utc_now_iso)
    session_id: str = ""
    language: str | None = None
    confidence: float | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": TRANSCRIPT_SCHEMA,
            "room": self.room,
            "session_id": self.session_id,
            "participant": self.participant,
            "speaker": self.speaker,
            "name": self.name,
            "utterance_id": self.utterance_id,
            "text": self.text,
            "is_final": self.is_final,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "language": self.language,
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "engine": self.engine,
            "emitted_at": self.emitted_at,
        }

    @classmethod
    def from_record(cls, record: Any) -> Transcript:
        """Validate and build from a wire record; raises ``RecordError`` with the reason."""
        wire = validate(record, TRANSCRIPT_SCHEMA)
        return cls(**wire.model_dump(exclude={"schema_"}))


@dataclass(frozen=True, slots=True)
class Segment:
    participant: str
    speaker: str
    name: str
    text: str
    start: float
    end: float
    utterance_id: str = ""
    context: bool = False  # carried over from the previous window as overlap

    @classmethod
    def of(cls, t: Transcript) -> Segment:
        return cls(t.participant, t.speaker, t.name, t.text, t.start, t.end, t.utterance_id)

    def as_context(self) -> Segment:
        return replace(self, context=True)

    def to_record(self) -> dict[str, Any]:
        return {
            "utterance_id": self.utterance_id,
            "participant": self.participant,
            "speaker": self.speaker,
            "name": self.name,
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "context": self.context,
        }


@dataclass(frozen=True, slots=True)
class EvaluationWindow:
    room: str
    seq: int
    reason: str
    segments: tuple[Segment, ...]
    emitted_at: str = field(default_factory=utc_now_iso)
    session_id: str = ""
    participants: tuple[Participant, ...] = ()
    started_at: str | None = None

    @property
    def window_id(self) -> str:
        return f"{self.session_id}:{self.seq}"

    @property
    def start(self) -> float:
        return self.segments[0].start

    @property
    def end(self) -> float:
        return self.segments[-1].end

    @property
    def text(self) -> str:
        return "\n".join(f"{s.speaker.capitalize()}: {s.text}" for s in self.segments)

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": WINDOW_SCHEMA,
            "room": self.room,
            "session_id": self.session_id,
            "window_id": self.window_id,
            "seq": self.seq,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "reason": self.reason,
            "participants": [p.roster_entry() for p in self.participants],
            "started_at": self.started_at,
            "segments": [s.to_record() for s in self.segments],
            "text": self.text,
            "emitted_at": self.emitted_at,
        }


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A session started (its first participant was announced) or ended (after its last window)."""

    room: str
    session_id: str
    event: str  # started | ended
    participants: tuple[Participant, ...]
    started_at: str | None
    at: str = field(default_factory=utc_now_iso)

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": SESSION_SCHEMA,
            "room": self.room,
            "session_id": self.session_id,
            "event": self.event,
            "participants": [p.roster_entry() for p in self.participants],
            "started_at": self.started_at,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class MetricsUpdate:
    """A session's ``quantcoach.metrics/1`` record (built by ``operators.metrics``), as it flows."""

    room: str
    session_id: str
    record: dict[str, Any]

    def to_record(self) -> dict[str, Any]:
        return self.record


def window_record_is_valid(record: Any) -> None:
    """Validate a wire window record; raises ``RecordError`` with the reason."""
    validate(record, WINDOW_SCHEMA)


def dumps(record: dict[str, Any]) -> str:
    """The one JSON encoding used on the wire and in JSONL files."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
