"""Captions for rooms another process joined: a publish-only connection per room, on FakeRoom (the SDK's
connect/stream_text protocol), behind the production transport and sink."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from livekit import api, rtc

from connectors.captions import (
    ATTR_FINAL,
    ATTR_SEGMENT_ID,
    ATTR_TRACK_ID,
    TOPIC,
    Caption,
    CaptionPublisher,
    RoomTextStreams,
)
from connectors.livekit.caption_rooms import CaptionRooms, audio_track_sid
from connectors.livekit.registry import JOINED, JoinedRoom
from flows.sinks import FlowSinks, add_room_captions
from quantcoach.aio import LoopThread
from quantcoach.records import Transcript
from stt.retry import Backoff
from tests.support.livekit_fakes import (
    AUDIO,
    KEY,
    SECRET,
    Clock,
    FakeParticipant,
    FakeRoom,
    RoomFactory,
    audio_pub,
    make_settings,
)

SETTINGS = make_settings(agent_identity="qc-agent", token_ttl_s=600)
ROOM, SID = "mock-42", "RM_mock-42"
EXACT = Backoff(initial_s=1.0, max_s=8.0, rng=lambda _lo, _hi: 1.0)  # 1, 2, 4 ... s, no jitter


def transcript(text: str, end: float, final: bool, n: int = 0, who: str = "cand-1", room: str = ROOM,
               session: str = SID) -> Transcript:  # fmt: skip
    return Transcript(room=room, participant=who, speaker="candidate", name="Riley",
                      utterance_id=f"{session}:{who}:{n}", text=text, is_final=final, start=1.0, end=end,
                      engine="whisper", session_id=session)  # fmt: skip


class _Keep:
    def send(self, room: str, session_id: str, caption: Caption) -> None:
        self.caption = caption


def caption(t: Transcript) -> Caption:
    """The caption the real publisher makes of ``t``."""
    made = CaptionPublisher(_Keep()).publish(t)
    assert made is not None
    return made


class Lookup:
    """RoomService ListRooms: the open rooms and their sids; records every look-up."""

    def __init__(self, rooms: dict[str, str] | None = None, fail: bool = False) -> None:
        self.rooms = {ROOM: SID} if rooms is None else rooms
        self.fail = fail
        self.calls: list[str] = []

    async def __call__(self, name: str) -> str | None:
        self.calls.append(name)
        if self.fail:
            raise ConnectionError("RoomService unreachable")
        return self.rooms.get(name)


def candidate_room(name: str) -> FakeRoom:
    return FakeRoom(name, present=[(FakeParticipant("cand-1", "Riley"), [AUDIO])])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def pools() -> Iterator[list[CaptionRooms]]:
    made: list[CaptionRooms] = []
    yield made
    for pool in made:
        pool.close()


def new_pool(pools: list[CaptionRooms], factory: Any, lookup: Any = None, **kw: Any) -> CaptionRooms:
    pool = CaptionRooms(SETTINGS, room_factory=factory, lookup=lookup or Lookup(), **kw)
    pools.append(pool)
    return pool


def test_a_room_of_another_process_gets_one_publish_only_connection(pools: list[CaptionRooms]) -> None:
    factory = RoomFactory(candidate_room)
    pool = new_pool(pools, factory)
    streams = RoomTextStreams({}.get, pool)  # this process joined no room
    pub = CaptionPublisher(streams)
    for n in range(2):
        for i, text in enumerate(["Each", "Each flip", "Each flip has"]):
            pub.publish(transcript(text, 10 * n + 1.0 + 0.3 * i, final=False, n=n))  # no track sid here
        pub.publish(transcript(f"Each flip has two outcomes ({n}).", 10 * n + 2.0, final=True, n=n))
    wait_until(lambda: pool.sent == 8, "8 captions")
    assert (pub.sent, pub.failed, pool.failed) == (8, 0, 0)
    assert len(factory.rooms) == 1 and pool.connects == 1
    room = factory.rooms[0]
    assert room.options.auto_subscribe is False
    claims = api.TokenVerifier(KEY, SECRET).verify(room.tokens[0])
    assert claims.identity.startswith("qc-agent-captions-") and claims.identity != "qc-agent"
    assert claims.kind == "agent"
    video = claims.video
    assert (video.room_join, video.room, video.hidden) == (True, ROOM, True)
    assert (video.can_publish_data, video.can_publish, video.can_subscribe) == (True, False, False)
    sent = room.local_participant.streams
    track = audio_pub(room.remote_participants["cand-1"]).sid
    assert {s["topic"] for s in sent} == {TOPIC}
    assert {s["sender_identity"] for s in sent} == {"cand-1"}
    assert {s["attributes"][ATTR_TRACK_ID] for s in sent} == {track}, "filled from the connection's view"
    for n in range(2):
        segment = [s for s in sent if s["attributes"][ATTR_SEGMENT_ID] == f"{SID}:cand-1:{n}"]
        assert [s["attributes"][ATTR_FINAL] for s in segment] == ["false"] * 3 + ["true"]
        assert segment[-1]["text"] == f"Each flip has two outcomes ({n})."
    streams.close()  # the last user: every connection closes
    assert room.disconnect_calls == 1 and not room.connected


def test_captions_sent_while_connecting_wait_and_go_out_in_order(pools: list[CaptionRooms]) -> None:
    gate = threading.Event()

    class SlowRoom(FakeRoom):
        async def connect(self, url: str, token: str, options: Any = None) -> None:
            while not gate.is_set():
                await asyncio.sleep(0.005)
            await super().connect(url, token, options)

    factory = RoomFactory(lambda name: SlowRoom(name))
    pool = new_pool(pools, factory)
    pub = CaptionPublisher(RoomTextStreams({}.get, pool))
    for n in range(40):
        pub.publish(transcript(f"turn {n}", 1.0 + n, final=True, n=n), track_sid="TR_given")
    wait_until(lambda: len(factory.rooms) == 1, "the connect")
    time.sleep(0.05)
    assert pool.sent == 0 and factory.rooms[0].local_participant.streams == []
    gate.set()
    wait_until(lambda: pool.sent == 40, "every waiting caption")
    sent = factory.rooms[0].local_participant.streams
    assert [s["text"] for s in sent] == [f"turn {n}" for n in range(40)]
    assert {s["attributes"][ATTR_TRACK_ID] for s in sent} == {"TR_given"}, "a given sid is kept"
    assert len(factory.rooms) == 1 and pool.connects == 1 and pool.failed == 0


def test_a_failed_connect_is_counted_and_retried_after_its_backoff(
    pools: list[CaptionRooms], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    room = candidate_room(ROOM)
    room._fail_connects = 1  # the first connect fails, like FakeRoom(fail_connects=1)
    clock = Clock()
    pool = new_pool(pools, RoomFactory(lambda _name: room), clock=clock, backoff=EXACT)
    pub = CaptionPublisher(RoomTextStreams({}.get, pool))
    pub.publish(transcript("One.", 2.0, final=True, n=0))
    wait_until(lambda: pool.failed == 1, "the failed caption")
    assert (pool.connect_failures, pool.sent, len(room.tokens)) == (1, 0, 1)
    # the SDK's error quoted the token in its URL: the log says why, never the token
    assert "<token>" in caplog.text and room.tokens[0] not in caplog.text
    clock.t += 0.5  # within the 1 s backoff: dropped at once, no new connect
    pub.publish(transcript("Two.", 3.0, final=True, n=1))
    wait_until(lambda: pool.failed == 2, "the caption within the backoff")
    assert len(room.tokens) == 1
    clock.t += 1.0
    pub.publish(transcript("Three.", 4.0, final=True, n=2))
    wait_until(lambda: pool.sent == 1, "the caption after the backoff")
    assert len(room.tokens) == 2 and pool.connects == 1
    assert [s["text"] for s in room.local_participant.streams] == ["Three."]
    assert (pub.sent, pub.failed) == (3, 0), "nothing ever raised into the publisher"


def test_an_unreachable_room_service_is_a_failed_connect(pools: list[CaptionRooms]) -> None:
    factory = RoomFactory(candidate_room)
    pool = new_pool(pools, factory, Lookup(fail=True), backoff=EXACT)
    pool.send(ROOM, SID, caption(transcript("x", 1.0, True)))
    wait_until(lambda: pool.connect_failures == 1, "the failed look-up")
    assert factory.rooms == [] and pool.failed == 1


def test_a_finished_room_or_another_session_is_never_joined(pools: list[CaptionRooms]) -> None:
    """LiveKit creates a room on join: a late caption must not bring a finished room back."""
    factory = RoomFactory(candidate_room)
    lookup = Lookup({ROOM: "RM_new-session"})
    pool = new_pool(pools, factory, lookup)
    pub = CaptionPublisher(RoomTextStreams({}.get, pool))
    pub.publish(transcript("late final", 2.0, final=True))  # session RM_mock-42 is over
    pub.publish(transcript("gone", 2.0, final=True, n=1, room="gone-room"))  # not listed at all
    wait_until(lambda: pool.connect_failures == 2, "both refused")
    assert factory.rooms == [] and pool.failed == 2 and sorted(lookup.calls) == ["gone-room", ROOM]


def test_idle_connections_close_and_a_later_caption_opens_one_again(pools: list[CaptionRooms]) -> None:
    clock = Clock()
    factory = RoomFactory(candidate_room)
    pool = new_pool(pools, factory, clock=clock, idle_s=120.0)
    pool.send(ROOM, SID, caption(transcript("Hi.", 1.0, True)))
    wait_until(lambda: pool.sent == 1, "the first caption")
    clock.t += 60.0
    assert pool.sweep() == 0 and pool.open_rooms() == [ROOM]
    clock.t += 61.0
    assert pool.sweep() == 1 and pool.open_rooms() == []
    assert factory.rooms[0].disconnect_calls == 1
    pool.send(ROOM, SID, caption(transcript("Again.", 200.0, True, n=1)))
    wait_until(lambda: pool.sent == 2, "the caption after the idle close")
    assert len(factory.rooms) == 2 and pool.open_rooms() == [ROOM]


def test_a_process_holds_at_most_max_rooms_the_least_recently_used_goes(
    pools: list[CaptionRooms],
) -> None:
    factory = RoomFactory(candidate_room)
    lookup = Lookup({f"room-{i}": f"RM_{i}" for i in range(3)})
    pool = new_pool(pools, factory, lookup, max_rooms=2)
    pub = CaptionPublisher(RoomTextStreams({}.get, pool))
    for i in range(3):
        pub.publish(transcript(f"in {i}", 1.0, final=True, n=i, room=f"room-{i}", session=f"RM_{i}"))
        wait_until(lambda i=i: pool.sent == i + 1, f"room {i}'s caption")
    wait_until(lambda: factory.rooms[0].disconnect_calls == 1, "the oldest room closed")
    assert sorted(pool.open_rooms()) == ["room-1", "room-2"]


def test_the_workers_of_a_process_share_one_connection_per_room(pools: list[CaptionRooms]) -> None:
    factory = RoomFactory(candidate_room)
    pool = new_pool(pools, factory)
    a, b = RoomTextStreams({}.get, pool), RoomTextStreams({}.get, pool)  # two sink partitions
    CaptionPublisher(a).publish(transcript("from a", 1.0, final=True, n=0))
    CaptionPublisher(b).publish(transcript("from b", 2.0, final=True, n=1, who="iv-1"))
    wait_until(lambda: pool.sent == 2, "both captions")
    assert len(factory.rooms) == 1
    a.close()
    assert pool.open_rooms() == [ROOM], "still used by the other partition"
    b.close()
    assert factory.rooms[0].disconnect_calls == 1


def test_the_transcribed_track_is_the_microphone_first_else_any_audio() -> None:
    def pub(sid: str, kind: int, source: int) -> Any:
        return SimpleNamespace(sid=sid, kind=kind, source=source)

    screen, mic = rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO, rtc.TrackSource.SOURCE_MICROPHONE
    video = pub("TR_v", rtc.TrackKind.KIND_VIDEO, rtc.TrackSource.SOURCE_CAMERA)
    both = {"TR_v": video, "TR_s": pub("TR_s", AUDIO, screen), "TR_m": pub("TR_m", AUDIO, mic)}
    people = {
        "a": SimpleNamespace(track_publications=both),
        "b": SimpleNamespace(track_publications={"TR_v": video, "TR_s": pub("TR_s", AUDIO, screen)}),
        "c": SimpleNamespace(track_publications={"TR_v": video}),
    }
    room = SimpleNamespace(remote_participants=people)
    assert [audio_track_sid(room, who) for who in ("a", "b", "c", "nobody")] == ["TR_m", "TR_s", "", ""]


# --- the production wiring (flows.sinks.add_room_captions) ------------------------------------------------
def _partition(factory: RoomFactory, lookup: Lookup) -> Any:
    sinks = FlowSinks()
    add_room_captions(sinks, SETTINGS, room_factory=factory, lookup=lookup)
    (sink,) = sinks.captions
    return sink.build("captions", 0, 1)


def test_the_sink_sends_a_room_of_another_process_through_its_own_connection() -> None:
    factory = RoomFactory(candidate_room)
    part = _partition(factory, Lookup())
    part.write_batch([transcript("Hello", 1.0, final=False), transcript("Hello there.", 1.6, final=True)])
    wait_until(lambda: len(factory.rooms) == 1 and len(factory.rooms[0].local_participant.streams) == 2, "2")
    room = factory.rooms[0]
    track = audio_pub(room.remote_participants["cand-1"]).sid
    assert [s["attributes"][ATTR_TRACK_ID] for s in room.local_participant.streams] == [track, track]
    part.close()  # the sink's close closes the connection
    assert room.disconnect_calls == 1


def test_a_room_joined_in_this_process_uses_the_agents_connection_and_opens_nothing() -> None:
    factory, lookup = RoomFactory(candidate_room), Lookup()
    joined = FakeRoom(ROOM)
    loop = LoopThread("test-joined-room")
    handler = SimpleNamespace(track_sid=lambda identity: {"cand-1": "TR_joined"}.get(identity, ""))
    JOINED.add(ROOM, JoinedRoom(joined, loop.loop, handler))
    try:
        part = _partition(factory, lookup)
        part.write_batch([transcript("Hi", 1.0, final=False), transcript("Hi there.", 1.5, final=True)])
        wait_until(lambda: len(joined.local_participant.streams) == 2, "the joined room's captions")
        part.close()
    finally:
        JOINED.remove(ROOM, joined)
        loop.stop()
    sent = joined.local_participant.streams
    assert [s["attributes"][ATTR_TRACK_ID] for s in sent] == ["TR_joined", "TR_joined"]
    assert [s["attributes"][ATTR_FINAL] for s in sent] == ["false", "true"]
    assert factory.rooms == [] and lookup.calls == []


def test_a_lost_connection_or_a_new_session_connects_again(pools: list[CaptionRooms]) -> None:
    factory = RoomFactory(candidate_room)
    lookup = Lookup()
    pool = new_pool(pools, factory, lookup)
    pool.send(ROOM, SID, caption(transcript("One.", 1.0, True)))
    wait_until(lambda: pool.sent == 1, "the first caption")
    first = factory.rooms[0]
    pool._loop().loop.call_soon_threadsafe(first.end, rtc.DisconnectReason.SIGNAL_CLOSE)  # the SDK's thread
    wait_until(lambda: pool.open_rooms() == [], "the lost connection")
    pool.send(ROOM, SID, caption(transcript("Two.", 2.0, True, n=1)))
    wait_until(lambda: pool.sent == 2, "the caption after the loss")
    second = factory.rooms[1]
    lookup.rooms[ROOM] = "RM_again"  # the room was created again under the same name
    pool.send(ROOM, "RM_again", caption(transcript("Three.", 1.0, True, session="RM_again")))
    wait_until(lambda: pool.sent == 3, "the new session's caption")
    wait_until(lambda: second.disconnect_calls == 1, "the old session's connection closed")
    assert len(factory.rooms) == 3
    texts = [[s["text"] for s in r.local_participant.streams] for r in factory.rooms]
    assert texts == [["One."], ["Two."], ["Three."]]
