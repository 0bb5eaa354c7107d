"""Where speech may be in what was pushed, without asking the server: a level and a loud/quiet flag
per 100 ms.

The stream uses it to skip silence (no session for it, nothing kept to re-send), to say ``settled()``
before the first loud frame, to place a final whose commit came without word times, and to find the
quietest moment where an over-long utterance is cut.
"""

from __future__ import annotations

import numpy as np

from stt.pcm import STT_SAMPLE_RATE

FRAME = STT_SAMPLE_RATE // 10  # 100 ms: granularity of the map
_STEPS_PER_DB = 2  # levels are kept as -dBFS in half-decibel steps, one byte a frame (255: silence)


def levels_of(frames: np.ndarray) -> np.ndarray:
    """Quantized quietness (-dBFS in half-dB steps, 0..255: larger is quieter) of each row of samples."""
    return _levels(np.sqrt(np.mean(frames.astype(np.float32) ** 2, axis=-1)))


def _levels(rms: np.ndarray) -> np.ndarray:
    dbfs = 20 * np.log10(np.maximum(rms, 1e-3) / 32768.0)
    return np.clip(np.round(-_STEPS_PER_DB * dbfs), 0, 255).astype(np.uint8)


class LoudnessMap:
    """Levels and flags for frames ``base`` .. ``end_frame`` (frame ``k`` = samples ``k*FRAME`` on)."""

    def __init__(self, quiet_dbfs: float) -> None:
        self._loud = bytearray()  # per FRAME: 1 if louder than quiet_dbfs
        self._levels = bytearray()  # per FRAME: levels_of() the frame
        self._base = 0  # frame index of _loud[0]
        self._tail = np.zeros(0, np.int16)  # samples of the incomplete last frame
        self._quiet_rms = 32768.0 * 10 ** (quiet_dbfs / 20)

    @property
    def mapped_end(self) -> int:
        """Stream sample up to which frames are mapped."""
        return (self._base + len(self._loud)) * FRAME

    def add(self, samples: np.ndarray) -> None:
        """Map int16 samples that follow the ones already added."""
        buf = np.concatenate((self._tail, samples)) if len(self._tail) else samples
        n = len(buf) // FRAME
        if n:
            frames = buf[: n * FRAME].astype(np.float32).reshape(n, FRAME)
            rms = np.sqrt(np.mean(frames * frames, axis=1))
            self._loud.extend((rms >= self._quiet_rms).astype(np.uint8).tobytes())
            self._levels.extend(_levels(rms).tobytes())
        self._tail = buf[n * FRAME :].copy()

    def close_last_frame(self) -> None:
        """End of input: the last, short frame still counts (padded with silence)."""
        if len(self._tail):
            self.add(np.zeros(FRAME - len(self._tail), np.int16))

    def loud_frames(self, a: int, b: int) -> np.ndarray:
        """Start samples of loud frames that start in [a, b)."""
        f0 = max(-(-a // FRAME), self._base)
        f1 = min(-(-b // FRAME), self._base + len(self._loud))
        if f1 <= f0:
            return np.zeros(0, np.int64)
        flags = np.frombuffer(self._loud, np.uint8, count=f1 - f0, offset=f0 - self._base)
        return (np.flatnonzero(flags) + f0) * FRAME

    def first_loud(self, a: int, b: int) -> int | None:
        loud = self.loud_frames(a, b)
        return int(loud[0]) if len(loud) else None

    def any_loud(self, a: int, b: int) -> bool:
        return len(self.loud_frames(a, b)) > 0

    def utterance_span(self, a: int, b: int, pause: int) -> tuple[int, int]:
        """The first run of loud frames in [a, b) that no quiet stretch of ``pause`` samples breaks
        ([a, b) itself when nothing there is loud)."""
        loud = self.loud_frames(a, b)
        if not len(loud):
            return a, b
        gaps = np.flatnonzero(np.diff(loud) - FRAME >= pause)
        last = int(loud[gaps[0]]) if len(gaps) else int(loud[-1])
        return int(loud[0]), min(last + FRAME, b)

    def last_run_start(self, a: int, b: int, pause: int) -> int | None:
        """Start sample of the last run of loud frames in [a, b) that a quiet stretch of ``pause``
        samples precedes (the first loud frame when none does), None when nothing there is loud."""
        loud = self.loud_frames(a, b)
        if not len(loud):
            return None
        gaps = np.flatnonzero(np.diff(loud) - FRAME >= pause)
        return int(loud[gaps[-1] + 1]) if len(gaps) else int(loud[0])

    def quietest(self, a: int, b: int) -> int | None:
        """Start sample of the quietest whole frame within [a, b), if any; of equally quiet ones, the
        middle of the last run of them (the middle of the latest pause, where the pause is silence)."""
        f0 = max(-(-a // FRAME), self._base)
        f1 = min(b // FRAME, self._base + len(self._levels))
        if f1 <= f0:
            return None
        levels = np.frombuffer(self._levels, np.uint8, count=f1 - f0, offset=f0 - self._base)
        top = np.flatnonzero(levels == levels.max())
        breaks = np.flatnonzero(np.diff(top) != 1)
        first = int(top[breaks[-1] + 1]) if len(breaks) else int(top[0])
        return ((first + int(top[-1])) // 2 + f0) * FRAME

    def forget_before(self, sample: int) -> None:
        """Drop the flags of frames that end before ``sample`` (rounded down to a frame)."""
        keep = sample // FRAME
        if keep > self._base:
            del self._loud[: keep - self._base]
            del self._levels[: keep - self._base]
            self._base = keep
