"""Interview metrics per session: pure accumulation over media-ordered final transcripts.

The windowing step restores media order (DESIGN.md "Media-time order"); it feeds each final it takes
to ``SessionMetrics.add`` and asks for a record whenever a window closes and once more, ``final``, at the
session's end. Figures therefore do not depend on worker count, replay speed or STT latency. The state
is plain data (``snapshot()`` / ``restore()``), so Bytewax recovery keeps it as is.

Definitions (also in DESIGN.md and the README):

- A **turn** is a maximal run of consecutive finals (in media order) by one participant.
- ``talk_s``: the union of a speaker's final transcripts' [start, end] (speech bounds), so utterances
  that overlap are not counted twice.
- ``turns``: the speaker's turns. ``longest_turn_s``: the longest turn, first start to last end.
- ``words``: whitespace-separated words of the speaker's finals. ``wpm``: words per minute of ``talk_s``
  (null with no talk).
- ``questions``: the speaker's sentences that end in ``?``.
- ``fillers``: occurrences of the words and phrases in ``FILLERS``, case-insensitive, as whole words. They
  only mean something with verbatim STT: Whisper drops most fillers, ElevenLabs keeps more of them.
- ``response_latency_s``: the median, over this speaker's turns that follow another speaker's turn, of
  this turn's start minus that turn's end (negative when the speaker started before the other ended).
- ``interruptions``: this speaker's turns that start before the previous speaker's turn ended.
- ``overlaps``: speaker changes where the new turn starts before the previous one ends (the sum of
  ``interruptions``). ``speaker_changes``: turn boundaries, i.e. turns in all minus one.
- ``longest_silence_s``: the longest stretch of media time inside [0, media_s] that no final covers;
  ``media_s`` is the end of the latest final (a running record) or the session's end (the final record).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

METRICS_SCHEMA = "quantcoach.metrics/1"

#: Filler words and phrases counted in ``fillers`` (lower case; matched as whole words).
FILLERS = ("um", "umm", "uh", "uhh", "uhm", "erm", "er", "ah", "hmm", "mm", "mhm", "you know", "i mean")
_LONGEST_FIRST = sorted(FILLERS, key=len, reverse=True)
_FILLER_RE = re.compile(r"\b(?:" + "|".join(re.escape(f) for f in _LONGEST_FIRST) + r")\b")
_QUESTION_RE = re.compile(r"\?+")


@dataclass(slots=True)
class SpeakerTally:
    identity: str
    name: str
    role: str
    talk_s: float = 0.0
    covered_until: float = 0.0  # end of this speaker's speech taken so far (for the union)
    turns: int = 0
    words: int = 0
    longest_turn_s: float = 0.0
    questions: int = 0
    fillers: int = 0
    latencies: list[float] = field(default_factory=list)
    interruptions: int = 0

    def record(self) -> dict[str, Any]:
        minutes = self.talk_s / 60.0
        return {
            "identity": self.identity,
            "name": self.name,
            "role": self.role,
            "talk_s": round(self.talk_s, 3),
            "turns": self.turns,
            "words": self.words,
            "wpm": round(self.words / minutes, 1) if minutes > 0 else None,
            "longest_turn_s": round(self.longest_turn_s, 3),
            "questions": self.questions,
            "fillers": self.fillers,
            "response_latency_s": round(statistics.median(self.latencies), 3) if self.latencies else None,
            "interruptions": self.interruptions,
        }


@dataclass(slots=True)
class SessionMetrics:
    """Accumulates one session's figures; ``add`` must be called in media order (start, participant)."""

    speakers: dict[str, SpeakerTally] = field(default_factory=dict)
    turn_identity: str | None = None  # the open turn's speaker
    turn_start: float = 0.0
    turn_end: float = 0.0
    covered_until: float = 0.0  # any speaker's speech, for silences
    longest_silence_s: float = 0.0
    overlaps: int = 0
    speaker_changes: int = 0
    media_s: float = 0.0

    def meet(self, identity: str, name: str, role: str) -> None:
        """A participant of the roster: listed even before (or without) speaking."""
        if identity not in self.speakers:
            self.speakers[identity] = SpeakerTally(identity, name, role)

    def add(self, identity: str, name: str, role: str, text: str, start: float, end: float) -> None:
        self.meet(identity, name, role)
        tally = self.speakers[identity]
        end = max(end, start)
        # talk time: union of this speaker's intervals (taken in start order)
        tally.talk_s += max(0.0, end - max(start, tally.covered_until))
        tally.covered_until = max(tally.covered_until, end)
        words = text.split()
        tally.words += len(words)
        tally.questions += len(_QUESTION_RE.findall(text))
        tally.fillers += len(_FILLER_RE.findall(text.lower()))
        # silence: a gap nobody's speech covers
        self.longest_silence_s = max(self.longest_silence_s, start - self.covered_until)
        self.covered_until = max(self.covered_until, end)
        self.media_s = max(self.media_s, end)
        # turns
        if self.turn_identity == identity:
            self.turn_end = max(self.turn_end, end)
        else:
            if self.turn_identity is not None:
                self.speaker_changes += 1
                latency = start - self.turn_end
                tally.latencies.append(latency)
                if latency < 0:
                    tally.interruptions += 1
                    self.overlaps += 1
            self.turn_identity, self.turn_start, self.turn_end = identity, start, end
            tally.turns += 1
        tally.longest_turn_s = max(tally.longest_turn_s, self.turn_end - self.turn_start)

    def record(self, room: str, session_id: str, *, final: bool, media_s: float | None = None,
               emitted_at: str) -> dict[str, Any]:  # fmt: skip
        end = max(self.media_s, media_s or 0.0)
        return {
            "schema": METRICS_SCHEMA,
            "room": room,
            "session_id": session_id,
            "final": final,
            "media_s": round(end, 3),
            "speakers": [t.record() for t in self.speakers.values()],
            "longest_silence_s": round(max(self.longest_silence_s, end - self.covered_until), 3),
            "overlaps": self.overlaps,
            "speaker_changes": self.speaker_changes,
            "emitted_at": emitted_at,
        }

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def restore(cls, saved: dict[str, Any]) -> SessionMetrics:
        speakers = {k: SpeakerTally(**v) for k, v in saved.get("speakers", {}).items()}
        return cls(**{**saved, "speakers": speakers})
