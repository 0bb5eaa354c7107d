"""`quantcoach replay --stt elevenlabs` through the full flow, against the local server that speaks
ElevenLabs' realtime protocol (tests/elevenlabs_server.py hears each tone pitch as a word).

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

from tests.elevenlabs_server import SR, Fault, ScribeTestServer, silence, tone_utterance

ROOT = Path(__file__).resolve().parent.parent
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


def make_session(root: Path) -> Path:
    tracks = {
        "interviewer": silence(TOTAL_S).astype(np.float32),
        "candidate": silence(TOTAL_S).astype(np.float32),
    }
    for role, start, words in TURNS:
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
    session = make_session(tmp_path)
    out = tmp_path / "out"
    with ScribeTestServer(KEY) as server:
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
    if fault is not None:
        assert any(r.fault_fired for r in records) and len(records) >= 3  # two streams + a reconnect

    transcripts = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    got = sorted((t["start"], t["speaker"], t["text"].lower().strip(" .")) for t in transcripts)
    assert [(role, words) for role, _, words in TURNS] == [(s, text) for _, s, text in got]
    for (_, start, _), (t_start, _, _) in zip(TURNS, got, strict=True):
        assert abs(t_start - start) < 0.3
    assert all(t["engine"] == "elevenlabs" and t["is_final"] for t in transcripts)

    windows = [json.loads(line) for line in (out / "windows.jsonl").read_text().splitlines()]
    assert windows[-1]["reason"] == "end"
    assert [w["seq"] for w in windows] == list(range(len(windows)))
