"""Per-participant resampling to 16 kHz mono (``STT_SAMPLE_RATE``), one soxr ``ResampleStream`` a track.

A stream (not per-chunk ``soxr.resample``) keeps the filter state across chunk boundaries, so the
output is the same as resampling the whole track at once: no clicks every 200 ms. Output chunks carry
media time computed from the count of output samples, so timing never drifts with rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import soxr
from bytewax.operators import StatefulLogic

from quantcoach.records import AudioChunk, ParticipantAnnounce, TrackEnd
from stt.pcm import STT_SAMPLE_RATE, to_float32, to_int16

log = logging.getLogger(__name__)

#: A live track that pauses (mute, network) restarts its stream when the gap exceeds this; shorter
#: gaps are filled with silence so that media time stays contiguous for the STT engine.
MAX_FILLED_GAP_S = 30.0
#: Timing jitter tolerated between consecutive chunks before it counts as a gap.
GAP_TOLERANCE_S = 0.02


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """int16 (frames,) or (frames, channels) -> float32 mono in [-1, 1]."""
    x = to_float32(samples)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    return x


class TrackResampler:
    """Resamples one participant's chunks; plain methods so unit tests need no Bytewax."""

    def __init__(self, room: str, participant: str) -> None:
        self.room = room
        self.participant = participant
        self._stream: soxr.ResampleStream | None = None
        self._in_rate = 0
        self._base = 0.0  # media time of the stream's first input sample
        self._in_frames = 0  # input frames pushed into the current stream
        self._out_frames = 0  # output frames emitted by the current stream

    @property
    def _expected_next(self) -> float:
        return self._base + self._in_frames / self._in_rate

    def push(self, chunk: AudioChunk) -> list[AudioChunk]:
        out: list[AudioChunk] = []
        x = to_mono_float(chunk.samples)
        if self._stream is not None:
            gap = chunk.start - self._expected_next
            if chunk.sample_rate != self._in_rate or gap > MAX_FILLED_GAP_S:
                out.extend(self.flush())
            elif gap > GAP_TOLERANCE_S:
                x = np.concatenate([np.zeros(round(gap * self._in_rate), np.float32), x])
        if self._stream is None:
            self._stream = soxr.ResampleStream(chunk.sample_rate, STT_SAMPLE_RATE, 1, dtype="float32")
            self._in_rate = chunk.sample_rate
            self._base = chunk.start
            self._in_frames = self._out_frames = 0
        self._in_frames += len(x)
        out.extend(self._emit(self._stream.resample_chunk(x)))
        return out

    def flush(self) -> list[AudioChunk]:
        """End the current stream, returning the samples soxr still held."""
        if self._stream is None:
            return []
        out = self._emit(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        self._stream = None
        return out

    def _emit(self, y: np.ndarray) -> list[AudioChunk]:
        if len(y) == 0:
            return []
        start = self._base + self._out_frames / STT_SAMPLE_RATE
        self._out_frames += len(y)
        return [AudioChunk(self.room, self.participant, to_int16(y), STT_SAMPLE_RATE, start)]


class ResampleLogic(StatefulLogic[Any, Any, None]):
    """Keyed by participant: AudioChunk -> 16 kHz mono AudioChunk; other events pass through."""

    def __init__(self) -> None:
        self.track: TrackResampler | None = None

    def on_item(self, value: Any) -> tuple[list[Any], bool]:
        if isinstance(value, AudioChunk):
            if self.track is None:
                self.track = TrackResampler(value.room, value.participant)
            return self.track.push(value), StatefulLogic.RETAIN
        if isinstance(value, TrackEnd):
            flushed = self.track.flush() if self.track else []
            return [*flushed, value], StatefulLogic.RETAIN
        if isinstance(value, ParticipantAnnounce):
            return [value], StatefulLogic.RETAIN
        log.warning("resample: dropping unexpected item of type %s", type(value).__name__)
        return [], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        return (self.track.flush() if self.track else []), StatefulLogic.DISCARD

    def snapshot(self) -> None:
        # soxr's filter state cannot be serialised; a resumed track restarts its stream, which costs
        # one filter delay (< 1 ms of audio) at the resume point and nothing else.
        return None
