"""How a participant's stream says it ended: its progress marks' ``ended`` reason."""

from __future__ import annotations

import math

import numpy as np

from operators.transcribe import TranscribeLogic
from quantcoach.records import (
    STT_FAILED,
    AudioChunk,
    Participant,
    ParticipantAnnounce,
    ProgressMark,
    TrackEnd,
)
from stt.protocol import SttError


class BrokenStream:
    def push_audio(self, pcm: np.ndarray) -> None:
        raise SttError("key rejected")

    def end_input(self) -> None: ...
    def poll(self) -> list:
        return []

    def settled(self) -> float:
        return 0.0

    @property
    def done(self) -> bool:
        return True

    def close(self) -> None: ...


class BrokenEngine:
    name = "broken"

    def stream(self, key: str) -> BrokenStream:
        return BrokenStream()

    def close(self) -> None: ...


def marks(out: list) -> list[ProgressMark]:
    return [m for m in out if isinstance(m, ProgressMark)]


def test_stt_failure_then_the_room_finishing_is_said_once_each() -> None:
    p = Participant("r", "cand-1", "Riley", "candidate", session_id="S")
    logic = TranscribeLogic(BrokenEngine())
    logic.on_item(ParticipantAnnounce(p, (p,)))
    out, _ = logic.on_item(AudioChunk("r", "cand-1", np.zeros((3200, 1), np.int16), 16_000, 0.0, "S"))
    (failed,) = marks(out)
    assert math.isinf(failed.settled) and failed.ended == STT_FAILED
    out, _ = logic.on_item(TrackEnd("r", "cand-1", 5.0, "room_finished", "S"))
    (finished,) = marks(out)
    assert finished.ended == "room_finished"  # the session can end: the room is over
