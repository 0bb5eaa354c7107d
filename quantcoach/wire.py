"""The wire format, defined once: pydantic models of every record on Kafka, in JSONL files and the API.

Version 2 records carry ``session_id`` (a room name is not an interview: names are reused) and put every
id under it; version 1 (``quantcoach.transcript/1``, ``quantcoach.window/1``, ids under the room name) is
what the first release wrote and is kept for the store's migration and for consumers that still read
it. ``quantcoach.schemas`` generates ``schemas/*.json`` and the API's OpenAPI components from these
models; ``validate`` checks an incoming record against one of them.

This module imports nothing of ours but the roles.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from quantcoach.roles import ROLES, SPEAKER_ROLES

TRANSCRIPT_SCHEMA_V1 = "quantcoach.transcript/1"
WINDOW_SCHEMA_V1 = "quantcoach.window/1"
TRANSCRIPT_SCHEMA = "quantcoach.transcript/2"
WINDOW_SCHEMA = "quantcoach.window/2"
SESSION_SCHEMA = "quantcoach.session/1"
METRICS_SCHEMA = "quantcoach.metrics/1"
ROOM_STATS_SCHEMA = "quantcoach.room_stats/1"

WINDOW_REASONS = ("length", "speaker_change", "idle", "end")
SESSION_EVENTS = ("started", "ended")
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
UTC_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"


class RecordError(ValueError):
    """A wire record that is not a valid QuantCoach record."""


NonEmpty = Annotated[str, StringConstraints(min_length=1)]
MediaTime = Annotated[float, Field(ge=0, allow_inf_nan=False, description="media seconds")]
Seconds = Annotated[float, Field(allow_inf_nan=False)]
Speaker = Annotated[Literal[SPEAKER_ROLES], Field(description="the participant's role")]
Role = Annotated[Literal[ROLES], Field(description="the participant's role")]
Identity = Annotated[NonEmpty, Field(description="participant identity")]
DisplayName = Annotated[str, Field(description="display name; may be empty")]
UtcTimestamp = Annotated[
    str,
    StringConstraints(pattern=UTC_TIMESTAMP),
    Field(description="wall-clock time, ISO 8601 UTC", json_schema_extra={"format": "date-time"}),
]
RoomName = Annotated[NonEmpty, Field(description="room name; also the Kafka key")]
SessionId = Annotated[
    str,
    StringConstraints(pattern=SESSION_ID_PATTERN),
    Field(description="the interview: the LiveKit room sid live; in replay from session.json or content"),
]
StartedAt = Annotated[
    str | None,
    Field(description="wall-clock start of the session (ISO 8601), null when unknown"),
]


class _Wire(BaseModel):
    # Strict: JSON types as they are (no "1" for 1, no 1 for true); unknown fields are errors.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, validate_by_name=True)


class RosterEntry(_Wire):
    """A participant of the session."""

    model_config = ConfigDict(title="RosterEntry")

    identity: Identity
    name: DisplayName
    role: Role


class TranscriptRecord(_Wire):
    """One utterance of one participant. Kafka key: the room name (UTF-8). Value: this object as compact
    UTF-8 JSON. Times are media seconds since the session's start (speech bounds); only emitted_at is
    wall-clock."""

    model_config = ConfigDict(title="QuantCoach transcript v2 (topic interview.transcripts)")

    schema_: Literal[TRANSCRIPT_SCHEMA] = Field(alias="schema")
    room: RoomName
    session_id: SessionId
    participant: Identity
    speaker: Speaker
    name: DisplayName
    utterance_id: NonEmpty = Field(description="<session_id>:<identity>:<n>, n counting from 0")
    text: str
    is_final: bool = Field(description="the sink sends final transcripts only")
    start: MediaTime
    end: MediaTime
    language: str | None = Field(description="ISO 639-1 language of the text, null when unknown")
    confidence: float | None = Field(ge=0, le=1, description="0..1, null when the engine gives none")
    engine: NonEmpty = Field(description="speech-to-text engine, e.g. whisper")
    emitted_at: UtcTimestamp


class SegmentRecord(_Wire):
    """One transcript inside a window; context = carried over from the previous window as overlap."""

    model_config = ConfigDict(title="Segment")

    utterance_id: NonEmpty
    participant: Identity
    speaker: Speaker
    name: DisplayName
    text: str
    start: MediaTime
    end: MediaTime
    context: bool = Field(description="true: already in the previous window (overlap); score only false")


class WindowRecord(_Wire):
    """A stretch of one session's conversation for evaluation: the previous window's tail as context plus
    new transcripts. Kafka key: the room name (UTF-8). An evaluator scores the context: false segments
    and de-duplicates by window_id. Times are media seconds; only emitted_at is wall-clock."""

    model_config = ConfigDict(title="QuantCoach evaluation window v2 (topic interview.windows)")

    schema_: Literal[WINDOW_SCHEMA] = Field(alias="schema")
    room: RoomName
    session_id: SessionId
    window_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}:[0-9]+$", description="<session_id>:<seq>")
    seq: int = Field(ge=0, description="window number within the session, from 0")
    start: float = Field(ge=0, allow_inf_nan=False, description="first segment's start (media seconds)")
    end: float = Field(ge=0, allow_inf_nan=False, description="last segment's end (media seconds)")
    reason: Literal[WINDOW_REASONS] = Field(description="what closed the window")
    participants: list[RosterEntry] = Field(description="the session's roster when the window closed")
    started_at: StartedAt
    segments: list[SegmentRecord] = Field(min_length=1)
    text: str = Field(description="one 'Speaker: text' line per segment, e.g. 'Interviewer: ...'")
    emitted_at: UtcTimestamp


class SessionRecord(_Wire):
    """A session's lifecycle. Kafka key: the room name. ``ended`` follows the session's last window and
    its final metrics: a consumer that sees it has the whole session."""

    model_config = ConfigDict(title="QuantCoach session (topic interview.sessions)")

    schema_: Literal[SESSION_SCHEMA] = Field(alias="schema")
    room: RoomName
    session_id: SessionId
    event: Literal[SESSION_EVENTS]
    participants: list[RosterEntry]
    started_at: StartedAt
    at: UtcTimestamp = Field(description="wall-clock time of the event")


class SpeakerMetricsRecord(_Wire):
    """One participant's figures (definitions in the README)."""

    model_config = ConfigDict(title="SpeakerMetrics")

    identity: Identity
    name: DisplayName
    role: Role
    talk_s: float = Field(ge=0, allow_inf_nan=False)
    turns: int = Field(ge=0)
    words: int = Field(ge=0)
    wpm: float | None = Field(ge=0, allow_inf_nan=False)
    longest_turn_s: float = Field(ge=0, allow_inf_nan=False)
    questions: int = Field(ge=0)
    fillers: int = Field(ge=0)
    response_latency_s: Seconds | None
    interruptions: int = Field(ge=0)


class MetricsRecord(_Wire):
    """A session's interview metrics so far (final: true once, at the session's end). Kafka key: room."""

    model_config = ConfigDict(title="QuantCoach interview metrics (topic interview.metrics)")

    schema_: Literal[METRICS_SCHEMA] = Field(alias="schema")
    room: RoomName
    session_id: SessionId
    final: bool
    media_s: MediaTime
    speakers: list[SpeakerMetricsRecord]
    longest_silence_s: float = Field(ge=0, allow_inf_nan=False)
    overlaps: int = Field(ge=0)
    speaker_changes: int = Field(ge=0)
    emitted_at: UtcTimestamp


class RoomStatsRecord(_Wire):
    """The example analytics job's rolling aggregate of one room over its latest sessions (topic
    interview.room_stats, keyed by room)."""

    model_config = ConfigDict(title="QuantCoach room statistics (topic interview.room_stats)")

    schema_: Literal[ROOM_STATS_SCHEMA] = Field(alias="schema")
    room: RoomName
    sessions: int = Field(
        ge=1, description="sessions aggregated (the room's latest, at most ANALYTICS_SESSIONS)"
    )
    candidate_talk_share: float | None = Field(ge=0, le=1, description="mean candidate share of all talk")
    candidate_response_latency_s: Seconds | None = Field(
        description="median of the sessions' candidate medians"
    )
    last_session_id: SessionId
    emitted_at: UtcTimestamp


# --- version 1, as the first release wrote it (read by the store's migration and old consumers) ------
class TranscriptRecordV1(_Wire):
    """Version 1 of the transcript record (ids under the room name)."""

    model_config = ConfigDict(title="QuantCoach transcript v1")

    schema_: Literal[TRANSCRIPT_SCHEMA_V1] = Field(alias="schema")
    room: RoomName
    participant: Identity
    speaker: Speaker
    name: DisplayName
    utterance_id: NonEmpty
    text: str
    is_final: bool
    start: MediaTime
    end: MediaTime
    engine: NonEmpty
    emitted_at: UtcTimestamp


class SegmentRecordV1(_Wire):
    model_config = ConfigDict(title="SegmentV1")

    participant: Identity
    speaker: Speaker
    name: DisplayName
    text: str
    start: MediaTime
    end: MediaTime


class WindowRecordV1(_Wire):
    """Version 1 of the window record (window_id = <room>:<seq>)."""

    model_config = ConfigDict(title="QuantCoach evaluation window v1")

    schema_: Literal[WINDOW_SCHEMA_V1] = Field(alias="schema")
    room: RoomName
    window_id: str = Field(pattern=r"^.+:[0-9]+$")
    seq: int = Field(ge=0)
    start: float = Field(ge=0, allow_inf_nan=False)
    end: float = Field(ge=0, allow_inf_nan=False)
    reason: Literal[WINDOW_REASONS]
    segments: list[SegmentRecordV1] = Field(min_length=1)
    text: str
    emitted_at: UtcTimestamp


MODELS: dict[str, type[_Wire]] = {
    TRANSCRIPT_SCHEMA: TranscriptRecord,
    WINDOW_SCHEMA: WindowRecord,
    SESSION_SCHEMA: SessionRecord,
    METRICS_SCHEMA: MetricsRecord,
    ROOM_STATS_SCHEMA: RoomStatsRecord,
    TRANSCRIPT_SCHEMA_V1: TranscriptRecordV1,
    WINDOW_SCHEMA_V1: WindowRecordV1,
}


def validate(record: Any, schema: str | None = None) -> BaseModel:
    """Check ``record`` against its schema's model (``schema``, else the record's own ``schema`` field,
    which must name a known version); raises ``RecordError`` with one line saying what is wrong."""
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    named = record.get("schema")
    if schema is not None and named != schema:
        raise RecordError(f"schema is {named!r}, expected {schema!r}")
    model = MODELS.get(named) if isinstance(named, str) else None
    if model is None:
        raise RecordError(f"unknown schema {named!r}")
    try:
        return model.model_validate(record)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        if err["type"] == "missing":
            raise RecordError(f"missing field {where!r}") from None
        raise RecordError(f"field {where!r}: {err['msg']}") from None
