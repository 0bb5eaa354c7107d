"""`quantcoach replay` as a user runs it: a subprocess, real session directories in tmp_path.

Bad input must end with exit status 2 and one `error: ...` line on stderr, never a traceback.
Everything runs with `--stt noop` except the two tests that need transcripts to land in files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.support.speech import WER_LIMIT, said_between, wer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "interview"


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", "replay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )


def noop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli(*args, "--stt", "noop", "--quiet", cwd=cwd)


def tone_file(
    path: Path, seconds: float = 0.6, rate: int = 16_000, channels: int = 1, amp: float = 0.0
) -> None:
    t = np.arange(round(rate * seconds)) / rate
    x = (amp * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    sf.write(path, np.repeat(x[:, None], channels, axis=1), rate, subtype="PCM_16")


def session(root: Path, room: str = "mock-42", **files: float) -> Path:
    """session.json naming interviewer.wav and candidate.wav (silent, so noop and Whisper agree)."""
    root.mkdir(parents=True, exist_ok=True)
    tone_file(root / "interviewer.wav", files.get("interviewer", 0.6), 48_000, 2)
    tone_file(root / "candidate.wav", files.get("candidate", 0.6), 22_050, 1)
    manifest = {
        "room": room,
        "participants": [
            {"identity": "iv-7", "name": "Morgan", "role": "interviewer", "file": "interviewer.wav"},
            {"identity": "cand-3", "name": "Riley", "role": "candidate", "file": "candidate.wav"},
        ],
    }
    (root / "session.json").write_text(json.dumps(manifest))
    return root


def edit_manifest(root: Path, **changes: Any) -> None:
    manifest = json.loads((root / "session.json").read_text())
    for (i, key), value in changes.get("participants", {}).items():
        manifest["participants"][i][key] = value
    (root / "session.json").write_text(json.dumps(manifest))


def assert_usage_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "panicked" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert proc.stdout == ""
    return lines[0]


# --- bad input -------------------------------------------------------------------------------------------
def test_missing_directory(tmp_path: Path) -> None:
    assert_usage_error(noop(str(tmp_path / "nope"), cwd=tmp_path), "nope", "no such directory")
    assert not (tmp_path / "out").exists()


def test_file_instead_of_directory(tmp_path: Path) -> None:
    tone_file(tmp_path / "a.wav")
    assert_usage_error(noop(str(tmp_path / "a.wav"), cwd=tmp_path), "not a directory")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{oops", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"participants": []}', "'room' must be"),
        ('{"room": "r", "participants": []}', "'participants' must be a non-empty list"),
    ],
)
def test_malformed_session_json(tmp_path: Path, text: str, expected: str) -> None:
    root = session(tmp_path / "s")
    (root / "session.json").write_text(text)
    assert_usage_error(noop(str(root), cwd=tmp_path), "session.json", expected)


def test_missing_audio_file(tmp_path: Path) -> None:
    root = session(tmp_path / "s")
    (root / "candidate.wav").unlink()
    assert_usage_error(noop(str(root), cwd=tmp_path), "candidate.wav", "missing")


def test_unreadable_audio_file(tmp_path: Path) -> None:
    root = session(tmp_path / "s")
    (root / "candidate.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    assert_usage_error(noop(str(root), cwd=tmp_path), "candidate.wav", "unreadable audio")


def test_empty_track(tmp_path: Path) -> None:
    root = session(tmp_path / "s")
    sf.write(root / "candidate.wav", np.zeros((0, 1), np.int16), 16_000, subtype="PCM_16")
    assert_usage_error(noop(str(root), cwd=tmp_path), "candidate.wav", "empty track")


def test_unknown_role(tmp_path: Path) -> None:
    root = session(tmp_path / "s")
    edit_manifest(root, participants={(1, "role"): "boss"})
    assert_usage_error(noop(str(root), cwd=tmp_path), "unknown role 'boss'")


def test_negative_offset(tmp_path: Path) -> None:
    root = session(tmp_path / "s")
    edit_manifest(root, participants={(0, "offset_s"): -2})
    assert_usage_error(noop(str(root), cwd=tmp_path), "offset_s")


def test_path_escaping_the_session(tmp_path: Path) -> None:
    root = session(tmp_path / "s")
    tone_file(tmp_path / "elsewhere.wav")
    edit_manifest(root, participants={(0, "file"): "../elsewhere.wav"})
    assert_usage_error(noop(str(root), cwd=tmp_path), "outside the session directory")


def test_directory_with_no_audio(tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    root.mkdir()
    (root / "notes.txt").write_text("no audio here")
    assert_usage_error(noop(str(root), cwd=tmp_path), "no session.json")


def test_two_sessions_with_one_room_name(tmp_path: Path) -> None:
    a = session(tmp_path / "a", room="same")
    b = session(tmp_path / "b", room="same")
    assert_usage_error(noop(str(a), str(b), cwd=tmp_path), "room")


@pytest.mark.parametrize(
    ("option", "value"),
    [("--speed", "fast"), ("--speed", "0"), ("--speed", "-2"), ("--speed", "nan"), ("--window-s", "-5")],
)
def test_bad_option_values(tmp_path: Path, option: str, value: str) -> None:
    root = session(tmp_path / "s")
    proc = noop(str(root), f"{option}={value}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, proc.stderr
    assert f"argument {option}" in error_lines[0] and "must be" in error_lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("--speed", "fast"), ("--window-s", "-5")])
def test_bad_option_values_are_one_error_line(tmp_path: Path, option: str, value: str) -> None:
    root = session(tmp_path / "s")
    assert_usage_error(noop(str(root), f"{option}={value}", cwd=tmp_path), option)


# --- good input ------------------------------------------------------------------------------------------
def test_silence_only_session_runs_clean(tmp_path: Path) -> None:
    root = session(tmp_path / "quiet", room="quiet-room", interviewer=3.0, candidate=2.0)
    proc = noop(str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr.lower()
    assert "replayed 1 session(s), 5.0 s of audio" in proc.stderr
    assert "out/quiet-room" in proc.stderr
    for name in ("transcripts.jsonl", "windows.jsonl"):
        f = tmp_path / "out" / "quiet-room" / name
        assert not f.exists() or f.read_text() == ""


def test_silence_only_session_with_whisper_gives_no_transcripts(tmp_path: Path) -> None:
    """The same with the real local engine: VAD finds no speech, so no transcript and no crash."""
    root = session(tmp_path / "quiet", room="quiet-room", interviewer=3.0, candidate=2.0)
    proc = cli(str(root), "--stt", "whisper", "--quiet", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("transcripts.jsonl", "windows.jsonl"):
        f = tmp_path / "o" / name
        assert not f.exists() or f.read_text() == ""


def test_silence_only_session_writes_empty_jsonl_files(tmp_path: Path) -> None:
    root = session(tmp_path / "quiet", room="quiet-room", interviewer=3.0, candidate=2.0)
    proc = noop(str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("transcripts.jsonl", "windows.jsonl"):
        assert (tmp_path / "out" / "quiet-room" / name).read_text() == ""


def test_bare_directory_replays(tmp_path: Path) -> None:
    root = tmp_path / "bare-session"
    root.mkdir()
    tone_file(root / "interviewer-iv.wav", 1.0, 96_000, 6)
    tone_file(root / "candidate-c.wav", 0.5, 8_000, 1, amp=0.9)
    proc = noop(str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1.5 s of audio" in proc.stderr and "out/bare-session" in proc.stderr


def test_folder_of_two_sessions_and_out_option_noop(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    session(folder / "one", room="room-a")
    session(folder / "two", room="room-b", interviewer=1.0)
    proc = noop(str(folder), "--out", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "replayed 2 session(s)" in proc.stderr
    assert f"{tmp_path / 'results' / 'room-a'}, {tmp_path / 'results' / 'room-b'}" in proc.stderr
    assert not (tmp_path / "out").exists(), "--out must replace the default out/ directory"


def test_truncated_flac_track_replays(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    pcm = np.random.default_rng(1).integers(-8000, 8000, size=(96_000, 1), dtype=np.int16)
    sf.write(root / "c.flac", pcm, 48_000, subtype="PCM_16")
    data = (root / "c.flac").read_bytes()
    (root / "c.flac").write_bytes(data[: len(data) // 2])
    manifest = {"room": "cut", "participants": [{"identity": "c", "role": "candidate", "file": "c.flac"}]}
    (root / "session.json").write_text(json.dumps(manifest))
    proc = noop(str(root), cwd=tmp_path)
    assert "panicked" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr


# --- where the records go (needs speech, so the local Whisper engine on clips of the sample) --------------
def clip_session(root: Path, room: str, role: str, identity: str, start: float, end: float) -> None:
    """One participant speaking one sentence of the bundled sample."""
    root.mkdir(parents=True)
    audio, rate = sf.read(SAMPLE / f"{role}.wav", dtype="int16")
    sf.write(root / f"{role}.wav", audio[round(start * rate) : round(end * rate)], rate, subtype="PCM_16")
    manifest = {"room": room, "participants": [{"identity": identity, "role": role, "file": f"{role}.wav"}]}
    (root / "session.json").write_text(json.dumps(manifest))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_of_two_sessions_goes_to_out_room_dirs(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    clip_session(folder / "first", "room-a", "interviewer", "iv-7", 0.0, 5.0)
    clip_session(folder / "second", "room-b", "candidate", "cand-3", 10.3, 16.0)
    proc = cli(str(folder), "--stt", "whisper", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "replayed 2 session(s)" in proc.stderr
    for room, speaker in (("room-a", "interviewer"), ("room-b", "candidate")):
        transcripts = read_jsonl(tmp_path / "out" / room / "transcripts.jsonl")
        windows = read_jsonl(tmp_path / "out" / room / "windows.jsonl")
        assert transcripts and windows
        assert {t["room"] for t in transcripts} == {room} and {w["room"] for w in windows} == {room}
        assert {t["speaker"] for t in transcripts} == {speaker}
    assert set(os.listdir(tmp_path / "out")) == {"room-a", "room-b"}


def test_out_option_is_honoured(tmp_path: Path) -> None:
    root = tmp_path / "one"
    clip_session(root, "solo", "interviewer", "iv-7", 0.0, 5.0)
    target = tmp_path / "elsewhere" / "results"
    proc = cli(str(root), "--stt", "whisper", "--quiet", "--out", str(target), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    transcripts = read_jsonl(target / "transcripts.jsonl")  # one session: straight into --out
    assert transcripts and all(t["room"] == "solo" and t["participant"] == "iv-7" for t in transcripts)
    heard = " ".join(t["text"] for t in transcripts)
    assert wer(said_between("interviewer", 0.0, 5.0), heard) < WER_LIMIT, heard
    assert read_jsonl(target / "windows.jsonl")
    assert not (tmp_path / "out").exists()


def test_replay_and_flow_take_the_same_engines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantcoach.cli import main

    monkeypatch.setenv("LIVEKIT_URL", "")
    assert main(["flow", "--stt", "noop"]) == 2  # noop accepted: what stops it is the missing LiveKit
    assert capsys.readouterr().err.startswith("error: LiveKit is not configured")
    for command in (["flow"], ["replay", str(SAMPLE)]):
        assert main([*command, "--stt", "vosk"]) == 2
        assert (
            "argument --stt: 'vosk' is not one of 'whisper', 'elevenlabs', 'noop'" in capsys.readouterr().err
        )
