"""A room deleted and created again under its name while the agent was away is another session.

The agent loses its connection; when it rejoins, the server's sid is not the session's: the old session
ends (every participant's track as ``room_finished``, so its windows and metrics close) and the new room
is joined as a new session, with its own sid, roster and media time.
"""

from __future__ import annotations

import queue
from typing import Any

import pytest
from livekit import rtc

from connectors.livekit.source import LiveKitSource
from quantcoach.records import ParticipantAnnounce, TrackEnd
from stt.retry import Backoff
from tests.support.livekit_fakes import (
    AUDIO,
    Clock,
    FakeParticipant,
    FakeRoom,
    RoomFactory,
    StreamFactory,
    make_settings,
)
from tests.unit.test_livekit_source import check_stream_order, pump, run_room


def test_a_room_recreated_while_the_agent_was_away_ends_the_old_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("connectors.livekit.supervisor.JOIN_BACKOFF", Backoff(rng=lambda _lo, _hi: 0.0))
    clock = Clock()

    async def drop(room: FakeRoom) -> None:
        await room.subscribed.wait()
        clock.t += 3.0
        room.end(rtc.DisconnectReason.SIGNAL_CLOSE)

    def make(name: str) -> FakeRoom:
        first = not factory.rooms
        who = FakeParticipant("cand-1") if first else FakeParticipant("iv-2")
        return FakeRoom(name, [(who, [AUDIO])], drop if first else None, sid="RM_old" if first else "RM_new")

    factory = RoomFactory(make)
    got = run_room(factory, lambda out: sum(isinstance(e, ParticipantAnnounce) for e in out) == 2, clock)
    # the second connection was only used to learn the room is another one: a third joins it afresh
    assert len(factory.rooms) == 3 and factory.rooms[1].disconnect_calls >= 1
    streams = check_stream_order(got)
    assert set(streams) == {"mock-1/RM_old/cand-1", "mock-1/RM_new/iv-2"}
    old_ends = [e for e in got if isinstance(e, TrackEnd) and e.session_id == "RM_old"]
    assert [e.reason for e in old_ends] == ["disconnected", "room_finished"]
    (new_seg,) = streams["mock-1/RM_new/iv-2"]
    announce: Any = new_seg[0]
    assert announce.roster == (announce.participant,)  # the old session's roster is not carried
    assert announce.participant.offset_s == 0.0  # its own media time
    assert new_seg[-1].reason == "shutdown"


def test_a_room_started_while_its_name_is_still_being_left_is_joined_after() -> None:
    """Control events only (no RoomService polling): room_finished and, at once, room_started for the
    same name (a reused name). The old session is left first; then the new room is joined."""
    made: list[str] = []

    def make(name: str) -> FakeRoom:
        made.append(name)
        return FakeRoom(name, [(FakeParticipant("cand-1"), [AUDIO])], sid=f"RM_{len(made)}")

    factory, control = RoomFactory(make), queue.Queue()
    src = LiveKitSource(
        make_settings(),
        discover=False,
        room_events=control,
        room_factory=factory,
        stream_factory=StreamFactory(),
    )
    part = src.build("in", 0, 1)
    try:
        control.put({"event": "room_started", "room": "mock-7"})
        got = pump([part], lambda out: any(isinstance(e, ParticipantAnnounce) for e in out))
        control.put({"event": "room_finished", "room": "mock-7", "sid": "RM_1"})
        control.put({"event": "room_started", "room": "mock-7"})  # before the old session is left
        pump([part], lambda out: sum(isinstance(e, ParticipantAnnounce) for e in out) == 2, got)
        control.put({"event": "room_finished", "room": "mock-7", "sid": "RM_2"})
        control.put(None)
        pump([part], lambda _: False, got)
    finally:
        part.close()
    assert made == ["mock-7", "mock-7"]
    streams = check_stream_order(got)
    assert set(streams) == {"mock-7/RM_1/cand-1", "mock-7/RM_2/cand-1"}
    for key in streams:
        assert streams[key][-1][-1].reason == "room_finished"
