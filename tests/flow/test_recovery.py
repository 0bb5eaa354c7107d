"""Recovery: a replay killed mid-session and started again resumes its state from Bytewax's recovery
store. Delivery is at-least-once (records after the last snapshot are emitted again) with deterministic
ids (under the recording's session id), so after de-duplication by id every window id appears once and
every spoken turn is heard; the session ends once, after its last window."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from connectors.recording import load_session

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "interview"


def replay_cmd(out: Path, recovery: Path) -> list[str]:
    return [
        sys.executable, "-m", "quantcoach.cli", "replay", str(SAMPLE), "--out", str(out), "--quiet",
        "--speed", "3", "--recovery-dir", str(recovery), "--snapshot-s", "1",
    ]  # fmt: skip


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_killed_replay_resumes_and_ids_are_exactly_once_after_dedup(tmp_path: Path) -> None:
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    sid = load_session(SAMPLE).session_id
    records = out / "sample-interview" / sid
    proc = subprocess.Popen(
        replay_cmd(out, recovery), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # kill once the first window is out: mid-session, with state worth keeping
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (records / "windows.jsonl").exists() and (records / "windows.jsonl").read_text().strip():
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the replay finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    before = read(records / "windows.jsonl")
    assert before and before[-1]["reason"] != "end"

    done = subprocess.run(replay_cmd(out, recovery), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from the recovery state" in done.stderr

    assert [p.name for p in (out / "sample-interview").iterdir()] == [sid], "resumed into the same session"
    windows = {w["window_id"]: w for w in reversed(read(records / "windows.jsonl"))}  # first copy wins
    seqs = sorted(w["seq"] for w in windows.values())
    assert seqs == list(range(len(seqs))), "window ids continue from the recovered state, no gaps"
    assert set(windows) == {f"{sid}:{n}" for n in seqs}
    assert max(windows.values(), key=lambda w: w["seq"])["reason"] == "end"
    events = [s["event"] for s in read(records / "sessions.jsonl")]
    assert events.count("ended") == 1 and events[-1] == "ended" and "started" in events
    assert read(records / "metrics.jsonl")[-1]["final"] is True
    assert (records / "report.html").is_file() and (records / "transcript.vtt").is_file()
    transcripts = {t["utterance_id"]: t for t in read(records / "transcripts.jsonl")}
    assert all(u.startswith(f"{sid}:") for u in transcripts)
    script = json.loads((SAMPLE / "script.json").read_text())
    for turn in script:  # nothing lost across the kill: every turn is heard, from the right speaker
        heard = [t for t in transcripts.values() if t["start"] < turn["end"] and t["end"] > turn["start"]]
        assert heard and {t["speaker"] for t in heard} == {turn["role"]}, turn
