"""The engine's one decode queue: finals never dropped and first; partials skipped while finals wait.

The decodes here are plain functions (no model), gated by events, so the order is the scheduler's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import numpy as np
import pytest
import soundfile as sf
import soxr

from stt.pcm import STT_SAMPLE_RATE as RATE
from stt.pcm import to_int16
from stt.scheduler import DecodeScheduler
from stt.vad import VadParams
from stt.whisper import WhisperStream
from stt.whisper_decode import Decoded
from tests.support.speech import SAMPLE


@pytest.fixture
def scheduler() -> Iterator[DecodeScheduler]:
    s = DecodeScheduler("test-decode")
    yield s
    s.close()


def busy(s: DecodeScheduler) -> threading.Event:
    """Occupy the decode thread until the returned event is set."""
    gate, started = threading.Event(), threading.Event()
    s.submit_final(lambda: (started.set(), gate.wait(10)))
    assert started.wait(10)
    return gate


def test_finals_run_first_in_order_then_partials(scheduler: DecodeScheduler) -> None:
    order: list[str] = []
    gate = busy(scheduler)
    futures = [scheduler.submit_partial("a", lambda: order.append("partial a"))]
    futures += [scheduler.submit_final(lambda i=i: order.append(f"final {i}")) for i in range(3)]
    futures.append(scheduler.submit_partial("b", lambda: order.append("partial b")))
    gate.set()
    for f in futures:
        f.result(10)
    assert order == ["final 0", "final 1", "final 2", "partial a", "partial b"]


def test_a_newer_partial_replaces_the_queued_one(scheduler: DecodeScheduler) -> None:
    gate = busy(scheduler)
    old = scheduler.submit_partial("a", lambda: "old")
    new = scheduler.submit_partial("a", lambda: "new")
    other = scheduler.submit_partial("b", lambda: "b")
    gate.set()
    assert (new.result(10), other.result(10)) == ("new", "b")
    assert old.cancelled()
    assert scheduler.stats.partials_skipped == 1


def test_a_dropped_partial_never_runs(scheduler: DecodeScheduler) -> None:
    gate = busy(scheduler)
    ran: list[str] = []
    dropped = scheduler.submit_partial("a", lambda: ran.append("a"))
    scheduler.drop_partial("a")
    gate.set()
    scheduler.submit_partial("z", lambda: None).result(10)  # everything queued before it is done
    assert dropped.cancelled() and ran == []


def test_a_backlog_keeps_every_final_and_at_most_one_partial_per_stream(scheduler: DecodeScheduler) -> None:
    gate = busy(scheduler)
    finals: list[Future[int]] = []
    partials: list[Future[str]] = []
    for i in range(40):
        finals.append(scheduler.submit_final(lambda i=i: i))
        partials.append(scheduler.submit_partial(f"stream {i % 4}", lambda i=i: f"partial {i}"))
        assert scheduler.queued()[1] <= 4  # what may be skipped never grows past one per stream
    gate.set()
    assert [f.result(10) for f in finals] == list(range(40))
    ran = [p for p in partials if not p.cancelled()]
    assert [p.result(10) for p in ran] == ["partial 36", "partial 37", "partial 38", "partial 39"]
    assert scheduler.stats.partials_skipped == 36
    assert scheduler.stats.max_finals_queued == 40
    assert scheduler.stats.finals_done == 41  # with the one that kept the thread busy


def test_a_failing_decode_reaches_its_future(scheduler: DecodeScheduler) -> None:
    def boom() -> None:
        raise ValueError("bad audio")

    with pytest.raises(ValueError, match="bad audio"):
        scheduler.submit_final(boom).result(10)
    assert scheduler.submit_final(lambda: "still running").result(10) == "still running"


def test_close_cancels_what_is_queued(scheduler: DecodeScheduler) -> None:
    gate = busy(scheduler)
    queued = [scheduler.submit_final(lambda: 1), scheduler.submit_partial("a", lambda: 2)]
    scheduler.close()
    gate.set()
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError):
        scheduler.submit_final(lambda: 3)


# -- partials in the per-utterance stream ------------------------------------------------------------


class FakeEngine:
    """What WhisperStream needs of an engine, decoding to the audio's length instead of words."""

    def __init__(self, interim_s: float, early_finals: bool = False) -> None:
        self.vad_params = VadParams()
        self.interim_s = interim_s
        self.early_finals = early_finals
        self.early_stats = {"used": 0, "wasted": 0}
        self.scheduler = DecodeScheduler("fake-decode")

    def submit(self, audio: np.ndarray) -> Future[Decoded]:
        return self.scheduler.submit_final(lambda: Decoded(f"final of {len(audio)}", "en", 0.9))

    def submit_partial(self, key: str, audio: np.ndarray) -> Future[Decoded]:
        return self.scheduler.submit_partial(key, lambda: Decoded(f"partial of {len(audio)}", "en", 0.5))

    def idle(self) -> None:
        self.scheduler.submit_partial("~idle", lambda: None).result(10)  # runs after all queued work


@pytest.mark.parametrize("early_finals", [False, True])
def test_partials_come_before_their_final_and_never_after_it(early_finals: bool) -> None:
    x, sr = sf.read(SAMPLE / "interviewer.wav", dtype="float32", always_2d=True)
    pcm = to_int16(soxr.resample(x.mean(axis=1), sr, RATE))
    engine = FakeEngine(interim_s=0.5, early_finals=early_finals)
    stream = WhisperStream(engine, "room/iv")  # type: ignore[arg-type]
    events = []
    for i in range(0, len(pcm), RATE // 5):
        stream.push_audio(pcm[i : i + RATE // 5])
        engine.idle()
        events += stream.poll()
    stream.end_input()
    engine.idle()
    events += stream.poll()
    assert stream.done
    engine.scheduler.close()
    finals = [e for e in events if e.kind == "final"]
    assert len(finals) == 5
    assert sum(e.kind == "partial" for e in events) >= 10
    for final in finals:
        mine = [i for i, e in enumerate(events) if e.start == final.start]
        at = events.index(final)
        assert mine[-1] == at, "a partial of an utterance came after its final"
        partials = [events[i] for i in mine[:-1]]
        assert partials and all(p.kind == "partial" and p.end <= final.end for p in partials)
        assert [p.end for p in partials] == sorted(p.end for p in partials)
