"""Window rules (DESIGN.md "Windows") as pure functions, and the room step's media-order restoration."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from operators.windowing import RoomWindowing, WindowBuffer, WindowRules, add_segment, close_window
from quantcoach.records import Participant, ParticipantAnnounce, ProgressMark, Segment, Transcript

RULES = WindowRules(window_s=20.0, overlap_s=10.0, min_transcripts=2)


def seg(speaker: str, start: float, end: float, text: str = "") -> Segment:
    return Segment(speaker[:2], speaker, speaker.title(), text or f"{speaker}@{start}", start, end)


def feed(segs: list[Segment], rules: WindowRules = RULES) -> tuple[list, WindowBuffer]:
    buf = WindowBuffer("r")
    out = []
    for s in segs:
        out.extend(add_segment(buf, s, rules))
    return out, buf


def test_speaker_change_closes_after_min_transcripts() -> None:
    out, buf = feed([seg("interviewer", 0, 2), seg("interviewer", 3, 5), seg("candidate", 6, 8)])
    assert [w.reason for w in out] == ["speaker_change"]
    assert [s.start for s in out[0].segments] == [0, 3]
    assert (out[0].start, out[0].end, out[0].window_id, out[0].seq) == (0, 5, "r:0", 0)
    # the arriving transcript is the next window's first new one; the closed window is its context
    assert [s.start for s in buf.new] == [6]
    assert [s.start for s in buf.context] == [0, 3]


def test_speaker_change_on_the_very_first_transcripts_waits_for_min_transcripts() -> None:
    # one interviewer transcript, then the candidate: below min_transcripts, so no window yet
    out, buf = feed([seg("interviewer", 0, 2), seg("candidate", 3, 4)])
    assert out == []
    assert [s.speaker for s in buf.new] == ["interviewer", "candidate"]
    # a third speaker change now closes (two new transcripts buffered)
    out, _ = feed([seg("interviewer", 0, 2), seg("candidate", 3, 4), seg("interviewer", 5, 6)])
    assert [w.reason for w in out] == ["speaker_change"]
    assert len(out[0].segments) == 2


def test_min_transcripts_one_closes_on_every_change() -> None:
    rules = WindowRules(20, 10, 1)
    out, _ = feed([seg("interviewer", 0, 1), seg("candidate", 2, 3), seg("interviewer", 4, 5)], rules)
    assert [w.reason for w in out] == ["speaker_change", "speaker_change"]


def test_length_closes_when_new_content_spans_window_s() -> None:
    segs = [seg("candidate", t, t + 4) for t in range(0, 50, 5)]
    out, _ = feed(segs)
    assert [w.reason for w in out] == ["length", "length"]
    # first window: new content from 0 to 24 (>= 20 s after adding the transcript at 20)
    assert out[0].start == 0 and out[0].end == 24
    assert [s.start for s in out[0].segments] == [0, 5, 10, 15, 20]


def test_single_long_transcript_closes_alone() -> None:
    out, buf = feed([seg("candidate", 0, 25)])
    assert [w.reason for w in out] == ["length"]
    assert buf.new == []


def test_overlap_keeps_segments_ending_within_last_overlap_s_as_context() -> None:
    segs = [
        seg("candidate", 0, 4),
        seg("candidate", 5, 9),
        seg("candidate", 12, 16),
        seg("candidate", 18, 21),
    ]
    out, buf = feed(segs)
    assert [w.end for w in out] == [21]
    # window ends at 21; segments ending after 11 are context: (12-16) and (18-21); (5-9) ends at 9 < 11
    assert [(s.start, s.end) for s in buf.context] == [(12, 16), (18, 21)]
    out2 = []
    for s in [seg("candidate", 22, 30), seg("candidate", 31, 43)]:
        out2.extend(add_segment(buf, s, RULES))
    assert out2[0].seq == 1 and out2[0].window_id == "r:1"
    assert [s.start for s in out2[0].segments] == [12, 18, 22, 31]  # context first, then new
    assert out2[0].start == 12  # a window starts at its first segment, context included


def test_zero_overlap_carries_no_context() -> None:
    rules = WindowRules(10, 0, 2)
    out, buf = feed([seg("candidate", 0, 5), seg("candidate", 6, 11)], rules)
    assert len(out) == 1 and buf.context == []


def test_end_closes_remaining_and_nothing_when_empty() -> None:
    _, buf = feed([seg("interviewer", 0, 2)])
    w = close_window(buf, "end", RULES)
    assert w is not None and w.reason == "end" and len(w.segments) == 1
    assert close_window(buf, "end", RULES) is None  # no new transcripts: nothing added


def test_window_record_text_lines() -> None:
    out, _ = feed(
        [seg("interviewer", 0, 1, "Hello."), seg("interviewer", 1, 2, "Ready?"), seg("candidate", 3, 4)]
    )
    rec = out[0].to_record()
    assert rec["text"] == "Interviewer: Hello.\nInterviewer: Ready?"
    assert rec["schema"] == "quantcoach.window/1" and rec["reason"] == "speaker_change"


# --- the room step: media order from marks ---------------------------------------------------------------
ROSTER = (Participant("r", "iv", "Morgan", "interviewer"), Participant("r", "cand", "Riley", "candidate"))


def tr(p: Participant, n: int, start: float, end: float) -> Transcript:
    return Transcript(
        "r", p.identity, p.role, p.name, f"r:{p.identity}:{n}", f"{p.identity} {n}", True, start, end, "t"
    )


def script() -> list[list]:
    """Per participant: its items in its own order (transcripts, then marks promising no earlier start)."""
    iv, cand = ROSTER
    per = {iv.identity: [], cand.identity: []}
    t = 0.0
    for i in range(12):
        p = ROSTER[(i // 2) % 2]
        per[p.identity].append(tr(p, i, t, t + 3))
        per[p.identity].append(ProgressMark("r", p.identity, t + 3, t + 3))
        t += 3.5
    for p in ROSTER:
        per[p.identity].append(ProgressMark("r", p.identity, math.inf, math.inf))
    return list(per.values())


def run_room(order: list) -> list[dict]:
    logic = RoomWindowing(RULES)
    out = []
    for item in [ParticipantAnnounce(ROSTER[0], ROSTER), ParticipantAnnounce(ROSTER[1], ROSTER), *order]:
        windows, _ = logic.on_item(item)
        out.extend(windows)
    return [{k: v for k, v in w.to_record().items() if k != "emitted_at"} for w in out]


def interleave(streams: list[list], rng: random.Random) -> list:
    streams = [list(s) for s in streams]
    out = []
    while any(streams):
        s = rng.choice([s for s in streams if s])
        out.append(s.pop(0))
    return out


def test_windows_do_not_depend_on_arrival_order() -> None:
    streams = script()
    reference = run_room([x for s in streams for x in s])  # one participant entirely before the other
    assert [w["reason"] for w in reference][-1] == "end"
    for seed in range(20):
        assert run_room(interleave(streams, random.Random(seed))) == reference


def test_late_track_holds_the_room_back_from_its_start() -> None:
    iv, cand = ROSTER[0], Participant("r", "cand", "Riley", "candidate", offset_s=30.0)
    logic = RoomWindowing(WindowRules(5, 0, 1))
    logic.on_item(ParticipantAnnounce(iv, (iv, cand)))
    logic.on_item(tr(iv, 0, 0, 6))
    # the candidate has sent nothing, but its track starts at 30 s, so iv's transcript at 0 may go
    windows, _ = logic.on_item(ProgressMark("r", "iv", 10, 10))
    assert [w.reason for w in windows] == ["length"]
    logic.on_item(tr(iv, 1, 35, 36))
    windows, _ = logic.on_item(ProgressMark("r", "iv", 40, 40))
    assert windows == []  # 35 > candidate's mark (30): held until the candidate catches up
    windows, _ = logic.on_item(ProgressMark("r", "cand", math.inf, math.inf))
    windows2, _ = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf))
    assert [w.reason for w in windows + windows2] == ["end"]


def test_idle_closes_with_injected_clock() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    logic = RoomWindowing(RULES, idle_s=30.0, now=lambda: now[0])
    logic.on_item(ParticipantAnnounce(ROSTER[0], ROSTER[:1]))
    logic.on_item(tr(ROSTER[0], 0, 0, 2))
    logic.on_item(ProgressMark("r", "iv", 5, 5))
    assert logic.notify_at() == now[0] + timedelta(seconds=30)
    now[0] += timedelta(seconds=29)
    assert logic.on_notify()[0] == []
    now[0] += timedelta(seconds=2)
    windows, _ = logic.on_notify()
    assert [w.reason for w in windows] == ["idle"]
    assert logic.notify_at() is None


def test_no_idle_rule_in_replay() -> None:
    logic = RoomWindowing(RULES, idle_s=None)
    logic.on_item(ParticipantAnnounce(ROSTER[0], ROSTER[:1]))
    logic.on_item(tr(ROSTER[0], 0, 0, 2))
    logic.on_item(ProgressMark("r", "iv", 5, 5))
    assert logic.notify_at() is None


def test_snapshot_round_trip_resumes_same_windows() -> None:
    streams = script()
    items = [x for s in streams for x in s]
    reference = run_room(items)
    logic = RoomWindowing(RULES)
    head, tail = items[:9], items[9:]
    out = []
    for item in [ParticipantAnnounce(ROSTER[0], ROSTER), *head]:
        out.extend(logic.on_item(item)[0])
    resumed = RoomWindowing(RULES, resume=logic.snapshot())
    for item in tail:
        out.extend(resumed.on_item(item)[0])
    assert [{k: v for k, v in w.to_record().items() if k != "emitted_at"} for w in out] == reference


def test_rejoin_continues_window_ids() -> None:
    iv = ROSTER[0]
    logic = RoomWindowing(WindowRules(20, 10, 2))
    logic.on_item(ParticipantAnnounce(iv, (iv,)))
    logic.on_item(tr(iv, 0, 0, 2))
    first, _ = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf))
    assert [w.window_id for w in first] == ["r:0"]
    logic.on_item(ParticipantAnnounce(Participant("r", "iv", "Morgan", "interviewer", 50.0), (iv,)))
    logic.on_item(tr(iv, 1, 55, 57))
    second, _ = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf))
    assert [w.window_id for w in second] == ["r:1"]


def test_a_participant_who_left_for_good_is_not_waited_for_when_another_joins() -> None:
    iv, cand = ROSTER
    late = Participant("r", "iv2", "Sam", "interviewer", offset_s=30.0)
    logic = RoomWindowing(WindowRules(100, 10, 1))
    logic.on_item(ParticipantAnnounce(iv, ROSTER))
    logic.on_item(tr(iv, 0, 0, 2))
    logic.on_item(ProgressMark("r", "iv", math.inf, math.inf))  # the interviewer leaves for good
    logic.on_item(tr(cand, 0, 3, 5))
    logic.on_item(ProgressMark("r", "cand", 20, 20))
    # a new participant joins; the roster still lists the one who left, at its old start
    logic.on_item(ParticipantAnnounce(late, (iv, cand, late)))
    logic.on_item(tr(cand, 1, 21, 22))
    logic.on_item(ProgressMark("r", "cand", 25, 25))
    assert logic.pending == []  # taken in at once: nobody waits for "iv", who left
    assert [s.start for s in logic.buf.new] == [3, 21]
    assert logic.marks["iv"] == math.inf and logic.marks["iv2"] == 30.0
