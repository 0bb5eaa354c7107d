"""One schema source: schemas/*.json are generated from the wire models and agree with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from operators.metrics import SessionMetrics
from quantcoach import schemas
from quantcoach.records import (
    EvaluationWindow,
    Participant,
    Segment,
    SessionEvent,
    Transcript,
    utc_now_iso,
    window_record_is_valid,
)
from quantcoach.wire import RecordError, validate

SID = "RM_abc123"
ROSTER = (
    Participant("mock-42", "iv-1", "Morgan", "interviewer"),
    Participant("mock-42", "p-1", "Riley", "candidate"),
)


def _transcript(i: int = 0, speaker: str = "candidate") -> Transcript:
    return Transcript(
        "mock-42", f"p-{i}", speaker, "Riley", f"{SID}:p-{i}:0", "hello", True, i * 2.0, i * 2.0 + 1.5,
        "whisper", session_id=SID, language="en", confidence=0.83,
    )  # fmt: skip


def _window() -> EvaluationWindow:
    segments = (Segment.of(_transcript(0, "interviewer")).as_context(), Segment.of(_transcript(1)))
    return EvaluationWindow("mock-42", 3, "speaker_change", segments, session_id=SID, participants=ROSTER)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((schemas.SCHEMAS_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_committed_schemas_are_generated_from_the_models() -> None:
    assert schemas.drifted() == [], "run: python -m quantcoach.schemas"


def test_check_fails_on_drift(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    assert schemas.main(["--check", "--out", str(tmp_path)]) == 0
    path = tmp_path / "window.v2.schema.json"
    path.write_text(path.read_text().replace('"minItems": 1', '"minItems": 0'))
    assert schemas.main(["--check", "--out", str(tmp_path)]) == 1


def _mutations(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**record, "schema": "quantcoach.other/1"},
        {**record, "start": -1.0},
        {**record, "start": "1.0"},
        {**record, "room": ""},
        {**record, "emitted_at": "yesterday"},
        {**record, "unknown": 1},
        {k: v for k, v in record.items() if k != "text"},
    ]


def test_transcript_model_and_schema_agree() -> None:
    v = _validator("transcript.v2")
    record = _transcript().to_record()
    v.validate(record)
    assert Transcript.from_record(record) == Transcript(**{k: v for k, v in record.items() if k != "schema"})
    more = [
        {**record, "speaker": "agent"},
        {**record, "is_final": 1},
        {**record, "confidence": 1.5},
        {**record, "session_id": "a/b"},
        {k: v for k, v in record.items() if k != "session_id"},
    ]
    for bad in [*_mutations(record), *more]:
        assert not v.is_valid(bad), bad
        with pytest.raises(RecordError):
            Transcript.from_record(bad)


def test_window_model_and_schema_agree() -> None:
    v = _validator("window.v2")
    record = _window().to_record()
    assert record["window_id"] == f"{SID}:3" and [s["context"] for s in record["segments"]] == [True, False]
    v.validate(record)
    window_record_is_valid(record)
    segment = record["segments"][0]
    for bad in [
        *_mutations(record),
        {**record, "reason": "timeout"},
        {**record, "seq": -1},
        {**record, "window_id": "no-seq"},
        {**record, "segments": []},
        {**record, "segments": [{**segment, "speaker": "boss"}]},
        {**record, "segments": [{**segment, "extra": True}]},
        {**record, "segments": [{k: v for k, v in segment.items() if k != "context"}]},
        {**record, "participants": [{"identity": "x", "name": "", "role": "boss"}]},
    ]:
        assert not v.is_valid(bad), bad
        with pytest.raises(RecordError):
            window_record_is_valid(bad)


def test_record_errors_name_the_field() -> None:
    record = _window().to_record()
    with pytest.raises(RecordError, match=r"^field 'segments\.0\.speaker': "):
        window_record_is_valid({**record, "segments": [{**record["segments"][0], "speaker": "boss"}]})
    with pytest.raises(RecordError, match=r"^missing field 'room'$"):
        Transcript.from_record({k: v for k, v in _transcript().to_record().items() if k != "room"})
    with pytest.raises(RecordError, match="not a JSON object"):
        Transcript.from_record([1])


def test_session_and_metrics_records_validate() -> None:
    started = SessionEvent("mock-42", SID, "started", ROSTER, "2026-12-01T10:00:00Z").to_record()
    _validator("session.v1").validate(started)
    validate(started)
    with pytest.raises(RecordError):
        validate({**started, "event": "paused"})
    m = SessionMetrics()
    m.add("iv-1", "Morgan", "interviewer", "Ready?", 0.0, 1.0)
    m.add("p-1", "Riley", "candidate", "Um, yes.", 1.5, 2.5)
    record = m.record("mock-42", SID, final=True, media_s=3.0, emitted_at=utc_now_iso())
    _validator("metrics.v1").validate(record)
    validate(record)
    with pytest.raises(RecordError):
        validate({**record, "overlaps": -1})


def test_version_1_records_still_validate() -> None:
    v1 = {
        "schema": "quantcoach.transcript/1",
        "room": "mock-42",
        "participant": "p-1",
        "speaker": "candidate",
        "name": "Riley",
        "utterance_id": "mock-42:p-1:0",
        "text": "hi",
        "is_final": True,
        "start": 0.0,
        "end": 1.0,
        "engine": "whisper",
        "emitted_at": "2026-12-01T10:00:00.000Z",
    }
    _validator("transcript.v1").validate(v1)
    validate(v1)
