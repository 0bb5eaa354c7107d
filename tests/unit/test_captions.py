"""Captions: what goes to the room's text streams, how often, and that failures never stop anything."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.captions import (
    ATTR_FINAL,
    ATTR_SEGMENT_ID,
    ATTR_TRACK_ID,
    TOPIC,
    CaptionPublisher,
    JsonlCaptions,
    RoomTextStreams,
)
from quantcoach.records import Transcript
from tests.support.livekit_fakes import FakeLocalParticipant


def transcript(text: str, end: float, final: bool, n: int = 0, who: str = "cand-1") -> Transcript:
    return Transcript(room="mock-42", participant=who, speaker="candidate", name="Riley",
                      utterance_id=f"S1:{who}:{n}", text=text, is_final=final, start=1.0, end=end,
                      engine="whisper", session_id="S1")  # fmt: skip


class FakeRoom:
    """Just the room's local participant, whose ``stream_text`` records each finished stream."""

    def __init__(self, fail: bool = False) -> None:
        self.local_participant = FakeLocalParticipant()
        self.local_participant.fail = fail


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def settle(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(5)


def test_interims_then_one_final_per_segment_with_livekit_attributes(loop: asyncio.AbstractEventLoop) -> None:
    room = FakeRoom()
    pub = CaptionPublisher(RoomTextStreams({"mock-42": (room, loop)}.get))
    for i, text in enumerate(["Sure", "Sure. Each", "Sure. Each flip", "Sure. Each flip has"]):
        pub.publish(transcript(text, 1.0 + 0.1 * (i + 1), final=False), track_sid="TR_abc")
    pub.publish(transcript("Sure. Each flip has two outcomes.", 2.0, final=True), track_sid="TR_abc")
    pub.publish(transcript("late interim", 2.1, final=False), track_sid="TR_abc")  # after its final
    settle(loop)
    streams = room.local_participant.streams
    assert {s["topic"] for s in streams} == {TOPIC}
    assert {s["sender_identity"] for s in streams} == {"cand-1"}
    assert {s["attributes"][ATTR_SEGMENT_ID] for s in streams} == {"S1:cand-1:0"}
    assert {s["attributes"][ATTR_TRACK_ID] for s in streams} == {"TR_abc"}
    finals = [s["attributes"][ATTR_FINAL] for s in streams]
    assert finals[-1] == "true" and set(finals[:-1]) == {"false"} and len(finals) >= 2
    # 4 per second at most: of interims 0.1 s apart (media 1.1 .. 1.4 s), 1.1 and 1.4 go
    texts = [s["text"] for s in streams]
    assert texts == ["Sure", "Sure. Each flip has", "Sure. Each flip has two outcomes."]
    assert pub.skipped == 2


def test_a_failing_room_is_counted_and_the_caller_goes_on(loop: asyncio.AbstractEventLoop) -> None:
    streams = RoomTextStreams({"mock-42": (FakeRoom(fail=True), loop)}.get)
    pub = CaptionPublisher(streams)
    pub.publish(transcript("One.", 2.0, final=True))
    pub.publish(transcript("Two.", 3.0, final=True, n=1))
    settle(loop)
    assert streams.failed == 2 and streams.sent == 0
    missing = CaptionPublisher(RoomTextStreams({}.get))  # not (or no longer) in the room
    missing.publish(transcript("Three.", 4.0, final=True, n=2))
    assert missing.failed == 1


def test_jsonl_transport_writes_the_same_messages(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    room = FakeRoom()
    jsonl = JsonlCaptions(lambda name, session_id: tmp_path / name / session_id / "captions.jsonl")
    live = CaptionPublisher(RoomTextStreams({"mock-42": (room, loop)}.get))
    offline = CaptionPublisher(jsonl)
    items = [transcript("Hi", 1.2, False), transcript("Hi there.", 1.5, True)]
    items.append(transcript("Next", 3.0, False, n=1))
    for t in items:
        live.publish(t, "TR_1")
        offline.publish(t, "TR_1")
    settle(loop)
    jsonl.close()
    lines = [json.loads(x) for x in (tmp_path / "mock-42" / "S1" / "captions.jsonl").read_text().splitlines()]
    sent = room.local_participant.streams
    assert [{k: v for k, v in line.items() if k != "media_s"} for line in lines] == sent
    assert [line["media_s"] for line in lines] == [1.2, 1.5, 3.0]
