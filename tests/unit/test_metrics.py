"""Interview metrics: each definition (operators/metrics.py, DESIGN.md) on hand-built transcripts."""

from __future__ import annotations

import json

import pytest

from operators.metrics import METRICS_SCHEMA, SessionMetrics

IV = ("iv-1", "Morgan", "interviewer")
CAND = ("cand-1", "Riley", "candidate")


def run(finals: list[tuple[tuple[str, str, str], str, float, float]], media_s: float | None = None) -> dict:
    m = SessionMetrics()
    for who in (IV, CAND):
        m.meet(*who)
    for who, text, start, end in finals:
        m.add(*who, text, start, end)
    return m.record("room-1", "S1", final=media_s is not None, media_s=media_s, emitted_at="t")


def by_role(record: dict) -> dict[str, dict]:
    return {s["role"]: s for s in record["speakers"]}


def test_turns_talk_and_latency() -> None:
    rec = run(
        [
            (IV, "Hello. Ready?", 0.5, 2.0),
            (IV, "What is two plus two?", 2.5, 4.0),  # same turn: consecutive finals of one speaker
            (CAND, "Um, it is four.", 5.0, 6.5),  # answers 1.0 s after the turn's end
            (IV, "Good. And three times three?", 8.5, 10.0),  # 2.0 s
            (CAND, "Nine, you know.", 13.0, 14.0),  # 3.0 s
        ],
        media_s=20.0,
    )
    assert rec["schema"] == METRICS_SCHEMA and rec["final"] is True
    iv, cand = by_role(rec)["interviewer"], by_role(rec)["candidate"]
    assert iv["turns"] == 2 and cand["turns"] == 2
    assert iv["talk_s"] == pytest.approx(1.5 + 1.5 + 1.5)
    assert iv["longest_turn_s"] == pytest.approx(3.5)  # 0.5 .. 4.0
    assert iv["questions"] == 3 and cand["questions"] == 0
    assert cand["fillers"] == 2  # "um", "you know"
    assert cand["response_latency_s"] == pytest.approx(2.0)  # median of 1.0, 3.0
    assert iv["response_latency_s"] == pytest.approx(2.0)  # one follow-up turn: 8.5 - 6.5
    assert iv["words"] == 2 + 5 + 5 and cand["words"] == 4 + 3
    assert cand["wpm"] == pytest.approx(7 / (2.5 / 60), abs=0.1)
    assert rec["speaker_changes"] == 3 and rec["overlaps"] == 0
    # longest gap nobody covers: 14.0 .. 20.0 (the session's end), longer than 10.0 .. 13.0
    assert rec["longest_silence_s"] == pytest.approx(6.0)
    json.dumps(rec)


def test_interruption_counts_as_overlap_with_negative_latency() -> None:
    rec = run([(IV, "So the price of the option is", 0.0, 4.0), (CAND, "Sorry, which option?", 3.0, 5.0)])
    cand = by_role(rec)["candidate"]
    assert cand["interruptions"] == 1 and rec["overlaps"] == 1
    assert cand["response_latency_s"] == pytest.approx(-1.0)
    assert rec["final"] is False and rec["media_s"] == pytest.approx(5.0)


def test_overlapping_utterances_of_one_speaker_are_not_counted_twice() -> None:
    rec = run([(IV, "a b", 1.0, 3.0), (IV, "c", 2.0, 4.0)])
    iv = by_role(rec)["interviewer"]
    assert iv["talk_s"] == pytest.approx(3.0) and iv["turns"] == 1
    assert rec["longest_silence_s"] == pytest.approx(1.0)  # 0 .. 1.0 before anyone spoke


def test_a_silent_participant_is_listed_with_nothing() -> None:
    rec = run([(IV, "Hello?", 0.0, 1.0)], media_s=30.0)
    cand = by_role(rec)["candidate"]
    assert cand == {**cand, "talk_s": 0.0, "turns": 0, "words": 0, "wpm": None, "response_latency_s": None}
    assert rec["longest_silence_s"] == pytest.approx(29.0)


def test_fillers_are_whole_words_only() -> None:
    rec = run([(CAND, "Umbrella, uh, hmm. I mean the ermine is fine, er.", 0.0, 3.0)])
    assert by_role(rec)["candidate"]["fillers"] == 4  # uh, hmm, i mean, er; not umbrella or ermine


def test_snapshot_restores_the_same_figures() -> None:
    m = SessionMetrics()
    m.add(*IV, "Question one?", 0.0, 2.0)
    m.add(*CAND, "Answer.", 3.0, 4.0)
    again = SessionMetrics.restore(json.loads(json.dumps(m.snapshot())))
    for target in (m, again):
        target.add(*IV, "Next?", 6.0, 7.0)
    records = [target.record("r", "s", final=True, emitted_at="t") for target in (m, again)]
    assert records[0] == records[1]
