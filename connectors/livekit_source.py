"""Bytewax input from live LiveKit rooms: every participant's audio as ~CHUNK_MS ``AudioChunk`` events.

What the flow receives, per participant of a joined room (bare events, in this order):

1. ``ParticipantAnnounce(participant, roster)`` when the participant's audio track is subscribed;
   ``participant.offset_s`` is the media time at which the track starts and ``roster`` every participant
   announced in the room so far (itself included, latest record of each).
2. ``AudioChunk`` of ``CHUNK_MS`` (the last one of a track may be shorter): int16 ``(frames, channels)``
   at 48 kHz mono, ``start`` in media seconds.
3. ``TrackEnd(room, participant, at, reason)``; ``reason`` is one of ``unpublished``, ``unsubscribed``,
   ``left``, ``stream_ended``, ``room_finished``, ``removed``, ``disconnected`` (the agent lost the room
   and rejoins it), ``shutdown``. A participant who comes back (rejoin, second audio track taking over,
   agent rejoin) gets a new ``ParticipantAnnounce`` with a later ``offset_s``.

Media time of a live room is seconds since this agent first joined it (monotonic clock); it carries on
across the agent's own rejoins of the same room session. Within a track, chunk times follow the sample
count (no wall-clock jitter); when the wall clock runs ahead of the samples by more than ``RESYNC_S``
(a muted or stalled track), the next chunk starts at the wall-clock position, i.e. ``start`` jumps forward.

Speaker labels (``Participant.role``), first that applies:

- ``participant.kind == AGENT`` -> ``agent`` (never subscribed, never transcribed);
- ``participant.attributes["role"]`` naming a role (``interviewer``/``iv``, ``candidate``/``cand``,
  ``agent``, ``participant``; case-insensitive) — the API sets it in the participant's token;
- a ``"role"`` key of the same values in the participant's JSON metadata;
- the identity's prefix: ``iv`` or ``interviewer`` -> interviewer, ``cand`` or ``candidate`` -> candidate,
  each followed by the end or by one of ``- _ . : /`` or a digit (``iv-7``, ``cand3``; not ``ivan``);
- otherwise ``participant``.
A role is read when the track is announced; an attribute changed later applies from the next announce.
Our own agent identity (``AGENT_IDENTITY``) is never transcribed either. One audio track per participant
is transcribed: a second one waits as a spare and takes over (announced anew) when the first one ends.

Rooms this worker joins: ``zlib.adler32(room.encode()) % worker_count == worker_index``, out of the
constructor's list, RoomService polling every ``ROOM_POLL_S`` (``discover``), and control events
(``{"event": "room_started" | "room_finished", "room": name}``, see ``LiveKitSource``). The agent joins
with a hidden, subscribe-only agent token, subscribes to audio only (``auto_subscribe`` off), rejoins a
room it lost with jittered backoff, and leaves rooms cleanly on ``stop()`` / ``close()``.

The SDK runs on one asyncio loop thread per worker (``connectors.aio.LoopThread``); events reach
``next_batch`` through ``AudioOutbox``, a bounded ``queue.Queue``: when it is full, audio chunks are dropped,
counted per participant and logged (rate-limited); announces and track ends are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import re
import threading
import time
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import numpy as np
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from livekit import api, rtc

from connectors.aio import LoopThread
from connectors.live_recorder import LiveRecorder
from connectors.livekit_rooms import grants_for
from quantcoach.records import AudioChunk, Participant, ParticipantAnnounce, TrackEnd, participant_key
from quantcoach.settings import Settings

log = logging.getLogger(__name__)

SourceEvent: TypeAlias = ParticipantAnnounce | AudioChunk | TrackEnd
#: ``(track, sample_rate, num_channels, frame_size_ms) -> async iterator of AudioFrameEvent/AudioFrame``
StreamFactory: TypeAlias = Callable[[Any, int, int, int], AsyncIterator[Any]]
#: ``room name -> rtc.Room``-like object (``on``, ``connect``, ``disconnect``, ``remote_participants``)
RoomFactory: TypeAlias = Callable[[str], Any]
#: Control events: an iterable / ``queue.Queue`` shared by the process's workers, or one feed per worker.
RoomEvents: TypeAlias = Iterable[Any] | queue.Queue | Callable[[int, int], Iterable[Any]]

SAMPLE_RATE = 48000  # what the SDK resamples every track to; the flow's resampler takes it to 16 kHz
NUM_CHANNELS = 1
RESYNC_S = 1.0  # wall clock ahead of a track's samples by more than this: the track had a gap
MAX_BATCH = 512  # items per next_batch: bounds the time one call spends
IDLE_BACKOFF_MAX_S = 0.05
CONNECT_TIMEOUT_S = 20.0
LEAVE_TIMEOUT_S = 5.0
MAX_JOIN_ATTEMPTS = 6  # per (re)join; a room that still exists is picked up again by the next poll
DROP_LOG_EVERY_S = 5.0
_AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
_AUDIO = rtc.TrackKind.KIND_AUDIO
_END = object()  # end of a control-event feed


# --- rooms per worker, tokens, roles -----------------------------------------------------------------


def worker_for_room(room: str, worker_count: int) -> int:
    """The worker index that joins ``room`` (stable across processes: adler32, not ``hash``)."""
    return zlib.adler32(room.encode()) % worker_count


def agent_token(settings: Settings, room: str) -> str:
    """A JWT for the hidden transcription agent: join ``room``, subscribe only (the API's agent grants)."""
    return (
        api.AccessToken(settings.livekit_api_key.reveal(), settings.livekit_api_secret.reveal())
        .with_identity(settings.agent_identity)
        .with_name("QuantCoach transcriber")
        .with_kind("agent")
        .with_ttl(timedelta(seconds=settings.token_ttl_s))
        .with_grants(grants_for("agent", room))
        .to_jwt()
    )


_ROLE_NAMES = {
    "interviewer": "interviewer",
    "iv": "interviewer",
    "candidate": "candidate",
    "cand": "candidate",
    "agent": "agent",
    "participant": "participant",
}
_IDENTITY_ROLES = (
    (re.compile(r"^(?:interviewer|iv)(?:$|[-_.:/0-9])", re.IGNORECASE), "interviewer"),
    (re.compile(r"^(?:candidate|cand)(?:$|[-_.:/0-9])", re.IGNORECASE), "candidate"),
)


def speaker_role(
    identity: str, attributes: Mapping[str, str] | None = None, metadata: str = "", kind: int = 0
) -> str:
    """The participant's role, per the rules in the module docstring."""
    if kind == _AGENT_KIND:
        return "agent"
    candidates = [(attributes or {}).get("role", "")]
    if metadata:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            candidates.append(str(json.loads(metadata).get("role", "")))
    for value in candidates:
        role = _ROLE_NAMES.get(value.strip().lower()) if isinstance(value, str) else None
        if role:
            return role
    for pattern, role in _IDENTITY_ROLES:
        if pattern.match(identity):
            return role
    return "participant"


# --- control events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomControl:
    """A parsed control event: ``room_started`` or ``room_finished`` for ``room`` (``sid`` if known)."""

    event: str
    room: str
    sid: str = ""


def parse_room_event(raw: Any) -> RoomControl:
    """Accepts ``{"event", "room"[, "sid"], ...}`` (the ``quantcoach.room_event/1`` record of
    ``connectors.room_events``; LiveKit's webhook shape, ``room`` an object with ``name``/``sid``, too)
    as a mapping, JSON text/bytes or a Kafka ``ConsumerRecord``; raises ``ValueError`` saying why not."""
    if not isinstance(raw, Mapping | bytes | bytearray | str) and hasattr(raw, "value"):
        raw = raw.value  # a kafka-python ConsumerRecord
    if isinstance(raw, bytes | bytearray | str):
        raw = json.loads(raw)
    if not isinstance(raw, Mapping):
        raise ValueError("control event is not an object")
    event, room, sid = raw.get("event"), raw.get("room"), raw.get("sid") or ""
    if isinstance(room, Mapping):
        room, sid = room.get("name"), room.get("sid") or sid
    if event not in ("room_started", "room_finished"):
        raise ValueError(f"unknown control event {event!r}")
    if not isinstance(room, str) or not room:
        raise ValueError("control event without a room name")
    return RoomControl(event, room, str(sid))


class _Broadcast:
    """Reads one shared iterable on its own thread and hands every event to every subscribed worker
    of this process (each worker filters its own rooms); late subscribers get the history replayed."""

    HISTORY = 10_000

    def __init__(self, events: Iterable[Any]) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._history: deque[Any] = deque(maxlen=self.HISTORY)
        self._subscribers: list[Callable[[Any], None]] = []
        self._ended = False
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Callable[[Any], None]) -> None:
        with self._lock:
            for event in self._history:
                callback(event)
            if self._ended:
                callback(_END)
            self._subscribers.append(callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="livekit-room-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._events:
                with self._lock:
                    self._history.append(event)
                    for callback in self._subscribers:
                        callback(event)
        except Exception:
            log.exception("room event feed failed; no more control events will be read")
        finally:
            with self._lock:
                self._ended = True
                for callback in self._subscribers:
                    callback(_END)


def _feed_thread(events: Callable[[], Iterable[Any]], callback: Callable[[Any], None], name: str) -> None:
    def run() -> None:
        try:
            for event in events():  # built on the thread: making a consumer may block
                callback(event)
        except Exception:
            log.exception("room event feed failed; no more control events will be read")
        finally:
            callback(_END)

    threading.Thread(target=run, name=name, daemon=True).start()


# --- chunking ------------------------------------------------------------------------------------------


class TrackChunker:
    """Turns one track's frames (any size) into ``chunk_ms`` AudioChunks stamped with media time."""

    def __init__(
        self,
        room: str,
        participant: str,
        chunk_ms: int,
        start: float,
        clock: Callable[[], float],
        resync_s: float = RESYNC_S,
    ) -> None:
        self.room, self.participant = room, participant
        self._chunk_ms = chunk_ms
        self._clock = clock  # media-time clock
        self._resync_s = resync_s
        self._rate: int | None = None
        self._channels = NUM_CHANNELS
        self._chunk_frames = 0
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._base = start  # media time of the timeline anchor
        self._emitted = 0  # frames emitted since the anchor

    @property
    def position(self) -> float:
        """Media time just after the last frame received."""
        if self._rate is None:
            return self._base
        return self._base + (self._emitted + self._pending_frames) / self._rate

    def add(self, frame: rtc.AudioFrame) -> list[AudioChunk]:
        rate, channels = frame.sample_rate, frame.num_channels
        n = frame.samples_per_channel
        samples = np.frombuffer(frame.data, dtype=np.int16)[: n * channels].reshape(n, channels)
        out: list[AudioChunk] = []
        if self._rate != rate or self._channels != channels:
            if self._rate is not None:  # format change mid-track: close the chunk, keep the timeline
                out += self.flush()
                self._anchor(self.position)
            self._rate, self._channels = rate, channels
            self._chunk_frames = max(1, rate * self._chunk_ms // 1000)
        arrival = self._clock() - n / rate  # media time at which this frame started, by the wall clock
        if arrival - self.position > self._resync_s:
            out += self.flush()
            log.debug("%s/%s: %.2f s gap in the track", self.room, self.participant, arrival - self.position)
            self._anchor(arrival)
        if n:
            self._pending.append(samples)
            self._pending_frames += n
        while self._pending_frames >= self._chunk_frames:
            out.append(self._take(self._chunk_frames))
        return out

    def flush(self) -> list[AudioChunk]:
        """The frames held back (less than a chunk), as a last, shorter chunk."""
        return [self._take(self._pending_frames)] if self._pending_frames else []

    def _anchor(self, at: float) -> None:
        self._base, self._emitted = at, 0

    def _take(self, n: int) -> AudioChunk:
        assert self._rate is not None
        buf = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        samples, rest = buf[:n].copy(), buf[n:]  # copy: never keep a view of the SDK's frame buffer
        self._pending = [rest] if len(rest) else []
        self._pending_frames -= n
        start = self._base + self._emitted / self._rate
        self._emitted += n
        return AudioChunk(self.room, self.participant, samples, self._rate, start)


# --- room event handling (testable without a network) ---------------------------------------------------


def sdk_audio_stream(
    track: Any, sample_rate: int, num_channels: int, frame_size_ms: int
) -> AsyncIterator[Any]:
    """The real SDK stream; ``frame_size_ms`` makes the SDK hand out whole chunks, not 10 ms frames."""
    return rtc.AudioStream(
        track, sample_rate=sample_rate, num_channels=num_channels, frame_size_ms=frame_size_ms
    )


@dataclass
class _ActiveTrack:
    sid: str
    chunker: TrackChunker
    task: asyncio.Task[None] | None = None
    ended: bool = False


@dataclass
class _Speaker:
    identity: str
    active: _ActiveTrack | None = None
    spare: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # sid -> (track, participant)


# DisconnectReason -> (TrackEnd reason, whether the room is over for us: no rejoin)
_DISCONNECT_REASONS: dict[int, tuple[str, bool]] = {
    rtc.DisconnectReason.ROOM_DELETED: ("room_finished", True),
    rtc.DisconnectReason.ROOM_CLOSED: ("room_finished", True),
    rtc.DisconnectReason.PARTICIPANT_REMOVED: ("removed", True),
    rtc.DisconnectReason.DUPLICATE_IDENTITY: ("removed", True),  # another agent took our identity
}


class RoomHandler:
    """The event logic of one joined room, registered on an ``rtc.Room``-like object's ``.on`` callbacks.

    Emits, through ``emit``, the events described in the module docstring. Everything runs on the room's
    event loop (SDK callbacks are synchronous; each audio track is read by a task of its own).
    """

    def __init__(
        self,
        room_name: str,
        emit: Callable[[SourceEvent], None],
        *,
        chunk_ms: int = 200,
        sample_rate: int = SAMPLE_RATE,
        num_channels: int = NUM_CHANNELS,
        clock: Callable[[], float] = time.monotonic,
        t0: float | None = None,
        stream_factory: StreamFactory = sdk_audio_stream,
        agent_identity: str = "",
        roster: dict[str, Participant] | None = None,
        resync_s: float = RESYNC_S,
    ) -> None:
        self.room_name = room_name
        self._emit = emit
        self._chunk_ms = chunk_ms
        self._sample_rate, self._num_channels = sample_rate, num_channels
        self._clock = clock
        self._t0 = t0
        self._stream_factory = stream_factory
        self._agent_identity = agent_identity
        self._roster = roster if roster is not None else {}  # shared across the agent's rejoins
        self._resync_s = resync_s
        self._speakers: dict[str, _Speaker] = {}
        self._room: Any = None
        self._closed = False
        self._leave_reason = "shutdown"
        #: called once with the SDK's DisconnectReason when the room is gone for this handler
        self.on_disconnected: Callable[[int], None] | None = None
        #: after disconnect: True when the room is over (finished, we left or were removed), not lost
        self.room_over = False

    # lifecycle ------------------------------------------------------------------------------------
    def attach(self, room: Any) -> None:
        """Register on the room's events; call before ``room.connect`` so that nothing is missed."""
        self._room = room
        for event, callback in (
            ("connected", self._on_connected),
            ("participant_connected", self._on_participant_connected),
            ("participant_disconnected", self._on_participant_disconnected),
            ("track_published", self._on_track_published),
            ("track_unpublished", self._on_track_unpublished),
            ("track_subscribed", self._on_track_subscribed),
            ("track_unsubscribed", self._on_track_unsubscribed),
            ("track_subscription_failed", self._on_track_subscription_failed),
            ("participant_attributes_changed", self._on_attributes_changed),
            ("reconnecting", self._on_reconnecting),
            ("reconnected", self._on_reconnected),
            ("disconnected", self._on_disconnected),
        ):
            room.on(event, callback)

    def start(self, t0: float | None = None) -> None:
        """After ``connect``: fix media time zero and subscribe the audio of everyone already there
        (the SDK reports those participants in ``remote_participants``, without events)."""
        if t0 is not None:
            self._t0 = t0
        elif self._t0 is None:
            self._t0 = self._clock()
        self._subscribe_all()

    def media_time(self) -> float:
        if self._t0 is None:
            self._t0 = self._clock()
        return self._clock() - self._t0

    @property
    def roster(self) -> tuple[Participant, ...]:
        return tuple(self._roster.values())

    @property
    def closed(self) -> bool:
        return self._closed

    def end_all(self, reason: str) -> None:
        """TrackEnd for every active track (idempotent)."""
        for identity, speaker in list(self._speakers.items()):
            speaker.spare.clear()
            self._end_track(identity, reason, promote=False)

    async def leave(self, reason: str) -> None:
        """Leave the room on purpose: TrackEnd(reason) for everyone, then disconnect."""
        self._leave_reason = reason
        self.end_all(reason)
        if self._room is not None:
            try:
                await asyncio.wait_for(self._room.disconnect(), LEAVE_TIMEOUT_S)
            except Exception as exc:  # the room may be half-gone already; we are leaving either way
                log.warning("leaving room %s: disconnect failed (%s)", self.room_name, type(exc).__name__)
        self._on_disconnected(rtc.DisconnectReason.CLIENT_INITIATED)  # no-op if the SDK reported it

    # SDK callbacks --------------------------------------------------------------------------------
    def _on_connected(self) -> None:
        log.debug("room %s: connected", self.room_name)

    def _on_participant_connected(self, participant: Any) -> None:
        log.debug("room %s: %s joined", self.room_name, participant.identity)

    def _on_participant_disconnected(self, participant: Any) -> None:
        speaker = self._speakers.get(participant.identity)
        if speaker is not None:
            speaker.spare.clear()
            self._end_track(participant.identity, "left", promote=False)

    def _on_track_published(self, publication: Any, participant: Any) -> None:
        if not self._closed and publication.kind == _AUDIO and not self._skip(participant):
            publication.set_subscribed(True)

    def _on_track_unpublished(self, publication: Any, participant: Any) -> None:
        self._end_track(participant.identity, "unpublished", sid=publication.sid)

    def _on_track_subscribed(self, track: Any, publication: Any, participant: Any) -> None:
        if not self._closed and track.kind == _AUDIO and not self._skip(participant):
            self._start_track(track, participant)

    def _on_track_unsubscribed(self, track: Any, publication: Any, participant: Any) -> None:
        sid = track.sid if track is not None else publication.sid
        self._end_track(participant.identity, "unsubscribed", sid=sid)

    def _on_track_subscription_failed(self, participant: Any, track_sid: str, error: str) -> None:
        log.warning(
            "room %s: subscribing %s/%s failed: %s", self.room_name, participant.identity, track_sid, error
        )

    def _on_attributes_changed(self, changed: Mapping[str, str], participant: Any) -> None:
        if "role" in changed and participant.identity in self._roster:
            log.info(
                "room %s: %s's role changed to %r; it applies from the next announce",
                self.room_name,
                participant.identity,
                changed["role"],
            )

    def _on_reconnecting(self) -> None:
        log.warning("room %s: connection lost, the SDK is reconnecting", self.room_name)

    def _on_reconnected(self) -> None:
        log.info("room %s: reconnected", self.room_name)
        if not self._closed:
            self._subscribe_all()  # a full reconnect can leave publications unsubscribed

    def _on_disconnected(self, reason: int = 0) -> None:
        if self._closed:
            return
        self._closed = True
        if reason == rtc.DisconnectReason.CLIENT_INITIATED:
            end_reason, self.room_over = self._leave_reason, True
        else:
            end_reason, self.room_over = _DISCONNECT_REASONS.get(reason, ("disconnected", False))
        if reason == rtc.DisconnectReason.DUPLICATE_IDENTITY:
            log.error(
                "room %s: another agent joined with our identity; is the room assigned to two flows?",
                self.room_name,
            )
        log.info("room %s: disconnected (%s)", self.room_name, _reason_name(reason))
        self.end_all(end_reason)
        if self.on_disconnected is not None:
            self.on_disconnected(reason)

    # tracks ---------------------------------------------------------------------------------------
    def _skip(self, participant: Any) -> bool:
        if participant.identity == self._agent_identity:
            return True
        role = speaker_role(
            participant.identity,
            participant.attributes,
            getattr(participant, "metadata", ""),
            getattr(participant, "kind", 0),
        )
        return role == "agent"

    def _subscribe_all(self) -> None:
        for participant in list(self._room.remote_participants.values()):
            if self._skip(participant):
                continue
            for publication in list(participant.track_publications.values()):
                if publication.kind != _AUDIO:
                    continue
                if publication.subscribed and publication.track is not None:
                    self._start_track(publication.track, participant)
                elif not publication.subscribed:
                    publication.set_subscribed(True)

    def _start_track(self, track: Any, participant: Any) -> None:
        identity = participant.identity
        speaker = self._speakers.setdefault(identity, _Speaker(identity))
        if speaker.active is not None:
            if speaker.active.sid != track.sid and track.sid not in speaker.spare:
                log.info("room %s: %s has a second audio track; kept as a spare", self.room_name, identity)
                speaker.spare[track.sid] = (track, participant)
            return
        offset = round(self.media_time(), 6)
        record = Participant(
            room=self.room_name,
            identity=identity,
            name=participant.name or identity,
            role=speaker_role(
                identity,
                participant.attributes,
                getattr(participant, "metadata", ""),
                getattr(participant, "kind", 0),
            ),
            offset_s=offset,
        )
        self._roster[identity] = record
        self._emit(ParticipantAnnounce(record, self.roster))
        chunker = TrackChunker(
            self.room_name, identity, self._chunk_ms, offset, self.media_time, self._resync_s
        )
        active = _ActiveTrack(track.sid, chunker)
        speaker.active = active
        stream = self._stream_factory(track, self._sample_rate, self._num_channels, self._chunk_ms)
        active.task = asyncio.get_running_loop().create_task(
            self._pump(identity, active, stream), name=f"audio {self.room_name}/{identity}"
        )
        log.info("room %s: transcribing %s as %s from %.3f s", self.room_name, identity, record.role, offset)

    async def _pump(self, identity: str, active: _ActiveTrack, stream: AsyncIterator[Any]) -> None:
        ran_dry = False
        try:
            async for event in stream:
                if active.ended:
                    break
                for chunk in active.chunker.add(getattr(event, "frame", event)):
                    self._emit(chunk)
            ran_dry = True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("room %s: audio stream of %s failed", self.room_name, identity)
            ran_dry = True
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        if ran_dry and not active.ended:  # the SDK ended the stream without a track event
            self._end_track(identity, "stream_ended", sid=active.sid)

    def _end_track(self, identity: str, reason: str, sid: str | None = None, promote: bool = True) -> None:
        speaker = self._speakers.get(identity)
        if speaker is None:
            return
        if sid is not None and (speaker.active is None or speaker.active.sid != sid):
            speaker.spare.pop(sid, None)  # a spare went away, or an event about a track already ended
            return
        active = speaker.active
        if active is None:
            return
        speaker.active = None
        active.ended = True  # from here the pump task emits nothing more
        for chunk in active.chunker.flush():
            self._emit(chunk)
        at = round(max(self.media_time(), active.chunker.position), 6)
        self._emit(TrackEnd(self.room_name, identity, at, reason))
        if active.task is not None and active.task is not asyncio.current_task():
            active.task.cancel()
        if promote and speaker.spare and not self._closed:
            _, (track, participant) = speaker.spare.popitem()
            self._start_track(track, participant)


def _reason_name(reason: int) -> str:
    try:
        return rtc.DisconnectReason.Name(reason)
    except ValueError:
        return str(reason)


# --- hand-off to next_batch ------------------------------------------------------------------------------


class AudioOutbox:
    """The bounded hand-off between the SDK thread (``put``) and ``next_batch`` (``drain``).

    ``queue.Queue(maxsize)`` bounds what waits. When it is full, an AudioChunk is dropped (counted per
    participant, logged at most every ``DROP_LOG_EVERY_S`` per participant); an announce or a TrackEnd is
    held, in order, on the side, and while anything is held later chunks are dropped too, so nothing
    overtakes it. ``drain`` takes the held events once the queue is empty: per-participant order is kept.
    """

    def __init__(self, maxsize: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self._queue: queue.Queue[SourceEvent] = queue.Queue(maxsize)
        self._held: deque[SourceEvent] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self.dropped: Counter[str] = Counter()  # participant key -> chunks dropped
        self.dropped_s: Counter[str] = Counter()  # participant key -> seconds of audio dropped
        self._last_log: dict[str, float] = {}

    def put(self, event: SourceEvent) -> bool:
        """Never blocks; False when the event (an audio chunk) was dropped."""
        with self._lock:
            if isinstance(event, AudioChunk):
                if not self._held:
                    try:
                        self._queue.put_nowait(event)
                        return True
                    except queue.Full:
                        pass
                self._drop(event)
                return False
            if not self._held:
                try:
                    self._queue.put_nowait(event)
                except queue.Full:
                    self._held.append(event)
            else:
                self._held.append(event)
        if isinstance(event, TrackEnd):
            key = participant_key(event.room, event.participant)
            if self.dropped[key]:
                log.warning(
                    "%s ended; %d chunk(s) (%.1f s of audio) were dropped in all because the flow lagged",
                    key,
                    self.dropped[key],
                    self.dropped_s[key],
                )
        return True

    def drain(self, max_items: int = MAX_BATCH) -> list[SourceEvent]:
        items: list[SourceEvent] = []
        while len(items) < max_items:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        else:
            return items
        with self._lock:  # the queue is empty: held events are next in line
            while self._held and len(items) < max_items:
                items.append(self._held.popleft())
        return items

    def __len__(self) -> int:
        return self._queue.qsize() + len(self._held)

    def _drop(self, chunk: AudioChunk) -> None:
        key = participant_key(chunk.room, chunk.participant)
        self.dropped[key] += 1
        self.dropped_s[key] += chunk.duration
        now = self._clock()
        if now - self._last_log.get(key, -1e18) >= DROP_LOG_EVERY_S:
            self._last_log[key] = now
            log.warning(
                "source queue full: dropped audio of %s (%d chunk(s), %.1f s so far); the flow is lagging",
                key,
                self.dropped[key],
                self.dropped_s[key],
            )


# --- rooms of one worker -----------------------------------------------------------------------------------


@dataclass
class _Session:
    """One room session of this worker: survives the agent's rejoins, so media time carries on."""

    name: str
    sid: str = ""
    t0: float | None = None
    roster: dict[str, Participant] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    room: Any = None
    handler: RoomHandler | None = None
    leaving: bool = False
    leave_reason: str = "shutdown"
    over: bool = False  # the room itself finished (or removed us): a stale listing must not rejoin it


class _RoomSupervisor:
    """Runs on the worker's loop thread: which rooms to be in, joining, rejoining, leaving."""

    FINISHED_SIDS = 10_000

    def __init__(
        self,
        *,
        settings: Settings,
        worker_index: int,
        worker_count: int,
        emit: Callable[[SourceEvent], None],
        on_room_closed: Callable[[str], None],
        on_done: Callable[[], None],
        rooms: list[str],
        discover: bool,
        has_control: bool,
        room_factory: RoomFactory,
        stream_factory: StreamFactory,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._index, self._count = worker_index, worker_count
        self._emit = emit
        self._on_room_closed = on_room_closed
        self._on_done = on_done
        self._initial = rooms
        self._discover = discover
        self._control_open = has_control
        self._room_factory = room_factory
        self._stream_factory = stream_factory
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._finished_sids: OrderedDict[str, None] = OrderedDict()  # stale listings are not rejoined
        self._discovery: asyncio.Task[None] | None = None
        self._stopping = False
        self._done = False

    def owns(self, room: str) -> bool:
        return worker_for_room(room, self._count) == self._index

    @property
    def rooms(self) -> list[str]:
        return sorted(self._sessions)

    async def start(self) -> None:
        for name in self._initial:
            self.want(name)
        if self._discover:
            self._discovery = asyncio.get_running_loop().create_task(self._discover_rooms(), name="discover")
        self._check_done()

    def want(self, name: str, sid: str = "") -> None:
        """Be in room ``name`` (if it is this worker's), unless already there or it is a finished one."""
        if self._stopping or not self.owns(name) or name in self._sessions:
            return
        if sid and sid in self._finished_sids:
            return
        session = self._sessions[name] = _Session(name, sid)
        session.task = asyncio.get_running_loop().create_task(self._run_session(session), name=f"room {name}")

    def leave(self, name: str, reason: str) -> None:
        session = self._sessions.get(name)
        if session is None or session.leaving:
            return
        session.leaving, session.leave_reason = True, reason
        if session.handler is not None:
            asyncio.get_running_loop().create_task(session.handler.leave(reason))
        elif session.task is not None:
            session.task.cancel()  # still connecting, or waiting to retry

    def on_control(self, raw: Any) -> None:
        if raw is _END:
            self._control_open = False
            self._check_done()
            return
        try:
            control = parse_room_event(raw)
        except ValueError as exc:
            log.warning("ignored a malformed room control event: %s", exc)
            return
        if control.event == "room_started":
            self.want(control.room, control.sid)
        else:
            session = self._sessions.get(control.room)
            if session is not None and (not control.sid or not session.sid or control.sid == session.sid):
                self.leave(control.room, "room_finished")

    def stop(self) -> None:
        """Leave every room (TrackEnd ``shutdown``), take no new ones; done once all are left."""
        self._stopping = True
        if self._discovery is not None:
            self._discovery.cancel()
        for name in list(self._sessions):
            self.leave(name, "shutdown")
        self._check_done()

    async def shutdown(self) -> None:
        """``stop()`` and wait until every room is left (for ``close()``)."""
        self.stop()
        tasks = [s.task for s in self._sessions.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=LEAVE_TIMEOUT_S + 1)

    # internals ------------------------------------------------------------------------------------
    def _check_done(self) -> None:
        if self._done or self._sessions:
            return
        if self._stopping or not (self._discover or self._control_open):
            self._done = True
            self._on_done()

    async def _run_session(self, s: _Session) -> None:
        attempt = 0
        try:
            while not s.leaving:
                room = s.room = self._room_factory(s.name)
                handler = RoomHandler(
                    s.name,
                    self._emit,
                    chunk_ms=self._settings.chunk_ms,
                    clock=self._clock,
                    t0=s.t0,
                    stream_factory=self._stream_factory,
                    agent_identity=self._settings.agent_identity,
                    roster=s.roster,
                )
                lost = asyncio.Event()
                handler.on_disconnected = lambda _reason, lost=lost: lost.set()
                handler.attach(room)
                try:
                    token = agent_token(self._settings, s.name)
                    options = rtc.RoomOptions(auto_subscribe=False)  # audio only: we subscribe ourselves
                    await asyncio.wait_for(
                        room.connect(self._settings.livekit_url, token, options), CONNECT_TIMEOUT_S
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    if attempt >= MAX_JOIN_ATTEMPTS:
                        log.error("giving up on room %s after %d failed joins (%s)", s.name, attempt, exc)
                        return
                    delay = _backoff(attempt)
                    log.warning("joining room %s failed (%s); retry in %.1f s", s.name, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                if s.t0 is None:
                    s.t0 = self._clock()  # media time zero: this agent's first join of the session
                s.handler = handler
                if s.leaving:  # asked to leave while connecting (wait_for can swallow that cancel)
                    await handler.leave(s.leave_reason)
                    s.handler = s.room = None
                    return
                handler.start(s.t0)
                if not s.sid:
                    s.sid = await _room_sid(room)
                log.info("joined room %s (worker %d/%d)", s.name, self._index, self._count)
                await lost.wait()
                s.handler = s.room = None
                if handler.room_over or s.leaving:
                    s.over = (handler.room_over and not s.leaving) or s.leave_reason == "room_finished"
                    return
                attempt += 1
                if attempt >= MAX_JOIN_ATTEMPTS:
                    log.error("room %s keeps dropping the agent; giving up", s.name)
                    return
                delay = _backoff(attempt)
                log.warning("lost room %s; rejoining in %.1f s", s.name, delay)
                await asyncio.sleep(delay)
        except Exception:
            log.exception("room %s: session failed", s.name)
        finally:
            await self._close_session(s)

    async def _close_session(self, s: _Session) -> None:
        if s.handler is not None:  # cancelled while in the room (shutdown)
            with contextlib.suppress(Exception):
                await s.handler.leave(s.leave_reason)
        elif s.room is not None:  # cancelled while connecting: make sure the half-open room is left
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.room.disconnect(), LEAVE_TIMEOUT_S)
        if self._sessions.get(s.name) is s:
            del self._sessions[s.name]
        if s.sid and s.over:  # not after failed joins: the next poll may try the room again
            self._finished_sids[s.sid] = None
            while len(self._finished_sids) > self.FINISHED_SIDS:
                self._finished_sids.popitem(last=False)
        self._on_room_closed(s.name)
        log.info("left room %s", s.name)
        self._check_done()

    async def _discover_rooms(self) -> None:
        lkapi = api.LiveKitAPI(
            self._settings.livekit_url,
            self._settings.livekit_api_key.reveal(),
            self._settings.livekit_api_secret.reveal(),
        )
        failures = 0
        try:
            while True:
                try:
                    listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if failures == 1 or failures % 20 == 0:  # rate-limited: a server down for long
                        log.warning("RoomService ListRooms failed (%d in a row): %s", failures, exc)
                else:
                    failures = 0
                    for room in listed.rooms:
                        self.want(room.name, room.sid)
                await asyncio.sleep(self._settings.room_poll_s)
        finally:
            with contextlib.suppress(Exception):
                await lkapi.aclose()


async def _room_sid(room: Any) -> str:
    try:
        return str(await asyncio.wait_for(room.sid, 2.0))
    except Exception:
        return ""


def _backoff(attempt: int) -> float:
    """Jittered exponential backoff: ~0.5, 1, 2, 4, 8 s ... capped at 30 s."""
    return min(30.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)


# --- the Bytewax source ---------------------------------------------------------------------------------


class _LiveKitPartition(StatelessSourcePartition[SourceEvent]):
    def __init__(self, source: LiveKitSource, worker_index: int, worker_count: int) -> None:
        self._source = source
        self._outbox = AudioOutbox(source.queue_size)
        self._recorder = (
            LiveRecorder(source.record_dir, SAMPLE_RATE, NUM_CHANNELS) if source.record_dir else None
        )
        self._done = threading.Event()
        self._idle_s = 0.0
        self._stop_sent = False
        self._loop = LoopThread(f"livekit-w{worker_index}")
        self.supervisor = _RoomSupervisor(
            settings=source.settings,
            worker_index=worker_index,
            worker_count=worker_count,
            emit=self._emit,
            on_room_closed=self._room_closed,
            on_done=self._done.set,
            rooms=source.rooms,
            discover=source.discover,
            has_control=source.room_events is not None,
            room_factory=source.room_factory,
            stream_factory=source.stream_factory,
            clock=source.clock,
        )
        self._loop.call(self.supervisor.start())
        if source.room_events is not None:
            source._subscribe_control(worker_index, worker_count, self._control)

    @property
    def outbox(self) -> AudioOutbox:
        return self._outbox

    # called on the loop thread
    def _emit(self, event: SourceEvent) -> None:
        if self._recorder is not None:
            self._recorder.handle(event)  # before the queue: a lagging flow never costs the recording
        self._outbox.put(event)

    def _room_closed(self, room: str) -> None:
        if self._recorder is not None:
            self._recorder.end_room(room)

    # called on reader threads
    def _control(self, event: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: shutting down
            self._loop.loop.call_soon_threadsafe(self.supervisor.on_control, event)

    # Bytewax side
    def next_batch(self) -> list[SourceEvent]:
        if self._source.stop_requested and not self._stop_sent:
            self._stop_sent = True
            self._loop.loop.call_soon_threadsafe(self.supervisor.stop)
        done = self._done.is_set()  # read before draining: all events are queued once it is set
        batch = self._outbox.drain(MAX_BATCH)
        if batch:
            self._idle_s = 0.0
            return batch
        if done:
            raise StopIteration
        if not self._loop.alive:
            raise RuntimeError("the LiveKit loop thread died")
        self._idle_s = min(IDLE_BACKOFF_MAX_S, max(0.001, self._idle_s * 2))
        return []

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(seconds=self._idle_s) if self._idle_s else None

    def close(self) -> None:
        if self._loop.alive:
            try:
                self._loop.call(self.supervisor.shutdown(), timeout=LEAVE_TIMEOUT_S + 5)
            except Exception:
                log.warning("leaving rooms on close did not finish cleanly", exc_info=True)
            self._loop.stop()
        if self._recorder is not None:
            self._recorder.close()


class LiveKitSource(DynamicSource[SourceEvent]):
    """Live LiveKit rooms as a Bytewax ``DynamicSource`` (see the module docstring).

    :arg settings: ``LIVEKIT_URL``/``_API_KEY``/``_API_SECRET``, ``AGENT_IDENTITY``, ``ROOM_POLL_S``,
        ``CHUNK_MS``, ``TOKEN_TTL_S``.
    :arg rooms: rooms to join from the start (each worker joins its share).
    :arg discover: poll RoomService ``ListRooms`` every ``ROOM_POLL_S`` and join new rooms.
    :arg room_events: control events ``{"event": "room_started" | "room_finished", "room": name}``
        (mappings or JSON; malformed ones are logged and skipped), as either
        - an iterable (a list, a generator, a Kafka consumer: iterated on a thread of its own, so it may
          block) or a ``queue.Queue`` (``None`` ends it), read once and shared by the process's workers, or
        - a callable ``(worker_index, worker_count) -> iterable``, called once per worker: one feed each
          (for a Kafka consumer per worker; each must see every event, i.e. not split by a group).
    :arg record_dir: also write each room in the recorded-session format (``connectors.live_recorder``).
    :arg queue_size: chunks waiting for ``next_batch`` per worker before audio is dropped.
    :arg room_factory, stream_factory, clock: the SDK's ``rtc.Room``, ``rtc.AudioStream`` and
        ``time.monotonic`` by default; tests pass fakes.

    The source ends (``StopIteration`` once everything is handed out) when ``stop()`` was called and every
    room is left, or, with ``discover`` off, when the control feed has ended (or there is none) and every
    room has finished. ``stop()`` may be called from any thread, e.g. a signal handler.
    """

    def __init__(
        self,
        settings: Settings,
        rooms: list[str] | None = None,
        discover: bool = True,
        room_events: RoomEvents | None = None,
        record_dir: str | None = None,
        *,
        queue_size: int = 1000,
        room_factory: RoomFactory | None = None,
        stream_factory: StreamFactory = sdk_audio_stream,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.livekit_configured:
            raise ValueError("the LiveKit source needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.settings = settings
        self.rooms = list(dict.fromkeys(rooms or ()))
        self.discover = discover
        self.room_events = room_events
        self.record_dir = record_dir
        self.queue_size = queue_size
        self.room_factory: RoomFactory = room_factory or (lambda _name: rtc.Room())
        self.stream_factory = stream_factory
        self.clock = clock
        self._stop = threading.Event()
        self._broadcast: _Broadcast | None = None
        self._broadcast_lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LiveKitPartition:
        return _LiveKitPartition(self, worker_index, worker_count)

    def stop(self) -> None:
        """Ask every worker to leave its rooms (TrackEnd ``shutdown`` for all) and end the source."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _subscribe_control(
        self, worker_index: int, worker_count: int, callback: Callable[[Any], None]
    ) -> None:
        events = self.room_events
        if callable(events) and not isinstance(events, queue.Queue):
            factory = events
            _feed_thread(
                lambda: factory(worker_index, worker_count), callback, f"livekit-room-events-w{worker_index}"
            )
            return
        with self._broadcast_lock:
            if self._broadcast is None:
                shared = iter(events.get, None) if isinstance(events, queue.Queue) else events
                self._broadcast = _Broadcast(shared)  # type: ignore[arg-type]
        self._broadcast.subscribe(callback)
