"""Synthesise the bundled sample interview with espeak-ng (two distinct voices).

Usage: python samples/make_sample.py [OUT_DIR]   (default: samples/interview)

Each participant gets one track covering the whole session, silent while the other speaks, so the
recording looks like what a live room yields. The interviewer is stored at espeak's native 22.05 kHz
mono, the candidate at 24 kHz stereo, so a replay exercises resampling and down-mixing. The script
also writes ``script.json``: who says what, and when, for the end-to-end word-error-rate test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TURNS: list[tuple[str, str]] = [
    ("interviewer", "Good morning. Thank you for joining this interview today."),
    ("interviewer", "Let us start with probability. You flip a fair coin twice."),
    ("candidate", "Sure. Each flip has two outcomes, so there are four outcomes in total."),
    ("candidate", "The chance of two heads is one quarter."),
    ("interviewer", "Good. What is the expected value of a fair six sided die?"),
    ("candidate", "The expected value is three and a half."),
    ("interviewer", "How would you price a simple call option?"),
    ("candidate", "I would use the Black Scholes model with the stock price, strike, and volatility."),
    ("interviewer", "Thank you. That is all for today."),
]
VOICES = {"interviewer": ("en-us+m3", 150), "candidate": ("en-gb+f3", 165)}
RATES = {"interviewer": (22050, 1), "candidate": (24000, 2)}
PEOPLE = {
    "interviewer": {"identity": "iv-7", "name": "Morgan", "file": "interviewer.wav"},
    "candidate": {"identity": "cand-3", "name": "Riley", "file": "candidate.wav"},
}
GAP_SAME_S = 0.7  # pause between two sentences of one speaker
GAP_TURN_S = 1.2  # pause when the other person takes the turn
LEAD_IN_S = 0.5


def speak(text: str, voice: str, wpm: int) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", tmp.name, text], check=True)
        audio, rate = sf.read(tmp.name, dtype="float32")
    return audio, rate


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    base_rate = 16000
    pieces: list[tuple[str, float, np.ndarray, str]] = []
    t = LEAD_IN_S
    prev = None
    for role, text in TURNS:
        if prev is not None:
            t += GAP_SAME_S if prev == role else GAP_TURN_S
        voice, wpm = VOICES[role]
        audio, rate = speak(text, voice, wpm)
        audio = soxr.resample(audio, rate, base_rate)
        pieces.append((role, t, audio, text))
        t += len(audio) / base_rate
        prev = role
    total_s = t + 0.5

    tracks = {role: np.zeros(int(total_s * base_rate), dtype=np.float32) for role in PEOPLE}
    script = []
    for role, start, audio, text in pieces:
        i = int(start * base_rate)
        tracks[role][i : i + len(audio)] += audio
        script.append(
            {
                "role": role,
                "text": text,
                "start": round(start, 3),
                "end": round(start + len(audio) / base_rate, 3),
            }
        )

    participants = []
    for role, person in PEOPLE.items():
        rate, channels = RATES[role]
        audio = soxr.resample(tracks[role], base_rate, rate)
        if channels == 2:  # a slightly quieter right channel, so the down-mix is not a no-op
            audio = np.stack([audio, audio * 0.8], axis=1)
        sf.write(out_dir / person["file"], np.clip(audio, -1, 1), rate, subtype="PCM_16")
        participants.append({**person, "role": role, "offset_s": 0.0})

    session = {"room": "sample-interview", "participants": participants}
    (out_dir / "session.json").write_text(json.dumps(session, indent=2) + "\n")
    (out_dir / "script.json").write_text(json.dumps(script, indent=2) + "\n")
    print(f"wrote {out_dir} ({total_s:.1f} s, {len(script)} turns)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "interview")
