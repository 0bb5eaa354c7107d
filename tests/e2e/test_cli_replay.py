"""`quantcoach replay` as a user runs it: a subprocess, real session directories in tmp_path.

Bad input must end with exit status 2 and one `error: ...` line on stderr, never a traceback.
Everything runs with `--stt noop` except the tests that need transcripts to land in files. Records go to
``<out>/<room>/<session_id>/``, one directory per recording, even when two share a room name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from connectors.recording import load_session
from quantcoach.wire import validate
from tests.support.speech import WER_LIMIT, said_between, wer

ROOT = Path(__file__).resolve().parents[2]
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
    for (i, key), value in changes.pop("participants", {}).items():
        manifest["participants"][i][key] = value
    manifest.update(changes)
    (root / "session.json").write_text(json.dumps(manifest))


def session_out(out: Path, session_dir: Path) -> Path:
    """Where a replay into ``out`` puts the records of the recording in ``session_dir``."""
    s = load_session(session_dir)
    return out / s.room / s.session_id


RECORD_FILES = ("transcripts.jsonl", "windows.jsonl", "sessions.jsonl", "metrics.jsonl")


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


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"session_id": "a:b"}, "'session_id' must be"),
        ({"session_id": ""}, "'session_id' must be"),
        ({"started_at": "last tuesday"}, "'started_at' is not ISO 8601"),
        ({"started_at": "2026-12-01T14:00:00"}, "'started_at' needs a time zone"),
    ],
)
def test_bad_session_fields(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    root = session(tmp_path / "s")
    edit_manifest(root, **changes)
    assert_usage_error(noop(str(root), cwd=tmp_path), "session.json", expected)
    assert not (tmp_path / "out").exists()


def test_the_same_session_twice_is_refused(tmp_path: Path) -> None:
    a = session(tmp_path / "a", room="same")
    sid = load_session(a).session_id
    line = assert_usage_error(noop(str(a), str(a), cwd=tmp_path), "the same session is given twice", sid)
    shutil.copytree(a, tmp_path / "copy")  # the same recording elsewhere is the same session
    assert assert_usage_error(noop(str(a), str(tmp_path / "copy"), cwd=tmp_path)) == line
    edit_manifest(tmp_path / "copy", session_id="named")  # named apart, it is another session
    assert noop(str(a), str(tmp_path / "copy"), cwd=tmp_path).returncode == 0


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
    where = session_out(Path("out"), root)
    assert proc.stderr.strip().splitlines()[-1].endswith(f"records in {where}")
    for name in ("transcripts.jsonl", "windows.jsonl"):
        assert (tmp_path / where / name).read_text() == ""


def test_silence_only_session_with_whisper_gives_no_transcripts(tmp_path: Path) -> None:
    """The same with the real local engine: VAD finds no speech, so no transcript and no crash."""
    root = session(tmp_path / "quiet", room="quiet-room", interviewer=3.0, candidate=2.0)
    proc = cli(str(root), "--stt", "whisper", "--quiet", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    where = session_out(tmp_path / "o", root)
    for name in ("transcripts.jsonl", "windows.jsonl"):
        assert (where / name).read_text() == ""
    assert [r["event"] for r in read_jsonl(where / "sessions.jsonl")] == ["started", "ended"]


def test_silence_only_session_writes_empty_jsonl_files(tmp_path: Path) -> None:
    root = session(tmp_path / "quiet", room="quiet-room", interviewer=3.0, candidate=2.0)
    proc = noop(str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = session_out(tmp_path / "out", root)
    assert sorted(os.listdir(tmp_path / "out")) == ["quiet-room"]
    assert os.listdir(tmp_path / "out" / "quiet-room") == [where.name]
    for name in ("transcripts.jsonl", "windows.jsonl"):
        assert (where / name).read_text() == ""
    # the session itself still starts, ends and has its final (empty) metrics, report and captions
    sessions = read_jsonl(where / "sessions.jsonl")
    assert [r["event"] for r in sessions] == ["started", "ended"]
    metrics = read_jsonl(where / "metrics.jsonl")
    assert [m["final"] for m in metrics] == [True]
    assert all(s["words"] == 0 for s in metrics[0]["speakers"])
    for record in sessions + metrics:
        validate(record)
        assert (record["room"], record["session_id"]) == ("quiet-room", where.name)
    assert (where / "report.html").stat().st_size > 0
    assert (where / "transcript.vtt").read_text().startswith("WEBVTT")


def test_session_json_names_the_session_and_its_start(tmp_path: Path) -> None:
    root = session(tmp_path / "named", room="mock-42", interviewer=1.0, candidate=1.0)
    edit_manifest(root, session_id="mock-42_take-2", started_at="2026-12-01T15:00:00+01:00")
    proc = noop(str(root), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = tmp_path / "o" / "mock-42" / "mock-42_take-2"
    assert f"records in {where}" in proc.stderr
    started, ended = read_jsonl(where / "sessions.jsonl")
    assert (started["event"], ended["event"]) == ("started", "ended")
    for record in (started, ended):
        validate(record)
        assert record["session_id"] == "mock-42_take-2"
        assert record["started_at"] == "2026-12-01T14:00:00.000Z"
        assert {p["identity"] for p in record["participants"]} == {"iv-7", "cand-3"}


def test_bare_directory_replays(tmp_path: Path) -> None:
    root = tmp_path / "bare-session"
    root.mkdir()
    tone_file(root / "interviewer-iv.wav", 1.0, 96_000, 6)
    tone_file(root / "candidate-c.wav", 0.5, 8_000, 1, amp=0.9)
    proc = noop(str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = session_out(Path("out"), root)
    assert where.parent == Path("out") / "bare-session"
    assert "1.5 s of audio" in proc.stderr and f"records in {where}" in proc.stderr
    assert all((tmp_path / where / name).is_file() for name in RECORD_FILES)


def test_folder_of_two_sessions_and_out_option_noop(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    session(folder / "one", room="room-a")
    session(folder / "two", room="room-b", interviewer=1.0)
    proc = noop(str(folder), "--out", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "replayed 2 session(s)" in proc.stderr
    a, b = (session_out(tmp_path / "results", folder / name) for name in ("one", "two"))
    assert proc.stderr.strip().splitlines()[-1].endswith(f"records in {a}, {b}")
    assert a.parent.name == "room-a" and b.parent.name == "room-b"
    assert all((d / name).is_file() for d in (a, b) for name in RECORD_FILES)
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


def wall_clock_free(path: Path) -> list[str]:
    """A JSONL file's records without their wall-clock fields (emitted_at, at), as compact JSON."""
    return [
        json.dumps({k: v for k, v in r.items() if k not in ("emitted_at", "at")}, sort_keys=True)
        for r in read_jsonl(path)
    ]


def assert_session_records(where: Path, room: str, speaker: str) -> None:
    """The records of one session directory: all of it, valid, in order, under its own id."""
    sid = where.name
    records = {name: read_jsonl(where / name) for name in RECORD_FILES}
    for name, lines in records.items():
        for record in lines:
            validate(record)
            assert (record["room"], record["session_id"]) == (room, sid), (name, record)
    transcripts, windows = records["transcripts.jsonl"], records["windows.jsonl"]
    assert transcripts and windows
    assert {t["speaker"] for t in transcripts} == {speaker}
    assert all(t["utterance_id"] == f"{sid}:{t['participant']}:{n}" for n, t in enumerate(transcripts))
    assert [w["window_id"] for w in windows] == [f"{sid}:{n}" for n in range(len(windows))]
    sessions = records["sessions.jsonl"]
    assert [s["event"] for s in sessions] == ["started", "ended"]
    assert sessions[0]["at"] <= windows[0]["emitted_at"]
    assert sessions[1]["at"] >= max(w["emitted_at"] for w in windows), "ended after the last window"
    metrics = records["metrics.jsonl"]
    assert [m["final"] for m in metrics] == [False] * (len(metrics) - 1) + [True]
    assert sessions[1]["at"] >= metrics[-1]["emitted_at"]
    assert "<html" in (where / "report.html").read_text().lower()
    assert (where / "transcript.vtt").read_text().startswith("WEBVTT")


def test_folder_of_two_sessions_goes_to_out_room_dirs(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    clip_session(folder / "first", "room-a", "interviewer", "iv-7", 0.0, 5.0)
    clip_session(folder / "second", "room-b", "candidate", "cand-3", 10.3, 16.0)
    proc = cli(str(folder), "--stt", "whisper", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "replayed 2 session(s)" in proc.stderr
    for name, room, speaker in (("first", "room-a", "interviewer"), ("second", "room-b", "candidate")):
        where = session_out(tmp_path / "out", folder / name)
        assert os.listdir(tmp_path / "out" / room) == [where.name]
        assert_session_records(where, room, speaker)
    assert set(os.listdir(tmp_path / "out")) == {"room-a", "room-b"}


def test_two_recordings_under_one_room_name_are_two_sessions(tmp_path: Path) -> None:
    """Room names are reused: two interviews in room "same" stay apart, each under its own id, and
    replaying one again (alone) gives the same records apart from the wall clock."""
    a, b = tmp_path / "a", tmp_path / "b"
    clip_session(a, "same", "interviewer", "iv-7", 0.0, 5.0)
    clip_session(b, "same", "candidate", "cand-3", 10.3, 16.0)
    proc = cli(str(a), str(b), "--stt", "whisper", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "replayed 2 session(s)" in proc.stderr
    where_a, where_b = session_out(tmp_path / "out", a), session_out(tmp_path / "out", b)
    assert where_a.name != where_b.name
    assert sorted(os.listdir(tmp_path / "out" / "same")) == sorted([where_a.name, where_b.name])
    assert_session_records(where_a, "same", "interviewer")
    assert_session_records(where_b, "same", "candidate")

    again = cli(str(a), "--stt", "whisper", "--quiet", "--out", str(tmp_path / "again"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    where_again = tmp_path / "again" / "same" / where_a.name
    assert os.listdir(tmp_path / "again" / "same") == [where_a.name], "the same recording, the same id"
    for name in RECORD_FILES:
        assert wall_clock_free(where_again / name) == wall_clock_free(where_a / name), name
    assert (where_again / "transcript.vtt").read_bytes() == (where_a / "transcript.vtt").read_bytes()


def test_out_option_is_honoured(tmp_path: Path) -> None:
    root = tmp_path / "one"
    clip_session(root, "solo", "interviewer", "iv-7", 0.0, 5.0)
    target = tmp_path / "elsewhere" / "results"
    proc = cli(str(root), "--stt", "whisper", "--quiet", "--out", str(target), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = session_out(target, root)  # one session too gets <room>/<session_id>/ under --out
    assert where.parent == target / "solo"
    transcripts = read_jsonl(where / "transcripts.jsonl")
    assert transcripts and all(t["room"] == "solo" and t["participant"] == "iv-7" for t in transcripts)
    heard = " ".join(t["text"] for t in transcripts)
    assert wer(said_between("interviewer", 0.0, 5.0), heard) < WER_LIMIT, heard
    assert read_jsonl(where / "windows.jsonl")
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


def test_captions_go_to_the_session_directory(tmp_path: Path) -> None:
    root = session(tmp_path / "s", interviewer=1.0, candidate=1.0)
    proc = noop(str(root), "--captions", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = session_out(tmp_path / "o", root)
    assert (where / "captions.jsonl").read_text() == ""  # silence: nothing was captioned
    assert all((where / name).is_file() for name in RECORD_FILES)


def test_speech_to_text_giving_up_fails_the_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A participant whose STT gave up (a rejected key, a server that stays down) fails the replay with
    status 1 and names the participant; the other one is still transcribed to the end."""
    import stt.engines
    from quantcoach.cli import main
    from stt.noop import NoopEngine, NoopStream
    from stt.protocol import SttError

    class GivesUp(NoopStream):
        def poll(self) -> list:
            raise SttError("the engine gave up")

    class HalfDeaf(NoopEngine):
        def stream(self, key: str) -> NoopStream:
            return GivesUp() if key.endswith("/cand-3") else NoopStream()

    monkeypatch.setattr(stt.engines, "engine_for", lambda *args, **kwargs: HalfDeaf())
    root = session(tmp_path / "s", interviewer=1.0, candidate=1.0)
    assert main(["replay", str(root), "--quiet", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: speech-to-text gave up for mock-42/cand-3")
    assert "replayed 1 session(s)" in err
    where = session_out(tmp_path / "o", root)
    assert all((where / name).is_file() for name in RECORD_FILES)
