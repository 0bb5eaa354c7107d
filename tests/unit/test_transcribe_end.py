"""How a participant's stream says it ended: its progress marks' ``ended`` reason."""

from __future__ import annotations

import math
from dataclasses import replace

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


class SayingStream(BrokenStream):
    """Hears one final per push: the chunk's own times."""

    def __init__(self) -> None:
        self.events: list = []

    def push_audio(self, pcm: np.ndarray) -> None:
        from stt.protocol import SttEvent

        self.events.append(SttEvent("final", "words", 0.0, len(pcm) / 16_000))

    def poll(self) -> list:
        out, self.events = self.events, []
        return out

    def settled(self) -> float:
        return math.inf  # every final is out at once: nothing to push again after a resume

    @property
    def done(self) -> bool:
        return False


class SayingEngine(BrokenEngine):
    name = "saying"

    def stream(self, key: str) -> SayingStream:
        return SayingStream()


def finals_of(logic: TranscribeLogic, start: float, n: int) -> list[str]:
    ids = []
    for i in range(n):
        chunk = AudioChunk("r", "cand-1", np.zeros((800, 1), np.int16), 16_000, start + i * 0.05, "S")
        out, _ = logic.on_item(chunk)
        ids += [t.utterance_id for t in out if getattr(t, "is_final", False)]
    return ids


def test_a_restarted_flow_never_reuses_the_utterance_ids_it_wrote() -> None:
    first = TranscribeLogic(SayingEngine())
    p = Participant("r", "cand-1", "Riley", "candidate", session_id="S")
    first.on_item(ParticipantAnnounce(p, (p,)))
    before = finals_of(first, 0.0, 40)  # 40 finals in 2 s: more than one per 100 ms
    assert before[:2] == ["S:cand-1:0", "S:cand-1:1"]  # a track from the session's start counts from 0
    # the process dies (no recovery); the new one joins the same session 2.0 s into it
    second = TranscribeLogic(SayingEngine())
    late = Participant("r", "cand-1", "Riley", "candidate", offset_s=2.0, session_id="S")
    second.on_item(ParticipantAnnounce(late, (late,)))
    after = finals_of(second, 2.0, 40)
    assert after[0] == "S:cand-1:2000"
    assert not set(before) & set(after)
    # a rejoin within the same run goes on counting; a recovered step goes on from its snapshot
    second.on_item(ParticipantAnnounce(replace(late, offset_s=9.0), (late,)))
    assert finals_of(second, 9.0, 1) == ["S:cand-1:2040"]
    resumed = TranscribeLogic(SayingEngine(), second.snapshot())
    resumed.on_item(ParticipantAnnounce(late, (late,)))
    assert finals_of(resumed, 9.1, 1) == ["S:cand-1:2041"]
