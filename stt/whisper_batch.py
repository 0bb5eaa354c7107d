"""The throughput stream: a participant's utterances packed into windows of up to 30 s, decoded in batches.

Whisper's encoder runs a window of at least 10 s (``ShortContextWhisper``; stock faster-whisper: always
30 s), so decoding short utterances one by one pays that encoder pass for each. For replay at
``--speed max`` this stream packs consecutive utterances into windows (as faster-whisper's
``BatchedInferencePipeline`` merges speech chunks), closing a window when the next utterance would not
fit or none could fit any more, and hands ``batch_windows`` closed windows to the engine at once (one
batched encode and decode, as that pipeline's ``batch_size`` does). What is held goes out early when
the first held utterance has waited ``max_hold_s`` of further audio (or ``max_hold_wall_s`` of wall
clock, a guard for a stalled source), and at the end of input. Each window's words are split back per
utterance, so finals stay one per utterance with that utterance's speech bounds. ``settled`` never
passes a held or decoding utterance's start. Which utterances share a window and which windows share
a batch depend only on the audio, so replays are deterministic.

Windows shorter than 30 s cost less per second of audio: the encoder's cost per second of context rises
steeply past ~22 s (tiny.en int8, 2 threads on the development machine: 6 ms up to 21 s, 8 ms at 25 s,
9.3 ms at 30 s), and a batch of shorter windows takes fewer decoder steps.

Pushed audio reaches the VAD in pieces of at least ``vad_chunk_s``: the VAD's cuts do not depend on
how its input is chunked, and one ONNX call per second of audio instead of five (200 ms pushes)
takes ~20 % off its CPU. Utterances and ``settled`` lag the pushes by at most that much audio.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from stt.pcm import STT_SAMPLE_RATE, to_float32
from stt.protocol import SttError, SttEvent
from stt.vad import StreamingVad, Utterance, VadParams
from stt.whisper_decode import Decoded

SubmitWindows = Callable[[list[list[Utterance]]], "Future[list[Decoded]]"]


class ThroughputStream:
    def __init__(
        self,
        key: str,
        vad: VadParams,
        submit_windows: SubmitWindows,
        *,
        window_s: float,
        max_hold_s: float,
        max_hold_wall_s: float | None,
        batch_windows: int = 1,
        vad_chunk_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self._vad = StreamingVad(vad)
        self._submit_windows = submit_windows
        self._window = round(window_s * STT_SAMPLE_RATE)
        # once this little room is left, no utterance (min_speech_s of speech plus its padding) fits
        self._full = self._window - round((vad.min_speech_s + 2 * vad.speech_pad_s) * STT_SAMPLE_RATE)
        self._batch = batch_windows
        self._max_hold = round(max_hold_s * STT_SAMPLE_RATE)
        self._max_hold_wall = max_hold_wall_s
        self._clock = clock
        self._vad_chunk = max(round(vad_chunk_s * STT_SAMPLE_RATE), 1)
        self._pending: list[np.ndarray] = []  # pushed audio not yet through the VAD
        self._pending_samples = 0
        self._open: list[Utterance] = []  # the window being filled
        self._open_samples = 0
        self._closed: list[list[Utterance]] = []  # full windows waiting for their batch
        self._held_since = 0.0  # clock time the first held utterance arrived
        self._jobs: deque[tuple[list[Utterance], Future[list[Decoded]]]] = deque()
        self._ended = False

    def push_audio(self, pcm: np.ndarray) -> None:
        if self._ended:
            raise SttError(f"{self.key}: audio pushed after end_input")
        self._pending.append(to_float32(pcm))
        self._pending_samples += len(pcm)
        if self._pending_samples >= self._vad_chunk:
            self._run_vad()
        first = self._first_held()
        if first is not None and self._vad.position - first.start > self._max_hold:
            self._submit()
        self._check_wall()

    def end_input(self) -> None:
        if not self._ended:
            self._ended = True
            self._run_vad()
            for utt in self._vad.finish():
                self._hold(utt)
            self._submit()

    def poll(self) -> list[SttEvent]:
        self._check_wall()
        out: list[SttEvent] = []
        while self._jobs and self._jobs[0][1].done():
            utts, fut = self._jobs.popleft()
            try:
                decoded = fut.result()
            except Exception as exc:
                raise SttError(f"{self.key}: Whisper failed: {type(exc).__name__}: {exc}") from None
            for utt, d in zip(utts, decoded, strict=True):
                if d.text:
                    out.append(
                        SttEvent(
                            "final",
                            d.text,
                            utt.speech_start / STT_SAMPLE_RATE,
                            utt.speech_end / STT_SAMPLE_RATE,
                            d.language,
                            d.confidence,
                        )
                    )
        return out

    def settled(self) -> float:
        if self._jobs:
            return self._jobs[0][0][0].start / STT_SAMPLE_RATE
        first = self._first_held()
        if first is not None:
            return first.start / STT_SAMPLE_RATE
        if self._ended:
            return math.inf
        return self._vad.settled() / STT_SAMPLE_RATE

    @property
    def done(self) -> bool:
        return self._ended and self._first_held() is None and not self._jobs

    def close(self) -> None:
        for _, fut in self._jobs:
            fut.cancel()
        self._jobs.clear()
        self._open, self._closed, self._pending = [], [], []
        self._ended = True

    # -- internals -----------------------------------------------------------------------------------
    def _run_vad(self) -> None:
        if self._pending:
            pcm = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
            self._pending, self._pending_samples = [], 0
            for utt in self._vad.push(pcm):
                self._hold(utt)

    def _first_held(self) -> Utterance | None:
        if self._closed:
            return self._closed[0][0]
        return self._open[0] if self._open else None

    def _hold(self, utt: Utterance) -> None:
        if self._open and self._open_samples + len(utt.audio) > self._window:
            self._close_window()
        if self._first_held() is None:
            self._held_since = self._clock()
        self._open.append(utt)
        self._open_samples += len(utt.audio)
        if self._open_samples >= self._full:
            self._close_window()

    def _close_window(self) -> None:
        if self._open:
            self._closed.append(self._open)
            self._open, self._open_samples = [], 0
        if len(self._closed) >= self._batch:
            self._submit()

    def _check_wall(self) -> None:
        wall = self._max_hold_wall
        if self._first_held() is not None and wall is not None and self._clock() - self._held_since >= wall:
            self._submit()

    def _submit(self) -> None:
        """Everything held goes to the engine now, as one batch of windows."""
        if self._open:
            self._closed.append(self._open)
            self._open, self._open_samples = [], 0
        if self._closed:
            windows, self._closed = self._closed, []
            utts = [u for w in windows for u in w]
            self._jobs.append((utts, self._submit_windows(windows)))
