"""Bytewax source over recorded sessions: one partition per participant track.

Shaped like bytewax's ``DirSource``: ``ReplaySource`` only holds settings and lists partitions;
``_TrackPartition`` opens one file and hands out chunks; its snapshot is the frame offset reached, so a
recovered flow resumes mid-track. ``speed`` is ``None`` for as fast as possible (never sleeps) or a
factor of real time (1.0 paces chunks to the wall clock like a live room).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.recording import Session, Track, TrackReader
from quantcoach.records import AudioChunk, ParticipantAnnounce, TrackEnd

log = logging.getLogger(__name__)

#: At max speed one ``next_batch`` hands out this many chunks, to amortise Bytewax's per-call cost.
CHUNKS_PER_BATCH_AT_MAX = 5


class ReplaySource(FixedPartitionedSource[Any, int]):
    def __init__(self, sessions: list[Session], chunk_ms: int = 200, speed: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0 (or None for as fast as possible)")
        # Room names may repeat (names are reused); a session may not: its ids would collide.
        ids = [s.session_id for s in sessions]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"the same session is given twice ({', '.join(dup)}); give each once")
        self.sessions = sessions
        self.chunk_ms = chunk_ms
        self.speed = speed
        self._tracks = {t.participant.key: (s, t) for s in sessions for t in s.tracks}

    def list_parts(self) -> list[str]:
        return list(self._tracks)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _TrackPartition:
        session, track = self._tracks[for_part]
        return _TrackPartition(session, track, self.chunk_ms, self.speed, resume_state or 0)


class _TrackPartition(StatefulSourcePartition[Any, int]):
    def __init__(
        self, session: Session, track: Track, chunk_ms: int, speed: float | None, start: int
    ) -> None:
        self._reader = TrackReader(track, start)
        self._track = track
        self._roster = session.roster
        self._frames_per_chunk = max(1, track.sample_rate * chunk_ms // 1000)
        self._speed = speed
        # Pacing origin: media time 0 is "now"; a resumed track continues from its position at once.
        resumed_at = (track.participant.offset_s + start / track.sample_rate) if start else 0.0
        self._wall0 = datetime.now(UTC) - timedelta(seconds=resumed_at / speed if speed else 0.0)
        self._announced = False
        self._ended = False

    def next_batch(self) -> list[Any]:
        p = self._track.participant
        if not self._announced:
            self._announced = True
            return [ParticipantAnnounce(p, self._roster)]
        if self._ended:
            raise StopIteration
        batch: list[Any] = []
        for _ in range(CHUNKS_PER_BATCH_AT_MAX if self._speed is None else 1):
            start = p.offset_s + self._reader.position / self._track.sample_rate
            samples = self._reader.read(self._frames_per_chunk)
            if len(samples) == 0:
                batch.append(TrackEnd(p.room, p.identity, start, session_id=p.session_id))
                self._finish()
                break
            rate = self._track.sample_rate
            batch.append(AudioChunk(p.room, p.identity, samples, rate, start, session_id=p.session_id))
        return batch

    def next_awake(self) -> datetime | None:
        if self._speed is None or not self._announced or self._ended:
            return None
        p = self._track.participant
        due_media = p.offset_s + self._reader.position / self._track.sample_rate
        # wall time when this chunk would have been *complete* in a live room
        due_media += self._frames_per_chunk / self._track.sample_rate
        return self._wall0 + timedelta(seconds=due_media / self._speed)

    def snapshot(self) -> int:
        return self._reader.position

    def close(self) -> None:
        self._reader.close()

    def _finish(self) -> None:
        self._ended = True
        t = self._track
        if self._reader.bad_samples:
            log.warning("%s: %d NaN/inf samples replaced by silence", t.path, self._reader.bad_samples)
        if self._reader.position < t.frames:
            log.warning(
                "%s: audio ends at frame %d of the %d its header declares (%s)",
                t.path,
                self._reader.position,
                t.frames,
                self._reader.failed or "truncated?",
            )
