"""What the local ElevenLabs stand-in hears and how its tests keep time: tone words, the recognizer,
and a manual clock (loopback tests only; the protocol itself is in ``elevenlabs_server``).

Recognition is deterministic and independent of the session: every word is a tone burst whose pitch
names it (``VOCAB[k]`` is ``BASE_HZ + k * STEP_HZ``), so the same audio re-sent on a new session gives
the same text, which is what makes "no final lost, none repeated" testable. ``tone_utterance`` builds
such audio. The recognizer is an energy VAD: ``vad_silence_threshold_secs`` of silence after speech
commits an utterance, as the service's VAD strategy does; under the manual strategy only a commit
request does, or the service's own limit of 90 s of uncommitted audio [API guide].
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
SR = 16_000  # the protocol's pcm_16000, stated here on its own: the server is the engine's oracle
VAD_FRAME = SR // 100  # 10 ms decisions
VOCAB = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
BASE_HZ = 400.0
STEP_HZ = 100.0
AUTO_COMMIT_S = 90.0  # "By default the stream will be automatically committed every 90 seconds"


# ------------------------------------------------------------------------------------------ audio
def word_tone(word: str, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    """int16 tone burst that the server hears as ``word``."""
    k = VOCAB.index(word)
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * 32767 * np.sin(2 * np.pi * (BASE_HZ + k * STEP_HZ) * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), np.int16)


def tone_utterance(text: str, word_s: float = 0.3, gap_s: float = 0.1) -> np.ndarray:
    parts: list[np.ndarray] = []
    for i, word in enumerate(text.split()):
        if i:
            parts.append(silence(gap_s))
        parts.append(word_tone(word, word_s))
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------ clock
class ManualClock:
    """A ``stt.clock.Clock`` whose time moves only on ``advance`` (from any thread; sleepers on any loop)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            due = [x for x in self._sleepers if x[0] <= self._now]
            self._sleepers = [x for x in self._sleepers if x[0] > self._now]
        for _, loop, fut in due:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_wake_sleeper, fut)

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            deadline = self._now + seconds
            if deadline > self._now:
                entry = (deadline, loop, fut)
                self._sleepers.append(entry)
            else:
                fut.set_result(None)
        try:
            await fut
        finally:
            with self._lock:
                self._sleepers = [x for x in self._sleepers if x[2] is not fut]

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            return await aw
        task = asyncio.ensure_future(aw)
        timer = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # we were cancelled
            task.cancel()
            raise
        finally:
            timer.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            if task.cancelled():
                raise TimeoutError
        return task.result()  # done, or it finished while being cancelled

    def __repr__(self) -> str:
        return f"ManualClock(now={self.monotonic():.3f})"


def _wake_sleeper(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# ------------------------------------------------------------------------------------------ recognizer
class Recognizer:
    """Energy VAD + pitch-to-word, fed whole 10 ms frames; times are session seconds."""

    def __init__(
        self, silence_s: float | None, threshold_rms: float = 0.01 * 32768, word_gap_s: float = 0.04
    ) -> None:
        # silence_s None: manual commits only (commit_strategy=manual)
        self.silence_frames = max(1, round(silence_s * 100)) if silence_s is not None else 1 << 62
        self.auto_commit_frames = round(AUTO_COMMIT_S * 100)
        self.committed_at = 0  # session sample of the last commit (VAD, automatic or requested)
        self.word_gap_frames = max(1, round(word_gap_s * 100))
        self.threshold = threshold_rms
        self.frame = 0  # next frame index
        self.tail = np.zeros(0, np.int16)
        self.words: list[tuple[int, int, str]] = []  # (start frame, end frame, text)
        self.current: list[np.ndarray] = []
        self.current_start = 0
        self.last_loud = -1
        self.open = False

    def feed(self, pcm: np.ndarray) -> list[tuple[str, Any]]:
        """Events: ("partial", text) and ("commit", (text, words))."""
        buf = np.concatenate((self.tail, pcm)) if len(self.tail) else pcm
        n = len(buf) // VAD_FRAME
        self.tail = buf[n * VAD_FRAME :]
        out: list[tuple[str, Any]] = []
        changed = False
        for i in range(n):
            frame = buf[i * VAD_FRAME : (i + 1) * VAD_FRAME]
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) >= self.threshold
            if loud:
                if not self.current:
                    self.current_start = self.frame
                self.current.append(frame)
                self.last_loud = self.frame
                self.open = True
                changed = True
            else:
                quiet = self.frame - self.last_loud
                if self.current and quiet >= self.word_gap_frames:
                    self._close_word()
                if self.open and quiet >= self.silence_frames:
                    out.append(("commit", self._commit((self.frame + 1) * VAD_FRAME)))
                    changed = False
            self.frame += 1
            if (
                self.open
                and self.frame * VAD_FRAME - self.committed_at >= self.auto_commit_frames * VAD_FRAME
            ):
                out.append(("commit", self._commit(self.frame * VAD_FRAME)))
                changed = False
        if changed and self.open:
            out.append(("partial", self.text(with_current=True)))
        return out

    @property
    def uncommitted_s(self) -> float:
        """Audio received since the last commit."""
        return (self.frame * VAD_FRAME + len(self.tail) - self.committed_at) / SR

    def commit(self) -> tuple[str, list[dict[str, Any]]]:
        return self._commit(self.frame * VAD_FRAME + len(self.tail))

    def text(self, with_current: bool = False) -> str:
        words = [w for _, _, w in self.words]
        if with_current and self.current and len(self.current) >= 5:
            words.append(_pitch_word(np.concatenate(self.current)))
        return " ".join(words)

    def _close_word(self) -> None:
        self.words.append((self.current_start, self.last_loud + 1, _pitch_word(np.concatenate(self.current))))
        self.current = []

    def _commit(self, at: int) -> tuple[str, list[dict[str, Any]]]:
        self.committed_at = at
        if self.current:
            self._close_word()
        words: list[dict[str, Any]] = []
        for i, (a, b, w) in enumerate(self.words):
            if i:
                prev_end = self.words[i - 1][1]
                words.append({"text": " ", "start": prev_end / 100, "end": a / 100, "type": "spacing"})
            words.append(
                {
                    "text": w,
                    "start": a / 100,
                    "end": b / 100,
                    "type": "word",
                    "speaker_id": "speaker_0",
                    "logprob": word_logprob(w),
                    "characters": list(w),
                }
            )
        text = self.text()
        self.words = []
        self.open = False
        return text, words


def word_logprob(word: str) -> float:
    """The (made-up, deterministic) log probability the server gives a word."""
    return -0.01 * (VOCAB.index(word) + 1) if word in VOCAB else -2.0


def _pitch_word(samples: np.ndarray) -> str:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    hz = float(np.argmax(spectrum)) * SR / len(samples)
    k = round((hz - BASE_HZ) / STEP_HZ)
    return VOCAB[k] if 0 <= k < len(VOCAB) else "unknown"
