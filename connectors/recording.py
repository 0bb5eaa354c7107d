"""The recorded session format (DESIGN.md): read and validate a session directory.

A directory with ``session.json`` and one audio file per participant, all sharing t = 0, or a bare
directory of ``<role>-<identity>.wav`` files. Every problem is a ``SessionError`` with a one-line
message naming the file, so the CLI can print it without a traceback.

Each recording is one session: ``session.json``'s ``session_id`` when it has one, else an id derived
from the recording's content (``connectors.session_ids``), so the same recording always replays under
the same id (idempotent) and a different recording, even under the same room name, never does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from connectors.session_ids import content_session_id, parse_session_fields
from quantcoach.records import Participant
from quantcoach.roles import SPEAKER_ROLES

#: The API's rules (always checked with ``fullmatch``): room names end up in URLs, paths and Kafka keys,
#: identities in utterance ids ``<session_id>:<identity>:<n>``; neither may hold ':' or '/'.
ROOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
BARE_FILE = re.compile(r"^(?P<role>[a-z]+)-(?P<identity>.+)\.wav$", re.IGNORECASE)


class SessionError(ValueError):
    """A session directory or one of its files is unusable; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Track:
    participant: Participant
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def end(self) -> float:
        return self.participant.offset_s + self.duration


@dataclass(frozen=True, slots=True)
class Session:
    room: str
    path: Path
    tracks: tuple[Track, ...]
    session_id: str = ""
    started_at: str | None = None

    @property
    def roster(self) -> tuple[Participant, ...]:
        return tuple(t.participant for t in self.tracks)

    @property
    def duration(self) -> float:
        return max(t.end for t in self.tracks)

    @property
    def audio_seconds(self) -> float:
        return sum(t.duration for t in self.tracks)


def wire_name(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` if ``pattern`` (``ROOM_NAME`` or ``IDENTITY``) accepts it, else the closest it accepts."""
    if pattern.fullmatch(text):
        return text
    cleaned = re.sub("\0+", "_", "".join(c if pattern.fullmatch("a" + c) else "\0" for c in text))
    cleaned = re.sub(r"^[^A-Za-z0-9]+", "", cleaned)
    while cleaned and not pattern.fullmatch(cleaned):  # only too long is left: shorten
        cleaned = cleaned[:-1]
    return cleaned or "unnamed"


def expand_sessions(paths: list[str]) -> list[Path]:
    """Session directories from command-line arguments; a folder holding session folders expands to them."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        subs = sorted(d for d in p.iterdir() if d.is_dir()) if p.is_dir() else []
        is_session = (p / "session.json").exists() or any(p.glob("*.wav")) if p.is_dir() else False
        if p.is_dir() and not is_session and any((d / "session.json").exists() for d in subs):
            out.extend(d for d in subs if (d / "session.json").exists())
        else:
            out.append(p)
    return out


def load_session(path: str | Path) -> Session:
    root = Path(path)
    if not root.exists():
        raise SessionError(f"{root}: no such directory")
    if not root.is_dir():
        raise SessionError(f"{root}: not a directory (a session is a directory with session.json)")
    manifest = root / "session.json"
    fields: dict[str, Any] = {}
    if manifest.exists():
        room, entries, fields = _read_manifest(manifest)
    else:
        room, entries = _scan_bare(root)
    try:
        session_id, started_at = parse_session_fields(fields)
    except ValueError as exc:
        raise SessionError(f"{manifest}: {exc}") from None
    tracks: list[Track] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{manifest} participants[{i}]" if manifest.exists() else str(root / entry["file"])
        participant, file = _participant(room, entry, where)
        if participant.identity in seen:
            raise SessionError(f"{where}: identity {participant.identity!r} appears twice")
        seen.add(participant.identity)
        tracks.append(_probe(root, file, participant))
    if not session_id:
        try:
            session_id = content_session_id(room, [(t.participant, t.path) for t in tracks])
        except OSError as exc:
            raise SessionError(f"{root}: cannot read the audio to derive a session id: {exc}") from None
    tracks = [_in_session(t, session_id, started_at) for t in tracks]
    return Session(room, root, tuple(tracks), session_id, started_at)


def _in_session(track: Track, session_id: str, started_at: str | None) -> Track:
    p = track.participant
    joined = Participant(p.room, p.identity, p.name, p.role, p.offset_s, session_id, started_at)
    return Track(joined, track.path, track.sample_rate, track.channels, track.frames)


def _read_manifest(manifest: Path) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionError(f"{manifest}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SessionError(f"{manifest}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise SessionError(f"{manifest}: must be a JSON object with 'room' and 'participants'")
    room = data.get("room")
    if not isinstance(room, str) or not ROOM_NAME.fullmatch(room):
        raise SessionError(
            f"{manifest}: 'room' must be 1-64 characters of letters, digits and _.-, starting with a letter"
            f" or digit (got {room!r})"
        )
    participants = data.get("participants")
    if not isinstance(participants, list) or not participants:
        raise SessionError(f"{manifest}: 'participants' must be a non-empty list")
    if not all(isinstance(p, dict) for p in participants):
        raise SessionError(f"{manifest}: every entry of 'participants' must be an object")
    return room, participants, data


def _scan_bare(root: Path) -> tuple[str, list[dict[str, Any]]]:
    entries = []
    for f in sorted(root.iterdir()):
        m = BARE_FILE.match(f.name)
        if f.is_file() and m:
            role, identity = m["role"].lower(), m["identity"]
            entries.append({"identity": identity, "name": identity, "role": role, "file": f.name})
    if not entries:
        raise SessionError(f"{root}: no session.json and no <role>-<identity>.wav files")
    room = re.sub(r"[^A-Za-z0-9_.-]", "-", root.resolve().name).lstrip("-_.")[:64]
    return room or "session", entries


def _participant(room: str, entry: dict[str, Any], where: str) -> tuple[Participant, str]:
    identity = entry.get("identity")
    if not isinstance(identity, str) or not IDENTITY.fullmatch(identity):
        raise SessionError(
            f"{where}: 'identity' must be 1-128 characters of letters, digits and _.@+-, starting with a"
            f" letter or digit (got {identity!r})"
        )
    role = entry.get("role")
    if role not in SPEAKER_ROLES:
        raise SessionError(f"{where}: unknown role {role!r} (expected one of {', '.join(SPEAKER_ROLES)})")
    name = entry.get("name", identity)
    if not isinstance(name, str):
        raise SessionError(f"{where}: 'name' must be a string")
    file = entry.get("file")
    if not isinstance(file, str) or not file:
        raise SessionError(f"{where}: 'file' must name the participant's audio file")
    offset = entry.get("offset_s", 0.0)
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int | float)
        or not math.isfinite(offset)
        or offset < 0
    ):
        raise SessionError(f"{where}: 'offset_s' must be a number >= 0 (got {offset!r})")
    return Participant(room, identity, name, role, float(offset)), file


def _probe(root: Path, file: str, participant: Participant) -> Track:
    path = (root / file).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SessionError(f"{root}: audio file {file!r} lies outside the session directory")
    if not path.is_file():
        raise SessionError(f"{root / file}: audio file missing (participant {participant.identity})")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise SessionError(f"{root / file}: unreadable audio ({_first_line(exc)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise SessionError(f"{root / file}: empty track (no audio frames)")
    if info.channels <= 0:
        raise SessionError(f"{root / file}: no audio channels")
    return Track(participant, path, int(info.samplerate), int(info.channels), int(info.frames))


def _first_line(exc: BaseException) -> str:
    # libsndfile's own reason (e.g. "Malformed 'fmt ' chunk."), not the generic "Error opening '<path>'"
    text = (getattr(exc, "error_string", "") or str(exc)).strip()
    return text.splitlines()[0] if text else "format not recognised"


class TrackReader:
    """Reads a track as int16 (frames, channels) blocks, from any frame offset.

    Float files are sanitised (NaN/inf -> 0, clipped to [-1, 1]) before conversion, since libsndfile's
    own float -> int conversion is undefined for them. A file that turns out truncated or corrupt
    mid-way stops early (``failed`` says why) rather than raising mid-flow.
    """

    def __init__(self, track: Track, start_frame: int = 0) -> None:
        self.track = track
        try:
            self._f = sf.SoundFile(str(track.path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise SessionError(f"{track.path}: unreadable audio ({_first_line(exc)})") from None
        self.position = min(start_frame, track.frames)
        if self.position:
            self._f.seek(self.position)
        self.bad_samples = 0
        self.failed = ""  # libsndfile's reason when the data broke off before the declared end

    def read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` frames as int16 (n, channels); an empty array at the end."""
        if self.failed:
            return np.zeros((0, self.track.channels), np.int16)
        try:
            block = self._f.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            # corrupt or truncated data (e.g. a cut FLAC "lost sync"): keep what was read, end here
            self.failed = _first_line(exc)
            return np.zeros((0, self.track.channels), np.int16)
        if not np.isfinite(block).all():
            bad = ~np.isfinite(block)
            self.bad_samples += int(bad.sum())
            block = np.where(bad, 0.0, block)
        self.position += len(block)
        return (np.clip(block, -1.0, 32767.0 / 32768.0) * 32768.0).round().astype(np.int16)

    def close(self) -> None:
        self._f.close()
