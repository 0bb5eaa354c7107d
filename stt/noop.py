"""An engine that hears nothing: for benchmarks of the audio path without speech recognition."""

from __future__ import annotations

import math

import numpy as np

from stt.pcm import STT_SAMPLE_RATE
from stt.protocol import SttEvent


class NoopEngine:
    name = "noop"

    def stream(self, key: str) -> NoopStream:
        return NoopStream()

    def close(self) -> None:
        pass


class NoopStream:
    def __init__(self) -> None:
        self._samples = 0
        self._ended = False

    def push_audio(self, pcm: np.ndarray) -> None:
        self._samples += len(pcm)

    def end_input(self) -> None:
        self._ended = True

    def poll(self) -> list[SttEvent]:
        return []

    def settled(self) -> float:
        return math.inf if self._ended else self._samples / STT_SAMPLE_RATE

    @property
    def done(self) -> bool:
        return self._ended

    def close(self) -> None:
        self._ended = True
