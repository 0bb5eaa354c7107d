"""The VAD's utterances carry two spans: the padded audio that a recogniser hears, and the speech in it."""

from __future__ import annotations

from functools import cache
from itertools import pairwise

import numpy as np
import soundfile as sf
import soxr

from stt.pcm import STT_SAMPLE_RATE as RATE
from stt.vad import StreamingVad, Utterance, VadParams
from tests.support.speech import SAMPLE, script

CHUNK = RATE // 5  # 200 ms, as the flow pushes


@cache
def track(role: str) -> np.ndarray:
    x, sr = sf.read(SAMPLE / f"{role}.wav", dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), sr, RATE).astype(np.float32)


def cut(audio: np.ndarray, params: VadParams | None = None) -> list[Utterance]:
    vad = StreamingVad(params)
    out: list[Utterance] = []
    for i in range(0, len(audio), CHUNK):
        out += vad.push(audio[i : i + CHUNK])
    return out + vad.finish()


def test_speech_lies_inside_the_padded_audio_by_the_padding() -> None:
    pad = round(VadParams().speech_pad_s * RATE)
    for role in ("interviewer", "candidate"):
        utts = cut(track(role))
        assert len(utts) == len([t for t in script() if t["role"] == role])
        for u in utts:
            assert len(u.audio) == u.end - u.start
            # every turn of the sample has more than the padding of silence around it
            assert u.speech_start - u.start == pad
            assert u.end - u.speech_end == pad
            assert u.speech_start < u.speech_end


def test_speech_bounds_are_where_the_signal_is() -> None:
    """Within 0.15 s of the first and last audible sample of each turn (the script's end is the TTS
    clip's end, which includes espeak's trailing silence, so it is not the speech's end)."""
    for role in ("interviewer", "candidate"):
        audio = track(role)
        turns = [t for t in script() if t["role"] == role]
        for u, turn in zip(cut(audio), turns, strict=True):
            clip = audio[round(turn["start"] * RATE) : round(turn["end"] * RATE)]
            audible = turn["start"] + np.flatnonzero(np.abs(clip) > 1e-3)[[0, -1]] / RATE
            speech = np.array([u.speech_start, u.speech_end]) / RATE
            assert np.all(np.abs(speech - audible) < 0.15), (speech, audible, turn)


def test_a_long_monologue_is_cut_with_contiguous_speech() -> None:
    params = VadParams(max_utterance_s=1.5)
    first_turn = track("interviewer")[: round(4.8 * RATE)]  # one 4 s sentence
    utts = cut(first_turn, params)
    assert len(utts) >= 3
    for a, b in pairwise(utts):
        assert a.end == b.start and a.speech_end == b.speech_start  # the cut ends one, starts the next
    for u in utts[:-1]:
        assert u.speech_end - u.speech_start <= round(1.5 * RATE) + 512


def test_open_utterance_is_the_speech_heard_so_far() -> None:
    audio = track("interviewer")
    whole = cut(audio)[0]
    vad = StreamingVad()
    for i in range(0, 2 * RATE, CHUNK):  # into the middle of the first sentence
        assert vad.push(audio[i : i + CHUNK]) == []
    open_utt = vad.open_utterance()
    assert open_utt is not None
    assert (open_utt.start, open_utt.speech_start) == (whole.start, whole.speech_start)
    assert open_utt.end == vad.position == 2 * RATE
    assert np.array_equal(open_utt.audio, audio[open_utt.start : open_utt.end])
    emitted = []
    for i in range(2 * RATE, 5 * RATE, CHUNK):  # past its end, before the next sentence
        emitted += vad.push(audio[i : i + CHUNK])
    assert [u.speech_end for u in emitted] == [whole.speech_end]
    assert vad.open_utterance() is None
