"""One stream's audio, as both sides of the stream see it, under one lock.

The Bytewax worker pushes audio and polls events; the loop thread's sessions send that audio and turn
the server's commits into events. Positions are stream samples:

- ``pushed``: everything received; the loudness map covers it.
- ``send_pos``: the next sample the current session sends (its first audio was ``origin``).
- ``covered``: the samples before it are covered by a committed transcript (or given up on).

Every sample after ``covered`` that may hold speech is kept, so that a new session can re-send it;
silence is not (the floor, below). Memory is bounded by ``max_retained_s``. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stt.clock import Clock
from stt.elevenlabs.bounds import plan_cut
from stt.elevenlabs.loudness import FRAME, LoudnessMap
from stt.elevenlabs.options import ElevenLabsOptions
from stt.pcm import STT_SAMPLE_RATE as SR
from stt.pcm import SampleBuffer
from stt.protocol import SttError, SttEvent

log = logging.getLogger(__name__)

#: count(name, n, engine_wide=True): add to the stream's stats (and the engine's).
Count = Callable[..., None]


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What the sender may do now, read in one go."""

    pos: int  # first sample of ``pcm``
    pcm: np.ndarray | None  # the next chunk to send, if one is due
    speech: bool  # the chunk holds a loud frame
    avail: int  # samples pushed and not yet sent
    end_requested: bool
    since_push: float  # seconds since the last push
    uncommitted_speech: bool  # speech was sent that no commit covers yet
    idle: bool  # no speech pending and a long quiet stretch: the session may close
    commit_due: bool = False  # the open utterance is cut here: a manual commit, before more audio
    # samples sent that the server surely holds uncommitted: since the later of our last manual commit
    # and a frame into the last speech after a pause its VAD may have committed at (it commits only in
    # pauses, and our map is in 100 ms frames)
    open_audio: int = 0


class AudioLedger:
    def __init__(self, key: str, o: ElevenLabsOptions, clock: Clock, count: Count) -> None:
        self.lock = threading.Lock()
        self._key = key
        self._o = o
        self._clock = clock
        self._count = count
        self._pcm = SampleBuffer(np.int16)
        self._loudness = LoudnessMap(o.quiet_dbfs)
        self.pushed = 0
        self.send_pos = 0
        self.covered = 0
        self._events: list[SttEvent] = []
        self._last_final_end = 0.0
        self._settled_promised = 0.0
        self._end_requested = False
        self._finished = False
        self._closed = False
        self._error: SttError | None = None
        self._error_raised = False
        self._last_push = clock.monotonic()
        self._session_active = False  # a session is sending: send_pos is its position
        self._silent_ends = 0  # insufficient_audio_activity ends in a row
        self._dropped_warned_at = -math.inf

    # ---------------------------------------------------------------- worker side
    def push(self, samples: np.ndarray) -> bool:
        """Keep int16 samples; False when the stream takes no more audio."""
        with self.lock:
            if self._closed or self._error is not None:
                return False
            if self._end_requested:
                self._count("pushed_after_end", engine_wide=False)
                return False
            self._pcm.append(samples)
            self.pushed += len(samples)
            self._last_push = self._clock.monotonic()
            self._loudness.add(samples)
            self._trim_locked()
        return True

    def end_input(self) -> bool:
        """True the first time."""
        with self.lock:
            if self._end_requested:
                return False
            self._end_requested = True
            self._loudness.close_last_frame()
        return True

    def poll(self) -> list[SttEvent]:
        with self.lock:
            if self._events:
                out, self._events = self._events, []
                return out
            if self._error is not None and not self._error_raised:
                self._error_raised = True
                raise self._error
            return []

    def settled(self) -> float:
        with self.lock:
            if self._finished or self._error is not None:
                return math.inf
            self._settled_promised = max(self._settled_promised, self._floor_locked() / SR)
            return self._settled_promised

    @property
    def retained_seconds(self) -> float:
        with self.lock:
            return len(self._pcm) / SR

    @property
    def done(self) -> bool:
        with self.lock:
            if self._events:
                return False
            return self._finished or (self._error is not None and self._error_raised)

    def close(self) -> bool:
        """True the first time."""
        with self.lock:
            if self._closed:
                return False
            self._closed = True
        return True

    # ---------------------------------------------------------------- loop side
    def work(self) -> Literal["closed", "speech", "finished"] | None:
        """Whether a session is needed: speech to send; finished once the input ended in silence."""
        with self.lock:
            if self._closed:
                return "closed"
            if self._first_speech_locked() is not None:
                return "speech"
            if self._end_requested:
                self._finished = True  # nothing left but silence: no session needed
                return "finished"
            return None

    def finish(self) -> None:
        with self.lock:
            self._finished = True

    def fail(self, error: SttError) -> None:
        with self.lock:
            self._error = error

    @property
    def closed(self) -> bool:
        with self.lock:
            return self._closed

    def floor(self) -> tuple[int, int]:
        """Where a new session would start sending, and how much it would send now."""
        with self.lock:
            origin = self._floor_locked()
            return origin, self.pushed - origin

    def begin_sending(self) -> int:
        """The session started: it sends from what is kept (the cap may have trimmed meanwhile)."""
        with self.lock:
            self.send_pos = self._floor_locked()
            self._session_active = True
            return self.send_pos

    def end_session(self) -> None:
        with self.lock:
            self._session_active = False
            self._trim_locked()

    def plan_send(self, now: float, open_from: int = 0) -> SendPlan | None:
        """None once the stream is closed. ``open_from``: the session's last manual commit (or origin)."""
        o = self._o
        with self.lock:
            if self._closed:
                return None
            avail = self.pushed - self.send_pos
            since_push = now - self._last_push
            pos, pcm, speech = self.send_pos, None, False
            first_speech = self._first_speech_locked()
            limit, due = self.pushed, False
            if o.max_utterance_s is not None and first_speech is not None:
                cut = plan_cut(
                    self._loudness,
                    self._pcm,
                    o,
                    known=max(self.covered, open_from),
                    send_pos=pos,
                    pushed=self.pushed,
                    released=self._end_requested or since_push >= o.idle_commit_s,
                )
                limit, due = cut.limit, cut.due
            n = min(limit - pos, o.chunk_samples)
            if n > 0 and (
                n == o.chunk_samples
                or limit < self.pushed  # cut short by the bound: the rest is there already
                or self._end_requested
                or since_push >= o.partial_chunk_after_s
            ):
                pcm = self._pcm.read(pos, pos + n)
                speech = self._loudness.any_loud(pos - FRAME + 1, pos + n)
            pending = first_speech is not None
            open_audio = 0
            if first_speech is not None:
                pause = round(0.8 * (o.vad_silence_threshold_secs or 1.5) * SR)
                start = self._loudness.last_run_start(first_speech, self.send_pos, pause)
                open_audio = self.send_pos - max(open_from, (start or first_speech) + FRAME)
            return SendPlan(
                pos=pos,
                pcm=pcm,
                speech=speech,
                avail=avail,
                end_requested=self._end_requested,
                since_push=since_push,
                uncommitted_speech=pending and self.covered < self.send_pos,
                idle=not pending
                and (self.pushed - self.covered >= o.idle_close_s * SR or since_push >= o.idle_close_s),
                commit_due=due,
                open_audio=max(0, open_audio),
            )

    def sent(self, upto: int) -> None:
        with self.lock:
            self.send_pos = upto
            self._trim_locked()

    def all_sent_and_committed(self) -> tuple[bool, bool]:
        """(every pushed sample sent, no speech left uncommitted)."""
        with self.lock:
            return self.send_pos >= self.pushed, self._first_speech_locked() is None

    def heard_nothing(self) -> None:
        """The server ended a session that committed nothing for lack of speech."""
        with self.lock:
            self._silent_ends += 1
            if self._silent_ends >= 2:
                # Twice in a row the server heard no speech in what we sent (noise our loudness map
                # took for speech): stop re-sending it, or we would reconnect forever.
                self.covered = max(self.covered, self.send_pos)
                self._trim_locked()

    # ---------------------------------------------------------------- transcripts
    def partial(self, text: str, open_from: int = 0) -> None:
        with self.lock:
            speech = self._first_speech_locked()
            start = max(self.covered, open_from, speech if speech is not None else self.covered) / SR
            end = max(self.send_pos / SR, start)
            self._events.append(SttEvent("partial", text, start, end))

    def commit(
        self,
        text: str,
        span: tuple[int, int] | None,
        sent_at: int,
        *,
        language: str | None = None,
        confidence: float | None = None,
    ) -> int:
        """One server commit (``span``: its words' samples, if timed; ``sent_at``: the furthest it can
        cover): advance ``covered``, emit a final. Returns the floor after it."""
        with self.lock:
            self._silent_ends = 0
            cov = self.covered
            if span is not None:
                start, end = span
                new_cov = min(max(end, cov), sent_at)
            elif text:
                start, end = self._utterance_span_locked(cov, sent_at)
                new_cov = max(cov, end)
            else:  # an empty commit: do not swallow speech that may follow it
                start = end = cov
                speech = self._first_speech_locked()
                new_cov = max(cov, min(sent_at, speech if speech is not None else sent_at))
            self.covered = new_cov
            if text:
                t0 = max(start / SR, self._last_final_end, self._settled_promised)
                t1 = max(end / SR, t0)
                self._last_final_end = t1
                self._events.append(SttEvent("final", text, t0, t1, language, confidence))
            self._trim_locked()
            return self._floor_locked()

    # ---------------------------------------------------------------- internals (lock held)
    def _utterance_span_locked(self, a: int, b: int) -> tuple[int, int]:
        """Without word times: the first utterance in [a, b) by the loudness map.

        It ends at the first pause as long as the server's VAD silence threshold (a little less, as
        the server's VAD is not ours); ``b`` (all audio sent when the commit came) can be far past it
        when audio is sent faster than real time.
        """
        pause = round(0.8 * (self._o.vad_silence_threshold_secs or 1.5) * SR)
        return self._loudness.utterance_span(a, b, pause)

    def _first_speech_locked(self) -> int | None:
        """First loud frame after the committed audio (ignoring the last word's tail), if any."""
        a = self.covered + (round(self._o.tail_tolerance_s * SR) if self.covered else 0)
        return self._loudness.first_loud(a, self.pushed)

    def _floor_locked(self) -> int:
        """No final will start before this sample: settled() and where a new session starts."""
        margin = round(self._o.settle_margin_s * SR)
        speech = self._first_speech_locked()
        bound = speech if speech is not None else self._loudness.mapped_end
        return max(self.covered, min(bound - margin, self.pushed))

    def _trim_locked(self) -> None:
        keep_from = self._floor_locked()
        if self._session_active:
            keep_from = min(keep_from, self.send_pos)
        cap = round(self._o.max_retained_s * SR)
        if self.pushed - keep_from > cap:
            forced = self.pushed - cap
            if self._session_active:
                forced = min(forced, self.send_pos)
            if forced > keep_from:
                dropped = forced - max(self.covered, self._pcm.start)
                if dropped > 0:
                    self._count("dropped_samples", dropped)
                    now = self._clock.monotonic()
                    if now - self._dropped_warned_at > 60:
                        self._dropped_warned_at = now
                        log.warning(
                            "elevenlabs %s: %.0f s of uncommitted audio retained; dropping the oldest",
                            self._key,
                            self._o.max_retained_s,
                        )
                self.covered = max(self.covered, forced)
                keep_from = forced
        self._pcm.trim(keep_from)
        self._loudness.forget_before(min(self.covered, self._pcm.start))
