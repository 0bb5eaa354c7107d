"""End to end: `quantcoach replay` on the bundled sample, as a user runs it.

The words spoken (samples/interview/script.json, written by samples/make_sample.py) must come back
attributed to the right speaker with a word error rate under WER_LIMIT, and the windows must cover
the whole session: every final transcript is a new segment of exactly one window, in media order. The
records land in ``<out>/<room>/<session_id>/`` with the report and the subtitles built from them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest

from connectors.recording import load_session
from quantcoach.wire import validate
from tests.support.speech import WER_LIMIT, normalise

ROOT = Path(__file__).resolve().parents[2]
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
    session_id = load_session(SAMPLE).session_id
    where = out / "sample-interview" / session_id
    read = lambda name: [json.loads(line) for line in (where / name).read_text().splitlines()]  # noqa: E731
    return {
        "session_id": session_id,
        "dir": where,
        "out": out,
        "transcripts": read("transcripts.jsonl"),
        "windows": read("windows.jsonl"),
        "sessions": read("sessions.jsonl"),
        "metrics": read("metrics.jsonl"),
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
    sid = replay["session_id"]
    assert [p.name for p in replay["out"].iterdir()] == ["sample-interview"]
    assert [p.name for p in (replay["out"] / "sample-interview").iterdir()] == [sid]
    for kind in ("transcripts", "windows", "sessions", "metrics"):
        for record in replay[kind]:
            validate(record)
            assert (record["room"], record["session_id"]) == ("sample-interview", sid)
    for t in replay["transcripts"]:
        assert t["schema"] == "quantcoach.transcript/2"
        assert set(t) == {
            "schema", "room", "session_id", "participant", "speaker", "name", "utterance_id", "text",
            "is_final", "start", "end", "language", "confidence", "engine", "emitted_at",
        }  # fmt: skip
        assert t["is_final"] is True and t["emitted_at"].endswith("Z")
        assert t["utterance_id"].startswith(f"{sid}:{t['participant']}:")
    for who in ("iv-7", "cand-3"):
        ids = [t["utterance_id"] for t in replay["transcripts"] if t["participant"] == who]
        assert ids == [f"{sid}:{who}:{n}" for n in range(len(ids))]
    by_id = {t["utterance_id"]: t for t in replay["transcripts"]}
    assert len(by_id) == len(replay["transcripts"])
    for w in replay["windows"]:
        assert w["schema"] == "quantcoach.window/2"
        assert w["window_id"] == f"{sid}:{w['seq']}"
        assert w["start"] == w["segments"][0]["start"] and w["end"] == w["segments"][-1]["end"]
        assert {p["identity"] for p in w["participants"]} == {"iv-7", "cand-3"}
        for s in w["segments"]:  # a segment is its transcript
            t = by_id[s["utterance_id"]]
            assert (s["participant"], s["text"], s["start"], s["end"]) == (
                t["participant"], t["text"], t["start"], t["end"],
            )  # fmt: skip


def test_session_lifecycle_metrics_report_and_subtitles(replay: dict) -> None:
    sessions, windows, metrics = replay["sessions"], replay["windows"], replay["metrics"]
    assert [s["event"] for s in sessions] == ["started", "ended"]
    started, ended = sessions
    assert started["at"] <= windows[0]["emitted_at"]
    assert ended["at"] >= max(w["emitted_at"] for w in windows), "ended comes after the last window"
    assert [m["final"] for m in metrics] == [False] * (len(metrics) - 1) + [True]
    assert ended["at"] >= metrics[-1]["emitted_at"]
    final = {s["identity"]: s for s in metrics[-1]["speakers"]}
    assert set(final) == {"iv-7", "cand-3"} and all(s["words"] > 0 for s in final.values())
    assert metrics[-1]["media_s"] >= max(t["end"] for t in replay["transcripts"])
    report = (replay["dir"] / "report.html").read_text()
    assert "<html" in report.lower() and replay["session_id"] in report
    vtt = (replay["dir"] / "transcript.vtt").read_text()
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == sum(
        bool(t["text"].strip()) for t in replay["transcripts"]
    )


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
        flags = [s["context"] for s in w["segments"]]
        assert flags == [True] * len(context) + [False] * (len(segs) - len(context)), "context is marked"
        new_segments.extend(segs[len(context) :])
        previous = segs
    assert new_segments == [(t["participant"], t["start"], t["text"]) for t in transcripts]
    assert windows[0]["start"] == transcripts[0]["start"]
    assert windows[-1]["end"] == max(t["end"] for t in transcripts)


def test_terminal_shows_transcripts_windows_and_progress(replay: dict) -> None:
    assert "Interviewer (Morgan)" in replay["stdout"] and "Candidate (Riley)" in replay["stdout"]
    assert f"window {replay['session_id']}:0" in replay["stdout"]
    assert "audio s" in replay["stdout"]  # the progress bar's final state
    assert "replayed 1 session(s)" in replay["stderr"]
    assert replay["stderr"].strip().splitlines()[-1].endswith(f"records in {replay['dir']}")
