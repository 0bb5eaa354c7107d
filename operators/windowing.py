"""Evaluation windows per room: the pure rules (DESIGN.md "Windows") and the keyed-state step.

The rules run on final transcripts taken in media order. Media order is rebuilt from arrival order with
progress marks: each participant stream promises "no final of mine starts before T"; the room step
buffers transcripts and takes them in (start, participant) order only up to the minimum mark over the
room's roster. So windows do not depend on worker count, replay speed or STT latency.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulLogic

from quantcoach.records import (
    EvaluationWindow,
    ParticipantAnnounce,
    ProgressMark,
    Segment,
    Transcript,
)


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


def close_window(buf: WindowBuffer, reason: str, rules: WindowRules) -> EvaluationWindow | None:
    """Close the buffer as a window (None when there is nothing new) and keep the overlap as context."""
    if not buf.new:
        return None
    segments = tuple(buf.context + buf.new)
    window = EvaluationWindow(room=buf.room, seq=buf.seq, reason=reason, segments=segments)
    cutoff = window.end - rules.overlap_s
    buf.context = [s for s in segments if s.end > cutoff]
    buf.new = []
    buf.seq += 1
    return window


def add_segment(buf: WindowBuffer, seg: Segment, rules: WindowRules) -> list[EvaluationWindow]:
    """Rules 1 (speaker change) and 2 (length) for one transcript in media order."""
    out: list[EvaluationWindow] = []
    if buf.new and seg.speaker != buf.new[-1].speaker and len(buf.new) >= rules.min_transcripts:
        window = close_window(buf, "speaker_change", rules)
        if window:
            out.append(window)
    buf.new.append(seg)
    if buf.new[-1].end - buf.new[0].start >= rules.window_s:
        window = close_window(buf, "length", rules)
        if window:
            out.append(window)
    return out


def _order_key(t: Transcript) -> tuple[float, str, str]:
    return (t.start, t.participant, t.utterance_id)


class RoomWindowing(StatefulLogic[Any, EvaluationWindow, dict[str, Any]]):
    """Keyed by room. Takes announces, progress marks and final transcripts; emits windows.

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
        self.buf = WindowBuffer("")  # the room is learnt from the first item (builders get no key)
        self.marks: dict[str, float] = {}
        self.starts: dict[str, float] = {}  # participant -> start of its latest track
        self.pending: list[tuple[tuple[float, str, str], Transcript]] = []
        self.last_new_at: datetime | None = None
        if resume:
            self.buf = WindowBuffer(
                resume["room"],
                resume["seq"],
                [Segment(**s) for s in resume["context"]],
                [Segment(**s) for s in resume["new"]],
            )
            self.marks = dict(resume["marks"])
            self.starts = dict(resume.get("starts", {}))
            self.pending = [(_order_key(t), t) for t in (Transcript(**p) for p in resume["pending"])]
            heapq.heapify(self.pending)

    # -- Bytewax hooks -----------------------------------------------------------------------------
    def on_item(self, value: Any) -> tuple[list[EvaluationWindow], bool]:
        if not self.buf.room:
            self.buf.room = value.participant.room if isinstance(value, ParticipantAnnounce) else value.room
        if isinstance(value, ParticipantAnnounce):
            me = value.participant
            for p in (me, *value.roster):
                # Hold the room back from a track's start when it is new, or a genuine rejoin (the
                # announced participant itself, or a roster entry with a later start). A roster entry
                # whose track ended and that has not come back is not waited for.
                known = self.starts.get(p.identity)
                rejoined = p.identity == me.identity or (known is not None and p.offset_s > known)
                if known is None or (rejoined and math.isinf(self.marks.get(p.identity, math.inf))):
                    self.marks[p.identity] = p.offset_s
                    self.starts[p.identity] = p.offset_s
        elif isinstance(value, ProgressMark):
            # marks only move forward, except a rejoin (handled on announce above)
            self.marks[value.participant] = max(
                self.marks.get(value.participant, value.settled), value.settled
            )
        elif isinstance(value, Transcript) and value.is_final:
            heapq.heappush(self.pending, (_order_key(value), value))
            self.marks.setdefault(value.participant, value.start)
        return self._release(), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[EvaluationWindow], bool]:
        deadline = self.notify_at()
        if deadline is not None and self._now() >= deadline:
            window = close_window(self.buf, "idle", self.rules)
            self.last_new_at = None
            return ([window] if window else []), StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[EvaluationWindow], bool]:
        # Input is exhausted: nothing more can arrive, so everything buffered is in order now.
        out = self._take(math.inf)
        window = close_window(self.buf, "end", self.rules)
        if window:
            out.append(window)
        return out, StatefulLogic.DISCARD

    def notify_at(self) -> datetime | None:
        if self.idle_s is not None and self.buf.new and self.last_new_at is not None:
            return self.last_new_at + timedelta(seconds=self.idle_s)
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            "room": self.buf.room,
            "seq": self.buf.seq,
            "context": [asdict(s) for s in self.buf.context],
            "new": [asdict(s) for s in self.buf.new],
            "marks": dict(self.marks),
            "starts": dict(self.starts),
            "pending": [asdict(t) for _, t in self.pending],
        }

    # -- ordering --------------------------------------------------------------------------------------
    def _release(self) -> list[EvaluationWindow]:
        if not self.marks:
            return []
        settled = min(self.marks.values())
        out = self._take(settled)
        if math.isinf(settled):
            # every known track has ended: the room's last window. The seq is kept (not the buffer) so
            # that a participant rejoining a live room continues the ids instead of reusing them.
            window = close_window(self.buf, "end", self.rules)
            if window:
                out.append(window)
            self.buf.context = []
            self.last_new_at = None
        return out

    def _take(self, settled: float) -> list[EvaluationWindow]:
        out: list[EvaluationWindow] = []
        while self.pending and (self.pending[0][0][0] < settled or math.isinf(settled)):
            _, t = heapq.heappop(self.pending)
            out.extend(add_segment(self.buf, Segment.of(t), self.rules))
            self.last_new_at = self._now() if self.buf.new else None
        return out
