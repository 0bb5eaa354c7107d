"""Write live rooms in the recorded-session format of DESIGN.md, so any live session can be replayed.

One directory per room session under ``record_dir``: ``<record_dir>/<room>/`` (``<room>-2``, ``-3``, ...
when a directory of that name already holds a recording, e.g. the same room started again), holding::

    session.json   {"room": ..., "session_id": <room sid>, "started_at": ...,
                    "participants": [{"identity", "name", "role", "file", "offset_s"}, ...]}
    <role>-<identity>.wav   16-bit PCM at the track's rate and channel count, one per participant

The recorder consumes the source's own events (``ParticipantAnnounce``, ``AudioChunk``, ``TrackEnd``),
all on one thread (the source's loop thread). Layout rules that keep a recording replayable:

- A participant's WAV starts at its first announce's ``offset_s``; every sample after that sits at its
  media time, so a gap (a muted stretch, a participant who left and rejoined) is filled with silence and
  an overlap is trimmed. A rejoining participant keeps one file, which the replay then plays as one track.
- ``session.json`` is rewritten atomically at every new participant, so an interrupted recording still
  names every file; the WAV of a track is closed (its header finalized) at the track's ``TrackEnd`` and
  reopened for appending if the participant comes back. ``end_room`` closes everything.
- What the replay reader (``connectors.recording``) would reject is not written: a room name or identity
  outside its character set is written in a sanitized form (logged), a participant who never sent audio
  is left out of the final ``session.json`` (its empty file removed), and a room with no audio at all
  leaves no directory behind.
- A write error (disk full, ...) is logged once and stops recording that room; it never stops the source.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from connectors.recording import IDENTITY, ROOM_NAME, wire_name
from connectors.session_ids import SESSION_ID
from quantcoach.records import AudioChunk, Participant, ParticipantAnnounce, TrackEnd

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
#: Longest block of silence written at once when filling a gap (keeps memory flat for long gaps).
_PAD_BLOCK_S = 10.0


def safe_name(text: str) -> str:
    """A file-name-safe form of a room name or identity (identities may hold '/', ':', spaces...)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "unnamed"


@dataclass
class _Track:
    identity: str
    name: str
    role: str
    file: str
    offset_s: float
    sample_rate: int
    channels: int
    frames: int = 0  # frames written so far, silence included
    handle: sf.SoundFile | None = None

    @property
    def position(self) -> float:
        """Media time just after the last frame written."""
        return self.offset_s + self.frames / self.sample_rate

    def entry(self) -> dict[str, object]:
        return {
            "identity": wire_name(self.identity, IDENTITY),
            "name": self.name,
            "role": self.role,
            "file": self.file,
            "offset_s": round(self.offset_s, 6),
        }


class _RoomRecording:
    def __init__(self, room: str, directory: Path, sample_rate: int, channels: int) -> None:
        self.room = room
        self.dir = directory
        self._rate = sample_rate
        self._channels = channels
        self._tracks: dict[str, _Track] = {}  # insertion order = order of first announce
        self.session_id = ""  # the LiveKit room sid: a replay of the recording keeps the live ids
        self.started_at: str | None = None

    def announce(self, p: Participant) -> None:
        self.session_id = self.session_id or p.session_id
        self.started_at = self.started_at or p.started_at
        track = self._tracks.get(p.identity)
        if track is not None:  # rejoin: same file, the gap is padded when audio resumes
            track.name = p.name or track.name
            return
        taken = {t.file for t in self._tracks.values()}
        stem = f"{safe_name(p.role)}-{safe_name(p.identity)}"
        file, n = f"{stem}.wav", 2
        while file in taken:
            file, n = f"{stem}-{n}.wav", n + 1
        if not IDENTITY.fullmatch(p.identity):
            log.warning(
                "recording %s: identity %r is written as %r (the session format's character set)",
                self.room,
                p.identity,
                wire_name(p.identity, IDENTITY),
            )
        track = _Track(p.identity, p.name, p.role, file, p.offset_s, self._rate, self._channels)
        # created at announce so that session.json never names a file that does not exist
        track.handle = sf.SoundFile(
            self.dir / file, "w", samplerate=self._rate, channels=self._channels, subtype="PCM_16"
        )
        self._tracks[p.identity] = track
        self.write_manifest()

    def audio(self, chunk: AudioChunk) -> None:
        track = self._tracks.get(chunk.participant)
        if track is None:
            log.warning(
                "recording %s: audio of unannounced participant %r ignored", self.room, chunk.participant
            )
            return
        if chunk.sample_rate != track.sample_rate or chunk.channels != track.channels:
            log.warning(
                "recording %s/%s: chunk at %d Hz x%d does not match the file (%d Hz x%d); skipped",
                self.room,
                chunk.participant,
                chunk.sample_rate,
                chunk.channels,
                track.sample_rate,
                track.channels,
            )
            return
        samples = chunk.samples.reshape(chunk.frames, track.channels)
        handle = self._open(track)
        gap = round((chunk.start - track.position) * track.sample_rate)
        if gap > 0:  # silence up to the chunk's media time (mute, network gap, rejoin)
            block = int(_PAD_BLOCK_S * track.sample_rate)
            while gap > 0:
                n = min(gap, block)
                handle.write(np.zeros((n, track.channels), dtype=np.int16))
                track.frames += n
                gap -= n
        elif gap < 0:  # overlap with what is already written: keep the file's timeline
            samples = samples[-gap:]
        if len(samples):
            handle.write(samples)
            track.frames += len(samples)

    def track_end(self, identity: str) -> None:
        track = self._tracks.get(identity)
        if track is not None and track.handle is not None:
            track.handle.close()  # finalizes the WAV header; reopened on rejoin
            track.handle = None

    def write_manifest(self, final: bool = False) -> None:
        tracks = [t for t in self._tracks.values() if t.frames or not final]
        doc: dict[str, object] = {"room": wire_name(self.room, ROOM_NAME)}
        if SESSION_ID.fullmatch(self.session_id):
            doc["session_id"] = self.session_id
        if self.started_at:
            doc["started_at"] = self.started_at
        doc["participants"] = [t.entry() for t in tracks]
        tmp = self.dir / (SESSION_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / SESSION_FILE)

    def close(self) -> bool:
        """Finalize; False (and the directory removed) when no audio at all was recorded."""
        for identity in list(self._tracks):
            self.track_end(identity)
        for track in [t for t in self._tracks.values() if not t.frames]:
            (self.dir / track.file).unlink(missing_ok=True)  # an empty track is unreadable to the replay
        if not any(t.frames for t in self._tracks.values()):
            (self.dir / SESSION_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.dir.rmdir()
            return False
        self.write_manifest(final=True)
        return True

    def _open(self, track: _Track) -> sf.SoundFile:
        if track.handle is None:
            track.handle = sf.SoundFile(self.dir / track.file, "r+")
            track.handle.seek(0, sf.SEEK_END)
        return track.handle


class LiveRecorder:
    """Records every live room the source emits events for; see the module docstring."""

    def __init__(
        self, record_dir: str | os.PathLike[str], sample_rate: int = 48000, channels: int = 1
    ) -> None:
        self.root = Path(record_dir)
        self.sample_rate = sample_rate
        self.channels = channels
        self._rooms: dict[str, _RoomRecording] = {}
        self._failed: set[str] = set()  # rooms whose recording hit an error: not retried this session

    def handle(self, event: ParticipantAnnounce | AudioChunk | TrackEnd) -> None:
        room = event.participant.room if isinstance(event, ParticipantAnnounce) else event.room
        if room in self._failed:
            return
        try:
            if isinstance(event, ParticipantAnnounce):
                self._room(room).announce(event.participant)
            elif isinstance(event, AudioChunk):
                if room in self._rooms:
                    self._rooms[room].audio(event)
            elif isinstance(event, TrackEnd) and room in self._rooms:
                self._rooms[room].track_end(event.participant)
        except Exception:
            log.exception("recording of room %s failed; it is no longer recorded", room)
            self._failed.add(room)
            rec = self._rooms.pop(room, None)
            if rec is not None:
                self._close_quietly(rec)

    def session_dir(self, room: str) -> Path | None:
        """The directory of the room's current recording, if one is open."""
        rec = self._rooms.get(room)
        return rec.dir if rec is not None else None

    def end_room(self, room: str) -> Path | None:
        """Finalize the room's recording (files closed, session.json written); returns its directory,
        or None when there was nothing to record."""
        self._failed.discard(room)  # a later session of the same room may record again
        rec = self._rooms.pop(room, None)
        if rec is None:
            return None
        try:
            recorded = rec.close()
        except Exception:
            log.exception("recording of room %s could not be finalized", room)
            return None
        if not recorded:
            log.info("room %s: no audio, nothing recorded", room)
            return None
        log.info("recorded room %s to %s", room, rec.dir)
        return rec.dir

    def close(self) -> None:
        for room in list(self._rooms):
            self.end_room(room)

    def _room(self, room: str) -> _RoomRecording:
        rec = self._rooms.get(room)
        if rec is None:
            base = safe_name(room)
            directory, n = self.root / base, 2
            while (directory / SESSION_FILE).exists():  # never overwrite an earlier session
                directory, n = self.root / f"{base}-{n}", n + 1
            directory.mkdir(parents=True, exist_ok=True)
            rec = self._rooms[room] = _RoomRecording(room, directory, self.sample_rate, self.channels)
        return rec

    @staticmethod
    def _close_quietly(rec: _RoomRecording) -> None:
        for track in rec._tracks.values():
            if track.handle is not None:
                try:
                    track.handle.close()
                except Exception:
                    log.debug("closing %s failed", track.file, exc_info=True)
                track.handle = None
