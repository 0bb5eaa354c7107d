"""JSON Schemas generated from the pydantic models: ``schemas/*.json`` and the OpenAPI components.

``python -m quantcoach.schemas`` writes ``schemas/*.json`` from ``quantcoach.records``;
``python -m quantcoach.schemas --check`` exits 1 naming the files that differ from the models (a test
runs the same check, so a model change without its regenerated schema fails the suite).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from quantcoach.wire import (
    MetricsRecord,
    RoomStatsRecord,
    SessionRecord,
    TranscriptRecord,
    TranscriptRecordV1,
    WindowRecord,
    WindowRecordV1,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

#: file in schemas/ -> (model, $id)
RECORD_SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "transcript.v2.schema.json": (TranscriptRecord, "urn:quantcoach:schema:transcript:2"),
    "window.v2.schema.json": (WindowRecord, "urn:quantcoach:schema:window:2"),
    "session.v1.schema.json": (SessionRecord, "urn:quantcoach:schema:session:1"),
    "metrics.v1.schema.json": (MetricsRecord, "urn:quantcoach:schema:metrics:1"),
    "room_stats.v1.schema.json": (RoomStatsRecord, "urn:quantcoach:schema:room_stats:1"),
    "transcript.v1.schema.json": (TranscriptRecordV1, "urn:quantcoach:schema:transcript:1"),
    "window.v1.schema.json": (WindowRecordV1, "urn:quantcoach:schema:window:1"),
}


class RecordSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, minus the per-field titles it derives from field names, with the wire
    models named as the wire calls them (``TranscriptRecord`` -> ``Transcript``)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(name).removesuffix("Record")


def _tidy(node: Any) -> Any:
    # Docstrings become descriptions: one line each, as a reader of the schema expects.
    if isinstance(node, dict):
        return {
            k: " ".join(v.split()) if k == "description" and isinstance(v, str) else _tidy(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def record_schema(model: type[BaseModel], schema_id: str) -> dict[str, Any]:
    """The standalone JSON Schema (2020-12) of one wire model."""
    body = model.model_json_schema(schema_generator=RecordSchema)
    return _tidy({"$schema": DRAFT, "$id": schema_id, **body})


def components(
    models: Iterable[type[BaseModel]],
) -> tuple[dict[type[BaseModel], dict[str, str]], dict[str, Any]]:
    """OpenAPI 3.1 ``components.schemas`` for ``models`` and every model they refer to, and the
    ``$ref`` of each of ``models``."""
    listed = list(models)
    refs, top = models_json_schema(
        [(m, "validation") for m in listed],
        ref_template="#/components/schemas/{model}",
        schema_generator=RecordSchema,
    )
    return {m: refs[(m, "validation")] for m in listed}, _tidy(top.get("$defs", {}))


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def drifted(directory: Path = SCHEMAS_DIR) -> list[str]:
    """The schema files that differ from (or are missing for) the models."""
    out = []
    for name, (model, schema_id) in RECORD_SCHEMAS.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(record_schema(model, schema_id)):
            out.append(name)
    return out


def write(directory: Path = SCHEMAS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (model, schema_id) in RECORD_SCHEMAS.items():
        path = directory / name
        path.write_text(render(record_schema(model, schema_id)), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantcoach.schemas", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    parser.add_argument("--out", type=Path, default=SCHEMAS_DIR, help="directory (default: schemas/)")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted(args.out)
        for name in stale:
            print(
                f"{args.out / name} differs from the models: run python -m quantcoach.schemas",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
