"""The recorded session format: load_session's validation and TrackReader, on real files in tmp_path."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from connectors.recording import IDENTITY, ROOM_NAME, SessionError, TrackReader, load_session, wire_name

SR = 16_000
DERIVED_ID = re.compile(r"rec-[0-9a-f]{24}")


def write_audio(path: Path, seconds: float = 0.5, rate: int = SR, channels: int = 1, **kw: Any) -> np.ndarray:
    """A quiet tone as int16 (frames, channels), written with soundfile (format from the suffix)."""
    t = np.arange(round(rate * seconds)) / rate
    x = (0.25 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    pcm = np.repeat(x[:, None], channels, axis=1)
    kw.setdefault("subtype", "PCM_16")
    sf.write(path, pcm, rate, **kw)
    return pcm


def person(identity: str, role: str, file: str, **extra: Any) -> dict[str, Any]:
    return {"identity": identity, "name": identity.title(), "role": role, "file": file, **extra}


def make_session(root: Path, manifest: Any = None, *, files: dict[str, float] | None = None) -> Path:
    """A session dir with ``session.json`` (a dict, or raw text) and tone files for ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, seconds in (files or {}).items():
        write_audio(root / name, seconds)
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (root / "session.json").write_text(text)
    return root


def two_people(root: Path, **overrides: Any) -> Path:
    manifest = {
        "room": "mock-42",
        "participants": [
            person("iv-7", "interviewer", "interviewer.wav"),
            person("cand-3", "candidate", "candidate.wav"),
        ],
        **overrides,
    }
    return make_session(root, manifest, files={"interviewer.wav": 0.5, "candidate.wav": 0.5})


def error_of(path: Path) -> str:
    with pytest.raises(SessionError) as info:
        load_session(path)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


# --- good sessions ---------------------------------------------------------------------------------------
def test_session_json_with_mixed_formats_rates_and_channels(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    write_audio(root / "iv.wav", 1.0, 48_000, 2)
    write_audio(root / "cand.flac", 1.5, 44_100, 1)
    write_audio(root / "obs.ogg", 0.8, 22_050, 6, format="OGG", subtype="VORBIS")
    manifest = {
        "room": "mock-42",
        "participants": [
            person("iv-7", "interviewer", "iv.wav"),
            person("cand-3", "candidate", "cand.flac", offset_s=2.5),
            {"identity": "obs_1", "role": "participant", "file": "obs.ogg", "offset_s": 1},
        ],
    }
    (root / "session.json").write_text(json.dumps(manifest))

    s = load_session(root)
    assert s.room == "mock-42"
    assert s.path == root
    iv, cand, obs = s.tracks
    assert (iv.participant.identity, iv.participant.name, iv.participant.role) == (
        "iv-7",
        "Iv-7",
        "interviewer",
    )
    assert (iv.sample_rate, iv.channels, iv.frames) == (48_000, 2, 48_000)
    assert iv.participant.offset_s == 0.0 and iv.end == pytest.approx(1.0)
    assert (cand.sample_rate, cand.channels, cand.frames) == (44_100, 1, round(1.5 * 44_100))
    assert cand.participant.offset_s == 2.5
    assert cand.end == pytest.approx(4.0)
    assert (obs.sample_rate, obs.channels) == (22_050, 6)
    assert obs.frames == pytest.approx(0.8 * 22_050, abs=2)
    assert obs.participant.name == "obs_1", "name defaults to the identity"
    assert isinstance(obs.participant.offset_s, float) and obs.participant.offset_s == 1.0
    assert all(t.participant.room == "mock-42" for t in s.tracks)
    assert DERIVED_ID.fullmatch(s.session_id), "no session_id in session.json: derived from the content"
    assert s.started_at is None
    assert all(p.session_id == s.session_id and p.started_at is None for p in s.roster)
    sid = s.session_id
    assert [p.key for p in s.roster] == [
        f"mock-42/{sid}/iv-7",
        f"mock-42/{sid}/cand-3",
        f"mock-42/{sid}/obs_1",
    ]
    assert s.duration == pytest.approx(4.0)
    assert s.audio_seconds == pytest.approx(1.0 + 1.5 + 0.8, abs=1e-3)
    assert all(t.path.is_absolute() for t in s.tracks)


def test_files_in_a_subfolder_of_the_session_are_allowed(tmp_path: Path) -> None:
    root = tmp_path / "s"
    (root / "audio").mkdir(parents=True)
    write_audio(root / "audio" / "a.wav")
    make_session(root, {"room": "r", "participants": [person("a", "candidate", "audio/a.wav")]})
    assert load_session(str(root)).tracks[0].path == (root / "audio" / "a.wav").resolve()


def test_bare_directory_of_role_identity_wavs(tmp_path: Path) -> None:
    root = tmp_path / "My Interview #3"
    root.mkdir()
    write_audio(root / "interviewer-iv-7.wav", 0.5, 48_000, 2)
    write_audio(root / "candidate-cand.3.WAV", 0.25, 8_000)
    (root / "notes.txt").write_text("not audio")
    (root / "candidate-ignored.flac").write_bytes(b"only .wav files count in a bare folder")

    s = load_session(root)
    assert s.room and "/" not in s.room and " " not in s.room and "#" not in s.room
    by_id = {t.participant.identity: t for t in s.tracks}
    assert set(by_id) == {"iv-7", "cand.3"}
    assert by_id["iv-7"].participant.role == "interviewer"
    assert by_id["iv-7"].participant.name == "iv-7"
    assert (by_id["iv-7"].sample_rate, by_id["iv-7"].channels) == (48_000, 2)
    assert by_id["cand.3"].participant.role == "candidate"
    assert by_id["cand.3"].frames == 2_000
    assert all(t.participant.offset_s == 0.0 and t.participant.room == s.room for t in s.tracks)
    assert DERIVED_ID.fullmatch(s.session_id)
    assert all(t.participant.session_id == s.session_id for t in s.tracks)


# --- session ids ----------------------------------------------------------------------------------------
def test_session_json_session_id_and_started_at_are_used(tmp_path: Path) -> None:
    s = load_session(
        two_people(tmp_path / "s", session_id="Mock-42_2026-12-01", started_at="2026-12-01T15:30:00+01:00")
    )
    assert s.session_id == "Mock-42_2026-12-01"
    assert s.started_at == "2026-12-01T14:30:00.000Z", "normalised to UTC"
    assert all(p.session_id == s.session_id and p.started_at == s.started_at for p in s.roster)
    assert [p.key for p in s.roster] == [
        "mock-42/Mock-42_2026-12-01/iv-7",
        "mock-42/Mock-42_2026-12-01/cand-3",
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-12-01T14:00:00Z", "2026-12-01T14:00:00.000Z"),
        ("2026-12-01T14:00:00.25+00:00", "2026-12-01T14:00:00.250Z"),
        ("2026-12-01T09:00:00-05:00", "2026-12-01T14:00:00.000Z"),
        (None, None),
    ],
)
def test_started_at_is_normalised_to_utc(tmp_path: Path, given: str | None, expected: str | None) -> None:
    s = load_session(two_people(tmp_path / "s", started_at=given))
    assert s.started_at == expected
    assert DERIVED_ID.fullmatch(s.session_id), "started_at alone does not name the session"


def test_longest_session_id_is_accepted(tmp_path: Path) -> None:
    assert load_session(two_people(tmp_path / "s", session_id="a" * 64)).session_id == "a" * 64


@pytest.mark.parametrize(
    "session_id",
    ["", "a b", "a:b", "a/b", "a.b", "x" * 65, "sess\n", "séance", 42, None, ["a"]],
)
def test_bad_session_id(tmp_path: Path, session_id: Any) -> None:
    msg = error_of(two_people(tmp_path / "s", session_id=session_id))
    assert "session.json" in msg and "'session_id' must be" in msg


@pytest.mark.parametrize(
    ("started_at", "expected"),
    [
        ("yesterday", "not ISO 8601"),
        ("", "not ISO 8601"),
        ("2026-13-01T14:00:00Z", "not ISO 8601"),
        ("2026-12-01T14:00:00", "needs a time zone"),
        ("2026-12-01", "needs a time zone"),
        (1764597600, "must be an ISO 8601 timestamp string"),
        (True, "must be an ISO 8601 timestamp string"),
    ],
)
def test_bad_started_at(tmp_path: Path, started_at: Any, expected: str) -> None:
    msg = error_of(two_people(tmp_path / "s", started_at=started_at))
    assert "session.json" in msg and "'started_at'" in msg and expected in msg


def test_derived_session_id_is_stable_for_the_same_recording(tmp_path: Path) -> None:
    first = load_session(two_people(tmp_path / "s"))
    assert load_session(tmp_path / "s").session_id == first.session_id, "the same directory again"
    shutil.copytree(tmp_path / "s", tmp_path / "elsewhere" / "copy")
    copied = load_session(tmp_path / "elsewhere" / "copy")
    assert copied.session_id == first.session_id, "the id comes from the content, not the path"


def test_derived_session_id_changes_with_one_audio_sample(tmp_path: Path) -> None:
    root = two_people(tmp_path / "s")
    before = load_session(root).session_id
    pcm, rate = sf.read(root / "candidate.wav", dtype="int16")
    pcm[1234] += 1
    sf.write(root / "candidate.wav", pcm, rate, subtype="PCM_16")
    after = load_session(root).session_id
    assert DERIVED_ID.fullmatch(after) and after != before
    pcm[1234] -= 1
    sf.write(root / "candidate.wav", pcm, rate, subtype="PCM_16")
    assert load_session(root).session_id == before, "back to the same recording, back to the same id"


def test_derived_session_id_differs_with_the_room(tmp_path: Path) -> None:
    a = load_session(two_people(tmp_path / "a"))
    b = load_session(two_people(tmp_path / "b", room="mock-43"))
    assert a.room != b.room and a.session_id != b.session_id


def test_derived_session_id_differs_with_who_speaks_on_a_track(tmp_path: Path) -> None:
    base = load_session(two_people(tmp_path / "a")).session_id
    root = two_people(tmp_path / "b")
    manifest = json.loads((root / "session.json").read_text())
    manifest["participants"][1]["offset_s"] = 0.5
    (root / "session.json").write_text(json.dumps(manifest))
    assert load_session(root).session_id != base


# --- bad input: every problem is a one-line SessionError naming the file ----------------------------------
def test_missing_directory(tmp_path: Path) -> None:
    msg = error_of(tmp_path / "nope")
    assert "nope" in msg and "no such directory" in msg


def test_a_file_instead_of_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "session.wav"
    write_audio(f)
    msg = error_of(f)
    assert "session.wav" in msg and "not a directory" in msg


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    msg = error_of(tmp_path / "empty")
    assert "empty" in msg and "no session.json" in msg


def test_directory_without_audio(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "readme.txt").write_text("hello")
    write_audio(root / "recording.wav")  # not named <role>-<identity>.wav
    assert "no session.json and no <role>-<identity>.wav" in error_of(root)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"mock-42"', "must be a JSON object"),
        ('{"participants": []}', "'room' must be"),
        ('{"room": "", "participants": [{}]}', "'room' must be"),
        ('{"room": "a/b", "participants": [{}]}', "'room' must be"),
        ('{"room": "../up", "participants": [{}]}', "'room' must be"),
        ('{"room": 42, "participants": [{}]}', "'room' must be"),
        # the API's rule (rooms are in URLs, Kafka keys and ids): no ':'; a full match, so no "\n" either
        ('{"room": "a:b", "participants": [{}]}', "'room' must be"),
        ('{"room": "mock-42\\n", "participants": [{}]}', "'room' must be"),
        ('{"room": "x%s", "participants": [{}]}' % ("y" * 64), "'room' must be"),
        ('{"room": "r"}', "'participants' must be a non-empty list"),
        ('{"room": "r", "participants": []}', "'participants' must be a non-empty list"),
        ('{"room": "r", "participants": {"a": 1}}', "'participants' must be a non-empty list"),
        ('{"room": "r", "participants": ["a.wav"]}', "must be an object"),
    ],
)
def test_malformed_session_json(tmp_path: Path, text: str, expected: str) -> None:
    root = make_session(tmp_path / "s", text, files={"a.wav": 0.2})
    msg = error_of(root)
    assert expected in msg
    assert "session.json" in msg


def test_wire_name_is_the_closest_name_the_reader_accepts() -> None:
    assert wire_name("mock-42", ROOM_NAME) == "mock-42"
    assert wire_name("interview: round 2", ROOM_NAME) == "interview_round_2"
    assert wire_name("::x", IDENTITY) == "x" and wire_name("///", IDENTITY) == "unnamed"
    assert wire_name("a@b+c", IDENTITY) == "a@b+c" and wire_name("a@b+c", ROOM_NAME) == "a_b_c"
    long = wire_name("r" * 200, ROOM_NAME)
    assert ROOM_NAME.fullmatch(long) and len(long) == 64


def test_session_json_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "session.json").write_bytes(b'{"room": "\xff\xfe"}')
    msg = error_of(root)
    assert "session.json" in msg and "cannot read" in msg


def test_missing_audio_file(tmp_path: Path) -> None:
    root = two_people(tmp_path / "s")
    (root / "candidate.wav").unlink()
    msg = error_of(root)
    assert "candidate.wav" in msg and "missing" in msg and "cand-3" in msg


def test_audio_path_that_is_a_directory(tmp_path: Path) -> None:
    root = two_people(tmp_path / "s")
    (root / "candidate.wav").unlink()
    (root / "candidate.wav").mkdir()
    assert "candidate.wav" in error_of(root)


def test_random_bytes_are_unreadable_audio(tmp_path: Path) -> None:
    root = two_people(tmp_path / "s")
    (root / "candidate.wav").write_bytes(np.random.default_rng(1).bytes(4096))
    msg = error_of(root)
    assert "candidate.wav" in msg and "unreadable audio" in msg


@pytest.mark.parametrize("where", [slice(0, 4), slice(8, 12)], ids=["riff", "wave"])
def test_corrupt_wav_header_is_unreadable_audio(tmp_path: Path, where: slice) -> None:
    root = two_people(tmp_path / "s")
    data = bytearray((root / "interviewer.wav").read_bytes())
    data[where] = b"JUNK"
    (root / "interviewer.wav").write_bytes(bytes(data))
    msg = error_of(root)
    assert "interviewer.wav" in msg and "unreadable audio" in msg


@pytest.mark.parametrize("how", ["no frames", "header only", "empty file"])
def test_zero_length_track(tmp_path: Path, how: str) -> None:
    root = two_people(tmp_path / "s")
    f = root / "candidate.wav"
    if how == "no frames":
        sf.write(f, np.zeros((0, 1), np.int16), SR, subtype="PCM_16")
    elif how == "header only":
        f.write_bytes(f.read_bytes()[:44])
    else:
        f.write_bytes(b"")
    msg = error_of(root)
    assert "candidate.wav" in msg
    assert "empty track" in msg or "unreadable audio" in msg


@pytest.mark.parametrize("role", ["boss", "agent", "", None, 3, "Interviewer"])
def test_unknown_role(tmp_path: Path, role: Any) -> None:
    root = two_people(tmp_path / "s")
    manifest = json.loads((root / "session.json").read_text())
    manifest["participants"][1]["role"] = role
    (root / "session.json").write_text(json.dumps(manifest))
    msg = error_of(root)
    assert "unknown role" in msg and "participants[1]" in msg
    assert "interviewer, candidate, participant" in msg


def test_missing_role(tmp_path: Path) -> None:
    root = two_people(tmp_path / "s")
    manifest = json.loads((root / "session.json").read_text())
    del manifest["participants"][0]["role"]
    (root / "session.json").write_text(json.dumps(manifest))
    assert "unknown role None" in error_of(root)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("identity", "", "'identity' must be"),
        ("identity", "a/b", "'identity' must be"),
        ("identity", None, "'identity' must be"),
        ("identity", "iv:7", "'identity' must be"),
        ("identity", "iv-7\n", "'identity' must be"),
        ("name", 5, "'name' must be a string"),
        ("file", "", "'file' must name"),
        ("file", None, "'file' must name"),
    ],
)
def test_bad_participant_fields(tmp_path: Path, field: str, value: Any, expected: str) -> None:
    root = two_people(tmp_path / "s")
    manifest = json.loads((root / "session.json").read_text())
    manifest["participants"][0][field] = value
    (root / "session.json").write_text(json.dumps(manifest))
    msg = error_of(root)
    assert expected in msg and "participants[0]" in msg


def test_duplicate_identity(tmp_path: Path) -> None:
    root = two_people(tmp_path / "s")
    manifest = json.loads((root / "session.json").read_text())
    manifest["participants"][1]["identity"] = "iv-7"
    (root / "session.json").write_text(json.dumps(manifest))
    msg = error_of(root)
    assert "'iv-7'" in msg and "twice" in msg


@pytest.mark.parametrize("offset", [-0.5, -1, math.nan, math.inf, "1.0", True, None])
def test_bad_offset(tmp_path: Path, offset: Any) -> None:
    root = two_people(tmp_path / "s")
    manifest = json.loads((root / "session.json").read_text())
    manifest["participants"][1]["offset_s"] = offset
    (root / "session.json").write_text(json.dumps(manifest))  # json writes NaN/Infinity, and reads them
    msg = error_of(root)
    assert "'offset_s' must be a number >= 0" in msg and "participants[1]" in msg


@pytest.mark.parametrize("file", ["../outside.wav", "sub/../../outside.wav"])
def test_file_escaping_the_session_dir(tmp_path: Path, file: str) -> None:
    write_audio(tmp_path / "outside.wav")  # exists and is valid: only its place is wrong
    root = two_people(tmp_path / "s")
    (root / "sub").mkdir()
    manifest = json.loads((root / "session.json").read_text())
    manifest["participants"][1]["file"] = file
    (root / "session.json").write_text(json.dumps(manifest))
    assert "outside the session directory" in error_of(root)


def test_absolute_path_and_symlink_escaping_the_session_dir(tmp_path: Path) -> None:
    write_audio(tmp_path / "outside.wav")
    root = two_people(tmp_path / "s")
    manifest = json.loads((root / "session.json").read_text())
    manifest["participants"][1]["file"] = str(tmp_path / "outside.wav")
    (root / "session.json").write_text(json.dumps(manifest))
    assert "outside the session directory" in error_of(root)

    (root / "link.wav").symlink_to(tmp_path / "outside.wav")
    manifest["participants"][1]["file"] = "link.wav"
    (root / "session.json").write_text(json.dumps(manifest))
    assert "outside the session directory" in error_of(root)


def test_bare_directory_with_unknown_role(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    write_audio(root / "interviewer-iv.wav")
    write_audio(root / "boss-b1.wav")
    assert "unknown role 'boss'" in error_of(root)


def test_bare_directory_with_duplicate_identity(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    write_audio(root / "interviewer-same.wav")
    write_audio(root / "candidate-same.wav")
    assert "'same'" in error_of(root)


def test_bare_directory_errors_name_the_wav_file_not_a_missing_session_json(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    write_audio(root / "interviewer-iv.wav")
    write_audio(root / "boss-b1.wav")
    msg = error_of(root)
    assert "session.json" not in msg and "boss-b1.wav" in msg
    (root / "boss-b1.wav").unlink()
    write_audio(root / "candidate-iv.wav")
    msg = error_of(root)
    assert "session.json" not in msg
    assert "candidate-iv.wav" in msg or "interviewer-iv.wav" in msg


# --- TrackReader ----------------------------------------------------------------------------------------
def one_track(tmp_path: Path) -> Any:
    return load_session(tmp_path).tracks[0]


def read_all(reader: TrackReader, block: int = 1000) -> np.ndarray:
    parts = []
    while len(b := reader.read(block)):
        assert b.dtype == np.int16 and b.ndim == 2
        parts.append(b)
    return np.concatenate(parts) if parts else np.zeros((0, reader.track.channels), np.int16)


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_pcm16_is_read_back_exactly(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    pcm = rng.integers(-32768, 32768, size=(12_345, channels), dtype=np.int16)
    pcm[:4, 0] = [-32768, 32767, 0, -1]
    sf.write(tmp_path / "candidate-c1.wav", pcm, 44_100, subtype="PCM_16")
    reader = TrackReader(one_track(tmp_path))
    got = read_all(reader, 997)
    assert got.shape == (12_345, channels)
    np.testing.assert_array_equal(got, pcm)
    assert reader.position == 12_345 and reader.bad_samples == 0
    assert reader.read(100).shape == (0, channels)  # stays at the end
    reader.close()


def test_flac_pcm16_is_read_back_exactly(tmp_path: Path) -> None:
    pcm = np.random.default_rng(7).integers(-32768, 32768, size=(5_000, 2), dtype=np.int16)
    sf.write(tmp_path / "c.flac", pcm, 48_000, subtype="PCM_16")
    make_session(tmp_path, {"room": "r", "participants": [person("c1", "candidate", "c.flac")]})
    np.testing.assert_array_equal(read_all(TrackReader(one_track(tmp_path))), pcm)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_nan_and_inf_become_silence_and_are_counted(tmp_path: Path, subtype: str) -> None:
    x = np.full((1000, 2), 0.25, dtype=np.float32)
    x[10, 0], x[20, 1], x[30, 0] = np.nan, np.inf, -np.inf
    x[40, 0], x[50, 1] = 3.0, -7.5  # out of range: clipped, not wrapped, not counted
    sf.write(tmp_path / "candidate-c1.wav", x, SR, subtype=subtype)
    reader = TrackReader(one_track(tmp_path))
    got = read_all(reader, 256)
    assert reader.bad_samples == 3
    assert got[10, 0] == 0 and got[20, 1] == 0 and got[30, 0] == 0
    assert got[40, 0] == 32767 and got[50, 1] == -32768
    assert got[0, 0] == 8192 and got[10, 1] == 8192 and got[999, 1] == 8192


@pytest.mark.parametrize("cut", [0.5, 0.25])
def test_truncated_wav_ends_early_without_exception(tmp_path: Path, cut: float) -> None:
    pcm = write_audio(tmp_path / "candidate-c1.wav", 1.0, 48_000, 2)
    f = tmp_path / "candidate-c1.wav"
    data = f.read_bytes()
    f.write_bytes(data[: 44 + int((len(data) - 44) * cut) + 1])  # mid-frame cut; header still says 48000
    track = one_track(tmp_path)
    reader = TrackReader(track)
    got = read_all(reader, 4800)
    assert 0 < len(got) < 48_000
    assert len(got) <= track.frames
    np.testing.assert_array_equal(got, pcm[: len(got)])
    assert reader.read(4800).shape[0] == 0


def test_truncated_flac_ends_early_without_exception(tmp_path: Path) -> None:
    pcm = np.random.default_rng(3).integers(-8000, 8000, size=(96_000, 1), dtype=np.int16)
    f = tmp_path / "c.flac"
    sf.write(f, pcm, 48_000, subtype="PCM_16")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    make_session(tmp_path, {"room": "r", "participants": [person("c1", "candidate", "c.flac")]})
    reader = TrackReader(one_track(tmp_path))
    got = read_all(reader, 4800)
    assert 0 < len(got) < 96_000


def test_resume_from_a_frame_offset(tmp_path: Path) -> None:
    pcm = np.arange(-5000, 5000, dtype=np.int16).reshape(-1, 2)  # 5000 frames, every sample distinct
    sf.write(tmp_path / "candidate-c1.wav", pcm, SR, subtype="PCM_16")
    track = one_track(tmp_path)
    reader = TrackReader(track, start_frame=1234)
    assert reader.position == 1234
    got = read_all(reader, 333)
    np.testing.assert_array_equal(got, pcm[1234:])
    assert reader.position == 5000

    past_end = TrackReader(track, start_frame=10**9)
    assert past_end.position == 5000
    assert past_end.read(10).shape == (0, 2)


def test_resume_in_a_flac_file(tmp_path: Path) -> None:
    pcm = np.random.default_rng(5).integers(-32768, 32768, size=(30_000, 1), dtype=np.int16)
    sf.write(tmp_path / "c.flac", pcm, 22_050, subtype="PCM_16")
    make_session(tmp_path, {"room": "r", "participants": [person("c1", "candidate", "c.flac")]})
    got = read_all(TrackReader(one_track(tmp_path), start_frame=17_001), 4096)
    np.testing.assert_array_equal(got, pcm[17_001:])


def test_reader_on_a_file_replaced_after_loading(tmp_path: Path) -> None:
    write_audio(tmp_path / "candidate-c1.wav")
    track = one_track(tmp_path)
    (tmp_path / "candidate-c1.wav").write_bytes(os.urandom(1000))
    with pytest.raises(SessionError, match="unreadable audio"):
        TrackReader(track)
