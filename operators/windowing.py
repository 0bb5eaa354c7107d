"""Evaluation windows per session: the pure rules (DESIGN.md "Windows") and the keyed-state step.

The rules run on final transcripts taken in media order. Media order is rebuilt from arrival order with
progress marks: each participant stream promises "no final of mine starts before T"; the session step
buffers transcripts and takes them in (start, participant) order only up to the minimum mark over the
session's roster. So windows do not depend on worker count, replay speed or STT latency.

The same step owns the session's lifecycle and metrics, because both need that same media order: it
emits ``SessionEvent("started")`` with the first roster, a ``MetricsUpdate`` after every window, and at
the session's end its last window, the final metrics and ``SessionEvent("ended")``, in that order. A
session ends when every participant's track has finished for good: in a replay, when every file has
been read; live, when the room finished (a participant who merely left may come back).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulLogic

from operators.metrics import SessionMetrics
from quantcoach.records import (
    EvaluationWindow,
    MetricsUpdate,
    Participant,
    ParticipantAnnounce,
    ProgressMark,
    Segment,
    SessionEvent,
    Transcript,
    utc_now_iso,
)

#: Track-end reasons after which the participant will not come back to this session.
FINAL_REASONS = frozenset({"end", "room_finished"})


@dataclass(frozen=True, slots=True)
class WindowRules:
    window_s: float = 20.0
    overlap_s: float = 10.0
    min_transcripts: int = 2


@dataclass(slots=True)
class WindowBuffer:
    """Plain data: snapshots as-is. ``new`` = segments not yet in an emitted window."""

    room: str
    seq: int = 0
    context: list[Segment] = field(default_factory=list)
    new: list[Segment] = field(default_factory=list)
    session_id: str = ""


def close_window(
    buf: WindowBuffer, reason: str, rules: WindowRules, roster: tuple[Participant, ...] = (),
    started_at: str | None = None,
) -> EvaluationWindow | None:  # fmt: skip
    """Close the buffer as a window (None when there is nothing new) and keep the overlap as context."""
    if not buf.new:
        return None
    segments = tuple(buf.context + buf.new)
    window = EvaluationWindow(
        room=buf.room, seq=buf.seq, reason=reason, segments=segments, session_id=buf.session_id,
        participants=roster, started_at=started_at,
    )  # fmt: skip
    cutoff = window.end - rules.overlap_s
    buf.context = [s.as_context() for s in segments if s.end > cutoff]
    buf.new = []
    buf.seq += 1
    return window


def add_segment(
    buf: WindowBuffer, seg: Segment, rules: WindowRules, roster: tuple[Participant, ...] = (),
    started_at: str | None = None,
) -> list[EvaluationWindow]:  # fmt: skip
    """Rules 1 (speaker change) and 2 (length) for one transcript in media order."""
    out: list[EvaluationWindow] = []
    if buf.new and seg.speaker != buf.new[-1].speaker and len(buf.new) >= rules.min_transcripts:
        window = close_window(buf, "speaker_change", rules, roster, started_at)
        if window:
            out.append(window)
    buf.new.append(seg)
    if buf.new[-1].end - buf.new[0].start >= rules.window_s:
        window = close_window(buf, "length", rules, roster, started_at)
        if window:
            out.append(window)
    return out


def _order_key(t: Transcript) -> tuple[float, str, str]:
    return (t.start, t.participant, t.utterance_id)


class SessionWindowing(StatefulLogic[Any, Any, dict[str, Any]]):
    """Keyed by session. Takes announces, progress marks and final transcripts; emits windows, metrics
    and the session's lifecycle events.

    ``idle_s`` (live only) is the one rule that reads the wall clock; ``now`` is injectable for tests.
    """

    def __init__(
        self,
        rules: WindowRules,
        idle_s: float | None = None,
        resume: dict[str, Any] | None = None,
        now: Any = None,
    ) -> None:
        self.rules = rules
        self.idle_s = idle_s
        self._now = now or (lambda: datetime.now(UTC))
        self.buf = WindowBuffer("")  # the session is learnt from the first item (builders get no key)
        self.marks: dict[str, float] = {}
        self.starts: dict[str, float] = {}  # participant -> start of its latest track
        self.ended: dict[str, str] = {}  # participant -> why its latest track ended
        self.roster: dict[str, Participant] = {}
        self.started_at: str | None = None
        self.lifecycle = "new"  # new -> started -> ended
        self.media_s = 0.0  # media time the session's tracks reached (for the final metrics)
        self.metrics = SessionMetrics()
        self.pending: list[tuple[tuple[float, str, str], Transcript]] = []
        self.last_new_at: datetime | None = None
        if resume:
            self._restore(resume)

    # -- Bytewax hooks -----------------------------------------------------------------------------
    def on_item(self, value: Any) -> tuple[list[Any], bool]:
        out: list[Any] = []
        if isinstance(value, ParticipantAnnounce):
            out.extend(self._announce(value))
        elif isinstance(value, ProgressMark):
            self._learn(value.room, value.session_id)
            # marks only move forward, except a rejoin (handled on announce)
            self.marks[value.participant] = max(
                self.marks.get(value.participant, value.settled), value.settled
            )
            if value.finished:
                self.ended[value.participant] = value.ended or "end"
            elif math.isfinite(value.position):
                self.media_s = max(self.media_s, value.position)
        elif isinstance(value, Transcript) and value.is_final:
            self._learn(value.room, value.session_id)
            heapq.heappush(self.pending, (_order_key(value), value))
            self.marks.setdefault(value.participant, value.start)
        out.extend(self._release())
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Any], bool]:
        deadline = self.notify_at()
        if deadline is not None and self._now() >= deadline:
            self.last_new_at = None
            return self._close("idle"), StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        # Input is exhausted: nothing more can arrive, so everything buffered is in order now. A live
        # flow that stops (shutdown) closes its windows but does not end sessions: a restart resumes them.
        out = self._take(math.inf)
        out.extend(self._close("end"))
        if self.idle_s is None and self.lifecycle == "started":
            out.extend(self._end())
        return out, StatefulLogic.DISCARD

    def notify_at(self) -> datetime | None:
        if self.idle_s is not None and self.buf.new and self.last_new_at is not None:
            return self.last_new_at + timedelta(seconds=self.idle_s)
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            "room": self.buf.room,
            "session_id": self.buf.session_id,
            "seq": self.buf.seq,
            "context": [asdict(s) for s in self.buf.context],
            "new": [asdict(s) for s in self.buf.new],
            "marks": dict(self.marks),
            "starts": dict(self.starts),
            "ended": dict(self.ended),
            "roster": [asdict(p) for p in self.roster.values()],
            "started_at": self.started_at,
            "lifecycle": self.lifecycle,
            "media_s": self.media_s,
            "metrics": self.metrics.snapshot(),
            "pending": [asdict(t) for _, t in self.pending],
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.buf = WindowBuffer(
            saved["room"],
            saved["seq"],
            [Segment(**s) for s in saved["context"]],
            [Segment(**s) for s in saved["new"]],
            saved.get("session_id", ""),
        )
        self.marks = dict(saved["marks"])
        self.starts = dict(saved.get("starts", {}))
        self.ended = dict(saved.get("ended", {}))
        self.roster = {p["identity"]: Participant(**p) for p in saved.get("roster", [])}
        self.started_at = saved.get("started_at")
        self.lifecycle = saved.get("lifecycle", "started")
        self.media_s = float(saved.get("media_s", 0.0))
        if "metrics" in saved:
            self.metrics = SessionMetrics.restore(saved["metrics"])
        self.pending = [(_order_key(t), t) for t in (Transcript(**p) for p in saved["pending"])]
        heapq.heapify(self.pending)

    # -- the session ------------------------------------------------------------------------------------
    def _learn(self, room: str, session_id: str) -> None:
        if not self.buf.room:
            self.buf.room, self.buf.session_id = room, session_id

    def _announce(self, value: ParticipantAnnounce) -> list[Any]:
        me = value.participant
        self._learn(me.room, me.session_id)
        for p in (*value.roster, me):  # the roster first: its order, not arrival order, is kept
            self.started_at = self.started_at or p.started_at
            self.roster[p.identity] = p
            self.metrics.meet(p.identity, p.name, p.role)
            # Hold the session back from a track's start when it is new, or a genuine rejoin (the
            # announced participant itself, or a roster entry with a later start). A roster entry
            # whose track ended and that has not come back is not waited for.
            known = self.starts.get(p.identity)
            rejoined = p.identity == me.identity or (known is not None and p.offset_s > known)
            if known is None or (rejoined and math.isinf(self.marks.get(p.identity, math.inf))):
                self.marks[p.identity] = p.offset_s
                self.starts[p.identity] = p.offset_s
                self.ended.pop(p.identity, None)
        if self.lifecycle != "new":
            return []
        self.lifecycle = "started"
        return [self._event("started")]

    def _participants(self) -> tuple[Participant, ...]:
        return tuple(self.roster.values())

    def _event(self, event: str) -> SessionEvent:
        b = self.buf
        return SessionEvent(b.room, b.session_id, event, self._participants(), self.started_at)

    def _metrics(self, final: bool) -> MetricsUpdate:
        b = self.buf
        media_s = self.media_s if final else None  # running records end at the latest final
        record = self.metrics.record(
            b.room, b.session_id, final=final, media_s=media_s, emitted_at=utc_now_iso()
        )
        return MetricsUpdate(b.room, b.session_id, record)

    def _close(self, reason: str) -> list[Any]:
        window = close_window(self.buf, reason, self.rules, self._participants(), self.started_at)
        return [window, self._metrics(final=False)] if window else []

    def _end(self) -> list[Any]:
        self.lifecycle = "ended"
        return [self._metrics(final=True), self._event("ended")]

    # -- ordering --------------------------------------------------------------------------------------
    def _release(self) -> list[Any]:
        if not self.marks:
            return []
        settled = min(self.marks.values())
        out = self._take(settled)
        if math.isinf(settled):
            # every known track has ended: the last window for now. The seq is kept (not the buffer) so
            # that a participant rejoining a live room continues the ids instead of reusing them.
            out.extend(self._close("end"))
            self.buf.context = []
            self.last_new_at = None
            if self.lifecycle == "started" and set(self.ended.values()) <= FINAL_REASONS:
                out.extend(self._end())
        return out

    def _take(self, settled: float) -> list[Any]:
        out: list[Any] = []
        roster, started_at = self._participants(), self.started_at
        while self.pending and (self.pending[0][0][0] < settled or math.isinf(settled)):
            _, t = heapq.heappop(self.pending)
            self.metrics.add(t.participant, t.name, t.speaker, t.text, t.start, t.end)
            for window in add_segment(self.buf, Segment.of(t), self.rules, roster, started_at):
                out.extend([window, self._metrics(final=False)])
            self.last_new_at = self._now() if self.buf.new else None
        return out
