"""Per-participant transcription over any ``SttEngine`` (the operator knows only the protocol).

Keyed by participant. Audio is pushed without blocking; ready events are drained on every item and
on notify (``notify_at`` keeps a stream polled while results may still arrive). After each activation
the step emits a ``ProgressMark``: no final transcript of this participant will start before
``settled`` media seconds. That is what lets the room's windowing restore media order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from bytewax.operators import StatefulLogic

from quantcoach.records import (
    STT_FAILED,
    AudioChunk,
    Participant,
    ParticipantAnnounce,
    ProgressMark,
    TrackEnd,
    Transcript,
)
from stt.pcm import STT_SAMPLE_RATE, SampleBuffer
from stt.protocol import SttEngine, SttError, SttEvent, SttStream

log = logging.getLogger(__name__)

POLL_INTERVAL = timedelta(milliseconds=20)
#: At end of input the step waits this long at most for outstanding results before giving up.
EOF_DRAIN_TIMEOUT_S = 300.0
#: A gap in a live track longer than this ends the STT stream and opens a new one at the new time,
#: instead of feeding the engine minutes of silence.
MAX_GAP_S = 5.0


@dataclass(slots=True)
class _OpenStream:
    stream: SttStream
    base: float  # media time of the stream's sample 0
    # Audio not yet covered by a final transcript, by stream sample: what a recovered flow must push
    # again, since an STT engine's own state (VAD, open utterance, server session) is not saved.
    retained: SampleBuffer = field(default_factory=SampleBuffer)

    @property
    def position(self) -> float:
        return self.base + self.retained.end / STT_SAMPLE_RATE

    def push(self, pcm: np.ndarray) -> None:
        self.stream.push_audio(pcm)
        self.retained.append(pcm)

    def trim(self) -> None:
        settled = self.stream.settled()  # stream seconds, a whole number of samples (or inf)
        self.retained.drop_pieces_before(settled if math.isinf(settled) else round(settled * STT_SAMPLE_RATE))

    def saved(self, ended: bool) -> dict[str, Any]:
        start = self.base + self.retained.start / STT_SAMPLE_RATE
        return {"start": start, "pcm": self.retained.read_all().astype(np.int16).tobytes(), "ended": ended}


class TranscribeLogic(StatefulLogic[Any, Any, dict[str, Any]]):
    def __init__(self, engine: SttEngine, resume: dict[str, Any] | None = None) -> None:
        self.key = ""  # room/identity, learnt from the first item (Bytewax builders get no key)
        self.engine = engine
        self.participant: Participant | None = None
        self.current: _OpenStream | None = None
        self.draining: list[_OpenStream] = []  # ended streams still owing results
        self.seq = resume["seq"] if resume else 0
        self._fresh = resume is None  # no saved state: the ids below may follow an earlier run's
        self.position = resume["position"] if resume else 0.0
        self.failed = False
        self.ended = False
        self.end_reason = ""  # why the track ended ("end", "left", "room_finished", "stt_failed", ...)
        self._last_mark: tuple[float, float, str] | None = None
        if resume and resume.get("participant"):
            self.participant = Participant(**resume["participant"])
            self.key = self.participant.key
            self.ended = resume.get("ended", False)
            self.end_reason = resume.get("end_reason", "")
            for saved in resume.get("streams", []):
                self._restore(saved)

    # -- Bytewax hooks -----------------------------------------------------------------------------
    def on_item(self, value: Any) -> tuple[list[Any], bool]:
        out: list[Any] = []
        if isinstance(value, ParticipantAnnounce):
            if self._fresh:
                # Utterance ids count from the track's start in media ms: a flow restarted without
                # recovery (live media time carries on) then never reuses the ids it wrote before,
                # whose count stays below the media ms they took (one final per >= 1 ms of speech).
                self._fresh = False
                self.seq = max(self.seq, round(value.participant.offset_s * 1000))
            self.participant = value.participant
            self.key = value.participant.key
            self.failed = self.ended = False
            self.end_reason = ""
            self._last_mark = None
            self.position = max(self.position, value.participant.offset_s)
            out.append(value)
        elif isinstance(value, AudioChunk):
            if not self.failed:
                self._push(value)
        elif isinstance(value, TrackEnd):
            self.ended = True
            if not self.failed or value.reason == "room_finished":  # the room's end outranks a failure
                self.end_reason = value.reason
            if self._last_mark is not None and math.isinf(self._last_mark[0]):
                self._last_mark = None  # an ended track ending again (room finished): say why, once more
            self._end_current()
            self.position = max(self.position, value.at)
        else:
            log.warning("%s: dropping unexpected item of type %s", self.key, type(value).__name__)
        out.extend(self._drain())
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Any], bool]:
        return self._drain(), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        # Bounded input is exhausted and no notify will come after this: wait for the engine here.
        self.ended = True
        self._end_current()
        out: list[Any] = []
        deadline = time.monotonic() + EOF_DRAIN_TIMEOUT_S
        while self.draining and time.monotonic() < deadline:
            out.extend(self._drain())
            if self.draining:
                time.sleep(0.005)
        if self.draining:
            log.error(
                "%s: STT results still outstanding after %.0f s; giving up", self.key, EOF_DRAIN_TIMEOUT_S
            )
            self._close_all()
        out.extend(self._drain())
        return out, StatefulLogic.DISCARD

    def notify_at(self) -> datetime | None:
        if self.current is not None or self.draining:
            return datetime.now(UTC) + POLL_INTERVAL
        return None

    def snapshot(self) -> dict[str, Any]:
        streams = [s.saved(ended=True) for s in self.draining]
        if self.current is not None:
            streams.append(self.current.saved(ended=False))
        return {
            "seq": self.seq,
            "position": self.position,
            "participant": asdict(self.participant) if self.participant else None,
            "ended": self.ended,
            "end_reason": self.end_reason,
            "streams": [] if self.failed else streams,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        """Re-open a stream from a snapshot and push again the audio it had not finalised."""
        s = _OpenStream(self.engine.stream(self.key), saved["start"])
        pcm = np.frombuffer(saved["pcm"], dtype=np.int16)
        piece = STT_SAMPLE_RATE // 5  # in 200 ms pieces, as live audio arrives
        for i in range(0, len(pcm), piece):
            s.push(pcm[i : i + piece])
        if saved["ended"]:
            s.stream.end_input()
            self.draining.append(s)
        else:
            self.current = s

    # -- internals ---------------------------------------------------------------------------------
    def _push(self, chunk: AudioChunk) -> None:
        if self.current is not None and chunk.start - self.current.position > MAX_GAP_S:
            self._end_current()
        if self.current is None:
            self.current = _OpenStream(self.engine.stream(self.key), chunk.start)
        samples = chunk.samples if chunk.samples.ndim == 1 else chunk.samples[:, 0]
        try:
            self.current.push(samples)
        except SttError as exc:
            self._fail(exc)
            return
        self.position = max(self.position, self.current.position)

    def _end_current(self) -> None:
        if self.current is not None:
            try:
                self.current.stream.end_input()
            except SttError as exc:
                self._fail(exc)
                return
            self.draining.append(self.current)
            self.current = None

    def _drain(self) -> list[Any]:
        out: list[Any] = []
        for s in [*self.draining, *([self.current] if self.current else [])]:
            try:
                events = s.stream.poll()
            except SttError as exc:
                self._fail(exc)
                break
            out.extend(self._transcript(s, e) for e in events)
            s.trim()
        self.draining = [s for s in self.draining if not s.stream.done]
        mark = self._mark()
        if mark is not None:
            out.append(mark)
        return out

    def _transcript(self, s: _OpenStream, e: SttEvent) -> Transcript:
        p = self.participant
        assert p is not None, "audio before the participant's announce"
        final = e.kind == "final"
        uid = f"{p.session_id}:{p.identity}:{self.seq}"
        if final:
            self.seq += 1
        return Transcript(
            room=p.room,
            participant=p.identity,
            speaker=p.role,
            name=p.name,
            utterance_id=uid,
            text=e.text,
            is_final=final,
            start=s.base + e.start,
            end=s.base + e.end,
            engine=self.engine.name,
            session_id=p.session_id,
            language=e.language,
            confidence=e.confidence,
        )

    def _mark(self) -> ProgressMark | None:
        if self.participant is None:
            return None
        open_streams = [*self.draining, *([self.current] if self.current else [])]
        if self.failed or (self.ended and not open_streams):
            settled = math.inf  # nothing more will come from this track
        elif open_streams:
            settled = min(s.base + s.stream.settled() for s in open_streams)
        else:
            settled = self.position  # announced, no audio yet: held at its start
        position = math.inf if math.isinf(settled) else self.position
        ended = (self.end_reason or "end") if math.isinf(settled) else ""
        if (settled, position, ended) == self._last_mark:
            return None
        self._last_mark = (settled, position, ended)
        p = self.participant
        return ProgressMark(p.room, p.identity, settled, position, session_id=p.session_id, ended=ended)

    def _fail(self, exc: SttError) -> None:
        log.error("%s: speech-to-text failed, skipping this participant: %s", self.key, exc)
        self.failed = True
        self.end_reason = STT_FAILED
        self._close_all()

    def _close_all(self) -> None:
        for s in [*self.draining, *([self.current] if self.current else [])]:
            s.stream.close()
        self.draining = []
        self.current = None


def transcribe_builder(engine_factory: Callable[[], SttEngine]) -> Callable[[Any], TranscribeLogic]:
    def build(resume: Any) -> TranscribeLogic:
        return TranscribeLogic(engine_factory(), resume)

    return build
