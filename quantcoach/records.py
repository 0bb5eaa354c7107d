"""The records that flow through the dataflow and onto the wire.

Media time (seconds since the session's start) is carried on every record so that a replay gives the
same windows at any speed; wall-clock time appears only in ``emitted_at``.

The wire format is defined once, by the pydantic models at the end (``TranscriptRecord``,
``WindowRecord``): they validate what comes in (``Transcript.from_record``, ``window_record_is_valid``),
and ``quantcoach.schemas`` generates ``schemas/*.json`` and the API's OpenAPI components from them.

This module imports nothing of ours but the roles (see DESIGN.md: dependencies point one way).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from quantcoach.roles import SPEAKER_ROLES

TRANSCRIPT_SCHEMA = "quantcoach.transcript/1"
WINDOW_SCHEMA = "quantcoach.window/1"

WINDOW_REASONS = ("length", "speaker_change", "idle", "end")


def utc_now_iso() -> str:
    """ISO 8601 UTC with milliseconds and a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def participant_key(room: str, identity: str) -> str:
    """The Bytewax key of a participant stream: ``room/identity``."""
    return f"{room}/{identity}"


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
    def from_record(cls, record: Any) -> Transcript:
        """Validate and build from a wire record; raises ``RecordError`` with the reason."""
        wire = _validate(TranscriptRecord, record, TRANSCRIPT_SCHEMA)
        return cls(**wire.model_dump(exclude={"schema_"}))


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


def window_record_is_valid(record: Any) -> None:
    """Validate a wire window record; raises ``RecordError`` with the reason."""
    _validate(WindowRecord, record, WINDOW_SCHEMA)


def _validate(model: type[_Wire], record: Any, schema: str) -> Any:
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    if record.get("schema") != schema:
        raise RecordError(f"schema is {record.get('schema')!r}, expected {schema!r}")
    try:
        return model.model_validate(record)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        if err["type"] == "missing":
            raise RecordError(f"missing field {where!r}") from None
        raise RecordError(f"field {where!r}: {err['msg']}") from None


def dumps(record: dict[str, Any]) -> str:
    """The one JSON encoding used on the wire and in JSONL files."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


# --- the wire format, defined once --------------------------------------------------------------------
UTC_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
MediaTime = Annotated[float, Field(ge=0, allow_inf_nan=False, description="media seconds")]
Speaker = Annotated[Literal[SPEAKER_ROLES], Field(description="the participant's role")]
Identity = Annotated[NonEmpty, Field(description="participant identity")]
DisplayName = Annotated[str, Field(description="display name; may be empty")]
UtcTimestamp = Annotated[
    str,
    StringConstraints(pattern=UTC_TIMESTAMP),
    Field(description="wall-clock time of emission, ISO 8601 UTC", json_schema_extra={"format": "date-time"}),
]
RoomName = Annotated[NonEmpty, Field(description="room name; also the Kafka key")]


class _Wire(BaseModel):
    # Strict: JSON types as they are (no "1" for 1, no 1 for true); unknown fields are errors.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, validate_by_name=True)


class TranscriptRecord(_Wire):
    """One utterance of one participant. Kafka key: the room name (UTF-8). Value: this object as compact
    UTF-8 JSON. Times are media seconds since the session's start; only emitted_at is wall-clock."""

    model_config = ConfigDict(title="QuantCoach transcript (topic interview.transcripts)")

    schema_: Literal[TRANSCRIPT_SCHEMA] = Field(alias="schema")
    room: RoomName
    participant: Identity
    speaker: Speaker
    name: DisplayName
    utterance_id: NonEmpty
    text: str
    is_final: bool = Field(description="the sink sends final transcripts only")
    start: MediaTime
    end: MediaTime
    engine: NonEmpty = Field(description="speech-to-text engine, e.g. whisper")
    emitted_at: UtcTimestamp


class SegmentRecord(_Wire):
    """One transcript inside a window."""

    model_config = ConfigDict(title="Segment")

    participant: Identity
    speaker: Speaker
    name: DisplayName
    text: str
    start: MediaTime
    end: MediaTime


class WindowRecord(_Wire):
    """A stretch of one room's conversation for evaluation: the previous window's tail as context plus
    new transcripts. Kafka key: the room name (UTF-8). Value: this object as compact UTF-8 JSON. Times are
    media seconds; only emitted_at is wall-clock."""

    model_config = ConfigDict(title="QuantCoach evaluation window (topic interview.windows)")

    schema_: Literal[WINDOW_SCHEMA] = Field(alias="schema")
    room: RoomName
    window_id: str = Field(
        pattern=r"^.+:[0-9]+$", description="<room>:<seq>, stable across replays and recovery"
    )
    seq: int = Field(ge=0, description="window number within the room, from 0")
    start: float = Field(ge=0, allow_inf_nan=False, description="first segment's start (media seconds)")
    end: float = Field(ge=0, allow_inf_nan=False, description="last segment's end (media seconds)")
    reason: Literal[WINDOW_REASONS] = Field(description="what closed the window")
    segments: list[SegmentRecord] = Field(min_length=1)
    text: str = Field(description="one 'Speaker: text' line per segment, e.g. 'Interviewer: ...'")
    emitted_at: UtcTimestamp
