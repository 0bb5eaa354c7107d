"""PCM as the STT side holds it: the one sample rate, int16 <-> float, and a buffer of samples by position.

Every engine hears 16 kHz mono (``STT_SAMPLE_RATE``); the resample operator brings each track there.
int16 full scale maps to [-1, 1) as ``x / 32768`` and back with rounding, clipped so that nothing wraps.
``SampleBuffer`` keeps the samples from stream position ``start`` to ``end`` as the pieces that were
appended (no copy per append), which is what an engine that must re-send, re-decode or snapshot the
audio not yet transcribed needs.
"""

from __future__ import annotations

from collections import deque

import numpy as np

STT_SAMPLE_RATE = 16_000

_INT16_SCALE = 32768.0


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 samples (any shape) -> float32 in [-1, 1)."""
    return samples.astype(np.float32) * (1.0 / _INT16_SCALE)


def to_int16(x: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16, rounded; out-of-range values clip, NaN becomes 0."""
    return (np.clip(np.nan_to_num(x), -1.0, 32767.0 / _INT16_SCALE) * _INT16_SCALE).round().astype(np.int16)


def as_int16(pcm: np.ndarray) -> np.ndarray:
    """Any 1-D-able array as a fresh int16 copy (float as [-1, 1], other integers clipped)."""
    a = np.asarray(pcm).reshape(-1)
    if a.dtype == np.int16:
        return a.copy()  # the caller may reuse its buffer
    if np.issubdtype(a.dtype, np.floating):
        return to_int16(a)
    return np.clip(a, -32768, 32767).astype(np.int16)


class SampleBuffer:
    """Samples from stream position ``start`` to ``end``, as the appended pieces (first axis = samples).

    ``trim`` forgets exactly up to a position; ``drop_pieces_before`` forgets only whole pieces (so
    what is kept still starts where a piece was appended).
    """

    def __init__(self, dtype: type[np.generic] | np.dtype = np.int16, start: int = 0) -> None:
        self._pieces: deque[np.ndarray] = deque()
        self._dtype = np.dtype(dtype)
        self._frame_shape: tuple[int, ...] = ()  # trailing shape of the pieces (channels), for empty reads
        self.start = start
        self.end = start

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, pcm: np.ndarray) -> None:
        if len(pcm):
            self._pieces.append(pcm)
            self._frame_shape = pcm.shape[1:]
            self.end += len(pcm)

    def read(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) of the stream, clipped to what is kept (a view where one piece covers it)."""
        a, b = max(a, self.start), min(b, self.end)
        out: list[np.ndarray] = []
        pos = self.start
        for piece in self._pieces:
            nxt = pos + len(piece)
            if nxt > a and pos < b:
                out.append(piece[max(a - pos, 0) : min(b, nxt) - pos])
            if nxt >= b:
                break
            pos = nxt
        if len(out) == 1:
            return out[0]
        return np.concatenate(out) if out else self._empty()

    def read_all(self) -> np.ndarray:
        """Everything kept, as one array."""
        if not self._pieces:
            return self._empty()
        return self._pieces[0] if len(self._pieces) == 1 else np.concatenate(self._pieces)

    def trim(self, upto: int) -> None:
        """Forget the samples before ``upto``."""
        upto = min(upto, self.end)
        while self._pieces and self.start + len(self._pieces[0]) <= upto:
            self.start += len(self._pieces.popleft())
        if self._pieces and upto > self.start:
            self._pieces[0] = self._pieces[0][upto - self.start :]
            self.start = upto
        if not self._pieces:
            self.start = self.end

    def drop_pieces_before(self, upto: float) -> None:
        """Forget the whole pieces that end at or before ``upto``."""
        while self._pieces and self.start + len(self._pieces[0]) <= upto:
            self.start += len(self._pieces.popleft())

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self._frame_shape), self._dtype)
