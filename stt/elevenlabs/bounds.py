"""Keeping utterances bounded: where a manual commit cuts an over-long open utterance, and which of a
session's manual commits the server has answered.

The server's VAD commits at a pause of ``vad_silence_threshold_secs``; a speaker who never pauses that
long stays in one utterance up to the server's own limit. So once the open utterance (from the first
speech after the covered audio, or from this session's last manual commit, whichever is later) reaches
``max_utterance_s``, the sender commits by hand at the quietest 100 ms of the ``cut_lookback_s`` before
that bound (by the loudness map), refined to the quietest 10 ms in it. Choosing needs that window unsent:
the sender holds audio there until the bound has been pushed (live, partials for it come up to
``cut_lookback_s`` later, once per long utterance), unless the input ended or the pushes stopped.

A manual commit is answered like a VAD commit: a ``committed_transcript`` (and its twin) that goes
through the same pairing and the same ledger, or by ``commit_throttled`` when the server ignored it.
What the ledger cannot tell is which answer is ours; word times say it (``ManualCommits``). After a
reconnect, the audio its answer did not cover is re-sent and the new session cuts it again, so every
final still comes out once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from stt.elevenlabs.loudness import FRAME, LoudnessMap, levels_of
from stt.elevenlabs.options import ElevenLabsOptions
from stt.pcm import STT_SAMPLE_RATE as SR
from stt.pcm import SampleBuffer

SUB = FRAME // 10  # 10 ms: how finely a cut is placed inside the quietest frame


@dataclass(frozen=True, slots=True)
class CutPlan:
    limit: int  # the sender may send up to this stream sample now
    due: bool  # a manual commit is due now, at the send position (== limit)


def plan_cut(
    loudness: LoudnessMap,
    pcm: SampleBuffer,
    o: ElevenLabsOptions,
    *,
    known: int,
    send_pos: int,
    pushed: int,
    released: bool,
) -> CutPlan:
    """How far the sender may go, the last commit we know of being at sample ``known``.

    ``released``: no holding back (the input ended, or pushes stopped long enough for an idle commit).
    """
    loud = loudness.first_loud(known, pushed)
    if o.max_utterance_s is None or loud is None:
        return CutPlan(pushed, False)
    # The open utterance starts at its first loud frame, taken a frame early (speech may begin inside
    # the frame before), so that its words fit in the bound.
    max_samples = round(o.max_utterance_s * SR)
    start = max(known, loud - FRAME)
    bound = start + max_samples
    window = max(bound - round(o.cut_lookback_s * SR), start + max_samples // 2)
    if pushed < bound:
        if released or send_pos < window:
            return CutPlan(pushed if released else min(pushed, window), False)
        return CutPlan(send_pos, False)  # hold: the window is chosen from once the bound is pushed
    # The same choice on every call (the window's audio is kept: it is not covered), so the sender
    # reaches it; audio already sent past it (the hold was released) is cut where the sender is.
    cut = max(quietest_point(loudness, pcm, window, bound), send_pos)
    return CutPlan(cut, cut == send_pos)


def quietest_point(loudness: LoudnessMap, pcm: SampleBuffer, a: int, b: int) -> int:
    """The middle of the quietest 10 ms inside the quietest whole 100 ms frame of [a, b)."""
    frame = loudness.quietest(a, b)
    lo, hi = (frame, frame + FRAME) if frame is not None else (a, b)
    samples = pcm.read(lo, hi)
    n = len(samples) // SUB
    if n == 0:
        return hi
    levels = levels_of(samples[: n * SUB].reshape(n, SUB))
    ties = np.flatnonzero(levels == levels.max())
    return lo + int(ties[len(ties) // 2]) * SUB + SUB // 2


class ManualCommits:
    """The manual commits one session sent (cuts, the idle and the final commit), oldest first, until
    an answer shows the server past them.

    Answers come in audio order, ours among the VAD's. A VAD commit before ours needs a pause of the
    VAD threshold before our commit point, so its words end at least ``slack`` (a little less than
    that threshold) before it; the answer to ours, or any later one, ends closer or after.
    """

    def __init__(self, origin: int, slack: int) -> None:
        self.open_from = origin  # the server's open utterance starts no earlier than this
        self._slack = slack
        self._pending: deque[tuple[int, int]] = deque()  # (commit position, open_from before it)

    def sent(self, pos: int) -> None:
        self._pending.append((pos, self.open_from))
        self.open_from = pos

    def bound(self, span: tuple[int, int] | None, sent_at: int) -> int:
        """The furthest an answer with word ``span`` can cover (what was sent, and the oldest of our
        commits not yet answered: ``sent_at`` bounds placing a final that has no word times)."""
        if span is not None:
            self._settle(span[1])
        return min(sent_at, self._pending[0][0]) if self._pending else sent_at

    def answered(self, floor: int) -> None:
        """After an answer: the ledger's floor (the audio before it needs nothing more from the server)."""
        self._settle(floor)

    def ignored(self) -> None:
        """The server ignored a commit (``commit_throttled``): the oldest unanswered one, as the server
        answers commits in order. Its utterance stays open, and ends at a later commit."""
        if self._pending:
            pos, before = self._pending.popleft()
            if self.open_from == pos:
                self.open_from = before

    @property
    def pending(self) -> int:
        """Manual commits sent that no answer has shown the server past yet."""
        return len(self._pending)

    def _settle(self, reached: int) -> None:
        while self._pending and reached > self._pending[0][0] - self._slack:
            self._pending.popleft()
