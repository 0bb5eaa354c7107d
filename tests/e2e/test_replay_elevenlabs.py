"""`quantcoach replay --stt elevenlabs` through the full flow, against the local server that speaks
ElevenLabs' realtime protocol (tests/support/elevenlabs_server.py hears each tone pitch as a word).

The session is made of tone "words" at 48 kHz mono and 44.1 kHz stereo, so the flow's resampling runs
too; one connection is dropped mid-utterance, and every utterance must still come back exactly once,
from the right speaker, at the right media time, with the API key nowhere in the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.support.elevenlabs_server import SR, VOCAB, Fault, ScribeTestServer, silence, tone_utterance

ROOT = Path(__file__).resolve().parents[2]
KEY = "xi-test-key-do-not-log-4242"
#: (role, start s, words): alternating turns, as in an interview
TURNS = [
    ("interviewer", 0.5, "alpha bravo charlie"),
    ("candidate", 3.0, "delta echo"),
    ("interviewer", 5.5, "foxtrot golf"),
    ("candidate", 8.0, "hotel india juliett kilo"),
    ("interviewer", 12.0, "lima mike"),
]
TOTAL_S = 15.0
#: a 44 s answer without a pause the VAD would take (110 words, 0.1 s apart)
ANSWER = " ".join(VOCAB[i % len(VOCAB)] for i in range(110))
LONG_TURNS = [("interviewer", 0.5, "alpha bravo charlie"), ("candidate", 3.0, ANSWER)]


def make_session(root: Path, turns: list[tuple[str, float, str]] = TURNS, total_s: float = TOTAL_S) -> Path:
    tracks = {
        "interviewer": silence(total_s).astype(np.float32),
        "candidate": silence(total_s).astype(np.float32),
    }
    for role, start, words in turns:
        audio = tone_utterance(words).astype(np.float32) / 32768
        i = round(start * SR)
        tracks[role][i : i + len(audio)] = audio
    sf.write(root / "iv.wav", soxr.resample(tracks["interviewer"], SR, 48000), 48000, subtype="PCM_16")
    stereo = soxr.resample(tracks["candidate"], SR, 44100)
    sf.write(root / "cand.wav", np.stack([stereo, stereo], axis=1), 44100, subtype="PCM_16")
    session = {
        "room": "tones",
        "participants": [
            {"identity": "iv", "name": "Morgan", "role": "interviewer", "file": "iv.wav"},
            {"identity": "cand", "name": "Riley", "role": "candidate", "file": "cand.wav"},
        ],
    }
    (root / "session.json").write_text(json.dumps(session))
    return root


@pytest.mark.parametrize(
    "fault", [None, Fault("drop", at_audio_s=6.0, mid_utterance=True)], ids=["clean", "drop"]
)
def test_replay_with_elevenlabs_engine(tmp_path: Path, fault: Fault | None) -> None:
    transcripts, windows, records = replay(make_session(tmp_path), tmp_path / "out", fault)
    if fault is not None:
        assert any(r.fault_fired for r in records) and len(records) >= 3  # two streams + a reconnect

    got = sorted((t["start"], t["speaker"], t["text"].lower().strip(" .")) for t in transcripts)
    assert [(role, words) for role, _, words in TURNS] == [(s, text) for _, s, text in got]
    for (_, start, _), (t_start, _, _) in zip(TURNS, got, strict=True):
        assert abs(t_start - start) < 0.3
    assert all(t["engine"] == "elevenlabs" and t["is_final"] for t in transcripts)
    assert all(t["language"] == "en" and 0 < t["confidence"] <= 1 for t in transcripts)

    assert windows[-1]["reason"] == "end"
    assert [w["seq"] for w in windows] == list(range(len(windows)))


@pytest.mark.parametrize(
    "fault", [None, Fault("drop", at_audio_s=30.0, mid_utterance=True)], ids=["clean", "drop"]
)
def test_a_long_answer_comes_back_in_bounded_finals(tmp_path: Path, fault: Fault | None) -> None:
    # every connection that gets 30 s of audio (only the answer's first) drops mid-utterance
    session = make_session(tmp_path, LONG_TURNS, 50.0)
    transcripts, _, records = replay(session, tmp_path / "out", fault, every_connection=True)
    if fault is not None:
        assert sum(r.fault_fired for r in records) == 1
    answer = [t for t in transcripts if t["speaker"] == "candidate"]
    assert " ".join(t["text"] for t in answer).split() == ANSWER.split()  # every word once, in order
    assert len(answer) >= 3 and all(t["end"] - t["start"] <= 20.0 for t in answer)
    assert sum(r.commit_requests for r in records) >= 2  # the engine cut it, not the server's limit


def replay(
    session: Path, out: Path, fault: Fault | None, every_connection: bool = False
) -> tuple[list[dict], list[dict], list]:
    """``quantcoach replay --stt elevenlabs`` against the local server: transcripts, windows, connections.

    ``fault``: for the first connection, or ``every_connection``."""
    with ScribeTestServer(KEY) as server:
        if every_connection:
            server.always = fault
        else:
            server.plan(fault)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "quantcoach.cli",
                "replay",
                str(session),
                "--stt",
                "elevenlabs",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
            env={
                **os.environ,
                "ELEVENLABS_API_KEY": KEY,
                "ELEVENLABS_BASE_URL": server.url,
                "LOG_LEVEL": "DEBUG",
            },
        )
        records = server.records()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert KEY not in proc.stdout + proc.stderr
    assert all(r.key_ok for r in records)
    (session_out,) = (out / "tones").iterdir()  # <out>/<room>/<session_id>/
    transcripts, windows = (
        [json.loads(line) for line in (session_out / name).read_text().splitlines()]
        for name in ("transcripts.jsonl", "windows.jsonl")
    )
    return transcripts, windows, records
