"""The real flow (real audio, real Whisper, real operators) with Bytewax's own testing helpers.

Windows must not depend on worker count, on STT latency, or on a track starting late: the same
session replayed under all of those gives byte-identical windows apart from ``emitted_at``.
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
from stt.engines import engine_for
from stt.protocol import SttEvent

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "interview"
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


def run_replay(session_dirs: list[Path], engine, workers: int = 1) -> tuple[list[dict], list[dict]]:
    transcripts: list[dict] = []
    windows: list[dict] = []
    sessions = [load_session(d) for d in session_dirs]
    sinks = FlowSinks(transcripts=[TestingSink(transcripts)], windows=[TestingSink(windows)])
    flow = build_flow(SETTINGS, ReplaySource(sessions, 200, None), sinks, lambda: engine)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return transcripts, windows


def canonical(windows: list[dict]) -> list[str]:
    return sorted(
        json.dumps({k: v for k, v in w.items() if k != "emitted_at"}, sort_keys=True) for w in windows
    )


@pytest.fixture(scope="module")
def reference(whisper) -> tuple[list[dict], list[dict]]:
    return run_replay([SAMPLE], whisper)


def test_flow_emits_transcripts_and_windows(reference) -> None:
    transcripts, windows = reference
    assert len(transcripts) >= 8
    assert {t["speaker"] for t in transcripts} == {"interviewer", "candidate"}
    assert all(t["is_final"] and t["engine"] == "whisper" for t in transcripts)
    reasons = [w["reason"] for w in windows]
    assert reasons[-1] == "end" and "speaker_change" in reasons
    assert [w["seq"] for w in windows] == list(range(len(windows)))


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


def test_two_sessions_at_once_keep_rooms_apart(tmp_path: Path, whisper, reference) -> None:
    other = tmp_path / "other"
    shutil.copytree(SAMPLE, other)
    session = json.loads((other / "session.json").read_text())
    session["room"] = "second-room"
    (other / "session.json").write_text(json.dumps(session))
    _, windows = run_replay([SAMPLE, other], whisper, workers=2)
    by_room = {r: [w for w in windows if w["room"] == r] for r in ("sample-interview", "second-room")}
    _, ref_w = reference
    assert canonical(by_room["sample-interview"]) == canonical(ref_w)
    renamed = [
        {
            **w,
            "room": "sample-interview",
            "window_id": w["window_id"].replace("second-room", "sample-interview"),
        }
        for w in by_room["second-room"]
    ]
    assert canonical(renamed) == canonical(ref_w)


def test_testing_source_silence_only_track_gives_no_transcripts(whisper) -> None:
    p = Participant("quiet", "p1", "P", "candidate")
    rate = 48_000
    chunks = [AudioChunk("quiet", "p1", np.zeros((rate // 5, 2), np.int16), rate, i * 0.2) for i in range(50)]
    events = [ParticipantAnnounce(p, (p,)), *chunks, TrackEnd("quiet", "p1", 10.0)]
    transcripts: list[dict] = []
    windows: list[dict] = []
    shown: list = []
    sinks = FlowSinks([TestingSink(transcripts)], [TestingSink(windows)], [TestingSink(shown)])
    run_main(build_flow(SETTINGS, TestingSource(events), sinks, lambda: whisper))
    assert transcripts == [] and windows == []
    marks = [m for m in shown if hasattr(m, "settled")]
    assert marks and math.isinf(marks[-1].settled)
