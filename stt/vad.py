"""Streaming voice-activity segmentation with the Silero VAD model that faster-whisper ships.

faster-whisper's own ``get_speech_timestamps`` needs the whole file; a live stream needs utterances
as they end. This runs the same ONNX model window by window (512 samples at 16 kHz), carrying its
recurrent state and 64-sample context across calls, and cuts utterances with hysteresis: speech
starts at ``threshold``, ends after ``min_silence_s`` below ``neg_threshold``. An utterance carries its
speech bounds and, around them, the audio a recogniser hears (``speech_pad_s`` either side, clipped
where the previous utterance ends). Memory is bounded: only audio from the open utterance (plus
padding) is kept, so hours of silence cost nothing but CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stt.pcm import STT_SAMPLE_RATE, SampleBuffer

WINDOW = 512  # samples per VAD decision (32 ms), what the v5/v6 Silero model expects at 16 kHz
CONTEXT = 64


@dataclass(frozen=True, slots=True)
class VadParams:
    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_silence_s: float = 0.5  # silence that ends an utterance
    speech_pad_s: float = 0.2  # audio kept either side of detected speech
    min_speech_s: float = 0.25  # shorter bursts are dropped (clicks, coughs)
    max_utterance_s: float = 20.0  # long monologues are cut so transcripts keep flowing


@dataclass(frozen=True, slots=True)
class Utterance:
    """One cut of speech. ``start``/``end`` bound the audio handed to the recogniser (speech plus
    ``speech_pad_s`` either side, where the stream has it); ``speech_start``/``speech_end`` are the
    VAD's own speech bounds inside them, what a transcript's times report."""

    start: int  # stream sample index
    end: int
    audio: np.ndarray  # float32 mono, samples [start, end)
    speech_start: int
    speech_end: int


class _SileroSession:
    """Shared ONNX session (thread-safe ``run``); per-stream state lives in ``StreamingVad``."""

    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            from faster_whisper.vad import get_vad_model

            cls._instance = get_vad_model().session
        return cls._instance


class StreamingVad:
    def __init__(self, params: VadParams | None = None) -> None:
        self.p = params or VadParams()
        self._session = _SileroSession.get()
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)  # < WINDOW samples not yet decided on
        # retained audio as the pushed pieces (no per-chunk copy of the whole utterance)
        self._kept = SampleBuffer(np.float32)
        self._decided = 0  # samples covered by VAD decisions
        self._speech_start: int | None = None
        self._last_voiced_end = 0
        self._silence = 0
        self._prev_end = 0  # end of the last emitted utterance (utterances never overlap)
        pad = int(self.p.speech_pad_s * STT_SAMPLE_RATE)
        self._pad = pad
        self._min_silence = int(self.p.min_silence_s * STT_SAMPLE_RATE)
        self._min_speech = int(self.p.min_speech_s * STT_SAMPLE_RATE)
        self._max_utt = int(self.p.max_utterance_s * STT_SAMPLE_RATE)

    @property
    def position(self) -> int:
        """Samples received."""
        return self._kept.end

    def settled(self) -> int:
        """Sample index before which no future utterance will start."""
        if self._speech_start is not None:
            return max(self._prev_end, self._speech_start - self._pad)
        return max(self._prev_end, self._decided - self._pad)

    def push(self, x: np.ndarray) -> list[Utterance]:
        """Feed float32 mono samples; returns utterances that ended within them."""
        self._kept.append(x.astype(np.float32, copy=True))
        self._pending = np.concatenate([self._pending, x]) if len(self._pending) else x
        n = len(self._pending) // WINDOW
        if n == 0:
            return []
        windows = self._pending[: n * WINDOW].reshape(n, WINDOW)
        self._pending = self._pending[n * WINDOW :]
        probs = self._probs(windows)
        out: list[Utterance] = []
        for prob in probs:
            utt = self._decide(float(prob))
            if utt:
                out.append(utt)
        self._trim()
        return out

    def open_utterance(self) -> Utterance | None:
        """The utterance still open, as heard so far (audio up to the samples received), or None."""
        if self._speech_start is None:
            return None
        start = self._open_start()
        end = self.position
        speech_start = max(self._speech_start, start)
        speech_end = min(max(self._last_voiced_end, speech_start), end)
        return Utterance(start, end, self._kept.read(start, end).copy(), speech_start, speech_end)

    def pending_cut(self) -> Utterance | None:
        """The utterance that will be cut if the silence now running lasts ``min_silence_s``: known
        exactly once that silence has passed ``speech_pad_s`` (the cut keeps that much after the last
        voice), so a recogniser may start on it early. None while speech runs, or if it would be
        dropped as too short."""
        span = self.pending_cut_span()
        if span is None:
            return None
        start, end = span
        assert self._speech_start is not None
        speech_start = max(self._speech_start, start)
        speech_end = max(self._last_voiced_end, speech_start)
        return Utterance(start, end, self._kept.read(start, end).copy(), speech_start, speech_end)

    def pending_cut_span(self) -> tuple[int, int] | None:
        """``pending_cut``'s (start, end) without copying its audio: what a caller compares per chunk."""
        if self._speech_start is None or self._silence == 0:
            return None
        end = self._last_voiced_end + self._pad
        if self.position < end or self._last_voiced_end - self._speech_start < self._min_speech:
            return None
        return self._open_start(), end

    def finish(self) -> list[Utterance]:
        """End of stream: decide the remainder (zero-padded) and close an open utterance."""
        out: list[Utterance] = []
        if len(self._pending):
            real = len(self._pending)
            out.extend(self.push(np.zeros(WINDOW - real, np.float32)))
        if self._speech_start is not None:
            utt = self._cut(self._last_voiced_end + self._pad)
            if utt:
                out.append(utt)
        return out

    # -- internals -----------------------------------------------------------------------------------
    def _probs(self, windows: np.ndarray) -> np.ndarray:
        ctx = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([ctx, windows], axis=1).astype(np.float32)
        self._context = windows[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(probs).reshape(-1)

    def _decide(self, prob: float) -> Utterance | None:
        win_start = self._decided
        self._decided += WINDOW
        if self._speech_start is None:
            if prob >= self.p.threshold:
                self._speech_start = win_start
                self._last_voiced_end = self._decided
                self._silence = 0
            return None
        if prob < self.p.neg_threshold:
            self._silence += WINDOW
            if self._silence >= self._min_silence:
                return self._cut(self._last_voiced_end + self._pad)
        else:
            self._silence = 0
            self._last_voiced_end = self._decided
            if self._decided - self._speech_start >= self._max_utt:
                utt = self._cut(self._decided, keep_open=True)
                return utt
        return None

    def _cut(self, end: int, keep_open: bool = False) -> Utterance | None:
        assert self._speech_start is not None
        start = self._open_start()
        end = min(end, self.position)
        voiced = self._last_voiced_end - self._speech_start
        speech_start = max(self._speech_start, start)
        # a cut of a long monologue ends speech at the cut; otherwise speech ends at the last voiced window
        speech_end = end if keep_open else max(min(self._last_voiced_end, end), speech_start)
        self._speech_start = end if keep_open else None
        self._silence = 0
        if voiced < self._min_speech and not keep_open:
            return None
        self._prev_end = end
        audio = self._kept.read(start, end).copy()
        return Utterance(start, end, audio, speech_start, speech_end)

    def _open_start(self) -> int:
        """Where the open utterance's audio starts: its padding, clipped at the last cut and at the
        audio kept."""
        assert self._speech_start is not None
        return max(self._prev_end, self._speech_start - self._pad, self._kept.start)

    def _trim(self) -> None:
        keep_from = (
            self._speech_start - self._pad if self._speech_start is not None else self._decided - self._pad
        )
        # drop whole pieces that end before keep_from (a piece is ~200 ms, so at most that much extra is kept)
        self._kept.drop_pieces_before(keep_from)
