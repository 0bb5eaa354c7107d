"""Window rules (DESIGN.md "Windows") as pure functions, and the room step's media-order restoration."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from operators.windowing import SessionWindowing, WindowBuffer, WindowRules, add_segment, close_window
from quantcoach.records import (
    EvaluationWindow,
    MetricsUpdate,
    Participant,
    ParticipantAnnounce,
    ProgressMark,
    Segment,
    SessionEvent,
    Transcript,
)

RULES = WindowRules(window_s=20.0, overlap_s=10.0, min_transcripts=2)


def seg(speaker: str, start: float, end: float, text: str = "") -> Segment:
    return Segment(speaker[:2], speaker, speaker.title(), text or f"{speaker}@{start}", start, end)


def feed(segs: list[Segment], rules: WindowRules = RULES) -> tuple[list, WindowBuffer]:
    buf = WindowBuffer("r", session_id="S")
    out = []
    for s in segs:
        out.extend(add_segment(buf, s, rules))
    return out, buf


def test_speaker_change_closes_after_min_transcripts() -> None:
    out, buf = feed([seg("interviewer", 0, 2), seg("interviewer", 3, 5), seg("candidate", 6, 8)])
    assert [w.reason for w in out] == ["speaker_change"]
    assert [s.start for s in out[0].segments] == [0, 3]
    assert (out[0].start, out[0].end, out[0].window_id, out[0].seq) == (0, 5, "S:0", 0)
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
    assert out2[0].seq == 1 and out2[0].window_id == "S:1"
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
    assert rec["schema"] == "quantcoach.window/2" and rec["reason"] == "speaker_change"
    assert rec["window_id"] == "S:0" and [x["context"] for x in rec["segments"]] == [False, False]


# --- the room step: media order from marks ---------------------------------------------------------------
ROSTER = (
    Participant("r", "iv", "Morgan", "interviewer", session_id="S"),
    Participant("r", "cand", "Riley", "candidate", session_id="S"),
)


def windows_of(out: list) -> list[EvaluationWindow]:
    return [x for x in out if isinstance(x, EvaluationWindow)]


def tr(p: Participant, n: int, start: float, end: float) -> Transcript:
    return Transcript(
        "r", p.identity, p.role, p.name, f"S:{p.identity}:{n}", f"{p.identity} {n}", True, start, end, "t",
        session_id="S",
    )  # fmt: skip


def script() -> list[list]:
    """Per participant: its items in its own order (transcripts, then marks promising no earlier start)."""
    iv, cand = ROSTER
    per = {iv.identity: [], cand.identity: []}
    t = 0.0
    for i in range(12):
        p = ROSTER[(i // 2) % 2]
        per[p.identity].append(tr(p, i, t, t + 3))
        per[p.identity].append(ProgressMark("r", p.identity, t + 3, t + 3, "S"))
        t += 3.5
    for p in ROSTER:
        per[p.identity].append(ProgressMark("r", p.identity, math.inf, math.inf, "S"))
    return list(per.values())


def run_room(order: list) -> list[dict]:
    logic = SessionWindowing(RULES)
    out = []
    for item in [ParticipantAnnounce(ROSTER[0], ROSTER), ParticipantAnnounce(ROSTER[1], ROSTER), *order]:
        windows, _ = logic.on_item(item)
        out.extend(windows_of(windows))
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
    iv, cand = ROSTER[0], Participant("r", "cand", "Riley", "candidate", offset_s=30.0, session_id="S")
    logic = SessionWindowing(WindowRules(5, 0, 1))
    logic.on_item(ParticipantAnnounce(iv, (iv, cand)))
    logic.on_item(tr(iv, 0, 0, 6))
    # the candidate has sent nothing, but its track starts at 30 s, so iv's transcript at 0 may go
    windows, _ = logic.on_item(ProgressMark("r", "iv", 10, 10, "S"))
    assert [w.reason for w in windows_of(windows)] == ["length"]
    logic.on_item(tr(iv, 1, 35, 36))
    windows, _ = logic.on_item(ProgressMark("r", "iv", 40, 40, "S"))
    assert windows_of(windows) == []  # 35 > candidate's mark (30): held until the candidate catches up
    windows, _ = logic.on_item(ProgressMark("r", "cand", math.inf, math.inf, "S"))
    windows2, _ = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf, "S"))
    assert [w.reason for w in windows_of(windows + windows2)] == ["end"]


def test_idle_closes_with_injected_clock() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    logic = SessionWindowing(RULES, idle_s=30.0, now=lambda: now[0])
    logic.on_item(ParticipantAnnounce(ROSTER[0], ROSTER[:1]))
    logic.on_item(tr(ROSTER[0], 0, 0, 2))
    logic.on_item(ProgressMark("r", "iv", 5, 5, "S"))
    assert logic.notify_at() == now[0] + timedelta(seconds=30)
    now[0] += timedelta(seconds=29)
    assert logic.on_notify()[0] == []
    now[0] += timedelta(seconds=2)
    windows, _ = logic.on_notify()
    assert [w.reason for w in windows_of(windows)] == ["idle"]
    assert logic.notify_at() is None


def test_no_idle_rule_in_replay() -> None:
    logic = SessionWindowing(RULES, idle_s=None)
    logic.on_item(ParticipantAnnounce(ROSTER[0], ROSTER[:1]))
    logic.on_item(tr(ROSTER[0], 0, 0, 2))
    logic.on_item(ProgressMark("r", "iv", 5, 5, "S"))
    assert logic.notify_at() is None


def test_snapshot_round_trip_resumes_same_windows() -> None:
    streams = script()
    items = [x for s in streams for x in s]
    reference = run_room(items)
    logic = SessionWindowing(RULES)
    head, tail = items[:9], items[9:]
    out = []
    for item in [ParticipantAnnounce(ROSTER[0], ROSTER), *head]:
        out.extend(windows_of(logic.on_item(item)[0]))
    resumed = SessionWindowing(RULES, resume=logic.snapshot())
    for item in tail:
        out.extend(windows_of(resumed.on_item(item)[0]))
    assert [{k: v for k, v in w.to_record().items() if k != "emitted_at"} for w in out] == reference


def test_rejoin_continues_window_ids() -> None:
    iv = ROSTER[0]
    logic = SessionWindowing(WindowRules(20, 10, 2))
    logic.on_item(ParticipantAnnounce(iv, (iv,)))
    logic.on_item(tr(iv, 0, 0, 2))
    first, _ = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf, "S"))
    assert [w.window_id for w in windows_of(first)] == ["S:0"]
    logic.on_item(
        ParticipantAnnounce(Participant("r", "iv", "Morgan", "interviewer", 50.0, session_id="S"), (iv,))
    )
    logic.on_item(tr(iv, 1, 55, 57))
    second, _ = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf, "S"))
    assert [w.window_id for w in windows_of(second)] == ["S:1"]


def test_a_participant_who_left_for_good_is_not_waited_for_when_another_joins() -> None:
    iv, cand = ROSTER
    late = Participant("r", "iv2", "Sam", "interviewer", offset_s=30.0, session_id="S")
    logic = SessionWindowing(WindowRules(100, 10, 1))
    logic.on_item(ParticipantAnnounce(iv, ROSTER))
    logic.on_item(tr(iv, 0, 0, 2))
    logic.on_item(ProgressMark("r", "iv", math.inf, math.inf, "S"))  # the interviewer leaves for good
    logic.on_item(tr(cand, 0, 3, 5))
    logic.on_item(ProgressMark("r", "cand", 20, 20, "S"))
    # a new participant joins; the roster still lists the one who left, at its old start
    logic.on_item(ParticipantAnnounce(late, (iv, cand, late)))
    logic.on_item(tr(cand, 1, 21, 22))
    logic.on_item(ProgressMark("r", "cand", 25, 25, "S"))
    assert logic.pending == []  # taken in at once: nobody waits for "iv", who left
    assert [s.start for s in logic.buf.new] == [3, 21]
    assert logic.marks["iv"] == math.inf and logic.marks["iv2"] == 30.0


# --- the session's lifecycle and metrics, in media order ---------------------------------------------------
def run_all(order: list, logic: SessionWindowing | None = None) -> list:
    logic = logic or SessionWindowing(RULES)
    out: list = []
    for item in [ParticipantAnnounce(ROSTER[0], ROSTER), ParticipantAnnounce(ROSTER[1], ROSTER), *order]:
        out.extend(logic.on_item(item)[0])
    return out


def test_session_starts_first_and_ends_after_its_last_window_and_final_metrics() -> None:
    out = run_all([x for s in script() for x in s])
    kinds = [type(x).__name__ for x in out]
    assert kinds[0] == "SessionEvent" and out[0].event == "started"
    assert [p.identity for p in out[0].participants] == ["iv", "cand"]
    # the last window, its running metrics, the final metrics, then ended
    assert kinds[-4:] == ["EvaluationWindow", "MetricsUpdate", "MetricsUpdate", "SessionEvent"]
    assert isinstance(out[-1], SessionEvent) and out[-1].event == "ended"
    final = out[-2]
    assert isinstance(final, MetricsUpdate) and final.record["final"] is True
    assert sum(isinstance(x, SessionEvent) for x in out) == 2
    # every window is followed by a running metrics record that counts the finals taken so far
    windows = windows_of(out)
    running = [x for x in out if isinstance(x, MetricsUpdate) and not x.record["final"]]
    assert len(running) == len(windows)
    turns = {s["identity"]: s["turns"] for s in final.record["speakers"]}
    assert turns == {"iv": 3, "cand": 3}  # 12 finals in turns of two, alternating
    assert all(w.session_id == "S" and w.window_id.startswith("S:") for w in windows)


def test_context_segments_are_flagged() -> None:
    windows = windows_of(run_all([x for s in script() for x in s]))
    second = windows[1]
    flags = [s.context for s in second.segments]
    assert flags[0] is True and flags[-1] is False and flags == sorted(flags, reverse=True)
    carried = {s.utterance_id for s in second.segments if s.context}
    assert carried <= {s.utterance_id for s in windows[0].segments}


def test_a_live_session_ends_only_when_the_room_finished() -> None:
    iv, cand = ROSTER
    logic = SessionWindowing(RULES, idle_s=3600.0)
    logic.on_item(ParticipantAnnounce(iv, ROSTER))
    logic.on_item(ParticipantAnnounce(cand, ROSTER))
    logic.on_item(tr(iv, 0, 0, 2))
    out = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf, "S", ended="left"))[0]
    out += logic.on_item(ProgressMark("r", "cand", math.inf, math.inf, "S", ended="left"))[0]
    assert [w.reason for w in windows_of(out)] == ["end"]
    assert not [x for x in out if isinstance(x, SessionEvent)], "everyone left: they may come back"
    out = logic.on_item(ProgressMark("r", "iv", math.inf, math.inf, "S", ended="room_finished"))[0]
    out += logic.on_item(ProgressMark("r", "cand", math.inf, math.inf, "S", ended="room_finished"))[0]
    assert [x.event for x in out if isinstance(x, SessionEvent)] == ["ended"]
    assert logic.on_eof()[0] == []  # nothing twice
