"""The records that flow through the dataflow and onto the wire.

Media time (seconds since the session's start) is carried on every record so that a replay gives the
same windows at any speed; wall-clock time appears only in ``emitted_at``.

This module imports nothing of ours (see DESIGN.md: dependencies point one way).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

TRANSCRIPT_SCHEMA = "quantcoach.transcript/1"
WINDOW_SCHEMA = "quantcoach.window/1"

ROLES = ("interviewer", "candidate", "agent", "participant")
#: Roles whose speech is transcribed and that appear as a transcript's ``speaker``.
SPEAKER_ROLES = ("interviewer", "candidate", "participant")
WINDOW_REASONS = ("length", "speaker_change", "idle", "end")


def utc_now_iso() -> str:
    """ISO 8601 UTC with milliseconds and a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def participant_key(room: str, identity: str) -> str:
    """The Bytewax key of a participant stream: ``room/identity``."""
    return f"{room}/{identity}"


def room_of_key(key: str) -> str:
    """The room part of a participant key (room names never contain '/', identities may)."""
    return key.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class Participant:
    """Who speaks on one audio track."""

    room: str
    identity: str
    name: str
    role: str
    offset_s: float = 0.0  # media time at which the track starts

    @property
    def key(self) -> str:
        return participant_key(self.room, self.identity)


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

    @property
    def finished(self) -> bool:
        return math.isinf(self.settled)


@dataclass(frozen=True, slots=True)
class Transcript:
    room: str
    participant: str
    speaker: str
    name: str
    utterance_id: str
    text: str
    is_final: bool
    start: float
    end: float
    engine: str
    emitted_at: str = field(default_factory=utc_now_iso)

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": TRANSCRIPT_SCHEMA,
            "room": self.room,
            "participant": self.participant,
            "speaker": self.speaker,
            "name": self.name,
            "utterance_id": self.utterance_id,
            "text": self.text,
            "is_final": self.is_final,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "engine": self.engine,
            "emitted_at": self.emitted_at,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Transcript:
        """Validate and build from a wire record; raises ``RecordError`` with the reason."""
        _check_schema(record, TRANSCRIPT_SCHEMA)
        try:
            fields = {
                "room": _str(record, "room"),
                "participant": _str(record, "participant"),
                "speaker": _str(record, "speaker"),
                "name": _str(record, "name", allow_empty=True),
                "utterance_id": _str(record, "utterance_id"),
                "text": _str(record, "text", allow_empty=True),
                "is_final": _bool(record, "is_final"),
                "start": _num(record, "start"),
                "end": _num(record, "end"),
                "engine": _str(record, "engine"),
                "emitted_at": _str(record, "emitted_at"),
            }
        except KeyError as exc:
            raise RecordError(f"missing field {exc.args[0]!r}") from None
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Segment:
    participant: str
    speaker: str
    name: str
    text: str
    start: float
    end: float

    @classmethod
    def of(cls, t: Transcript) -> Segment:
        return cls(t.participant, t.speaker, t.name, t.text, t.start, t.end)

    def to_record(self) -> dict[str, Any]:
        rec = asdict(self)
        rec["start"] = round(self.start, 3)
        rec["end"] = round(self.end, 3)
        return rec


@dataclass(frozen=True, slots=True)
class EvaluationWindow:
    room: str
    seq: int
    reason: str
    segments: tuple[Segment, ...]
    emitted_at: str = field(default_factory=utc_now_iso)

    @property
    def window_id(self) -> str:
        return f"{self.room}:{self.seq}"

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
            "window_id": self.window_id,
            "seq": self.seq,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "reason": self.reason,
            "segments": [s.to_record() for s in self.segments],
            "text": self.text,
            "emitted_at": self.emitted_at,
        }


class RecordError(ValueError):
    """A wire record that is not a valid QuantCoach record."""


def _check_schema(record: Any, schema: str) -> None:
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    if record.get("schema") != schema:
        raise RecordError(f"schema is {record.get('schema')!r}, expected {schema!r}")


def _str(record: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = record[key]
    if not isinstance(value, str) or (not allow_empty and not value):
        raise RecordError(f"field {key!r} must be a non-empty string")
    return value


def _num(record: dict[str, Any], key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"field {key!r} must be a finite number")
    return float(value)


def _bool(record: dict[str, Any], key: str) -> bool:
    value = record[key]
    if not isinstance(value, bool):
        raise RecordError(f"field {key!r} must be a boolean")
    return value


def window_record_is_valid(record: Any) -> None:
    """Validate a wire window record; raises ``RecordError`` with the reason."""
    _check_schema(record, WINDOW_SCHEMA)
    try:
        _str(record, "room")
        _str(record, "window_id")
        if not isinstance(record["seq"], int) or isinstance(record["seq"], bool) or record["seq"] < 0:
            raise RecordError("field 'seq' must be a non-negative integer")
        _num(record, "start")
        _num(record, "end")
        if record["reason"] not in WINDOW_REASONS:
            raise RecordError(f"field 'reason' must be one of {WINDOW_REASONS}")
        if not isinstance(record["segments"], list) or not record["segments"]:
            raise RecordError("field 'segments' must be a non-empty list")
        _str(record, "text", allow_empty=True)
        _str(record, "emitted_at")
    except KeyError as exc:
        raise RecordError(f"missing field {exc.args[0]!r}") from None


def dumps(record: dict[str, Any]) -> str:
    """The one JSON encoding used on the wire and in JSONL files."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
