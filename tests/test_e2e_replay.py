"""End to end: `quantcoach replay` on the bundled sample, as a user runs it.

The words spoken (samples/interview/script.json, written by samples/make_sample.py) must come back
attributed to the right speaker with a word error rate under WER_LIMIT, and the windows must cover
the whole session: every final transcript is a new segment of exactly one window, in media order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest

from tests.support.speech import WER_LIMIT, normalise

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "interview"


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("replay")
    proc = subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", "replay", str(SAMPLE), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return {
        "transcripts": read("transcripts.jsonl"),
        "windows": read("windows.jsonl"),
        "stdout": proc.stdout,
        "stderr": proc.stderr,
    }


def test_words_come_back_attributed_to_the_right_speaker(replay: dict) -> None:
    script = json.loads((SAMPLE / "script.json").read_text())
    for role in ("interviewer", "candidate"):
        said = " ".join(normalise(turn["text"]) for turn in script if turn["role"] == role)
        heard = " ".join(
            normalise(t["text"])
            for t in sorted(replay["transcripts"], key=lambda t: t["start"])
            if t["speaker"] == role
        )
        wer = jiwer.wer(said, heard)
        print(f"{role}: WER {wer:.3f}")
        assert wer < WER_LIMIT, f"{role}: WER {wer:.2f}\nsaid:  {said}\nheard: {heard}"


def test_each_turn_is_heard_at_its_time_from_its_speaker(replay: dict) -> None:
    script = json.loads((SAMPLE / "script.json").read_text())
    for turn in script:
        overlapping = [
            t for t in replay["transcripts"] if t["start"] < turn["end"] and t["end"] > turn["start"]
        ]
        assert overlapping, f"nothing heard for {turn}"
        assert {t["speaker"] for t in overlapping} == {turn["role"]}


def test_records_have_the_wire_format(replay: dict) -> None:
    for t in replay["transcripts"]:
        assert t["schema"] == "quantcoach.transcript/1"
        assert set(t) == {
            "schema", "room", "participant", "speaker", "name", "utterance_id", "text", "is_final",
            "start", "end", "engine", "emitted_at",
        }  # fmt: skip
        assert t["room"] == "sample-interview" and t["is_final"] is True
        assert t["emitted_at"].endswith("Z")
    ids = [t["utterance_id"] for t in replay["transcripts"]]
    assert len(ids) == len(set(ids))
    for w in replay["windows"]:
        assert w["schema"] == "quantcoach.window/1"
        assert w["window_id"] == f"sample-interview:{w['seq']}"
        assert w["start"] == w["segments"][0]["start"] and w["end"] == w["segments"][-1]["end"]


def test_windows_cover_the_whole_session(replay: dict) -> None:
    windows = sorted(replay["windows"], key=lambda w: w["seq"])
    transcripts = sorted(replay["transcripts"], key=lambda t: (t["start"], t["participant"]))
    assert [w["seq"] for w in windows] == list(range(len(windows)))
    assert windows[-1]["reason"] == "end"
    # each window's new segments are those not in the previous window; together, every transcript once
    new_segments = []
    previous: list = []
    for w in windows:
        segs = [(s["participant"], s["start"], s["text"]) for s in w["segments"]]
        context = [s for s in segs if s in previous]
        assert segs[: len(context)] == context, "context comes first"
        new_segments.extend(segs[len(context) :])
        previous = segs
    assert new_segments == [(t["participant"], t["start"], t["text"]) for t in transcripts]
    assert windows[0]["start"] == transcripts[0]["start"]
    assert windows[-1]["end"] == max(t["end"] for t in transcripts)


def test_terminal_shows_transcripts_windows_and_progress(replay: dict) -> None:
    assert "Interviewer (Morgan)" in replay["stdout"] and "Candidate (Riley)" in replay["stdout"]
    assert "window sample-interview:0" in replay["stdout"]
    assert "audio s" in replay["stdout"]  # the progress bar's final state
    assert "replayed 1 session(s)" in replay["stderr"]
