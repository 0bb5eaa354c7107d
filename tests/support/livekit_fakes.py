"""Fakes of the LiveKit SDK for the source's tests: a ``rtc.Room`` that emits the SDK's real event sequence.

The fakes mirror livekit/rtc/room.py (v1.2): callbacks registered with ``on`` on an ``rtc.EventEmitter``,
the SDK's argument order (``track_subscribed(track, publication, participant)`` ...), participants already
in the room reported in ``remote_participants`` after ``connect`` without events, subscriptions made with
``publication.set_subscribed`` and answered asynchronously, and real ``rtc.AudioFrame`` objects.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from livekit import rtc

from quantcoach.settings import Secret, Settings

KEY, SECRET = "devkey", "devsecret-devsecret-devsecret-0123456789"
RATE = 48000
AUDIO, VIDEO = rtc.TrackKind.KIND_AUDIO, rtc.TrackKind.KIND_VIDEO
AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


def make_settings(url: str = "ws://127.0.0.1:9", **changes: Any) -> Settings:
    return Settings(
        livekit_url=url, livekit_api_key=Secret(KEY), livekit_api_secret=Secret(SECRET), room_poll_s=0.05
    ).with_(**changes)


# --- fakes ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


_sids = iter(range(1, 1_000_000))


class FakeTrack:
    def __init__(self, kind: int = AUDIO) -> None:
        self.sid = f"TR_{next(_sids)}"
        self.kind = kind
        self.frames: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()


class FakePublication:
    def __init__(self, room: FakeRoom, participant: FakeParticipant, kind: int = AUDIO) -> None:
        self._room, self._participant = room, participant
        self.kind = kind
        #: the SDK's ``TrackSource``: a microphone for audio, a camera for video (tests may change it)
        self.source = rtc.TrackSource.SOURCE_MICROPHONE if kind == AUDIO else rtc.TrackSource.SOURCE_CAMERA
        self.track: FakeTrack | None = FakeTrack(kind)  # the SDK's track, handed out once subscribed
        self.sid = self.track.sid
        self.subscribed = False
        self.subscribe_requests = 0

    def set_subscribed(self, subscribed: bool) -> None:
        self.subscribe_requests += 1
        # the SDK answers with a track_subscribed event later, from its listen task
        asyncio.get_running_loop().call_soon(self._room._subscription, self._participant, self, subscribed)


class FakeParticipant:
    def __init__(
        self,
        identity: str,
        name: str = "",
        attributes: dict[str, str] | None = None,
        kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        metadata: str = "",
    ) -> None:
        self.identity, self.name, self.kind, self.metadata = identity, name, kind, metadata
        self.sid = f"PA_{identity}"
        self.attributes = dict(attributes or {})
        self.track_publications: dict[str, FakePublication] = {}


class FakeAudioStream:
    def __init__(self, track: FakeTrack) -> None:
        self._track = track
        self.closed = False

    def __aiter__(self) -> FakeAudioStream:
        return self

    async def __anext__(self) -> rtc.AudioFrameEvent:
        item = await self._track.frames.get()
        # marked done once the consumer comes back for the next frame: join() = frames processed
        asyncio.get_running_loop().call_soon(self._track.frames.task_done)
        if item is None:
            raise StopAsyncIteration
        return rtc.AudioFrameEvent(item)

    async def aclose(self) -> None:
        self.closed = True


class StreamFactory:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    def __call__(self, track: FakeTrack, sample_rate: int, num_channels: int, frame_size_ms: int) -> Any:
        self.calls.append((track.sid, sample_rate, num_channels, frame_size_ms))
        return FakeAudioStream(track)


class FakeTextWriter:
    """``rtc.TextStreamWriter``: ``write`` chunks, ``aclose`` finishes the stream."""

    def __init__(self, owner: FakeLocalParticipant, opened: dict[str, Any]) -> None:
        self.owner, self.opened, self.chunks = owner, opened, []

    async def write(self, text: str) -> None:
        self.chunks.append(text)

    async def aclose(self) -> None:
        self.owner.streams.append({**self.opened, "text": "".join(self.chunks)})


class FakeLocalParticipant:
    """``rtc.LocalParticipant.stream_text`` with the SDK's keyword-only signature; records each stream
    once it is closed, in order."""

    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []
        self.fail = False

    async def stream_text(self, *, destination_identities: list[str] | None = None, topic: str = "",
                          attributes: dict[str, str] | None = None, stream_id: str | None = None,
                          reply_to_id: str | None = None, total_size: int | None = None,
                          sender_identity: str | None = None) -> FakeTextWriter:  # fmt: skip
        if self.fail:
            raise ConnectionError("data channel closed")
        opened = {"topic": topic, "attributes": dict(attributes or {}), "sender_identity": sender_identity}
        return FakeTextWriter(self, opened)


class FakeRoom(rtc.EventEmitter):
    """An ``rtc.Room`` stand-in: same callbacks, same argument order, same connect semantics."""

    def __init__(
        self,
        name: str,
        present: list[tuple[FakeParticipant, list[int]]] | None = None,
        script: Callable[[FakeRoom], Awaitable[None]] | None = None,
        fail_connects: int = 0,
        hang_connect: bool = False,
        sid: str | None = "",
    ) -> None:
        super().__init__()
        self.name = name
        #: the server's room sid (the session id of every record): ``RM_<name>`` unless given; a room
        #: created again under the same name gets another one. None: the server never tells it.
        self._sid = None if sid is None else (sid or f"RM_{name}")
        self.sid_requests = 0
        self.remote_participants: dict[str, FakeParticipant] = {}
        self._present = present or []
        self._script = script
        self._fail_connects = fail_connects
        self._hang_connect = hang_connect
        self.connected = False
        self.tokens: list[str] = []
        self.options: Any = None
        self.subscribed = asyncio.Event()
        self.disconnect_calls = 0
        self.local_participant = FakeLocalParticipant()

    @property
    async def sid(self) -> str:
        # the SDK's ``Room.sid``: known once connected; raises when there is none to wait for
        self.sid_requests += 1
        if self._sid is None:
            raise RuntimeError("cannot get sid of a disconnected room")
        return self._sid

    async def connect(self, url: str, token: str, options: Any = None) -> None:
        self.tokens.append(token)
        self.options = options
        if self._fail_connects:
            self._fail_connects -= 1
            # the real SDK's errors may quote its signalling URL, which carries the token
            raise rtc.ConnectError(f"engine: signal failure ({url}/rtc?access_token={token})")
        if self._hang_connect:  # a server that never answers
            await asyncio.get_running_loop().create_future()
        for participant, kinds in self._present:  # reported in remote_participants, no events
            self.remote_participants[participant.identity] = participant
            for kind in kinds:
                pub = FakePublication(self, participant, kind)
                participant.track_publications[pub.sid] = pub
        self.connected = True
        if self._script is not None:
            asyncio.get_running_loop().create_task(self._script(self))

    async def disconnect(self) -> None:
        self.disconnect_calls += 1
        if self.connected:
            self.connected = False
            self.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)
            self.emit("disconnected", rtc.DisconnectReason.CLIENT_INITIATED)

    # what the server does --------------------------------------------------------------------------
    def _subscription(self, participant: FakeParticipant, pub: FakePublication, subscribed: bool) -> None:
        if not self.connected or participant.identity not in self.remote_participants:
            return
        if subscribed and not pub.subscribed:
            pub.subscribed = True
            self.emit("track_subscribed", pub.track, pub, participant)
            self.subscribed.set()
        elif not subscribed and pub.subscribed:
            self._unsubscribe(participant, pub)

    def _unsubscribe(self, participant: FakeParticipant, pub: FakePublication) -> None:
        track = pub.track
        pub.subscribed = False
        self.emit("track_unsubscribed", track, pub, participant)

    def join(self, participant: FakeParticipant) -> None:
        self.remote_participants[participant.identity] = participant
        self.emit("participant_connected", participant)

    def publish(self, participant: FakeParticipant, kind: int = AUDIO) -> FakePublication:
        pub = FakePublication(self, participant, kind)
        participant.track_publications[pub.sid] = pub
        self.emit("track_published", pub, participant)
        return pub

    def unpublish(self, participant: FakeParticipant, pub: FakePublication) -> None:
        # the SDK's order: track_unsubscribed, then track_unpublished
        if pub.subscribed:
            self._unsubscribe(participant, pub)
        participant.track_publications.pop(pub.sid, None)
        self.emit("track_unpublished", pub, participant)

    def leave(self, participant: FakeParticipant) -> None:
        for pub in list(participant.track_publications.values()):
            self.unpublish(participant, pub)
        self.remote_participants.pop(participant.identity, None)
        self.emit("participant_disconnected", participant)

    def end(self, reason: int = rtc.DisconnectReason.ROOM_DELETED) -> None:
        self.connected = False
        self.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)
        self.emit("disconnected", reason)


def audio_pub(participant: FakeParticipant) -> FakePublication:
    return next(p for p in participant.track_publications.values() if p.kind == AUDIO)


def ramp(n: int, start: int = 0, channels: int = 1) -> np.ndarray:
    return ((np.arange(start, start + n * channels) % 20000) - 10000).astype(np.int16).reshape(n, channels)


def frames_of(samples: np.ndarray, frame_ms: int = 10, rate: int = RATE) -> list[rtc.AudioFrame]:
    per = rate * frame_ms // 1000
    ch = samples.shape[1]
    return [
        rtc.AudioFrame(samples[i : i + per].tobytes(), rate, ch, len(samples[i : i + per]))
        for i in range(0, len(samples), per)
    ]


async def feed(pub: FakePublication, frames: list[rtc.AudioFrame], clock: Clock | None = None) -> None:
    """Deliver frames in real-time order: the clock moves by each frame's duration before it arrives."""
    assert pub.track is not None
    for frame in frames:
        if clock is not None:
            clock.t += frame.duration
        pub.track.frames.put_nowait(frame)
        await pub.track.frames.join()


async def settle() -> None:
    for _ in range(10):  # lets call_soon'd SDK answers (subscriptions) run; no wall-clock waiting
        await asyncio.sleep(0)


class RoomFactory:
    """Builds scripted FakeRooms on the source's loop thread; records which rooms were joined."""

    def __init__(self, make: Callable[[str], FakeRoom] | None = None) -> None:
        self._make = make or (lambda name: FakeRoom(name))
        self.rooms: list[FakeRoom] = []
        self.lock = threading.Lock()

    def __call__(self, name: str) -> FakeRoom:
        room = self._make(name)
        with self.lock:
            self.rooms.append(room)
        return room

    def names(self) -> set[str]:
        with self.lock:
            return {r.name for r in self.rooms}
