"""One joined room: its participants and their audio tracks, on the SDK's room callbacks
(``RoomHandler``; testable without a network). The events it emits are docs/livekit-source.md's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc

from connectors.livekit.chunker import TrackChunker, sdk_audio_stream
from connectors.livekit.types import (
    LEAVE_TIMEOUT_S,
    NUM_CHANNELS,
    RESYNC_S,
    SAMPLE_RATE,
    SourceEvent,
    StreamFactory,
)
from quantcoach.records import Participant, ParticipantAnnounce, TrackEnd
from quantcoach.roles import speaker_role

log = logging.getLogger(__name__)

_AUDIO = rtc.TrackKind.KIND_AUDIO


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

    Emits, through ``emit``, the events of docs/livekit-source.md. Everything runs on the room's
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
        self._finished = False  # the room finished and every participant of the session was told
        #: the interview: the LiveKit room's sid (set before ``start``), and its wall-clock start
        self.session_id = ""
        self.started_at: str | None = None
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

    def track_sid(self, identity: str) -> str:
        """The sid of the audio track being transcribed for ``identity`` ("" when none)."""
        speaker = self._speakers.get(identity)
        return speaker.active.sid if speaker is not None and speaker.active is not None else ""

    def end_all(self, reason: str) -> None:
        """TrackEnd for every active track (idempotent). When the room finished, also for everyone of the
        session who had left before: nobody can come back, so the session is complete."""
        ended_now = set()
        for identity, speaker in list(self._speakers.items()):
            speaker.spare.clear()
            if speaker.active is not None:
                ended_now.add(identity)
            self._end_track(identity, reason, promote=False)
        if reason == "room_finished" and not self._finished:
            self._finished = True
            at = round(self.media_time(), 6)
            for identity in self._roster:
                if identity not in ended_now:
                    self._emit(TrackEnd(self.room_name, identity, at, reason, self.session_id))

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
            session_id=self.session_id,
            started_at=self.started_at,
        )
        self._roster[identity] = record
        self._emit(ParticipantAnnounce(record, self.roster))
        chunker = TrackChunker(
            self.room_name, identity, self._chunk_ms, offset, self.media_time, self._resync_s, self.session_id
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
        self._emit(TrackEnd(self.room_name, identity, at, reason, self.session_id))
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
