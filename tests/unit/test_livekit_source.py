"""The LiveKit source (connectors/livekit/) against the fake ``rtc.Room`` of tests/support/livekit_fakes.py,
which emits the SDK's real event sequence with real ``rtc.AudioFrame`` objects."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import queue
import re
import time
import typing
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main
from livekit import api, rtc

from connectors.kafka.room_events import RoomEvent
from connectors.live_recorder import LiveRecorder
from connectors.livekit.api import agent_token
from connectors.livekit.control import RoomControl, parse_room_event
from connectors.livekit.outbox import AudioOutbox
from connectors.livekit.room import RoomHandler
from connectors.livekit.source import LiveKitSource
from connectors.livekit.supervisor import JOIN_BACKOFF, RoomSupervisor, worker_for_room
from connectors.recording import TrackReader, load_session
from quantcoach.aio import LoopThread
from quantcoach.records import (
    AudioChunk,
    Participant,
    ParticipantAnnounce,
    TrackEnd,
    dumps,
    participant_key,
)
from quantcoach.roles import AGENT_KIND, speaker_role
from quantcoach.wire import SESSION_ID_PATTERN
from stt.retry import Backoff
from tests.support.livekit_fakes import (
    AGENT,
    AUDIO,
    KEY,
    RATE,
    SECRET,
    VIDEO,
    Clock,
    FakeParticipant,
    FakeRoom,
    RoomFactory,
    StreamFactory,
    audio_pub,
    feed,
    frames_of,
    make_settings,
    ramp,
    settle,
)

SID = "RM_mock-1"  # the Harness's room session, as the supervisor sets it before ``start``
STARTED_AT = "2026-12-01T14:00:00.000Z"


class Harness:
    """A RoomHandler on a FakeRoom, with its events collected."""

    def __init__(self, present: list[tuple[FakeParticipant, list[int]]] | None = None, **kw: Any) -> None:
        self.clock = Clock()
        self.events: list[Any] = []
        self.room = FakeRoom("mock-1", present)
        self.streams = StreamFactory()
        self.handler = RoomHandler(
            "mock-1",
            self.events.append,
            chunk_ms=200,
            clock=self.clock,
            stream_factory=self.streams,
            agent_identity="quantcoach-agent",
            **kw,
        )
        self.handler.session_id, self.handler.started_at = SID, STARTED_AT
        self.handler.attach(self.room)

    async def connect(self) -> None:
        await self.room.connect("ws://x", "token")
        self.handler.start()
        await settle()

    def of(self, kind: type, identity: str | None = None) -> list[Any]:
        out = [e for e in self.events if isinstance(e, kind)]
        if identity is not None:
            out = [e for e in out if _identity(e) == identity]
        return out


def _identity(event: Any) -> str:
    return event.participant.identity if isinstance(event, ParticipantAnnounce) else event.participant


def _key(event: Any) -> str:
    """The flow's participant key: room/session_id/identity."""
    if isinstance(event, ParticipantAnnounce):
        return event.participant.key
    return participant_key(event.room, event.participant, event.session_id)


def check_stream_order(events: list[Any]) -> dict[str, list[list[Any]]]:
    """Per participant of a session (key room/session/identity): announce, chunks (contiguous),
    TrackEnd, possibly again; once the room finished, a participant whose track had already ended is
    told so too (a second TrackEnd, ``room_finished``), and nothing follows. Returns the segments."""
    streams: dict[str, list[list[Any]]] = {}
    finished: set[str] = set()
    for e in events:
        key = _key(e)
        assert key not in finished, f"{key}: {type(e).__name__} after the room finished"
        segs = streams.setdefault(key, [])
        if isinstance(e, TrackEnd) and e.reason == "room_finished":
            finished.add(key)
        if isinstance(e, ParticipantAnnounce):
            assert not segs or isinstance(segs[-1][-1], TrackEnd), f"{key}: announce inside a track"
            assert all(p.session_id == e.participant.session_id for p in e.roster), f"{key}: roster"
            segs.append([e])
        elif (
            isinstance(e, TrackEnd)
            and e.reason == "room_finished"
            and segs
            and isinstance(segs[-1][-1], TrackEnd)
        ):
            segs[-1].append(e)  # had left before the room finished: told that the session is over
        else:
            assert segs and not isinstance(segs[-1][-1], TrackEnd), (
                f"{key}: {type(e).__name__} outside a track"
            )
            segs[-1].append(e)
    for key, segs in streams.items():
        for seg in segs:
            chunks = [c for c in seg if isinstance(c, AudioChunk)]
            if chunks:
                assert chunks[0].start >= seg[0].participant.offset_s - 1e-9
            for a, b in itertools.pairwise(chunks):
                assert b.start >= a.end - 1e-9, f"{key}: chunks overlap"
            ends = [e for e in seg if isinstance(e, TrackEnd)]
            if ends and chunks:  # the track's own end (a later room_finished is at the room's time)
                assert ends[0].at >= chunks[-1].end - 1e-6
    return streams


# --- roles, tokens, partitioning ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "attributes", "metadata", "kind", "role"),
    [
        ("morgan", {"role": "interviewer"}, "", 0, "interviewer"),
        ("riley", {"role": "Candidate"}, "", 0, "candidate"),
        ("iv-7", {"role": "candidate"}, "", 0, "candidate"),  # the attribute wins over the identity
        ("x", {"role": "observer"}, "", 0, "participant"),
        ("sam", {}, '{"role": "iv"}', 0, "interviewer"),
        ("sam", {}, "not json", 0, "participant"),
        ("iv-7", {}, "", 0, "interviewer"),
        ("interviewer", {}, "", 0, "interviewer"),
        ("IV3", {}, "", 0, "interviewer"),
        ("ivan", {}, "", 0, "participant"),
        ("cand-3", {}, "", 0, "candidate"),
        ("candidate_9", {}, "", 0, "candidate"),
        ("candace", {}, "", 0, "participant"),
        ("bot", {}, "", AGENT, "agent"),
        ("helper", {"role": "agent"}, "", 0, "agent"),
    ],
)
def test_speaker_role(identity: str, attributes: dict[str, str], metadata: str, kind: int, role: str) -> None:
    assert speaker_role(identity, attributes, metadata, kind) == role


def test_agent_kind_is_the_sdks() -> None:
    assert AGENT_KIND == AGENT


def test_join_backoff_doubles_from_half_a_second_to_30_s_with_a_quarter_jitter() -> None:
    assert Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, jitter=0.25) == JOIN_BACKOFF
    low, high = Backoff(rng=lambda lo, _hi: lo), Backoff(rng=lambda _lo, hi: hi)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (7, 30.0), (1000, 30.0)]:
        assert (low.delay(attempt), high.delay(attempt)) == pytest.approx((base * 0.75, base * 1.25))
        assert base * 0.75 <= JOIN_BACKOFF.delay(attempt) <= base * 1.25


def test_agent_token_is_hidden_subscribe_only_agent() -> None:
    settings = make_settings(agent_identity="qc-agent", token_ttl_s=600)
    claims = api.TokenVerifier(KEY, SECRET).verify(agent_token(settings, "mock-42"))
    assert claims.identity == "qc-agent"
    assert claims.kind == "agent"
    video = claims.video
    assert (video.room_join, video.room, video.hidden, video.agent) == (True, "mock-42", True, True)
    assert (video.can_subscribe, video.can_publish, video.can_publish_data) == (True, False, True)  # captions


def test_handler_uses_the_sdks_event_names_and_stream_signature() -> None:
    registered: list[str] = []

    class Recorder:
        remote_participants: typing.ClassVar[dict[str, Any]] = {}

        def on(self, event: str, callback: Callable[..., Any]) -> None:
            registered.append(event)

    RoomHandler("r", lambda e: None).attach(Recorder())
    assert set(registered) <= set(typing.get_args(rtc.room.EventTypes))
    params = inspect.signature(rtc.AudioStream).parameters
    assert {"sample_rate", "num_channels", "frame_size_ms"} <= set(params)


def test_worker_for_room_is_adler32() -> None:
    for room in ["mock-1", "mock-42", "interview/ü", ""]:
        for n in (1, 2, 3, 7):
            assert worker_for_room(room, n) == zlib.adler32(room.encode()) % n


def test_parse_room_event() -> None:
    assert parse_room_event({"event": "room_started", "room": "a"}).room == "a"
    assert parse_room_event(b'{"event": "room_finished", "room": "b", "sid": "RM_b"}').sid == "RM_b"
    wire = RoomEvent("room_started", "d", "RM_d", "EV_1", 1700000000).to_record()  # the web app's record
    assert parse_room_event(wire) == parse_room_event(SimpleNamespace(value=dumps(wire).encode()))
    assert parse_room_event(wire) == RoomControl("room_started", "d", "RM_d")
    webhook = parse_room_event({"event": "room_started", "room": {"name": "c", "sid": "RM_c"}})
    assert (webhook.room, webhook.sid) == ("c", "RM_c")
    for bad in [{"event": "track_published", "room": "a"}, {"event": "room_started"}, [1], "7"]:
        with pytest.raises(ValueError):
            parse_room_event(bad)


# --- event handling -------------------------------------------------------------------------------------


def test_chunks_of_chunk_ms_from_10ms_frames() -> None:
    async def main() -> None:
        cand = FakeParticipant("cand-1", "Riley")
        h = Harness([(cand, [AUDIO, VIDEO])])
        await h.connect()
        pub = audio_pub(cand)
        video = next(p for p in cand.track_publications.values() if p.kind == VIDEO)
        assert pub.subscribed and not video.subscribed  # audio only
        assert h.streams.calls == [(pub.sid, 48000, 1, 200)]
        samples = ramp(45 * 480)  # 450 ms in 10 ms frames
        await feed(pub, frames_of(samples), h.clock)
        h.room.unpublish(cand, pub)
        (announce,) = h.of(ParticipantAnnounce)
        assert announce.participant == Participant(
            "mock-1", "cand-1", "Riley", "candidate", 0.0, session_id=SID, started_at=STARTED_AT
        )
        assert all(e.session_id == SID for e in h.events if not isinstance(e, ParticipantAnnounce))
        chunks = h.of(AudioChunk)
        assert [c.frames for c in chunks] == [9600, 9600, 2400]  # the tail is flushed at the end
        assert [c.start for c in chunks] == pytest.approx([0.0, 0.2, 0.4])
        assert all(
            c.sample_rate == RATE and c.samples.shape[1] == 1 and c.samples.dtype == np.int16 for c in chunks
        )
        np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), samples)
        (end,) = h.of(TrackEnd)
        assert (end.reason, end.at) == ("unsubscribed", pytest.approx(0.45))
        assert h.events[-1] is end and h.events[0] is announce
        check_stream_order(h.events)

    asyncio.run(main())


def test_sdk_sized_frames_pass_through_and_media_time_follows_samples() -> None:
    async def main() -> None:
        h = Harness()
        await h.connect()
        h.clock.t += 2.5
        cand = FakeParticipant("cand-1")
        h.room.join(cand)
        pub = h.room.publish(cand)
        await settle()
        samples = ramp(5 * 9600)
        await feed(pub, frames_of(samples, frame_ms=200), h.clock)
        chunks = h.of(AudioChunk)
        assert h.of(ParticipantAnnounce)[0].participant.offset_s == pytest.approx(2.5)
        assert [c.frames for c in chunks] == [9600] * 5
        assert [c.start for c in chunks] == pytest.approx([2.5, 2.7, 2.9, 3.1, 3.3])
        # a stalled track (muted, network): the wall clock runs 5 s ahead -> the timeline jumps forward
        h.clock.t += 5.0
        await feed(pub, frames_of(ramp(9600), frame_ms=200), h.clock)
        assert h.of(AudioChunk)[-1].start == pytest.approx(h.clock.t - 1000.0 - 0.2)
        # jitter below RESYNC_S does not move it
        h.clock.t += 0.5
        await feed(pub, frames_of(ramp(9600), frame_ms=200), h.clock)
        last2 = h.of(AudioChunk)[-2:]
        assert last2[1].start == pytest.approx(last2[0].end)
        check_stream_order(h.events)

    asyncio.run(main())


def test_roles_from_attributes_and_agents_skipped() -> None:
    async def main() -> None:
        iv = FakeParticipant("morgan", "Morgan", {"role": "interviewer"})
        cand = FakeParticipant("cand-3", "Riley")
        other = FakeParticipant("observer-1")
        bot = FakeParticipant("bot", kind=AGENT)
        helper = FakeParticipant("helper", attributes={"role": "agent"})
        me = FakeParticipant("quantcoach-agent")  # our own identity (another worker's stale agent)
        h = Harness([(p, [AUDIO]) for p in (iv, cand, other, bot, helper, me)])
        await h.connect()
        roles = {a.participant.identity: a.participant.role for a in h.of(ParticipantAnnounce)}
        assert roles == {"morgan": "interviewer", "cand-3": "candidate", "observer-1": "participant"}
        for agent in (bot, helper, me):
            assert audio_pub(agent).subscribe_requests == 0
        # an agent publishing later is not subscribed either, nor are its tracks if subscribed anyway
        late = h.room.publish(bot)
        h.room._subscription(bot, late, True)
        await settle()
        assert late.subscribe_requests == 0
        assert all(_identity(e) not in ("bot", "helper", "quantcoach-agent") for e in h.events)

    asyncio.run(main())


def test_late_joiner_announced_with_offset_and_roster() -> None:
    async def main() -> None:
        iv = FakeParticipant("iv-7", "Morgan")
        h = Harness([(iv, [AUDIO])])
        await h.connect()
        h.clock.t += 30.0
        cand = FakeParticipant("cand-3", "Riley")
        h.room.join(cand)
        await settle()
        assert len(h.of(ParticipantAnnounce)) == 1  # joining without audio announces nothing
        h.room.publish(cand)
        await settle()
        first, late = h.of(ParticipantAnnounce)
        assert first.participant.offset_s == 0.0 and first.roster == (first.participant,)
        assert late.participant.offset_s == pytest.approx(30.0)
        assert late.roster == (first.participant, late.participant)

    asyncio.run(main())


def test_leave_and_rejoin_gets_a_new_announce() -> None:
    async def main() -> None:
        cand = FakeParticipant("cand-3")
        h = Harness([(cand, [AUDIO])])
        await h.connect()
        await feed(audio_pub(cand), frames_of(ramp(9600), 200), h.clock)
        h.room.leave(cand)
        assert [type(e).__name__ for e in h.events] == ["ParticipantAnnounce", "AudioChunk", "TrackEnd"]
        assert h.of(TrackEnd)[0].reason == "unsubscribed"  # the SDK unsubscribes before the leave
        h.clock.t += 10.0
        back = FakeParticipant("cand-3")  # the SDK makes a new RemoteParticipant on rejoin
        h.room.join(back)
        pub = h.room.publish(back)
        await settle()
        await feed(pub, frames_of(ramp(9600), 200), h.clock)
        h.room.leave(back)
        segs = check_stream_order(h.events)[f"mock-1/{SID}/cand-3"]
        assert len(segs) == 2
        assert segs[1][0].participant.offset_s == pytest.approx(10.2)
        assert segs[1][1].start == pytest.approx(10.2)
        assert segs[1][0].roster == (segs[1][0].participant,)  # latest record of each participant

    asyncio.run(main())


def test_participant_disconnect_without_track_events_ends_track() -> None:
    async def main() -> None:
        cand = FakeParticipant("cand-3")
        h = Harness([(cand, [AUDIO])])
        await h.connect()
        h.room.remote_participants.pop("cand-3")
        h.room.emit("participant_disconnected", cand)
        assert [e.reason for e in h.of(TrackEnd)] == ["left"]

    asyncio.run(main())


def test_room_end_gives_track_end_for_everyone() -> None:
    async def main() -> None:
        iv, cand = FakeParticipant("iv-1"), FakeParticipant("cand-1")
        h = Harness([(iv, [AUDIO]), (cand, [AUDIO])])
        lost: list[int] = []
        h.handler.on_disconnected = lost.append
        await h.connect()
        await feed(audio_pub(iv), frames_of(ramp(9600 + 480), 10), h.clock)  # 1 chunk + 10 ms pending
        await feed(audio_pub(cand), frames_of(ramp(4800), 10), h.clock)
        h.room.end(rtc.DisconnectReason.ROOM_DELETED)
        ends = h.of(TrackEnd)
        assert {(e.participant, e.reason) for e in ends} == {
            ("iv-1", "room_finished"),
            ("cand-1", "room_finished"),
        }
        assert [c.frames for c in h.of(AudioChunk, "iv-1")] == [9600, 480]  # pending audio flushed first
        assert h.handler.room_over and lost == [rtc.DisconnectReason.ROOM_DELETED]
        n = len(h.events)
        track = audio_pub(iv).track
        assert track is not None
        track.frames.put_nowait(frames_of(ramp(9600), 200)[0])  # a late frame: nothing more comes out
        await settle()
        h.room.emit("disconnected", rtc.DisconnectReason.ROOM_DELETED)
        assert len(h.events) == n
        check_stream_order(h.events)

    asyncio.run(main())


def test_room_finishing_tells_everyone_of_the_session_once_even_those_who_left() -> None:
    """The session can only end when nobody can come back: when the room finished, every participant
    of the session gets TrackEnd(room_finished), also one that had left (and one that left and came
    back is told once); nobody is told twice, and someone who never published is not in the session."""

    async def main() -> None:
        iv, cand, back = FakeParticipant("iv-1"), FakeParticipant("cand-1"), FakeParticipant("obs-1")
        h = Harness([(iv, [AUDIO]), (cand, [AUDIO]), (back, [AUDIO])])
        await h.connect()
        await feed(audio_pub(cand), frames_of(ramp(9600), 200), h.clock)
        h.room.leave(cand)
        h.room.leave(back)
        h.clock.t += 1.0
        again = FakeParticipant("obs-1")
        h.room.join(again)
        h.room.publish(again)
        await settle()
        h.room.join(FakeParticipant("silent-1"))  # no audio: never announced, never ended
        h.clock.t += 2.0
        before = len(h.of(TrackEnd))
        h.room.end(rtc.DisconnectReason.ROOM_DELETED)
        told = h.of(TrackEnd)[before:]
        assert sorted((e.participant, e.reason) for e in told) == [
            ("cand-1", "room_finished"),
            ("iv-1", "room_finished"),
            ("obs-1", "room_finished"),
        ]
        assert all(e.session_id == SID for e in told)
        (cand_end,) = [e for e in told if e.participant == "cand-1"]
        assert cand_end.at == pytest.approx(h.clock.t - 1000.0)  # when the room finished
        h.handler.end_all("room_finished")  # idempotent: a later leave() tells nobody again
        h.room.emit("disconnected", rtc.DisconnectReason.ROOM_DELETED)
        assert len(h.of(TrackEnd)) == before + 3
        check_stream_order(h.events)

    asyncio.run(main())


@pytest.mark.parametrize("reason", ["shutdown", "removed"])
def test_leaving_without_the_room_finishing_tells_only_the_active_tracks(reason: str) -> None:
    """A shutdown (the flow restarts and resumes the session) or being removed does not end the
    session for those who had left: only the tracks still running get a TrackEnd."""

    async def main() -> None:
        iv, cand = FakeParticipant("iv-1"), FakeParticipant("cand-1")
        h = Harness([(iv, [AUDIO]), (cand, [AUDIO])])
        await h.connect()
        h.room.leave(cand)
        if reason == "shutdown":
            await h.handler.leave("shutdown")
        else:
            h.room.end(rtc.DisconnectReason.PARTICIPANT_REMOVED)
        assert [(e.participant, e.reason) for e in h.of(TrackEnd)] == [
            ("cand-1", "unsubscribed"),
            ("iv-1", reason),
        ]

    asyncio.run(main())


def test_sdk_reconnect_and_lost_connection() -> None:
    async def main() -> None:
        cand = FakeParticipant("cand-1")
        h = Harness([(cand, [AUDIO])])
        await h.connect()
        pub = audio_pub(cand)
        h.room.emit("reconnecting")
        h.room._unsubscribe(cand, pub)  # a full reconnect dropped the subscription
        h.room.emit("reconnected")
        await settle()
        assert pub.subscribed and pub.subscribe_requests == 2
        assert [type(e).__name__ for e in h.events] == [
            "ParticipantAnnounce",
            "TrackEnd",
            "ParticipantAnnounce",
        ]
        h.room.end(rtc.DisconnectReason.SIGNAL_CLOSE)  # the SDK gave up: the source rejoins
        assert h.of(TrackEnd)[-1].reason == "disconnected" and not h.handler.room_over

    asyncio.run(main())


def test_second_audio_track_waits_as_spare() -> None:
    async def main() -> None:
        cand = FakeParticipant("cand-1")
        h = Harness([(cand, [AUDIO])])
        await h.connect()
        first = audio_pub(cand)
        second = h.room.publish(cand)
        await settle()
        assert len(h.of(ParticipantAnnounce)) == 1
        h.clock.t += 1.0
        h.room.unpublish(cand, first)
        await feed(second, frames_of(ramp(9600), 200), h.clock)
        kinds = [type(e).__name__ for e in h.events]
        assert kinds == ["ParticipantAnnounce", "TrackEnd", "ParticipantAnnounce", "AudioChunk"]
        h.room.unpublish(cand, second)
        assert len(h.of(TrackEnd)) == 2

    asyncio.run(main())


def test_stream_ending_on_its_own_ends_the_track() -> None:
    async def main() -> None:
        cand = FakeParticipant("cand-1")
        h = Harness([(cand, [AUDIO])])
        await h.connect()
        track = audio_pub(cand).track
        assert track is not None
        track.frames.put_nowait(None)  # end of stream from the SDK
        await track.frames.join()
        await settle()
        assert [e.reason for e in h.of(TrackEnd)] == ["stream_ended"]

    asyncio.run(main())


# --- hand-off queue -------------------------------------------------------------------------------------


def _chunk(identity: str, start: float, session_id: str = SID) -> AudioChunk:
    return AudioChunk("mock-1", identity, ramp(9600), RATE, start, session_id)


def test_outbox_drops_audio_counted_and_logged_never_control(caplog: pytest.LogCaptureFixture) -> None:
    box = AudioOutbox(maxsize=2)
    who = Participant("mock-1", "cand-1", "Riley", "candidate", session_id=SID)
    with caplog.at_level(logging.WARNING, logger="connectors.livekit.outbox"):
        assert box.put(ParticipantAnnounce(who, (who,)))
        assert box.put(_chunk("cand-1", 0.0))
        assert not box.put(_chunk("cand-1", 0.2))  # full
        box.put(TrackEnd("mock-1", "cand-1", 0.6, "left", SID))  # held, not dropped
        assert not box.put(_chunk("iv-1", 0.0))  # nothing may overtake the held TrackEnd
        box.put(ParticipantAnnounce(who, (who,)))
        for i in range(5):
            box.put(_chunk("cand-1", 1.0 + i))
        box.put(_chunk("cand-1", 0.0, "RM_next"))  # the room's next session: counted apart
    cand, iv = f"mock-1/{SID}/cand-1", f"mock-1/{SID}/iv-1"
    assert box.dropped == {cand: 6, iv: 1, "mock-1/RM_next/cand-1": 1}
    assert box.dropped_s[cand] == pytest.approx(1.2)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(f"dropped audio of {cand}" in m for m in messages) == 1  # rate-limited
    assert any(f"{cand} ended; 1 chunk(s)" in m for m in messages)
    got = box.drain(3)
    assert [type(e).__name__ for e in got] == ["ParticipantAnnounce", "AudioChunk", "TrackEnd"]
    assert [type(e).__name__ for e in box.drain()] == ["ParticipantAnnounce"]
    assert box.drain() == [] and len(box) == 0
    assert box.put(_chunk("cand-1", 7.0))  # room again


def test_outbox_drain_is_bounded_and_nonblocking() -> None:
    box = AudioOutbox(maxsize=100)
    for i in range(10):
        box.put(_chunk("a", i * 0.2))
    assert len(box.drain(4)) == 4 and len(box.drain(100)) == 6 and box.drain() == []


# --- the source, on its loop thread ---------------------------------------------------------------------


def pump(
    parts: list[Any], until: Callable[[list[Any]], bool], out: list[Any] | None = None, max_s: float = 20.0
) -> list[Any]:
    """Call next_batch as Bytewax does, honouring next_awake, until ``until(out)`` or every part ended."""
    out = [] if out is None else out
    live = list(parts)
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        if until(out) or not live:
            return out
        for part in list(live):
            awake = part.next_awake()
            if awake is not None:
                delay = (awake - datetime.now(UTC)).total_seconds()
                if delay > 0:
                    time.sleep(min(delay, 0.05))  # what Bytewax's scheduler does between activations
            try:
                out += part.next_batch()
            except StopIteration:
                live.remove(part)
                part.close()
    raise AssertionError("the source did not get there in time")


def run_room(
    factory: RoomFactory, until: Callable[[list[Any]], bool], clock: Clock | None = None
) -> list[Any]:
    """One worker's source in room ``mock-1`` (no discovery) until ``until``, then stopped and drained:
    every event it emitted."""
    kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
    src = LiveKitSource(
        make_settings(),
        rooms=["mock-1"],
        discover=False,
        room_factory=factory,
        stream_factory=StreamFactory(),
        **kw,
    )
    part = src.build("in", 0, 1)
    try:
        got = pump([part], until)
        src.stop()
        return pump([part], lambda _: False, got)
    finally:
        part.close()


def test_workers_join_only_their_rooms_by_adler32() -> None:
    rooms = [f"mock-{i}" for i in range(12)]
    factory = RoomFactory()
    src = LiveKitSource(
        make_settings(), rooms=rooms, discover=False, room_factory=factory, stream_factory=StreamFactory()
    )
    parts = [src.build("in", i, 3) for i in range(3)]
    try:
        pump(parts, lambda _: len(factory.names()) == 12 and all(r.connected for r in factory.rooms))
        for i, part in enumerate(parts):
            assert set(part.supervisor.rooms) == {r for r in rooms if zlib.adler32(r.encode()) % 3 == i}
        for room in factory.rooms:  # joined as the hidden agent, audio subscribed by hand
            claims = api.TokenVerifier(KEY, SECRET).verify(room.tokens[0])
            assert claims.video.room == room.name and claims.video.hidden
            assert room.options.auto_subscribe is False
        src.stop()
        pump(parts, lambda _: False)
        assert all(r.disconnect_calls >= 1 and not r.connected for r in factory.rooms)
    finally:
        for part in parts:
            part.close()


def test_control_events_start_and_finish_rooms(caplog: pytest.LogCaptureFixture) -> None:
    def make(name: str) -> FakeRoom:
        return FakeRoom(name, [(FakeParticipant("cand-1"), [AUDIO])])

    factory = RoomFactory(make)
    events: queue.Queue[Any] = queue.Queue()
    src = LiveKitSource(
        make_settings(),
        discover=False,
        room_events=events,
        room_factory=factory,
        stream_factory=StreamFactory(),
    )
    part = src.build("in", 0, 1)
    try:
        events.put({"event": "room_started", "room": "mock-7"})
        events.put("{not json")
        got = pump([part], lambda out: any(isinstance(e, ParticipantAnnounce) for e in out))
        events.put(json.dumps({"event": "room_finished", "room": "mock-7"}))
        pump([part], lambda out: any(isinstance(e, TrackEnd) for e in out), got)
        ends = [(e.participant, e.reason) for e in got if isinstance(e, TrackEnd)]
        assert ends == [("cand-1", "room_finished")]
        assert factory.rooms[0].disconnect_calls == 1
        events.put(None)  # end of the control feed, no discovery: the source ends
        pump([part], lambda _: False, got)
        assert [type(e).__name__ for e in got] == ["ParticipantAnnounce", "TrackEnd"]
    finally:
        part.close()
    assert "malformed room control event" in caplog.text


def _sessions_of(events: list[Any], room: str) -> list[str]:
    """The session ids of ``room``'s announces, in order, each once."""
    announces = [e.participant for e in events if isinstance(e, ParticipantAnnounce)]
    return list(dict.fromkeys(p.session_id for p in announces if p.room == room))


def test_a_room_created_again_under_its_name_is_a_new_session() -> None:
    """LiveKit room names are reused: the room finishes, a room of the same name starts (another sid).
    Its events are another session (the new room's sid), with media time from 0 again; a late
    room_finished of the old session does not end the new one."""
    made: dict[str, int] = {}

    def make(name: str) -> FakeRoom:
        made[name] = made.get(name, 0) + 1
        return FakeRoom(name, [(FakeParticipant("cand-1"), [AUDIO])], sid=f"RM_{name}_{made[name]}")

    factory, clock, control = RoomFactory(make), Clock(), queue.Queue()
    src = LiveKitSource(
        make_settings(),
        discover=False,
        room_events=control,
        room_factory=factory,
        stream_factory=StreamFactory(),
        clock=clock,
    )
    part = src.build("in", 0, 1)

    def announced(n: int) -> Callable[[list[Any]], bool]:
        return lambda out: sum(isinstance(e, ParticipantAnnounce) for e in out) == n

    def ended(n: int) -> Callable[[list[Any]], bool]:
        return lambda out: sum(isinstance(e, TrackEnd) for e in out) == n

    try:
        control.put({"event": "room_started", "room": "mock-7"})
        got = pump([part], announced(1))
        clock.t += 30.0
        control.put({"event": "room_finished", "room": "mock-7", "sid": "RM_mock-7_1"})
        pump([part], lambda out: ended(1)(out) and part.supervisor.rooms == [], got)
        clock.t += 60.0
        control.put({"event": "room_started", "room": "mock-7"})  # the same name, a new room
        pump([part], announced(2), got)
        control.put({"event": "room_finished", "room": "mock-7", "sid": "RM_mock-7_1"})  # stale
        control.put({"event": "room_started", "room": "mock-8"})  # handled after the stale one
        pump([part], announced(3), got)
        assert ended(1)(got) and factory.rooms[1].connected  # the new session goes on
        control.put({"event": "room_finished", "room": "mock-7", "sid": "RM_mock-7_2"})
        control.put({"event": "room_finished", "room": "mock-8"})
        control.put(None)
        pump([part], lambda _: False, got)  # the source ends: every room finished, no more control
    finally:
        part.close()
    assert [r.name for r in factory.rooms] == ["mock-7", "mock-7", "mock-8"]
    assert _sessions_of(got, "mock-7") == ["RM_mock-7_1", "RM_mock-7_2"]
    streams = check_stream_order(got)
    first, second = streams["mock-7/RM_mock-7_1/cand-1"], streams["mock-7/RM_mock-7_2/cand-1"]
    assert [(seg[0].participant.offset_s, seg[-1].reason) for seg in first] == [(0.0, "room_finished")]
    assert [(seg[0].participant.offset_s, seg[-1].reason) for seg in second] == [(0.0, "room_finished")]
    assert first[0][-1].at == pytest.approx(30.0) and second[0][-1].at == pytest.approx(0.0)
    assert second[0][0].roster == (second[0][0].participant,)  # the old session's roster is not carried
    assert first[0][0].participant.started_at and second[0][0].participant.started_at


def test_without_a_room_sid_every_session_still_gets_its_own_id() -> None:
    """A server that tells no sid: ``lk-<room>-<random>``, a valid session id, another one per room
    session."""
    factory, control = (
        RoomFactory(lambda name: FakeRoom(name, [(FakeParticipant("a"), [AUDIO])], sid=None)),
        queue.Queue(),
    )
    src = LiveKitSource(
        make_settings(),
        discover=False,
        room_events=control,
        room_factory=factory,
        stream_factory=StreamFactory(),
    )
    part = src.build("in", 0, 1)
    try:
        got: list[Any] = []
        for _ in range(2):
            control.put({"event": "room_started", "room": "salle é/1"})
            n = len(got)
            pump([part], lambda out, n=n: any(isinstance(e, ParticipantAnnounce) for e in out[n:]), got)
            control.put({"event": "room_finished", "room": "salle é/1"})
            pump([part], lambda out, n=n: any(isinstance(e, TrackEnd) for e in out[n:]), got)
            pump([part], lambda _: part.supervisor.rooms == [], got)
        control.put(None)
        pump([part], lambda _: False, got)
    finally:
        part.close()
    ids = _sessions_of(got, "salle é/1")
    assert len(ids) == 2 and ids[0] != ids[1]
    for sid in ids:
        assert re.fullmatch(SESSION_ID_PATTERN, sid) and re.fullmatch(r"lk-salle---1-[0-9a-f]{12}", sid)
    assert all(r.sid_requests >= 1 for r in factory.rooms)
    check_stream_order(got)


def test_the_agent_rejoining_a_lost_room_stays_in_the_same_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's connection drops (not the room): it rejoins, and the session, its id and media time
    go on."""
    monkeypatch.setattr("connectors.livekit.supervisor.JOIN_BACKOFF", Backoff(rng=lambda _lo, _hi: 0.0))
    clock = Clock()

    async def drop(room: FakeRoom) -> None:
        await room.subscribed.wait()
        clock.t += 3.0
        room.end(rtc.DisconnectReason.SIGNAL_CLOSE)

    factory = RoomFactory(
        lambda name: FakeRoom(
            name, [(FakeParticipant("cand-1"), [AUDIO])], drop if not factory.rooms else None
        )
    )
    got = run_room(factory, lambda out: sum(isinstance(e, ParticipantAnnounce) for e in out) == 2, clock)
    assert len(factory.rooms) == 2
    (segs,) = check_stream_order(got).values()  # one stream: the same session key across the rejoin
    assert [(seg[0].participant.offset_s, seg[-1].reason) for seg in segs] == [
        (0.0, "disconnected"),
        (3.0, "shutdown"),
    ]
    assert _sessions_of(got, "mock-1") == ["RM_mock-1"]
    assert len({seg[0].participant.started_at for seg in segs}) == 1


def test_join_retries_with_backoff(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("connectors.livekit.supervisor.JOIN_BACKOFF", Backoff(rng=lambda _lo, _hi: 0.0))
    factory = RoomFactory(lambda name: FakeRoom(name, fail_connects=1 if not factory.rooms else 0))
    src = LiveKitSource(make_settings(), rooms=["mock-1"], discover=False, room_factory=factory)
    part = src.build("in", 0, 1)
    try:
        with caplog.at_level(logging.WARNING):
            pump([part], lambda _: part.supervisor.rooms == ["mock-1"] and len(factory.rooms) == 2)
        pump([part], lambda _: factory.rooms[1].connected)
        assert factory.rooms[1].connected
    finally:
        part.close()
    assert factory.rooms[1].disconnect_calls == 1  # left cleanly on close()
    # the SDK's error quoted the token in its URL: the log says why, never the token
    assert "joining room mock-1 failed" in caplog.text and "<token>" in caplog.text
    assert factory.rooms[0].tokens[0] not in caplog.text


def test_room_event_feeds_shared_and_per_worker() -> None:
    rooms = [f"mock-{i}" for i in range(6)]
    started = [{"event": "room_started", "room": r} for r in rooms]
    calls: list[tuple[int, int]] = []

    def per_worker(index: int, count: int) -> list[dict[str, str]]:
        calls.append((index, count))
        return started

    for feed_ in (per_worker, started):  # one feed per worker, or one shared by the process's workers
        factory = RoomFactory()
        src = LiveKitSource(make_settings(), discover=False, room_events=feed_, room_factory=factory)
        parts = [src.build("in", i, 2) for i in range(2)]
        try:
            pump(parts, lambda _, f=factory: len(f.names()) == 6)
            assert sorted(r.name for r in factory.rooms) == rooms  # each room joined once, by its owner
            src.stop()
            pump(parts, lambda _: False)
        finally:
            for part in parts:
                part.close()
    assert sorted(calls) == [(0, 2), (1, 2)]


def test_a_leave_in_progress_is_held_until_done() -> None:
    """asyncio keeps only weak references to tasks: the supervisor holds each leave until it is done."""

    async def main() -> None:
        factory, closed = RoomFactory(), []
        sup = RoomSupervisor(
            settings=make_settings(),
            worker_index=0,
            worker_count=1,
            emit=lambda _event: None,
            on_room_closed=closed.append,
            on_done=lambda: None,
            rooms=["mock-1"],
            discover=False,
            has_control=True,
            room_factory=factory,
            stream_factory=StreamFactory(),
            clock=Clock(),
        )
        await sup.start()
        for _ in range(100):
            if sup._sessions["mock-1"].handler is not None:  # joined: leaving is a task of its own
                break
            await asyncio.sleep(0)
        sup.leave("mock-1", "room_finished")
        (leaving,) = sup._leaving
        await leaving
        await settle()
        assert not sup._leaving and closed == ["mock-1"] and factory.rooms[0].disconnect_calls == 1

    asyncio.run(main())


def test_stop_while_connecting_ends_the_source() -> None:
    factory = RoomFactory(lambda name: FakeRoom(name, hang_connect=True))
    src = LiveKitSource(make_settings(), rooms=["mock-1"], discover=False, room_factory=factory)
    part = src.build("in", 0, 1)
    try:
        pump([part], lambda _: len(factory.rooms) == 1)
        src.stop()
        assert pump([part], lambda _: False) == []  # StopIteration: nothing was joined, nothing to end
        assert factory.rooms[0].disconnect_calls == 1  # the half-open connection is dropped
    finally:
        part.close()


def test_real_sdk_room_join_failure_is_retried_and_stop_ends(caplog: pytest.LogCaptureFixture) -> None:
    """The default rtc.Room and RoomOptions through the SDK's FFI, against a port where nothing listens."""
    src = LiveKitSource(make_settings("ws://127.0.0.1:9"), rooms=["mock-1"], discover=False)
    part = src.build("in", 0, 1)
    try:
        with caplog.at_level(logging.WARNING, logger="connectors.livekit.supervisor"):
            pump([part], lambda _: "joining room mock-1 failed" in caplog.text)
        src.stop()
        assert pump([part], lambda _: False) == []
    finally:
        part.close()


class TwirpRoomService:
    """RoomService ListRooms over Twirp/protobuf on loopback, checking the JWT like livekit-server."""

    def __init__(self, rooms: list[str]) -> None:
        self.rooms = rooms
        self.sids = {n: f"RM_{n}" for n in rooms}  # a room created again under its name: a new sid
        self.calls = 0
        self.rejected = 0
        self._loop = LoopThread("twirp-test-server")
        self.url = self._loop.call(self._start())

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/twirp/livekit.RoomService/ListRooms", self._list_rooms)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"ws://127.0.0.1:{port}"

    async def _list_rooms(self, request: web.Request) -> web.Response:
        self.calls += 1
        try:
            token = request.headers["Authorization"].removeprefix("Bearer ")
            claims = api.TokenVerifier(KEY, SECRET).verify(token)
            assert claims.video.room_list
        except Exception:
            self.rejected += 1
            return web.json_response({"code": "unauthenticated", "msg": "bad token"}, status=401)
        api.ListRoomsRequest.FromString(await request.read())
        body = api.ListRoomsResponse(rooms=[api.Room(name=n, sid=self.sids[n]) for n in self.rooms])
        return web.Response(body=body.SerializeToString(), content_type="application/protobuf")

    def close(self) -> None:
        self._loop.call(self._runner.cleanup())
        self._loop.stop()


def test_discovery_polls_roomservice_and_joins_own_rooms() -> None:
    server = TwirpRoomService([f"live-{i}" for i in range(6)])
    factory = RoomFactory(lambda name: FakeRoom(name, [(FakeParticipant("cand-1"), [AUDIO])]))
    src = LiveKitSource(make_settings(server.url), room_factory=factory)
    parts = [src.build("in", i, 2) for i in range(2)]
    try:
        pump(parts, lambda _: len(factory.names()) == 6)
        for i, part in enumerate(parts):
            assert set(part.supervisor.rooms) == {r for r in server.rooms if worker_for_room(r, 2) == i}
        # a room that ended is not rejoined while a stale listing still shows it
        ended = factory.rooms[0]
        parts[worker_for_room(ended.name, 2)]._loop.loop.call_soon_threadsafe(ended.end)
        pump(parts, lambda _: ended.name not in {n for p in parts for n in p.supervisor.rooms})
        calls = server.calls
        pump(parts, lambda _: server.calls >= calls + 3)
        assert [r.name for r in factory.rooms].count(ended.name) == 1
        # the name is listed again with another sid: a new room of that name, joined as a new session
        server.sids[ended.name] = "RM_again"
        got = pump(parts, lambda out: "RM_again" in _sessions_of(out, ended.name))
        assert [r.name for r in factory.rooms].count(ended.name) == 2
        assert server.rejected == 0
        src.stop()
        pump(parts, lambda _: False, got)
        assert set(_sessions_of(got, ended.name)) <= {f"RM_{ended.name}", "RM_again"}
    finally:
        for part in parts:
            part.close()
        server.close()


# --- recording ------------------------------------------------------------------------------------------


def test_recorder_writes_a_replayable_session(tmp_path: Path) -> None:
    async def main() -> tuple[list[Any], Path | None]:
        recorder = LiveRecorder(tmp_path)
        iv = FakeParticipant("iv-7", "Morgan", {"role": "interviewer"})
        mute = FakeParticipant("cand-9", "Quiet")  # subscribed, never a frame: left out of the session
        h = Harness([(iv, [AUDIO]), (mute, [AUDIO])])
        h.handler._emit = lambda e: (recorder.handle(e), h.events.append(e))  # type: ignore[method-assign]
        await h.connect()
        await feed(audio_pub(iv), frames_of(ramp(3 * 9600), 200), h.clock)
        cand = FakeParticipant("cand/3", "Riley")  # identities may hold '/', the session format may not
        h.room.join(cand)
        pub = h.room.publish(cand)
        await settle()
        await feed(pub, frames_of(ramp(4800, 7), 10), h.clock)
        h.room.leave(cand)
        assert recorder.session_dir("mock-1") == tmp_path / "mock-1"
        h.clock.t += 2.0
        back = FakeParticipant("cand/3", "Riley")
        h.room.join(back)
        pub = h.room.publish(back)
        await settle()
        await feed(pub, frames_of(ramp(9600, 11), 200), h.clock)
        h.room.end()
        return h.events, recorder.end_room("mock-1")

    events, directory = asyncio.run(main())
    assert directory == tmp_path / "mock-1"
    manifest = json.loads((directory / "session.json").read_text())
    assert manifest["session_id"] == "RM_mock-1"  # a replay of the recording keeps the live session's ids
    assert manifest.pop("started_at").endswith("Z")
    assert manifest == {
        "room": "mock-1",
        "session_id": "RM_mock-1",
        "participants": [
            {
                "identity": "iv-7",
                "name": "Morgan",
                "role": "interviewer",
                "file": "interviewer-iv-7.wav",
                "offset_s": 0.0,
            },
            {
                "identity": "cand_3",
                "name": "Riley",
                "role": "candidate",
                "file": "candidate-cand_3.wav",
                "offset_s": 0.6,
            },
        ],
    }
    assert sorted(f.name for f in directory.iterdir()) == [
        "candidate-cand_3.wav",
        "interviewer-iv-7.wav",
        "session.json",
    ]
    # the replay's own reader takes it, and every chunk's samples sit at its media time in the file
    session = load_session(directory)
    assert [(t.participant.identity, t.sample_rate, t.channels) for t in session.tracks] == [
        ("iv-7", RATE, 1),
        ("cand_3", RATE, 1),
    ]
    for track, live_identity in zip(session.tracks, ["iv-7", "cand/3"], strict=True):
        assert sf.info(track.path).subtype == "PCM_16"
        reader = TrackReader(track)
        data = reader.read(track.frames)
        reader.close()
        chunks = [e for e in events if isinstance(e, AudioChunk) and e.participant == live_identity]
        for c in chunks:
            at = round((c.start - track.participant.offset_s) * RATE)
            np.testing.assert_array_equal(data[at : at + c.frames], c.samples)
        assert track.end == pytest.approx(chunks[-1].end)
    cand_data = TrackReader(session.tracks[1]).read(session.tracks[1].frames)
    assert not cand_data[4800 : round((2.9 - 0.6) * RATE) - 9600].any()  # the absence is silence


def test_recorder_sessions_are_never_overwritten_and_silent_rooms_leave_nothing(tmp_path: Path) -> None:
    recorder = LiveRecorder(tmp_path)
    who = Participant("mock-1", "iv-7", "Morgan", "interviewer")
    for _ in range(2):
        recorder.handle(ParticipantAnnounce(who, (who,)))
        recorder.handle(AudioChunk("mock-1", "iv-7", ramp(480), RATE, 0.0))
        recorder.handle(TrackEnd("mock-1", "iv-7", 0.01))
        recorder.end_room("mock-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mock-1", "mock-1-2"]
    quiet = Participant("quiet", "a", "a", "participant")
    recorder.handle(ParticipantAnnounce(quiet, (quiet,)))
    assert (tmp_path / "quiet" / "session.json").exists()  # named while it runs
    assert recorder.end_room("quiet") is None
    assert not (tmp_path / "quiet").exists()


def test_source_through_bytewax_run_main(tmp_path: Path) -> None:
    iv = FakeParticipant("iv-7", "Morgan", {"role": "interviewer"})
    bot = FakeParticipant("helper-bot", kind=AGENT)
    iv_audio = ramp(10 * 9600)
    cand_audio = ramp(5 * 9600 + 480, 3)

    async def script(room: FakeRoom) -> None:
        await room.subscribed.wait()
        await feed(audio_pub(iv), frames_of(iv_audio, 200))
        cand = FakeParticipant("cand-3", "Riley", {"role": "candidate"})
        room.join(cand)
        pub = room.publish(cand)
        room.publish(cand, VIDEO)
        while not pub.subscribed:
            await asyncio.sleep(0)
        await feed(pub, frames_of(cand_audio, 10))
        room.leave(cand)
        room.end(rtc.DisconnectReason.ROOM_DELETED)

    sid = "RM_7fQx2LpW9a"
    factory = RoomFactory(lambda name: FakeRoom(name, [(iv, [AUDIO]), (bot, [AUDIO])], script, sid=sid))
    src = LiveKitSource(
        make_settings(),
        rooms=["mock-42"],
        discover=False,
        record_dir=str(tmp_path),
        room_factory=factory,
        stream_factory=StreamFactory(),
    )
    out: list[Any] = []
    flow = Dataflow("livekit_source_test")
    op.output("out", op.input("in", flow, src), TestingSink(out))
    run_main(flow)

    streams = check_stream_order(out)
    assert set(streams) == {f"mock-42/{sid}/iv-7", f"mock-42/{sid}/cand-3"}
    (iv_seg,) = streams[f"mock-42/{sid}/iv-7"]
    (cand_seg,) = streams[f"mock-42/{sid}/cand-3"]
    # the session is the room's sid, on everything; its start is the agent's join, on every participant
    started_at = iv_seg[0].participant.started_at
    assert started_at is not None and datetime.fromisoformat(started_at).tzinfo is not None
    for e in out:
        if isinstance(e, ParticipantAnnounce):
            assert {(p.session_id, p.started_at) for p in (e.participant, *e.roster)} == {(sid, started_at)}
        else:
            assert e.session_id == sid
    assert iv_seg[0].participant.role == "interviewer" and cand_seg[0].participant.role == "candidate"
    assert [p.identity for p in cand_seg[0].roster] == ["iv-7", "cand-3"]
    iv_chunks = [e for e in iv_seg if isinstance(e, AudioChunk)]
    cand_chunks = [e for e in cand_seg if isinstance(e, AudioChunk)]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in iv_chunks]), iv_audio)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in cand_chunks]), cand_audio)
    per_chunk = 48_000 * make_settings().chunk_ms // 1000  # CHUNK_MS of the 10 ms frames, then the rest
    whole, rest = divmod(len(cand_audio), per_chunk)
    assert [c.frames for c in cand_chunks] == [per_chunk] * whole + ([rest] if rest else [])
    # the candidate left before the room finished: told again then, so that its session can end
    assert [e.reason for e in iv_seg if isinstance(e, TrackEnd)] == ["room_finished"]
    assert [e.reason for e in cand_seg if isinstance(e, TrackEnd)] == ["unsubscribed", "room_finished"]
    session = json.loads((tmp_path / "mock-42" / "session.json").read_text())
    assert [p["identity"] for p in session["participants"]] == ["iv-7", "cand-3"]
    data, _ = sf.read(tmp_path / "mock-42" / "interviewer-iv-7.wav", dtype="int16", always_2d=True)
    np.testing.assert_array_equal(data, iv_audio)
