"""One schema source: schemas/*.json are generated from the wire models and agree with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from quantcoach import schemas
from quantcoach.records import (
    EvaluationWindow,
    RecordError,
    Segment,
    Transcript,
    window_record_is_valid,
)


def _transcript(i: int = 0, speaker: str = "candidate") -> Transcript:
    return Transcript(
        "mock-42", f"p-{i}", speaker, "Riley", f"u{i}", "hello", True, i * 2.0, i * 2.0 + 1.5, "whisper"
    )


def _window() -> EvaluationWindow:
    segments = (Segment.of(_transcript(0, "interviewer")), Segment.of(_transcript(1)))
    return EvaluationWindow("mock-42", 3, "speaker_change", segments)


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
    path = tmp_path / "window.schema.json"
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
    v = _validator("transcript")
    record = _transcript().to_record()
    v.validate(record)
    assert Transcript.from_record(record) == Transcript(**{k: v for k, v in record.items() if k != "schema"})
    for bad in [*_mutations(record), {**record, "speaker": "agent"}, {**record, "is_final": 1}]:
        assert not v.is_valid(bad), bad
        with pytest.raises(RecordError):
            Transcript.from_record(bad)


def test_window_model_and_schema_agree() -> None:
    v = _validator("window")
    record = _window().to_record()
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
