"""The throughput decode (replay at ``--speed max``): utterances packed into <= 30 s windows, split back.

The packing and ``settled`` are checked with the real VAD and a stand-in decode (no model); the split
and the words with the real tiny.en, judged by times, WER bounds and the per-utterance mode of the same
engine on the same samples, never by exact words.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from functools import cache
from itertools import pairwise
from typing import Any

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr

from quantcoach.settings import Settings
from stt.pcm import STT_SAMPLE_RATE as RATE
from stt.pcm import to_int16
from stt.protocol import SttEvent
from stt.vad import StreamingVad, Utterance, VadParams
from stt.vocabulary import QUANT_TERMS, hotwords, parse_terms
from stt.whisper import WhisperEngine
from stt.whisper_batch import ThroughputStream
from stt.whisper_decode import Decoded, DecodeOptions, decode_windows, split_words
from tests.support.speech import SAMPLE, WER_LIMIT, normalise, script, wer

CHUNK = RATE // 5
ROLES = ("interviewer", "candidate")


@cache
def track(role: str) -> np.ndarray:
    x, sr = sf.read(SAMPLE / f"{role}.wav", dtype="float32", always_2d=True)
    return to_int16(soxr.resample(x.mean(axis=1), sr, RATE))


def utterances(pcm: np.ndarray) -> list[Utterance]:
    vad = StreamingVad()
    out: list[Utterance] = []
    for i in range(0, len(pcm), CHUNK):
        out += vad.push(pcm[i : i + CHUNK].astype(np.float32) / 32768)
    return out + vad.finish()


# -- the split ------------------------------------------------------------------------------------------


def test_words_go_to_the_utterance_that_holds_their_midpoint() -> None:
    lengths = [RATE, 2 * RATE, RATE]  # utterances at [0, 1), [1, 3), [3, 4) s of the window
    words = [(0.1, 0.5, " Hello", 0.9), (0.9, 1.2, " there", 0.8), (1.5, 2.0, " world.", 0.5)]
    words += [(4.2, 4.4, " Bye", 0.7)]  # past the window's end: the last utterance's
    assert split_words(words, lengths) == [
        ("Hello", 0.9),
        ("there world.", round(math.sqrt(0.8 * 0.5), 4)),
        ("Bye", 0.7),
    ]
    assert split_words([], [RATE]) == [("", None)]


def test_a_word_on_a_boundary_goes_to_the_later_utterance_and_an_empty_one_gets_no_text() -> None:
    lengths = [RATE, RATE, RATE]  # [0, 1), [1, 2), [2, 3) s
    words = [(-0.3, 0.1, " Early", 0.5), (0.8, 1.2, " edge", 0.6), (2.1, 2.5, " last.", 1.0)]
    assert split_words(words, lengths) == [("Early", 0.5), ("edge", 0.6), ("last.", 1.0)]
    # nothing said in the middle utterance: it gets no text (and so no final), the others keep theirs
    assert split_words([(0.1, 0.4, " One", 0.9), (2.2, 2.4, " two", 0.9)], lengths) == [
        ("One", 0.9),
        ("", None),
        ("two", 0.9),
    ]
    assert split_words([(0.1, 0.4, " sure", 0.0)], [RATE]) == [("sure", 0.0)]  # a 0 probability is no crash


# -- packing and settled, with a stand-in decode ----------------------------------------------------------


class Windows:
    """A submit_windows that records each batch of windows and resolves it only when told."""

    def __init__(self) -> None:
        self.batches: list[list[list[Utterance]]] = []
        self.futures: list[Future[list[Decoded]]] = []

    @property
    def windows(self) -> list[list[Utterance]]:
        return [w for batch in self.batches for w in batch]

    def __call__(self, windows: list[list[Utterance]]) -> Future[list[Decoded]]:
        self.batches.append(windows)
        self.futures.append(Future())
        return self.futures[-1]

    def resolve(self) -> None:
        for batch, fut in zip(self.batches, self.futures, strict=True):
            if not fut.done():
                fut.set_result(
                    [Decoded(f"utterance at {u.speech_start}", "en", 0.5) for w in batch for u in w]
                )


def stream(windows: Windows, **kw: Any) -> ThroughputStream:
    opts = {"window_s": 30.0, "max_hold_s": 300.0, "max_hold_wall_s": None, **kw}
    return ThroughputStream("room/p", VadParams(), windows, **opts)


def long_track() -> np.ndarray:
    return np.concatenate([track("candidate"), track("interviewer")] * 3)  # 258 s, 27 utterances


def test_windows_pack_consecutive_utterances_up_to_30_s() -> None:
    pcm = long_track()
    windows = Windows()
    s = stream(windows)
    for i in range(0, len(pcm), CHUNK):
        s.push_audio(pcm[i : i + CHUNK])
    s.end_input()
    expected = utterances(pcm)
    got = [u for w in windows.windows for u in w]
    assert [(u.start, u.end, u.speech_start, u.speech_end) for u in got] == [
        (u.start, u.end, u.speech_start, u.speech_end) for u in expected
    ]
    sizes = [sum(len(u.audio) for u in w) for w in windows.windows]
    assert all(size <= 30 * RATE for size in sizes)
    # greedy: a window was closed only because the next utterance would not fit
    for w, nxt in pairwise(windows.windows):
        assert sum(len(u.audio) for u in w) + len(nxt[0].audio) > 30 * RATE
    assert len(windows.windows) == math.ceil(sum(sizes) / (30 * RATE))


def test_the_windows_do_not_depend_on_how_the_audio_is_pushed() -> None:
    pcm = long_track()
    seen = []
    for push_s, vad_chunk_s in ((0.2, 1.0), (0.2, 0.2), (3.1, 1.0), (0.02, 2.5)):
        windows = Windows()
        s = stream(windows, batch_windows=2, vad_chunk_s=vad_chunk_s)
        step = round(push_s * RATE)
        for i in range(0, len(pcm), step):
            s.push_audio(pcm[i : i + step])
        s.end_input()
        seen.append([[(u.start, u.end, u.speech_start, u.speech_end) for u in w] for w in windows.windows])
        assert [len(b) for b in windows.batches[:-1]] == [2] * (len(windows.batches) - 1)
    assert all(w == seen[0] for w in seen[1:])


def test_full_windows_go_to_the_engine_in_batches() -> None:
    pcm = long_track()
    windows = Windows()
    s = stream(windows, batch_windows=2)
    for i in range(0, len(pcm), CHUNK):
        s.push_audio(pcm[i : i + CHUNK])
    batches_before_end = len(windows.batches)
    s.end_input()
    sizes = [len(b) for b in windows.batches]
    assert len(windows.windows) >= 3 and batches_before_end >= 1
    assert sizes[:-1] == [2] * (len(sizes) - 1) and sizes[-1] in (1, 2)
    assert windows.windows == [w for b in windows.batches for w in b]


def test_settled_never_passes_an_utterance_not_yet_final() -> None:
    pcm = long_track()
    windows = Windows()
    s = stream(windows, batch_windows=2)
    settled: list[float] = []
    events: list[tuple[int, SttEvent]] = []  # (how many settled values were reported before it, event)
    for n, i in enumerate(range(0, len(pcm), CHUNK)):
        s.push_audio(pcm[i : i + CHUNK])
        if n % 100 == 99:  # resolve decodes now and then, so that finals come out mid-stream
            windows.resolve()
        events += [(len(settled), e) for e in s.poll()]
        settled.append(s.settled())
    s.end_input()
    settled.append(s.settled())
    assert not s.done  # the last windows are still decoding
    windows.resolve()
    events += [(len(settled), e) for e in s.poll()]
    assert s.done and s.settled() == math.inf
    assert settled == sorted(settled)
    assert len(events) == len(utterances(pcm)) and any(n < len(settled) - 1 for n, _ in events)
    for n, e in events:
        assert max(settled[:n], default=0.0) <= e.start, "settled moved past a final still to come"
    assert [e.start for _, e in events] == sorted(e.start for _, e in events)


def test_a_held_utterance_waits_at_most_max_hold_s_of_audio() -> None:
    pcm = long_track()
    windows = Windows()
    s = stream(windows, max_hold_s=8.0, batch_windows=4)
    for i in range(0, len(pcm), CHUNK):
        s.push_audio(pcm[i : i + CHUNK])
    s.end_input()
    assert len(windows.windows) > 5
    for w in windows.windows:
        assert (w[-1].end - w[0].start) / RATE <= 8.0 + CHUNK / RATE


def test_a_stalled_source_is_flushed_by_the_wall_clock_guard() -> None:
    now = [0.0]
    windows = Windows()
    s = stream(windows, max_hold_wall_s=2.0, clock=lambda: now[0])
    pcm = track("interviewer")[: 5 * RATE]  # the first sentence, then silence
    for i in range(0, len(pcm), CHUNK):
        s.push_audio(pcm[i : i + CHUNK])
    assert windows.windows == [] and s.settled() < 0.5  # held: the utterance starts at 0.3 s
    now[0] = 2.5
    assert s.poll() == []
    assert len(windows.windows) == 1
    windows.resolve()
    (final,) = s.poll()
    u = windows.windows[0][0]
    assert (final.start, final.end) == (u.speech_start / RATE, u.speech_end / RATE)
    assert (final.language, final.confidence) == ("en", 0.5)


# -- the real model ---------------------------------------------------------------------------------------


MODEL_DIR = Settings.from_env({}).whisper_model_dir


@pytest.fixture(scope="module")
def engines() -> Any:
    per = WhisperEngine(MODEL_DIR, mode="utterance")
    thr = WhisperEngine(MODEL_DIR, mode="throughput")
    yield per, thr
    per.close()
    thr.close()


def finals(engine: WhisperEngine, pcm: np.ndarray) -> list[SttEvent]:
    s = engine.stream("room/p")
    out: list[SttEvent] = []
    for i in range(0, len(pcm), CHUNK):
        s.push_audio(pcm[i : i + CHUNK])
        out += s.poll()
    s.end_input()
    while not s.done:
        out += s.poll()
    return out + s.poll()


def errors(role: str, heard: list[SttEvent]) -> tuple[int, int]:
    said = normalise(" ".join(t["text"] for t in script() if t["role"] == role))
    out = jiwer.process_words(said, normalise(" ".join(e.text for e in heard)) or "<nothing>")
    return out.substitutions + out.deletions + out.insertions, len(said.split())


def test_throughput_gives_the_same_finals_at_the_same_times_as_per_utterance(engines: Any) -> None:
    per, thr = engines
    totals = {"utterance": [0, 0], "throughput": [0, 0]}
    for role in ROLES:
        a, b = finals(per, track(role)), finals(thr, track(role))
        assert [(e.start, e.end) for e in b] == [(e.start, e.end) for e in a]
        assert len(b) == len([t for t in script() if t["role"] == role])
        for e in b:
            assert e.kind == "final" and e.text and e.language == "en"
            assert e.confidence is not None and 0.0 < e.confidence <= 1.0
        for mode, heard in (("utterance", a), ("throughput", b)):
            err, n = errors(role, heard)
            totals[mode][0] += err
            totals[mode][1] += n
            assert err / n < WER_LIMIT, (mode, role, [e.text for e in heard])
    wer = {mode: err / n for mode, (err, n) in totals.items()}
    assert wer["throughput"] <= wer["utterance"] + 0.05, wer


@cache
def windows_of(role: str, engine: WhisperEngine) -> tuple[tuple[Utterance, ...], ...]:
    """The track's utterances as the engine's throughput stream packs them."""
    windows = Windows()
    s = ThroughputStream(
        "room/p", engine.window_vad, windows, window_s=engine.window_s, max_hold_s=300.0, max_hold_wall_s=None
    )
    pcm = track(role)
    for i in range(0, len(pcm), CHUNK):
        s.push_audio(pcm[i : i + CHUNK])
    s.end_input()
    return tuple(tuple(w) for w in windows.windows)


def test_a_window_split_back_keeps_every_word_once(engines: Any) -> None:
    """The split only assigns a window's words to utterances: joined again, they are the window's text,
    decoded the same way (same engine, same audio) as a single utterance that needs no split."""
    _, thr = engines
    for role in ROLES:
        windows = windows_of(role, thr)
        assert any(len(w) > 1 for w in windows)
        audio = [[u.audio for u in w] for w in windows]
        parts = decode_windows(thr._batched, audio, DecodeOptions())
        whole = decode_windows(thr._batched, [[np.concatenate(a)] for a in audio], DecodeOptions())
        assert len(parts) == sum(map(len, windows)) and len(whole) == len(windows)
        assert normalise(" ".join(d.text for d in parts)) == normalise(" ".join(d.text for d in whole))
        for d in parts:
            assert d.text and d.language == "en"
            assert d.confidence is not None and 0.0 < d.confidence <= 1.0


def test_each_split_utterance_gets_what_was_said_in_it(engines: Any) -> None:
    """Each utterance cut out of a window reads most like its own turn of the script, not a neighbour's:
    words went to the utterance they were said in."""
    _, thr = engines
    for role in ROLES:
        turns = [t["text"] for t in script() if t["role"] == role]
        windows = windows_of(role, thr)
        utts = [u for w in windows for u in w]
        assert len(utts) == len(turns)
        decoded = decode_windows(thr._batched, [[u.audio for u in w] for w in windows], DecodeOptions())
        # the bound on the whole track: one short utterance's WER moves with other CPUs' int8 kernels
        assert wer(" ".join(turns), " ".join(d.text for d in decoded)) <= WER_LIMIT, role
        for i, d in enumerate(decoded):
            own = wer(turns[i], d.text)
            for j in (i - 1, i + 1):
                if 0 <= j < len(turns):
                    assert own < wer(turns[j], d.text), (role, i, d.text)


def test_words_are_aligned_only_for_windows_of_several_utterances(engines: Any) -> None:
    """Alignment (~10 % of a decode) buys nothing for a window of one utterance: it takes its text whole."""
    _, thr = engines
    asked: list[bool] = []
    inner = thr._batched.transcribe

    def spy(audio: np.ndarray, **kw: Any) -> Any:
        asked.append(kw["word_timestamps"])
        return inner(audio, **kw)

    windows = windows_of("candidate", thr)
    thr._batched.transcribe = spy
    try:
        (alone,) = decode_windows(thr._batched, [[windows[0][0].audio]], DecodeOptions())
        several = decode_windows(thr._batched, [[u.audio for u in windows[0]]], DecodeOptions())
    finally:
        del thr._batched.transcribe
    assert asked == [False, True]
    assert alone.text and alone.confidence is not None and 0.0 < alone.confidence <= 1.0
    assert len(several) == len(windows[0])


def test_hotwords_reach_faster_whisper_in_both_modes() -> None:
    vocab = hotwords(QUANT_TERMS)
    assert vocab is not None and "Black-Scholes" in vocab
    engine = WhisperEngine(MODEL_DIR, hotwords=vocab, mode="throughput")
    seen: list[tuple[str, Any]] = []
    for name, owner in (("transcribe", engine.model), ("batched", engine._batched)):
        inner = owner.transcribe

        def spy(audio: np.ndarray, _inner: Any = inner, _name: str = name, **kw: Any) -> Any:
            seen.append((_name, kw.get("hotwords")))
            return _inner(audio, **kw)

        owner.transcribe = spy
    try:
        utts = utterances(track("candidate"))[:2]
        engine.decode(utts[0].audio)
        engine.submit_windows([utts]).result(60)
    finally:
        engine.close()
    assert seen == [("transcribe", vocab), ("batched", vocab)]


def test_the_quant_vocabulary_does_not_hurt_the_sample(engines: Any) -> None:
    _, plain = engines
    primed = WhisperEngine(MODEL_DIR, mode="throughput", hotwords=hotwords(QUANT_TERMS))
    try:
        with_vocab = [errors(r, finals(primed, track(r))) for r in ROLES]
    finally:
        primed.close()
    without = [errors(r, finals(plain, track(r))) for r in ROLES]
    wer_with = sum(e for e, _ in with_vocab) / sum(n for _, n in with_vocab)
    wer_without = sum(e for e, _ in without) / sum(n for _, n in without)
    # measured +0.012 here (~1 word of 90); 0.06 (~5 words) leaves room for the int8 kernels of other
    # CPUs, which move a word or two at utterance edges, while a vocabulary that hurt would exceed it
    assert wer_with <= wer_without + 0.06, (wer_with, wer_without)


def test_terms_from_a_comma_separated_setting() -> None:
    assert parse_terms(" Black-Scholes, Itô ,,martingale, Itô") == ("Black-Scholes", "Itô", "martingale")
    assert hotwords(parse_terms("")) is None
