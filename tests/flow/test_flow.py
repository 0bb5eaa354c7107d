"""The real flow (real audio, real Whisper, real operators) with Bytewax's own testing helpers.

Windows must not depend on worker count, on STT latency, or on a track starting late: the same
session replayed under all of those gives byte-identical windows apart from ``emitted_at``. Every
record belongs to its session: two recordings replayed at once, even under one room name, never mix.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from connectors.recording import load_session
from connectors.replay_source import ReplaySource
from flows.interview import FlowSinks, build_flow
from quantcoach.records import AudioChunk, Participant, ParticipantAnnounce, TrackEnd
from quantcoach.settings import Settings
from quantcoach.wire import validate
from stt.engines import engine_for
from stt.protocol import SttEvent

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "interview"
SETTINGS = Settings.from_env({}, window_s=12.0, overlap_s=4.0, min_transcripts=2)


class DelayedStream:
    """Wraps a real stream; holds each event back for a random time, as a slow network STT would."""

    def __init__(self, inner, rng: random.Random) -> None:
        self.inner = inner
        self.rng = rng
        self.held: deque[tuple[float, SttEvent]] = deque()

    def push_audio(self, pcm: np.ndarray) -> None:
        self.inner.push_audio(pcm)

    def end_input(self) -> None:
        self.inner.end_input()

    def poll(self) -> list[SttEvent]:
        for e in self.inner.poll():
            self.held.append((time.monotonic() + self.rng.uniform(0, 0.3), e))
        out = []
        while self.held and self.held[0][0] <= time.monotonic():
            out.append(self.held.popleft()[1])
        return out

    def settled(self) -> float:
        return min([self.inner.settled(), *(e.start for _, e in self.held)])

    @property
    def done(self) -> bool:
        return self.inner.done and not self.held

    def close(self) -> None:
        self.inner.close()


class DelayedEngine:
    def __init__(self, inner, seed: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.rng = random.Random(seed)

    def stream(self, key: str) -> DelayedStream:
        return DelayedStream(self.inner.stream(key), self.rng)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def whisper():
    return engine_for(SETTINGS, "whisper")


KINDS = ("transcripts", "windows", "sessions", "metrics")


def run_records(session_dirs: list[Path], engine, workers: int = 1) -> dict[str, list[dict]]:
    """Every record kind the flow's sinks got, as the wire records."""
    got: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    sessions = [load_session(d) for d in session_dirs]
    sinks = FlowSinks(**{kind: [TestingSink(got[kind])] for kind in KINDS})
    flow = build_flow(SETTINGS, ReplaySource(sessions, 200, None), sinks, lambda: engine)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return got


def run_replay(session_dirs: list[Path], engine, workers: int = 1) -> tuple[list[dict], list[dict]]:
    got = run_records(session_dirs, engine, workers)
    return got["transcripts"], got["windows"]


def canonical(windows: list[dict]) -> list[str]:
    return sorted(
        json.dumps({k: v for k, v in w.items() if k != "emitted_at"}, sort_keys=True) for w in windows
    )


def of_session(records: list[dict], session_id: str) -> list[dict]:
    return [r for r in records if r["session_id"] == session_id]


def renamed(records: list[dict], frm: tuple[str, str], to: tuple[str, str]) -> list[dict]:
    """``records`` with room and session id ``frm`` written as ``to`` (ids included)."""
    (room, sid), (new_room, new_sid) = frm, to
    out = []
    for r in records:
        text = json.dumps(r).replace(f'"{sid}:', f'"{new_sid}:').replace(f'"{sid}"', f'"{new_sid}"')
        out.append({**json.loads(text), "room": new_room} if r["room"] == room else json.loads(text))
    return out


@pytest.fixture(scope="module")
def sample_id() -> str:
    return load_session(SAMPLE).session_id


@pytest.fixture(scope="module")
def reference_records(whisper) -> dict[str, list[dict]]:
    return run_records([SAMPLE], whisper)


@pytest.fixture(scope="module")
def reference(reference_records) -> tuple[list[dict], list[dict]]:
    return reference_records["transcripts"], reference_records["windows"]


def test_flow_emits_transcripts_and_windows(reference) -> None:
    transcripts, windows = reference
    assert len(transcripts) >= 8
    assert {t["speaker"] for t in transcripts} == {"interviewer", "candidate"}
    assert all(t["is_final"] and t["engine"] == "whisper" for t in transcripts)
    reasons = [w["reason"] for w in windows]
    assert reasons[-1] == "end" and "speaker_change" in reasons
    assert [w["seq"] for w in windows] == list(range(len(windows)))


def test_every_record_is_of_the_session_and_valid(reference_records, sample_id: str) -> None:
    for kind in KINDS:
        assert reference_records[kind], f"no {kind}"
        for record in reference_records[kind]:
            validate(record)
            assert (record["room"], record["session_id"]) == ("sample-interview", sample_id)
    transcripts = reference_records["transcripts"]
    for who in ("iv-7", "cand-3"):
        ids = [t["utterance_id"] for t in transcripts if t["participant"] == who]  # in emission order
        assert ids == [f"{sample_id}:{who}:{n}" for n in range(len(ids))]
    for w in reference_records["windows"]:
        assert w["window_id"] == f"{sample_id}:{w['seq']}"
        assert [p["identity"] for p in w["participants"]] and w["started_at"] is None
        assert {s["utterance_id"] for s in w["segments"]} <= {t["utterance_id"] for t in transcripts}


def test_session_starts_before_and_ends_after_its_windows_and_metrics(reference_records) -> None:
    sessions, windows = reference_records["sessions"], reference_records["windows"]
    assert [s["event"] for s in sessions] == ["started", "ended"]
    started, ended = sessions
    assert started["at"] <= min(w["emitted_at"] for w in windows)
    assert ended["at"] >= max(w["emitted_at"] for w in windows), "ended comes after the last window"
    assert {p["identity"] for p in ended["participants"]} == {"iv-7", "cand-3"}
    metrics = reference_records["metrics"]
    assert [m["final"] for m in metrics] == [False] * (len(metrics) - 1) + [True]
    assert len(metrics) == len(windows) + 1, "one after every window, and the final one"
    assert ended["at"] >= metrics[-1]["emitted_at"]
    final = {s["identity"]: s for s in metrics[-1]["speakers"]}
    transcripts = reference_records["transcripts"]
    for who in ("iv-7", "cand-3"):
        assert final[who]["words"] == sum(
            len(t["text"].split()) for t in transcripts if t["participant"] == who
        )


def test_same_windows_with_two_workers_and_random_stt_delays(whisper, reference) -> None:
    _, ref_windows = reference
    for seed, workers in [(1, 2), (2, 1)]:
        _, windows = run_replay([SAMPLE], DelayedEngine(whisper, seed), workers=workers)
        assert canonical(windows) == canonical(ref_windows)


def test_late_joining_track_is_waited_for(tmp_path: Path, whisper, reference) -> None:
    # The candidate's first 10 s are silence: cut them and declare offset_s = 10 instead.
    late = tmp_path / "late"
    shutil.copytree(SAMPLE, late)
    audio, rate = sf.read(late / "candidate.wav", dtype="int16", always_2d=True)
    sf.write(late / "candidate.wav", audio[10 * rate :], rate, subtype="PCM_16")
    session = json.loads((late / "session.json").read_text())
    session["participants"][1]["offset_s"] = 10.0
    (late / "session.json").write_text(json.dumps(session))

    transcripts, windows = run_replay([late], whisper)
    # media times honour the offset: the same utterances as the aligned recording, within VAD jitter
    ref_t, _ = reference
    got = sorted((t["participant"], t["start"], t["end"]) for t in transcripts)
    want = sorted((t["participant"], t["start"], t["end"]) for t in ref_t)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert all(abs(g[1] - w[1]) < 0.1 and abs(g[2] - w[2]) < 0.1 for g, w in zip(got, want, strict=True))
    # and the late track holds the room back, whatever the workers and STT latency
    _, windows2 = run_replay([late], DelayedEngine(whisper, 3), workers=2)
    assert canonical(windows2) == canonical(windows)


def test_sessions_at_once_keep_apart_even_under_one_room_name(
    tmp_path: Path, whisper, reference_records, sample_id: str
) -> None:
    # another room with the same audio, and the same room with the same audio in another file: three
    # recordings, three sessions, whose records are the reference's under their own ids
    other_room = tmp_path / "other-room"
    shutil.copytree(SAMPLE, other_room)
    session = json.loads((other_room / "session.json").read_text())
    session["room"] = "second-room"
    (other_room / "session.json").write_text(json.dumps(session))
    same_room = tmp_path / "same-room"
    shutil.copytree(SAMPLE, same_room)
    (same_room / "candidate.wav").rename(same_room / "candidate-take-2.wav")
    session = json.loads((same_room / "session.json").read_text())
    session["participants"][1]["file"] = "candidate-take-2.wav"
    (same_room / "session.json").write_text(json.dumps(session))
    ids = {d: load_session(d).session_id for d in (other_room, same_room)}
    assert len({sample_id, *ids.values()}) == 3

    got = run_records([SAMPLE, other_room, same_room], whisper, workers=2)
    assert {(r["room"], r["session_id"]) for r in got["windows"]} == {
        ("sample-interview", sample_id),
        ("second-room", ids[other_room]),
        ("sample-interview", ids[same_room]),
    }
    for kind in ("transcripts", "windows"):
        ref = canonical(reference_records[kind])
        assert canonical(of_session(got[kind], sample_id)) == ref
        for d, room in ((other_room, "second-room"), (same_room, "sample-interview")):
            mine = of_session(got[kind], ids[d])
            assert canonical(renamed(mine, (room, ids[d]), ("sample-interview", sample_id))) == ref, (kind, d)
    for sid in (sample_id, *ids.values()):
        assert [s["event"] for s in of_session(got["sessions"], sid)] == ["started", "ended"]
        assert [m["final"] for m in of_session(got["metrics"], sid)][-1] is True


def test_testing_source_silence_only_track_gives_no_transcripts(whisper) -> None:
    sid = "quiet-1"
    p = Participant("quiet", "p1", "P", "candidate", session_id=sid)
    rate = 48_000
    chunks = [
        AudioChunk("quiet", "p1", np.zeros((rate // 5, 2), np.int16), rate, i * 0.2, session_id=sid)
        for i in range(50)
    ]
    events = [ParticipantAnnounce(p, (p,)), *chunks, TrackEnd("quiet", "p1", 10.0, session_id=sid)]
    got: dict[str, list] = {kind: [] for kind in (*KINDS, "events")}
    sinks = FlowSinks(**{kind: [TestingSink(records)] for kind, records in got.items()})
    run_main(build_flow(SETTINGS, TestingSource(events), sinks, lambda: whisper))
    assert got["transcripts"] == [] and got["windows"] == []
    marks = [m for m in got["events"] if hasattr(m, "settled")]
    assert marks and math.isinf(marks[-1].settled)
    assert all(m.session_id == sid for m in marks)
    # the session still starts and ends, with final metrics of nobody speaking
    assert [(s["session_id"], s["event"]) for s in got["sessions"]] == [(sid, "started"), (sid, "ended")]
    (final,) = got["metrics"]
    validate(final)
    assert final["final"] is True and final["session_id"] == sid
    assert [(s["identity"], s["words"]) for s in final["speakers"]] == [("p1", 0)]
