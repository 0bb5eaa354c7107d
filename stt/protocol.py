"""The one small protocol every speech-to-text engine implements.

Shape borrowed from livekit-agents' ``stt.stream()``: an engine opens one stream per participant; the
transcribe operator pushes 16 kHz mono int16 audio (``stt.pcm.STT_SAMPLE_RATE``) into it without
blocking and polls ready events out of it. Times on events are *stream* seconds (samples pushed /
``STT_SAMPLE_RATE``); the operator maps them to media time. Engines that do network or model work do
it off the Bytewax worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class SttEvent:
    """One result. ``start``/``end`` are the speech bounds where the engine knows them (not padded
    utterance bounds); ``language`` (ISO 639-1) and ``confidence`` (0..1) are None when unknown."""

    kind: Literal["partial", "final"]
    text: str
    start: float  # stream seconds
    end: float  # stream seconds
    language: str | None = None
    confidence: float | None = None


class SttError(RuntimeError):
    """The engine gave up on a stream (e.g. it kept failing); the message is safe to log."""


class SttStream(Protocol):
    def push_audio(self, pcm: np.ndarray) -> None:
        """Queue 16 kHz mono int16 samples; never blocks on I/O or inference."""

    def end_input(self) -> None:
        """No more audio: flush the open utterance; ``done`` turns true once all events are out."""

    def poll(self) -> list[SttEvent]:
        """Events ready now, in stream order; finals never overlap and never repeat."""

    def settled(self) -> float:
        """Stream seconds before which no further final transcript will start."""

    @property
    def done(self) -> bool:
        """True after ``end_input`` once every event has been returned by ``poll``."""

    def close(self) -> None:
        """Release resources at once (no flush)."""


class SttEngine(Protocol):
    name: str

    def stream(self, key: str) -> SttStream:
        """Open a stream for one participant (``key`` is ``room/session_id/identity``, for logs)."""

    def close(self) -> None:
        """Release engine-wide resources (threads, loops, models)."""
