"""The JSONL sink keeps a bounded number of files open, and loses no line when it reopens one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors import jsonl_sink
from connectors.jsonl_sink import JsonlSink


def test_many_sessions_reuse_a_bounded_set_of_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl_sink, "MAX_OPEN_FILES", 2)
    part = JsonlSink(lambda room, sid: tmp_path / room / sid / "t.jsonl").build("s", 0, 1)
    for rnd in range(3):
        part.write_batch([{"room": "r", "session_id": f"S{n}", "n": rnd} for n in range(5)])
        assert len(part._fds) <= 2
    part.close()
    for n in range(5):
        lines = [json.loads(x) for x in (tmp_path / "r" / f"S{n}" / "t.jsonl").read_text().splitlines()]
        assert [x["n"] for x in lines] == [0, 1, 2]
