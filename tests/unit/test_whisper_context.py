"""The short encoder context: Whisper's encoder sees the audio plus some padding, not always 30 s.

The frame arithmetic is checked as such; the real model is checked for what its encoder was handed
and for words within the suite's WER bound on the sample (never exact tiny-model words).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from quantcoach.settings import Settings
from stt.pcm import STT_SAMPLE_RATE as RATE
from stt.protocol import SttError
from stt.whisper import WhisperEngine
from stt.whisper_model import FULL_FRAMES, ShortContextWhisper, content_frames, context_frames
from tests.support.speech import SAMPLE, WER_LIMIT, script, wer


def test_content_ends_where_the_all_zero_padding_begins() -> None:
    features = np.zeros((80, FULL_FRAMES), np.float32)
    features[:, :412] = -0.7  # log-mel of digital silence is never 0 in every bin
    features[3, 600] = 0.1  # one non-zero bin keeps its frame
    assert content_frames(features) == 601
    assert content_frames(np.stack([features, np.zeros_like(features)])) == 601  # the most over a batch
    assert content_frames(np.zeros((80, FULL_FRAMES), np.float32)) == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [(0, 1000), (300, 1000), (899, 1000), (950, 1050), (1951, 2052), (2950, 3000), (3000, 3000)],
)
def test_context_is_content_plus_a_tail_at_least_the_floor_at_most_the_window(
    content: int, expected: int
) -> None:
    assert context_frames(content, FULL_FRAMES, min_context_s=10.0, tail_s=1.0) == expected


def test_thirty_seconds_is_stock_whisper() -> None:
    assert context_frames(120, FULL_FRAMES, min_context_s=30.0, tail_s=1.0) == FULL_FRAMES


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(Settings.from_env({}).whisper_model_dir)


def line_audio(index: int) -> tuple[str, np.ndarray]:
    line = script()[index]
    x, sr = sf.read(SAMPLE / f"{line['role']}.wav", dtype="float32", always_2d=True)
    audio = soxr.resample(x.mean(axis=1), sr, RATE)
    a, b = round((line["start"] - 0.2) * RATE), round((line["end"] + 0.2) * RATE)
    return line["text"], audio[max(a, 0) : b]


def test_the_encoder_gets_ten_seconds_for_a_short_utterance_and_the_words_hold(model_dir: str) -> None:
    engine = WhisperEngine(model_dir, min_context_s=10.0)
    try:
        assert isinstance(engine.model, ShortContextWhisper)
        said, heard = [], []
        for i in range(len(script())):
            text, audio = line_audio(i)
            before = engine.model.frames_encoded
            heard.append(engine.transcribe(audio))
            said.append(text)
            # every line of the sample is under 9 s: the 10 s floor, never the 30 s window
            assert engine.model.frames_encoded - before == 1000
    finally:
        engine.close()
    assert wer(" ".join(said), " ".join(heard)) <= WER_LIMIT


def test_a_long_utterance_keeps_all_its_frames(model_dir: str) -> None:
    engine = WhisperEngine(model_dir, min_context_s=10.0)
    try:
        audio = np.concatenate([line_audio(i)[1] for i in range(3)])  # ~14 s
        engine.transcribe(audio)
        frames = len(audio) // 160
        assert frames + 100 <= engine.model.frames_encoded <= frames + 104
    finally:
        engine.close()


def test_min_context_outside_the_window_is_refused(model_dir: str) -> None:
    for bad in (0.0, 31.0):
        with pytest.raises(SttError, match="min_context_s"):
            WhisperEngine(model_dir, min_context_s=bad)
