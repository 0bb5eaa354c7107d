"""Interview metrics on recordings with known turn times: the sample (script.json), and the sample with
the candidate's track moved 2 s earlier so that three answers start before the question ends.

The expected figures come from the script's turn times alone, by the definitions in the README (a
turn is a run of one speaker's utterances; talk is the sum of the turns' speech; crosstalk is a speaker
change that starts before the previous turn ends). The bounds are the issue's: turns per role within 1,
talk time within 20 %, the longest pause within 0.7 s, every crosstalk counted.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from tests.support.speech import SAMPLE, script

ROOT = Path(__file__).resolve().parents[2]
SHIFT_S = 2.0
pytestmark = pytest.mark.slow


def expected(turns: list[dict[str, Any]], session_end: float) -> dict[str, Any]:
    ordered = sorted(turns, key=lambda t: t["start"])
    runs: list[dict[str, Any]] = []
    for t in ordered:
        if runs and runs[-1]["role"] == t["role"]:
            runs[-1]["end"] = max(runs[-1]["end"], t["end"])
        else:
            runs.append({"role": t["role"], "start": t["start"], "end": t["end"]})
    overlaps = sum(1 for a, b in itertools.pairwise(runs) if b["start"] < a["end"])
    covered, longest = 0.0, 0.0
    for t in ordered:
        longest = max(longest, t["start"] - covered)
        covered = max(covered, t["end"])
    longest = max(longest, session_end - covered)
    return {
        "turns": {r: sum(1 for x in runs if x["role"] == r) for r in ("interviewer", "candidate")},
        "talk": {
            r: sum(t["end"] - t["start"] for t in turns if t["role"] == r)
            for r in ("interviewer", "candidate")
        },
        "overlaps": overlaps,
        "longest_silence": longest,
    }


def replay(session: Path, out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", "replay", str(session), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics_file,) = out.glob("*/*/metrics.jsonl")
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert records[-1]["final"] is True
    return records[-1]


def check(final: dict[str, Any], want: dict[str, Any]) -> None:
    by_role = {s["role"]: s for s in final["speakers"]}
    for role in ("interviewer", "candidate"):
        got = by_role[role]
        assert abs(got["turns"] - want["turns"][role]) <= 1, (role, got, want)
        assert got["talk_s"] == pytest.approx(want["talk"][role], rel=0.2), (role, got, want)
    assert final["longest_silence_s"] == pytest.approx(want["longest_silence"], abs=0.7), (final, want)
    assert final["overlaps"] == want["overlaps"], (final, want)
    assert sum(s["interruptions"] for s in final["speakers"]) == final["overlaps"]


def test_metrics_of_the_sample_match_its_turn_times(tmp_path: Path) -> None:
    final = replay(SAMPLE, tmp_path / "out")
    want = expected(list(script()), final["media_s"])
    assert want["overlaps"] == 0
    check(final, want)


def test_crosstalk_is_counted_when_answers_start_before_the_question_ends(tmp_path: Path) -> None:
    session = tmp_path / "crosstalk"
    shutil.copytree(SAMPLE, session)
    audio, rate = sf.read(SAMPLE / "candidate.wav", always_2d=True)
    sf.write(session / "candidate.wav", audio[round(SHIFT_S * rate) :], rate)  # everything 2 s earlier
    manifest = json.loads((session / "session.json").read_text())
    manifest["room"] = "crosstalk-interview"
    (session / "session.json").write_text(json.dumps(manifest))
    shifted = [
        {**t, "start": t["start"] - SHIFT_S, "end": t["end"] - SHIFT_S} if t["role"] == "candidate" else t
        for t in script()
    ]
    final = replay(session, tmp_path / "out")
    want = expected(shifted, final["media_s"])
    assert want["overlaps"] == 3
    check(final, want)
    by_role = {s["role"]: s for s in final["speakers"]}
    assert by_role["candidate"]["interruptions"] == 3 and by_role["candidate"]["response_latency_s"] < 0
