"""Whisper decodes as the engine runs them: one utterance, or batches of windows of packed utterances.

Decoding is greedy at temperature 0, so the same audio gives the same text whatever the timing.

Confidence (0..1) is a geometric mean of token probabilities: for an utterance decoded alone (or alone
in its window), ``exp`` of the token-weighted mean of its segments' ``avg_logprob``; for an utterance
cut out of a window of several, ``exp`` of the mean log probability of its words (faster-whisper's
word probability is the mean of its tokens'). Segments Whisper itself marks as likely no speech are
dropped first, so an utterance of noise gets no text and no final.
A window's text is split back per utterance by word timestamps: a word belongs to the utterance whose
span of the window holds the word's midpoint.

Why words, not Whisper's own segment timestamps: decoding with timestamps costs as much as the word
alignment it would save (tiny.en, sample and a 146 s session: 12-17 % more tokens, against 6-11 % of a
decode for the alignment), its segments often straddle utterances (a sentence pause inside an
utterance is as likely a cut as the gap between two), and a batched window decoded with timestamps
may stop at a timestamp mid-window (2 windows of 8), its remainder then needing a second decode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stt.pcm import STT_SAMPLE_RATE

# Whisper invents text for noise; segments that look like that are dropped (faster-whisper's defaults).
NO_SPEECH_PROB = 0.6
LOG_PROB_FLOOR = -1.0
#: Whisper's encoder always sees this much audio; a window packs utterances up to it.
WINDOW_S = 30.0


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    language: str | None = "en"
    hotwords: str | None = None  # faster-whisper's ``hotwords``: a prompt of terms to expect
    initial_prompt: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "beam_size": 1,
            "temperature": 0.0,
            "hotwords": self.hotwords or None,
            "initial_prompt": self.initial_prompt or None,
        }


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    language: str | None = None
    confidence: float | None = None


def _kept(segments: Iterable[Any]) -> list[Any]:
    return [s for s in segments if not (s.no_speech_prob > NO_SPEECH_PROB and s.avg_logprob < LOG_PROB_FLOOR)]


def decode_utterance(model: Any, audio: np.ndarray, opts: DecodeOptions) -> Decoded:
    """One utterance through ``WhisperModel.transcribe`` (one encoder pass for up to 30 s)."""
    segments, info = model.transcribe(
        audio,
        condition_on_previous_text=False,
        vad_filter=False,
        without_timestamps=True,
        **opts.kwargs(),
    )
    return _joined(_kept(segments), info.language)


def _joined(segments: list[Any], language: str | None) -> Decoded:
    kept = [s for s in segments if s.text.strip()]
    text = " ".join(s.text.strip() for s in kept)
    if not text:
        return Decoded("", language)
    weights = [max(len(s.tokens), 1) for s in kept]
    mean_logprob = sum(w * s.avg_logprob for w, s in zip(weights, kept, strict=True)) / sum(weights)
    return Decoded(text, language, _probability(mean_logprob))


def decode_windows(
    batched: Any, windows: Sequence[Sequence[np.ndarray]], opts: DecodeOptions
) -> list[Decoded]:
    """Windows of utterances (each window's utterance audio, in order) decoded by one call of
    ``BatchedInferencePipeline``: the windows laid end to end as its clips, so each is one encoder pass
    and they are encoded and decoded as one batch. Returns one ``Decoded`` per utterance, in order.

    A segment belongs to the window its midpoint lies in; a window of one utterance takes its
    segments' text whole; a window of several is split back by its words (word timestamps are asked
    for only when some window needs them: the alignment costs 6-11 % of a decode)."""
    audios = [np.concatenate(w) for w in windows]
    edges = np.cumsum([0, *map(len, audios)]) / STT_SAMPLE_RATE
    split = any(len(w) > 1 for w in windows)
    segments, info = batched.transcribe(
        np.concatenate(audios),
        clip_timestamps=[{"start": float(a), "end": float(b)} for a, b in itertools.pairwise(edges)],
        without_timestamps=True,
        word_timestamps=split,
        batch_size=len(windows),
        **opts.kwargs(),
    )
    mine: list[list[Any]] = [[] for _ in windows]
    for seg in _kept(segments):
        k = int(np.searchsorted(edges, (seg.start + seg.end) / 2, side="right")) - 1
        mine[min(max(k, 0), len(windows) - 1)].append(seg)
    out: list[Decoded] = []
    for w, segs, offset in zip(windows, mine, edges, strict=False):
        if len(w) == 1:
            out.append(_joined(segs, info.language))
            continue
        words = [
            (x.start - offset, x.end - offset, x.word, x.probability) for s in segs for x in s.words or []
        ]
        parts = split_words(words, [len(a) for a in w])
        out += [Decoded(text, info.language, confidence) for text, confidence in parts]
    return out


def split_words(
    words: Sequence[tuple[float, float, str, float]], lengths: Sequence[int]
) -> list[tuple[str, float | None]]:
    """(text, confidence) per utterance from a window's words (start s, end s, word, probability)."""
    bounds = np.cumsum([0, *lengths]) / STT_SAMPLE_RATE
    parts: list[list[tuple[str, float]]] = [[] for _ in lengths]
    for start, end, word, prob in words:
        i = int(np.searchsorted(bounds, (start + end) / 2, side="right")) - 1
        parts[min(max(i, 0), len(lengths) - 1)].append((word, prob))
    out: list[tuple[str, float | None]] = []
    for part in parts:
        text = "".join(w for w, _ in part).strip()
        if not text:
            out.append(("", None))
            continue
        mean_log = sum(math.log(max(p, 1e-9)) for _, p in part) / len(part)
        out.append((text, _probability(mean_log)))
    return out


def _probability(logprob: float) -> float:
    return round(min(max(math.exp(logprob), 0.0), 1.0), 4)
