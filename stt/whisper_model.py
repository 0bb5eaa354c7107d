"""faster-whisper's ``WhisperModel`` with an encoder that skips most of the padding.

Whisper's encoder is fed a fixed 30 s of log-mel frames: a 3 s utterance is zero-padded to 3000
frames, and the encoder pass over that padding is most of a short utterance's decode (tiny.en int8,
2 threads: 0.25 s for 3000 frames, 0.04 s for 1000). CTranslate2's encoder accepts fewer frames, so
this model hands it the audio's frames plus some of the padding: at least ``min_context_s`` in all,
and at least ``tail_s`` of padding after the audio. Whisper never saw contexts much shorter than its
training windows, and below ~5 s it loops and hallucinates (measured on the sample: WER 0.23 at 10 s
and at 30 s, 2.4 at 2 s), so the floor defaults to 10 s; ``min_context_s=30`` is stock Whisper.

The padding is found as it is made: ``pad_or_trim`` pads with frames that are exactly zero, which a
log-mel frame of real audio never is (its floor is ``(max - 8 + 4) / 4`` per bin, never 0 in every
bin). Everything else (prompts, fallback, no-speech, word alignment, batching) is faster-whisper's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from faster_whisper import WhisperModel

#: frames per second of Whisper's log-mel features (hop 160 at 16 kHz)
FRAMES_PER_S = 100
#: Whisper's full window, in frames
FULL_FRAMES = 3000


def content_frames(features: np.ndarray) -> int:
    """Frames before the trailing all-zero padding of ``features`` ((batch,) mels, frames): the most
    over the batch."""
    rows = features.reshape(-1, features.shape[-2], features.shape[-1])
    voiced = np.flatnonzero(np.any(rows != 0, axis=(0, 1)))
    return int(voiced[-1]) + 1 if len(voiced) else 0


def context_frames(content: int, total: int, min_context_s: float, tail_s: float) -> int:
    """Frames to encode: content plus ``tail_s`` of padding, at least ``min_context_s``, at most ``total``;
    even, as the encoder's stride-2 convolution halves it."""
    want = max(round(min_context_s * FRAMES_PER_S), content + round(tail_s * FRAMES_PER_S))
    want += want % 2
    return min(total, want)


class ShortContextWhisper(WhisperModel):
    def __init__(self, *args: Any, min_context_s: float = 10.0, tail_s: float = 1.0, **kwargs: Any) -> None:
        if not 0 < min_context_s <= FULL_FRAMES / FRAMES_PER_S:
            raise ValueError("min_context_s must lie in (0, 30] s")
        if tail_s < 0:
            raise ValueError("tail_s must be >= 0")
        super().__init__(*args, **kwargs)
        self.min_context_s = min_context_s
        self.tail_s = tail_s
        self.frames_encoded = 0  # a count, for benchmarks and tests

    def encode(self, features: np.ndarray) -> Any:
        total = features.shape[-1]
        n = context_frames(content_frames(features), total, self.min_context_s, self.tail_s)
        if n < total:
            features = np.ascontiguousarray(features[..., :n])
        self.frames_encoded += n * (features.shape[0] if features.ndim == 3 else 1)
        return super().encode(features)
