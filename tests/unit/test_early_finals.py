"""Early finals: the final's decode starts once its audio is fixed, before the silence closes it.

``StreamingVad.pending_cut`` must be exactly the utterance the VAD then cuts, so a decode started on
it is the final's decode; the stream must reuse it, drop it when speech resumes, and never emit a
final twice or out of order. The real engine must give the same finals with and without it.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest
import soundfile as sf
import soxr

from quantcoach.settings import Settings
from stt.pcm import STT_SAMPLE_RATE as RATE
from stt.pcm import to_float32, to_int16
from stt.scheduler import DecodeScheduler
from stt.vad import StreamingVad, VadParams
from stt.whisper import FIRST_INTERIM_S, WhisperEngine, WhisperStream
from stt.whisper_decode import Decoded
from tests.support.speech import SAMPLE

PIECE = RATE // 10  # 100 ms, as live audio arrives


def sample_pcm(role: str = "interviewer") -> np.ndarray:
    x, sr = sf.read(SAMPLE / f"{role}.wav", dtype="float32", always_2d=True)
    return to_int16(soxr.resample(x.mean(axis=1), sr, RATE))


class RecordingEngine:
    """What WhisperStream needs of an engine; a decode's text is the length of the audio it got."""

    def __init__(self, interim_s: float = 0.0, early_finals: bool = True) -> None:
        self.vad_params = VadParams()
        self.interim_s = interim_s or None
        self.early_finals = early_finals
        self.early_stats = {"used": 0, "wasted": 0}
        self.scheduler = DecodeScheduler("fake-decode")
        self.final_submits: list[int] = []  # audio length of each final decode asked for

    def submit(self, audio: np.ndarray) -> Future[Decoded]:
        self.final_submits.append(len(audio))
        return self.scheduler.submit_final(lambda: Decoded(f"{len(audio)}", "en", 0.9))

    def submit_partial(self, key: str, audio: np.ndarray) -> Future[Decoded]:
        return self.scheduler.submit_partial(key, lambda: Decoded(f"{len(audio)}", "en", 0.5))

    def idle(self) -> None:
        self.scheduler.submit_partial("~idle", lambda: None).result(10)  # runs after all queued work


def test_the_pending_cut_is_the_utterance_the_vad_then_cuts() -> None:
    pcm = to_float32(sample_pcm())
    vad = StreamingVad()
    pending = None  # what the VAD announced after the previous piece
    cuts = 0
    for i in range(0, len(pcm), PIECE):
        for utt in vad.push(pcm[i : i + PIECE]):
            assert pending is not None, "an utterance was cut with no pending cut announced before it"
            assert (utt.start, utt.end, utt.speech_start, utt.speech_end) == (
                pending.start,
                pending.end,
                pending.speech_start,
                pending.speech_end,
            )
            np.testing.assert_array_equal(utt.audio, pending.audio)
            cuts += 1
        pending = vad.pending_cut()
        if pending is not None:  # announced only once the audio the cut keeps has all arrived
            assert vad.position >= pending.end == pending.speech_end + round(vad.p.speech_pad_s * RATE)
    assert cuts >= 4


def test_each_final_decode_starts_before_its_utterance_is_cut() -> None:
    engine = RecordingEngine()
    stream = WhisperStream(engine, "room/iv")  # type: ignore[arg-type]
    submitted_by_push: list[int] = []
    finals: list[tuple[int, str]] = []
    pcm = sample_pcm()
    for n, i in enumerate(range(0, len(pcm), PIECE)):
        stream.push_audio(pcm[i : i + PIECE])
        engine.idle()
        finals += [(n, e.text) for e in stream.poll() if e.kind == "final"]
        submitted_by_push.append(len(engine.final_submits))
    stream.end_input()
    engine.idle()
    finals += [(len(submitted_by_push), e.text) for e in stream.poll() if e.kind == "final"]
    engine.scheduler.close()
    assert len(finals) >= 4
    assert engine.early_stats["used"] >= len(finals) - 1  # all but one closed by the end of input
    for n, text in finals[:-1]:
        k = engine.final_submits.index(int(text))  # the decode that gave this final
        # it was asked for at least one 100 ms piece before the piece that closed the utterance
        assert submitted_by_push[n - 1] > k, f"final {text} was decoded only once its utterance closed"
    assert len(engine.final_submits) == len(finals) + engine.early_stats["wasted"]


def test_an_utterances_first_interim_comes_after_half_a_second_of_speech() -> None:
    engine = RecordingEngine(interim_s=1.0)
    stream = WhisperStream(engine, "room/iv")  # type: ignore[arg-type]
    events = []
    pcm = sample_pcm()
    for i in range(0, len(pcm), PIECE):
        stream.push_audio(pcm[i : i + PIECE])
        engine.idle()
        events += stream.poll()
    stream.end_input()
    engine.idle()
    events += stream.poll()
    engine.scheduler.close()
    first: dict[float, float] = {}
    for e in events:
        if e.kind == "partial":
            first.setdefault(e.start, int(e.text) / RATE)
    finals = [e for e in events if e.kind == "final"]
    assert len(first) >= len(finals) - 1
    pad = VadParams().speech_pad_s
    # the first interim's audio: padding, at most ~0.5 s of speech (one piece late), and, when it is an
    # early final's decode (the speaker paused), the padding after the speech
    for audio_s in first.values():
        assert audio_s <= pad + FIRST_INTERIM_S + PIECE / RATE + pad + 0.04


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(Settings.from_env({}).whisper_model_dir)


def stream_finals(engine: WhisperEngine, pcm: np.ndarray) -> list[tuple[str, float, float]]:
    stream = engine.stream("room/iv")
    out = []
    for i in range(0, len(pcm), PIECE):
        stream.push_audio(pcm[i : i + PIECE])
        engine.scheduler.submit_partial("~idle", lambda: None).result(60)
        out += [(e.text, e.start, e.end) for e in stream.poll() if e.kind == "final"]
    stream.end_input()
    while not stream.done:
        engine.scheduler.submit_partial("~idle", lambda: None).result(60)
        out += [(e.text, e.start, e.end) for e in stream.poll() if e.kind == "final"]
    return out


def test_the_real_engine_gives_the_same_finals_with_early_decodes(model_dir: str) -> None:
    pcm = sample_pcm()
    results = {}
    for early in (False, True):
        engine = WhisperEngine(model_dir, early_finals=early)
        try:
            results[early] = stream_finals(engine, pcm)
            stats = dict(engine.early_stats)
        finally:
            engine.close()
    assert results[True] == results[False]
    assert len(results[True]) >= 4
    assert stats["used"] >= len(results[True]) - 1
