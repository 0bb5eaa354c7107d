"""ReplaySource through Bytewax's own test runner, on real session directories in tmp_path."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
import numpy as np
import pytest
import soundfile as sf
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.recording import Session, load_session
from connectors.replay_source import ReplaySource
from quantcoach.records import AudioChunk, ParticipantAnnounce, TrackEnd, participant_key


def counting_pcm(frames: int, channels: int) -> np.ndarray:
    """int16 samples that encode their own frame index, so any skipped or repeated frame shows."""
    idx = (np.arange(frames) % 30_000).astype(np.int16)
    return np.repeat(idx[:, None], channels, axis=1)


def make_session(root: Path, room: str, tracks: list[dict[str, Any]]) -> Session:
    """tracks: identity, role, rate, channels, seconds, offset_s, and optionally ext."""
    root.mkdir(parents=True, exist_ok=True)
    participants = []
    for t in tracks:
        file = f"{t['identity']}.{t.get('ext', 'wav')}"
        frames = round(t["rate"] * t["seconds"])
        sf.write(root / file, counting_pcm(frames, t["channels"]), t["rate"], subtype="PCM_16")
        participants.append(
            {
                "identity": t["identity"],
                "name": t["identity"].upper(),
                "role": t["role"],
                "file": file,
                "offset_s": t.get("offset_s", 0.0),
            }
        )
    (root / "session.json").write_text(json.dumps({"room": room, "participants": participants}))
    return load_session(root)


def replay(sessions: list[Session], chunk_ms: int = 200, speed: float | None = None) -> list[Any]:
    out: list[Any] = []
    flow = Dataflow("replay_test")
    op.output("out", op.input("in", flow, ReplaySource(sessions, chunk_ms, speed)), TestingSink(out))
    run_main(flow)
    return out


def per_participant(items: list[Any]) -> dict[str, list[Any]]:
    streams: dict[str, list[Any]] = {}
    for item in items:
        key = (
            item.participant.key
            if isinstance(item, ParticipantAnnounce)
            else participant_key(item.room, item.participant, item.session_id)
        )
        streams.setdefault(key, []).append(item)
    return streams


TRACKS = [
    {"identity": "iv-7", "role": "interviewer", "rate": 48_000, "channels": 2, "seconds": 2.1},
    {
        "identity": "cand-3",
        "role": "candidate",
        "rate": 44_100,
        "channels": 1,
        "seconds": 1.5,
        "offset_s": 3.25,
    },
    {"identity": "obs", "role": "participant", "rate": 8_000, "channels": 6, "seconds": 0.37, "ext": "flac"},
]


@pytest.mark.parametrize("chunk_ms", [200, 130])
def test_each_participant_is_announced_chunked_and_ended(tmp_path: Path, chunk_ms: int) -> None:
    session = make_session(tmp_path / "s", "mock-42", TRACKS)
    streams = per_participant(replay([session], chunk_ms))
    sid = session.session_id
    assert set(streams) == {f"mock-42/{sid}/iv-7", f"mock-42/{sid}/cand-3", f"mock-42/{sid}/obs"}

    for track in session.tracks:
        p = track.participant
        items = streams[p.key]
        first, chunks, last = items[0], items[1:-1], items[-1]

        assert isinstance(first, ParticipantAnnounce)
        assert first.participant == p and p.session_id == sid
        assert first.roster == session.roster  # everyone in session.json, with offsets
        assert sum(isinstance(i, ParticipantAnnounce) for i in items) == 1

        assert chunks and all(isinstance(c, AudioChunk) for c in chunks)
        frames_per_chunk = track.sample_rate * chunk_ms // 1000
        assert all(c.frames == frames_per_chunk for c in chunks[:-1])
        assert 0 < chunks[-1].frames <= frames_per_chunk
        assert all(c.sample_rate == track.sample_rate and c.channels == track.channels for c in chunks)
        assert all(c.samples.dtype == np.int16 for c in chunks)
        assert all((c.room, c.session_id, c.participant) == (p.room, sid, p.identity) for c in chunks)
        assert chunks[0].start == pytest.approx(p.offset_s, abs=1e-9)
        for a, b in itertools.pairwise(chunks):
            assert b.start == pytest.approx(a.end, abs=1e-9)
        audio = np.concatenate([c.samples for c in chunks])
        np.testing.assert_array_equal(audio, counting_pcm(track.frames, track.channels))

        assert isinstance(last, TrackEnd)
        assert sum(isinstance(i, TrackEnd) for i in items) == 1
        assert (last.room, last.session_id, last.participant, last.reason) == (p.room, sid, p.identity, "end")
        assert last.at == pytest.approx(track.end, abs=1e-9)
        assert last.at == pytest.approx(chunks[-1].end, abs=1e-9)


def test_two_sessions_in_one_source(tmp_path: Path) -> None:
    a = make_session(tmp_path / "a", "room-a", TRACKS[:1])
    b = make_session(tmp_path / "b", "room-b", TRACKS[1:2])
    streams = per_participant(replay([a, b]))
    ka, kb = f"room-a/{a.session_id}/iv-7", f"room-b/{b.session_id}/cand-3"
    assert set(streams) == {ka, kb}
    assert streams[ka][0].roster == a.roster
    assert streams[kb][0].roster == b.roster


def test_two_recordings_under_one_room_name_stay_two_sessions(tmp_path: Path) -> None:
    # Room names are reused: the same room, the same identity, a different recording.
    longer = {**TRACKS[0], "seconds": 1.3}
    a = make_session(tmp_path / "a", "same", TRACKS[:1])
    b = make_session(tmp_path / "b", "same", [longer])
    assert a.session_id != b.session_id
    source = ReplaySource([a, b])
    assert source.list_parts() == [f"same/{a.session_id}/iv-7", f"same/{b.session_id}/iv-7"]
    streams = per_participant(replay([a, b]))
    for session in (a, b):
        (track,) = session.tracks
        items = streams[track.participant.key]
        assert all(i.session_id == session.session_id for i in items[1:])
        chunks = [i for i in items if isinstance(i, AudioChunk)]
        np.testing.assert_array_equal(
            np.concatenate([c.samples for c in chunks]), counting_pcm(track.frames, track.channels)
        )
        assert isinstance(items[-1], TrackEnd) and items[-1].at == pytest.approx(track.end)


def test_the_same_session_twice_is_refused_and_speed_must_be_positive(tmp_path: Path) -> None:
    a = make_session(tmp_path / "a", "same", TRACKS[:1])
    again = load_session(tmp_path / "a")
    with pytest.raises(ValueError, match="the same session is given twice") as info:
        ReplaySource([a, again])
    assert a.session_id in str(info.value)
    with pytest.raises(ValueError, match="speed"):
        ReplaySource([a], speed=0)


def drain(part: Any) -> list[Any]:
    items: list[Any] = []
    while True:
        try:
            items.extend(part.next_batch())
        except StopIteration:
            return items


def test_resume_from_a_snapshot_starts_mid_track(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s", "mock-42", TRACKS[:2])
    source = ReplaySource([session], 200, None)
    sid = session.session_id
    assert source.list_parts() == [f"mock-42/{sid}/iv-7", f"mock-42/{sid}/cand-3"]
    key = f"mock-42/{sid}/cand-3"
    track = session.tracks[1]

    part = source.build_part("in", key, None)
    assert part.snapshot() == 0
    first = part.next_batch()
    assert isinstance(first[0], ParticipantAnnounce)
    got = part.next_batch()  # some chunks
    position = part.snapshot()
    assert position == sum(c.frames for c in got if isinstance(c, AudioChunk)) > 0
    part.close()

    resumed = source.build_part("in", key, position)
    items = drain(resumed)
    assert isinstance(items[0], ParticipantAnnounce)  # re-announced after recovery
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert chunks[0].start == pytest.approx(track.participant.offset_s + position / track.sample_rate)
    np.testing.assert_array_equal(
        np.concatenate([c.samples for c in chunks]), counting_pcm(track.frames, 1)[position:]
    )
    assert isinstance(items[-1], TrackEnd) and items[-1].at == pytest.approx(track.end)
    assert resumed.snapshot() == track.frames
    resumed.close()


def test_resume_at_the_very_end_only_ends(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s", "mock-42", TRACKS[:1])
    track = session.tracks[0]
    items = drain(ReplaySource([session]).build_part("in", track.participant.key, track.frames))
    assert [type(i) for i in items] == [ParticipantAnnounce, TrackEnd]
    assert items[-1].at == pytest.approx(track.end)


def test_max_speed_never_sleeps(tmp_path: Path) -> None:
    session = make_session(
        tmp_path / "s",
        "long",
        [
            {"identity": "a", "role": "interviewer", "rate": 48_000, "channels": 2, "seconds": 60.0},
            {
                "identity": "b",
                "role": "candidate",
                "rate": 16_000,
                "channels": 1,
                "seconds": 60.0,
                "offset_s": 30,
            },
        ],
    )
    started = time.perf_counter()
    items = replay([session], speed=None)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"a 60 s session at max speed took {elapsed:.2f} s"
    ends = [i for i in items if isinstance(i, TrackEnd)]
    assert sorted(e.at for e in ends) == pytest.approx([60.0, 90.0])

    part = ReplaySource([session], speed=None).build_part("in", session.tracks[0].participant.key, None)
    assert part.next_awake() is None
    part.next_batch()
    assert part.next_awake() is None
    part.close()


def test_speed_factor_paces_chunks(tmp_path: Path) -> None:
    session = make_session(
        tmp_path / "s",
        "paced",
        [{"identity": "a", "role": "candidate", "rate": 16_000, "channels": 1, "seconds": 1.0}],
    )
    started = time.perf_counter()
    items = replay([session], speed=4.0)
    elapsed = time.perf_counter() - started
    assert elapsed >= 0.2, f"1 s of audio at 4x came out in {elapsed:.3f} s"
    assert elapsed < 3.0
    assert isinstance(items[-1], TrackEnd) and items[-1].at == pytest.approx(1.0)
    assert sum(c.frames for c in items if isinstance(c, AudioChunk)) == 16_000


def test_paced_resume_does_not_wait_for_the_audio_already_replayed(tmp_path: Path) -> None:
    session = make_session(
        tmp_path / "s",
        "paced",
        [{"identity": "a", "role": "candidate", "rate": 16_000, "channels": 1, "seconds": 20.4}],
    )
    source = ReplaySource([session], 200, speed=20.0)
    key = session.tracks[0].participant.key
    resumed = source.build_part("in", key, 20 * 16_000)  # 0.4 s (0.02 s of wall time) left
    try:
        resumed.next_batch()  # announce
        awake = resumed.next_awake()
        assert awake is not None
        wait = (awake - datetime.now(UTC)).total_seconds()
        assert wait < 0.5, f"resumed partition would first wake {wait:.2f} s from now"
    finally:
        resumed.close()
