"""Media time zero of a live session is the room's creation on the server, so that it survives restarts.

A flow restarted in the middle of a session (or an agent that joins late) must write media times that
continue the ones already written for that room sid, not start again at 0.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from connectors.livekit.supervisor import MAX_ROOM_AGE_S, _media_zero
from quantcoach.records import ParticipantAnnounce
from tests.support.livekit_fakes import (
    AUDIO,
    Clock,
    FakeParticipant,
    FakeRoom,
    RoomFactory,
)
from tests.unit.test_livekit_source import run_room

WALL = 1_800_000_000.0


def at(seconds_ago: float) -> SimpleNamespace:
    return SimpleNamespace(creation_time=datetime.fromtimestamp(WALL - seconds_ago, UTC))


def test_media_zero_is_the_rooms_creation_on_the_callers_clock() -> None:
    t0, started = _media_zero(at(90.0), now=500.0, wall=lambda: WALL)
    assert t0 == pytest.approx(410.0)
    assert started == datetime.fromtimestamp(WALL - 90, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@pytest.mark.parametrize(
    "room",
    [
        SimpleNamespace(),  # an SDK without the property
        SimpleNamespace(creation_time=datetime.fromtimestamp(0, UTC)),  # the server gave none
        at(-5.0),  # in the future: another clock
        at(MAX_ROOM_AGE_S + 1),  # too old to be this session's start
        SimpleNamespace(creation_time="yesterday"),
    ],
)
def test_without_a_usable_creation_time_media_zero_is_the_join(room: Any) -> None:
    assert _media_zero(room, now=500.0, wall=lambda: WALL) == (500.0, None)


class CreatedRoom(FakeRoom):
    """A FakeRoom whose server says when it was created, as ``rtc.Room.creation_time`` does."""

    def __init__(self, name: str, created: datetime, **kw: Any) -> None:
        super().__init__(name, [(FakeParticipant("cand-1"), [AUDIO])], sid="RM_same", **kw)
        self.creation_time = created


def first_announce(created: datetime, clock: Clock) -> Any:
    factory = RoomFactory(lambda name: CreatedRoom(name, created))
    got = run_room(factory, lambda out: any(isinstance(e, ParticipantAnnounce) for e in out), clock)
    return next(e.participant for e in got if isinstance(e, ParticipantAnnounce))


def test_a_restarted_flow_continues_the_sessions_media_time() -> None:
    created = datetime.now(UTC) - timedelta(seconds=90)
    before = first_announce(created, Clock(1000.0))
    began = time.time()
    after = first_announce(created, Clock(7.0))  # another process: its own monotonic clock
    elapsed = time.time() - began
    assert before.session_id == after.session_id == "RM_same"
    assert before.offset_s == pytest.approx(90.0, abs=2.0)  # seconds since the room's creation
    assert after.offset_s == pytest.approx(before.offset_s, abs=elapsed + 2.0)
    assert before.started_at == after.started_at == created.isoformat(timespec="milliseconds")[:-6] + "Z"
