"""The ElevenLabs realtime STT engine against a local server that speaks the same protocol.

Loopback only, every test bounded to a few seconds. The server (tests/support/elevenlabs_server.py) hears
tone bursts as words, so the expected finals and their times follow from the audio we push; faults
are injected per connection and the assertions are the engine's promises: every final exactly once,
in order, at the right stream times, never starting before a ``settled()`` value already given out.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from quantcoach.settings import Secret, Settings
from stt.clock import Clock
from stt.elevenlabs.bounds import ManualCommits
from stt.elevenlabs.engine import ElevenLabsEngine
from stt.elevenlabs.keyterms import DEFAULT_KEYTERMS, MAX_KEYTERM_CHARS, MAX_KEYTERMS, check_keyterms
from stt.elevenlabs.loudness import LoudnessMap
from stt.elevenlabs.messages import FATAL_ERRORS, NOTICE_ERRORS, RETRYABLE_ERRORS, SESSION_END_ERRORS
from stt.elevenlabs.options import ElevenLabsOptions
from stt.elevenlabs.stream import ElevenLabsStream
from stt.elevenlabs.twins import Commit, TwinPairer
from stt.protocol import SttError, SttEvent
from tests.support.elevenlabs_server import (
    ERROR_TYPES,
    VOCAB,
    Fault,
    ManualClock,
    ScribeTestServer,
    silence,
    tone_utterance,
    word_logprob,
    word_tone,
)

KEY = "sk_test_0123456789abcdef-do-not-log"
SCRIPT = [(0.5, "alpha bravo"), (2.2, "charlie delta echo"), (4.3, "golf hotel")]
EXPECTED = [("alpha bravo", 0.5, 1.2), ("charlie delta echo", 2.2, 3.3), ("golf hotel", 4.3, 5.0)]
TOTAL_S = 6.0
MID_SECOND = Fault("drop", at_audio_s=2.4, mid_utterance=True)  # inside "charlie delta echo"

FAST = ElevenLabsOptions(
    vad_silence_threshold_secs=0.4,
    connect_timeout_s=2.0,
    twin_wait_s=0.2,
    flush_timeout_s=1.0,
    stall_timeout_s=1.0,
    keepalive_s=1.0,
    max_failures=4,
    backoff_initial_s=0.02,
    backoff_max_s=0.1,
    min_commit_gap_s=0.05,
    use_system_proxy=False,
)


def script_audio(script: list[tuple[float, str]] = SCRIPT, total_s: float = TOTAL_S) -> np.ndarray:
    audio = silence(total_s)
    for at, text in script:
        u = tone_utterance(text)
        i = round(at * 16000)
        audio[i : i + len(u)] = u
    return audio


@pytest.fixture
def server() -> Iterator[ScribeTestServer]:
    with ScribeTestServer(KEY) as s:
        yield s


def engine_for(
    server: ScribeTestServer, key: str = KEY, clock: Clock | None = None, **opts: object
) -> ElevenLabsEngine:
    settings = Settings(elevenlabs_api_key=Secret(key), elevenlabs_base_url=server.url)
    options = dataclasses.replace(FAST, **opts)  # type: ignore[arg-type]
    return ElevenLabsEngine(settings, options=options, clock=clock)


@pytest.fixture
def clock(server: ScribeTestServer) -> ManualClock:
    """Time for the server and an engine that only moves when the test advances it."""
    server.clock = ManualClock()
    return server.clock


class Run:
    """Drives one stream like the transcribe operator: push, poll, settled; checks the promises."""

    def __init__(self, stream: ElevenLabsStream) -> None:
        self.stream = stream
        self.events: list[SttEvent] = []
        self.promised = 0.0  # largest settled() seen so far
        self.error: SttError | None = None

    def poll(self) -> None:
        try:
            got = self.stream.poll()
        except SttError as exc:
            assert self.error is None, "SttError raised twice"
            self.error = exc
            return
        for e in got:
            if e.kind == "final":
                assert e.start >= self.promised - 1e-9, f"{e} starts before settled {self.promised}"
        self.events += got
        settled = self.stream.settled()
        assert settled >= self.promised, "settled() went backwards"
        self.promised = settled

    def push(self, audio: np.ndarray, chunk: int = 3200) -> None:
        for i in range(0, len(audio), chunk):
            self.stream.push_audio(audio[i : i + chunk])
            self.poll()

    def finish(self, timeout: float = 6.0) -> Run:
        self.stream.end_input()
        return self.wait(lambda: self.stream.done, timeout)

    def wait(self, cond: object, timeout: float = 4.0, tick: Callable[[], object] | None = None) -> Run:
        """Poll until ``cond()``; ``tick`` (e.g. moving a ManualClock on) runs between polls."""
        deadline = time.monotonic() + timeout
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out; events so far: {self.finals}"
            self.poll()
            if tick is not None:
                tick()
            time.sleep(0.005)
        self.poll()
        return self

    @property
    def finals(self) -> list[tuple[str, float, float]]:
        return [(e.text, round(e.start, 3), round(e.end, 3)) for e in self.events if e.kind == "final"]


def assert_finals(run: Run, expected: list[tuple[str, float, float]] = EXPECTED, tol: float = 0.011) -> None:
    got = run.finals
    assert [t for t, _, _ in got] == [t for t, _, _ in expected], got
    for (_, a, b), (_, ea, eb) in zip(got, expected, strict=True):
        assert abs(a - ea) <= tol and abs(b - eb) <= tol, (got, expected)
    for (_, _, prev_end), (_, start, _) in itertools.pairwise(got):
        assert start >= prev_end  # finals never overlap


def transcribe(server: ScribeTestServer, audio: np.ndarray | None = None, **opts: object) -> Run:
    engine = engine_for(server, **opts)
    try:
        run = Run(engine.stream("mock-42/cand-3"))
        run.push(script_audio() if audio is None else audio)
        return run.finish()
    finally:
        engine.close()


# ------------------------------------------------------------------------------------------ basics
def test_partials_finals_and_times(server: ScribeTestServer) -> None:
    run = transcribe(server)
    assert_finals(run)
    assert run.error is None and run.stream.done
    assert run.stream.settled() == math.inf
    # partials come before their final and grow into it
    texts = [(e.kind, e.text) for e in run.events]
    first_final = texts.index(("final", "alpha bravo"))
    assert ("partial", "alpha") in texts[:first_final]
    assert ("partial", "alpha bravo") in texts[:first_final]
    for e in run.events:
        assert e.end >= e.start >= 0
    # one session, with the documented query parameters and header
    (rec,) = server.records()
    assert rec.key_ok
    assert rec.params == {
        "model_id": "scribe_v2_realtime",
        "audio_format": "pcm_16000",
        "commit_strategy": "vad",
        "include_timestamps": "true",
        "vad_silence_threshold_secs": "0.4",
        "language_code": "en",
    }
    assert 0 < rec.max_chunk_bytes <= 6400  # 200 ms of 16-bit PCM per input_audio_chunk
    assert rec.audio_samples == round((TOTAL_S - 0.25) * 16000)  # leading silence is skipped
    assert rec.commit_requests == 1  # end_input's final commit
    assert rec.keyterms == list(DEFAULT_KEYTERMS)  # the vocabulary, as repeated `keyterms`
    # what the server reported about each commit: its language and the words' log probabilities
    for e, (text, _, _) in zip([e for e in run.events if e.kind == "final"], EXPECTED, strict=True):
        assert e.language == "en"
        logprobs = [word_logprob(w) for w in text.split()]
        assert e.confidence == pytest.approx(math.exp(sum(logprobs) / len(logprobs)))
    assert all(e.language is None and e.confidence is None for e in run.events if e.kind == "partial")


def test_end_input_flushes_the_open_utterance(server: ScribeTestServer) -> None:
    audio = script_audio([(0.3, "alpha"), (1.5, "kilo lima mike")], total_s=2.6)  # no pause at the end
    run = transcribe(server, audio)
    assert_finals(run, [("alpha", 0.3, 0.6), ("kilo lima mike", 1.5, 2.6)])
    assert server.records()[0].commit_requests == 1


def test_silence_needs_no_session_and_settles(server: ScribeTestServer) -> None:
    engine = engine_for(server)
    run = Run(engine.stream("r/p"))
    run.push(silence(30.0))
    assert run.stream.settled() >= 29.5  # nothing open: settled follows the audio
    assert run.stream.retained_seconds < 1.0  # silence is not kept for re-sending
    run.finish()
    assert run.events == [] and server.records() == []
    engine.close()


def test_settled_holds_at_an_open_utterance(server: ScribeTestServer) -> None:
    engine = engine_for(server, vad_silence_threshold_secs=2.0)
    run = Run(engine.stream("r/p"))
    run.push(script_audio([(1.0, "alpha bravo")], total_s=2.5))  # pause < 2 s: still open
    run.wait(lambda: any(e.kind == "partial" for e in run.events))
    assert 0.7 <= run.stream.settled() <= 1.0
    run.finish()
    assert_finals(run, [("alpha bravo", 1.0, 1.7)])
    engine.close()


def test_twin_pairer_gives_one_commit_per_pair() -> None:
    missing: list[str] = []
    p = TwinPairer(expect_twins=True, twin_wait_s=1.0, count=missing.append)
    words = [{"text": "a", "start": 0.0, "end": 0.3, "type": "word"}]
    assert p.plain("a", sent=100, now=0.0) == [] and p.deadline == 1.0
    assert p.timed("a", words, sent=200) == [Commit("a", words, 100)]  # plain first: its send position
    assert p.timed("b", words, sent=300) == [Commit("b", words, 300)]  # timed first
    assert p.plain("B ", sent=300, now=0.0) == []  # ... its plain twin is dropped
    assert p.plain("c", sent=400, now=0.0) == []
    assert p.expire(0.5) == [] and p.expire(1.0) == [Commit("c", None, 400)]
    assert p.timed("c", words, sent=500) == []  # the late twin of a commit already out
    assert missing == ["twin_missing"]
    assert p.plain("d", sent=600, now=2.0) == [] and p.expire(3.0) == [Commit("d", None, 600)]
    assert p.plain("e", sent=700, now=4.0) == [Commit("e", None, 700)]  # two missed: no more waiting
    assert not p.holding


def test_reconnect_backoff_is_the_documented_range() -> None:
    o = ElevenLabsOptions(backoff_initial_s=0.5, backoff_max_s=15.0)
    for attempt, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 15.0), (40, 15.0)]:
        low = dataclasses.replace(o.backoff(), rng=lambda a, b: a).delay(attempt)
        high = dataclasses.replace(o.backoff(), rng=lambda a, b: b).delay(attempt)
        assert low == pytest.approx(0.5 * nominal) and high == pytest.approx(nominal)


def test_twin_order_and_missing_twin(server: ScribeTestServer) -> None:
    server.twin = "before"
    assert_finals(transcribe(server))
    server.twin = "none"  # word times never come: times from the audio span, still exactly once
    run = transcribe(server)
    assert_finals(run, tol=0.051)
    # the language from session_started's config; no word log probabilities, no confidence
    assert all(e.language == "en" and e.confidence is None for e in run.events if e.kind == "final")


# ------------------------------------------------------------------------------------------ faults
@pytest.mark.parametrize(
    "fault",
    [
        MID_SECOND,
        Fault("drop", at_audio_s=2.4, mid_utterance=True, abort=False, close_code=1011),
        Fault("drop", at_audio_s=2.4, mid_utterance=True, abort=False, close_code=1000),
        Fault("drop", at_audio_s=1.6),  # between utterances, after the first commit
    ],
    ids=["abort", "close-1011", "close-1000", "between-utterances"],
)
def test_dropped_connection_resends_uncommitted_audio(server: ScribeTestServer, fault: Fault) -> None:
    server.plan(fault)
    run = transcribe(server)
    assert_finals(run)
    first, second = server.records()
    assert first.fault_fired
    # The second session re-sends from a little before "charlie" (the committed audio ends at 1.2 s),
    # or from the start when the first commit died in flight: a reset discards unread data.
    assert second.audio_samples in (round((TOTAL_S - 1.95) * 16000), round((TOTAL_S - 0.25) * 16000))


def test_repeated_drops_in_a_row(server: ScribeTestServer) -> None:
    server.plan(MID_SECOND, Fault("drop", at_audio_s=1.0, mid_utterance=True), MID_SECOND)
    run = transcribe(server)
    assert_finals(run)
    assert len(server.records()) == 4
    assert run.stream.stats["outcome_retry"] == 3


@pytest.mark.parametrize("error_type", sorted(RETRYABLE_ERRORS | SESSION_END_ERRORS))
def test_retryable_error_types(server: ScribeTestServer, error_type: str) -> None:
    server.plan(Fault("error", error_type=error_type, at_audio_s=2.4, mid_utterance=True))
    run = transcribe(server)
    assert_finals(run)
    assert run.error is None
    assert len(server.records()) == 2
    assert run.stream.stats[f"error_{error_type}"] == 1


@pytest.mark.parametrize("error_type", sorted(FATAL_ERRORS))
def test_fatal_error_types_give_up_at_once(server: ScribeTestServer, error_type: str) -> None:
    server.plan(Fault("error", error_type=error_type, at_audio_s=2.4, mid_utterance=True))
    run = transcribe(server)
    assert run.finals == EXPECTED[:1]  # what was committed before the error still came out
    assert run.error is not None and error_type in str(run.error)
    assert len(server.records()) == 1  # no retry
    assert run.stream.done and run.stream.poll() == []  # raised once, then quiet


def test_every_documented_error_type_is_handled() -> None:
    assert set(ERROR_TYPES) <= FATAL_ERRORS | RETRYABLE_ERRORS | SESSION_END_ERRORS | NOTICE_ERRORS


def test_stall_shorter_than_the_timeout_just_delays(server: ScribeTestServer) -> None:
    server.plan(Fault("stall", at_audio_s=2.4, mid_utterance=True, duration_s=0.4))
    run = transcribe(server)
    assert_finals(run)
    assert len(server.records()) == 1


def test_stall_longer_than_the_timeout_reconnects(server: ScribeTestServer) -> None:
    server.plan(Fault("stall", at_audio_s=2.4, mid_utterance=True, duration_s=3.0))
    run = transcribe(server)
    assert_finals(run)
    assert len(server.records()) == 2


def test_stall_detected_while_audio_flows(server: ScribeTestServer) -> None:
    """Live pace: the server goes quiet while speech keeps going up; the engine notices by itself."""
    server.plan(Fault("stall", at_audio_s=2.4, mid_utterance=True, duration_s=3.0))
    engine = engine_for(server, stall_timeout_s=0.4, flush_timeout_s=5.0)
    run = Run(engine.stream("r/p"))
    audio = script_audio()
    for i in range(0, len(audio), 3200):
        run.push(audio[i : i + 3200])
        time.sleep(0.02)  # ~10x real time
    run.wait(lambda: len(server.records()) == 2)
    run.finish()
    assert_finals(run)
    assert run.stream.stats["stalls"] == 1
    engine.close()


def test_malformed_json_and_unknown_types_are_counted_not_fatal(
    server: ScribeTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.plan(Fault("malformed", at_audio_s=1.0))
    with caplog.at_level(logging.WARNING, "stt.elevenlabs"):
        run = transcribe(server)
    assert_finals(run)
    assert run.error is None and run.stream.done
    # not JSON (3, one nested past any parser's recursion), no message_type (2), a list as message_type
    assert run.stream.stats["malformed"] == 6
    assert run.stream.stats["invalid_messages"] == 5  # known types with a field of the wrong type
    assert run.stream.stats["repeated_session_started"] == 1  # a well-formed one, mid-session
    assert run.stream.stats["unknown_messages"] == 1  # committed_transcript_entities is documented
    assert run.stream.stats["bad_messages"] == 0  # every shape was foreseen, none reached the guard
    assert len(server.records()) == 1
    assert "malformed message ignored" in caplog.text and "mystery_event" in caplog.text


def test_word_times_past_the_audio_are_not_believed(server: ScribeTestServer) -> None:
    server.word_time_offset_s = 1e6  # a hostile or broken server
    run = transcribe(server)
    assert_finals(run, tol=0.051)  # placed by the loudness map instead, still exactly once
    assert run.stream.stats["implausible_word_times"] == 3
    assert all(e.confidence is None for e in run.events)


def test_slow_server(server: ScribeTestServer) -> None:
    server.plan(Fault("slow", delay_s=0.01))
    run = transcribe(server)
    assert_finals(run)
    assert len(server.records()) == 1


def test_handshake_rejected_then_recovers(server: ScribeTestServer) -> None:
    server.plan(Fault("http_status", status=503), Fault("http_status", status=429))
    assert_finals(transcribe(server))
    assert len(server.records()) == 3


def test_gives_up_after_repeated_failures(server: ScribeTestServer) -> None:
    server.always = Fault("error", error_type="transcriber_error", at_audio_s=0.2)
    run = transcribe(server)
    assert run.error is not None
    assert "4 consecutive session failures" in str(run.error) and "transcriber_error" in str(run.error)
    assert len(server.records()) == FAST.max_failures
    assert run.stream.done and run.stream.settled() == math.inf
    assert run.stream.poll() == []  # raised exactly once


@pytest.mark.parametrize("mode", ["message", "http"])
def test_wrong_api_key_is_fatal(server: ScribeTestServer, mode: str) -> None:
    server.auth_failure = mode  # type: ignore[assignment]
    engine = engine_for(server, key="sk_wrong_key_value")
    run = Run(engine.stream("r/p"))
    run.push(script_audio())
    run.finish()
    assert run.error is not None
    assert ("auth_error" if mode == "message" else "HTTP 401") in str(run.error)
    assert len(server.records()) == 1 and not server.records()[0].key_ok
    engine.close()


def test_failing_participant_does_not_stop_the_others(server: ScribeTestServer) -> None:
    good_engine, bad_engine = engine_for(server), engine_for(server, key="sk_revoked")
    runs = [Run(good_engine.stream("r/a")), Run(bad_engine.stream("r/b")), Run(good_engine.stream("r/c"))]
    audio = script_audio()
    for i in range(0, len(audio), 3200):
        for r in runs:
            r.push(audio[i : i + 3200])
    for r in runs:
        r.finish()
    assert_finals(runs[0])
    assert_finals(runs[2])
    assert runs[1].error is not None and runs[1].finals == []
    good_engine.close()
    bad_engine.close()


# ------------------------------------------------------------------------------------------ keep-alive, idle
# These run on a ManualClock shared by the engine and the server: time moves in STEP ticks between polls.
STEP = 1 / 64


def test_keepalive_holds_a_quiet_session_open(server: ScribeTestServer, clock: ManualClock) -> None:
    server.idle_timeout_s = 0.5  # the real service closes sockets that get no audio
    engine = engine_for(server, clock=clock, keepalive_s=0.125, idle_commit_s=5.0, idle_close_s=5.0)
    run = Run(engine.stream("r/p"))
    run.push(script_audio([(0.5, "alpha bravo")], total_s=2.0))
    run.wait(lambda: len(run.finals) == 1)
    muted_until = clock.monotonic() + 1.25  # no audio pushed at all (a muted track)

    def tick() -> None:
        # never more than a keep-alive period (and a tick) past the last chunk the server got, so
        # only keep-alives that did not come could let its idle timeout fire
        if server.records()[0].last_chunk_at >= clock.monotonic() - 0.125:
            clock.advance(STEP)

    run.wait(lambda: clock.monotonic() >= muted_until, tick=tick)
    run.push(script_audio([(0.2, "india juliett")], total_s=1.5))
    run.finish()
    assert_finals(run, [("alpha bravo", 0.5, 1.2), ("india juliett", 2.2, 2.9)])
    (rec,) = server.records()
    assert rec.empty_chunks >= 9  # one every 0.125 s of the 1.25 s
    engine.close()


def test_server_idle_close_reopens_on_next_speech(server: ScribeTestServer, clock: ManualClock) -> None:
    server.idle_timeout_s = 0.3
    engine = engine_for(server, clock=clock, keepalive_s=30.0, idle_close_s=30.0)
    run = Run(engine.stream("r/p"))
    run.push(script_audio([(0.5, "alpha bravo")], total_s=2.0))
    run.wait(lambda: len(run.finals) == 1)
    run.wait(lambda: server.records()[0].closed_reason == "idle", tick=lambda: clock.advance(STEP))
    run.push(script_audio([(0.2, "india juliett")], total_s=1.5))
    run.finish()
    assert_finals(run, [("alpha bravo", 0.5, 1.2), ("india juliett", 2.2, 2.9)])
    assert len(server.records()) == 2
    engine.close()


def test_muted_mid_utterance_is_committed(server: ScribeTestServer, clock: ManualClock) -> None:
    engine = engine_for(server, clock=clock, idle_commit_s=0.3, vad_silence_threshold_secs=2.0)
    run = Run(engine.stream("r/p"))
    run.push(script_audio([(0.5, "alpha bravo")], total_s=1.3))  # pause too short for the VAD
    run.wait(lambda: run.stream.stats["chunks_sent"] >= 5)  # the whole chunks: the rest waits 0.3 s
    assert run.finals == [] and clock.monotonic() == 0.0
    # no more pushes: the engine sends the remainder and commits it once 0.3 s have passed
    run.wait(lambda: len(run.finals) == 1, tick=lambda: clock.advance(STEP))
    assert clock.monotonic() >= 0.3
    assert_finals(run, [("alpha bravo", 0.5, 1.2)])
    assert run.stream.stats["idle_commits"] == 1
    run.finish()
    engine.close()


def test_quiet_session_is_closed_and_reopened(server: ScribeTestServer) -> None:
    engine = engine_for(server, idle_close_s=1.0)
    run = Run(engine.stream("r/p"))
    run.push(script_audio([(0.5, "alpha bravo")], total_s=4.0))  # 2.8 s of silence after it
    run.wait(lambda: run.stream.stats["outcome_ended"] == 1)
    run.push(script_audio([(0.5, "oscar papa")], total_s=1.5))
    run.finish()
    assert_finals(run, [("alpha bravo", 0.5, 1.2), ("oscar papa", 4.5, 5.2)])
    first, second = server.records()
    assert first.audio_samples < 4.0 * 16000 and second.audio_samples < 1.5 * 16000


# ----------------------------------------------------------------------------------------- bounded utterances
def monologue(
    n_words: int, *, pause_after: dict[int, float] | None = None, hum_dbfs: float | None = None
) -> tuple[list[str], np.ndarray]:
    """0.3 s words with 0.1 s between them (no pause any VAD takes) from 0.5 s, then 1 s of silence.

    ``pause_after``: a longer gap (digital silence) after word i; ``hum_dbfs``: the ordinary gaps are
    not silent but hum at that level (below the server's VAD threshold), as gaps in real speech are.
    """
    words = [VOCAB[i % len(VOCAB)] for i in range(n_words)]
    parts = [silence(0.5)]
    for i, word in enumerate(words):
        parts.append(word_tone(word, 0.3))
        if pause_after and i in pause_after:
            parts.append(silence(pause_after[i]))
        elif hum_dbfs is not None:
            parts.append(word_tone("alpha", 0.1, amplitude=10 ** (hum_dbfs / 20) * 2**0.5))
        else:
            parts.append(silence(0.1))
    parts.append(silence(1.0))
    return words, np.concatenate(parts)


#: The stream sample of a session's first audio: the first speech at 0.5 s less settle_margin_s.
ORIGIN = round((0.5 - FAST.settle_margin_s) * 16000)


def assert_bounded(run: Run, words: list[str], max_s: float) -> None:
    """Every word exactly once and in order (a cut inside a word would split it in two), each final
    within the bound, finals in order."""
    assert run.error is None
    got = run.finals
    assert " ".join(t for t, _, _ in got).split() == words, got
    for text, start, end in got:
        assert end - start <= max_s + 1e-9, (text[:30], start, end)
    for (_, _, prev_end), (_, start, _) in itertools.pairwise(got):
        assert start >= prev_end


@pytest.mark.parametrize("twin", ["after", "none"])
def test_a_44_s_monologue_comes_back_in_finals_of_at_most_max_utterance(
    server: ScribeTestServer, twin: str
) -> None:
    server.twin = twin  # type: ignore[assignment]  # "none": our commits are placed without word times
    words, audio = monologue(110)  # 44 s of speech, never a 0.4 s pause
    run = transcribe(server, audio)
    assert_bounded(run, words, 20.0)
    assert len(run.finals) == 3 and run.finals[0][2] - run.finals[0][1] > 19.0  # cut near the bound
    (rec,) = server.records()
    assert rec.commit_requests >= 2  # two cuts (and end_input's commit, maybe not read yet)
    assert run.stream.stats["utterance_cuts"] == 2
    for at in rec.commit_at[:2]:  # each cut in a gap between words
        assert not audio[ORIGIN + at - 80 : ORIGIN + at + 80].any()


def test_the_cut_is_at_the_quietest_point_before_the_bound(server: ScribeTestServer) -> None:
    # gaps hum at -45 dBFS; one 0.3 s pause of silence after word 43 (17.7-18.0 s) is the quietest
    words, audio = monologue(60, pause_after={43: 0.3}, hum_dbfs=-45.0)
    run = transcribe(server, audio)
    assert_bounded(run, words, 20.0)
    rec = server.records()[0]
    cut = ORIGIN + rec.commit_at[0]
    assert 18.0 * 16000 < cut < 18.3 * 16000
    assert run.finals[0][2] == pytest.approx(18.0, abs=0.011)


def test_live_pace_holds_back_the_window_to_choose_the_cut(server: ScribeTestServer) -> None:
    """Pushed as it is spoken, the window before the bound is only known once pushed: the sender
    waits for it instead of committing wherever it happens to be at the bound. (Live, the sender has
    sent what it may before the next 200 ms come; here each push waits until it has.)"""
    engine = engine_for(server, max_utterance_s=3.0, cut_lookback_s=1.0)
    # "kilo", committed by the VAD (the session is open and caught up by then), then from 2.5 s a
    # monologue whose quietest moment is a 0.3 s pause at 5.3-5.6 s, inside the window before the
    # bound (speech from 3.0 s: bound 5.9 s, window from 4.9 s)
    words, speech = monologue(12, pause_after={5: 0.3}, hum_dbfs=-45.0)
    audio = np.concatenate([silence(0.5), word_tone("kilo", 0.3), silence(1.7), speech])
    run = Run(engine.stream("r/p"))
    for i in range(0, len(audio), 3200):
        run.push(audio[i : i + 3200])
        last, still, deadline = -1, 0, time.monotonic() + 1.0
        while still < 3 and time.monotonic() < deadline:  # until the sender stops for more
            time.sleep(0.01)
            run.poll()
            sent = run.stream.stats["chunks_sent"]
            still, last = (still + 1 if sent == last else 0), sent
    run.finish()
    engine.close()
    assert_bounded(run, ["kilo", *words], 3.0)
    rec = server.records()[0]
    cut = ORIGIN + rec.commit_at[0]
    assert 5.3 * 16000 < cut < 5.6 * 16000, cut / 16000
    assert run.stream.stats["utterance_cuts"] >= 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop", at_audio_s=12.0, mid_utterance=True),
        Fault("drop", at_audio_s=30.0, mid_utterance=True),
        Fault("drop", on_commit=True),
        Fault("drop", on_commit=True, abort=False, close_code=1011),
    ],
    ids=["before-the-first-cut", "after-the-first-cut", "cut-unanswered", "cut-unanswered-close"],
)
def test_reconnect_inside_a_long_utterance(server: ScribeTestServer, fault: Fault) -> None:
    server.plan(fault)
    words, audio = monologue(110)
    run = transcribe(server, audio)
    assert_bounded(run, words, 20.0)  # nothing lost, nothing twice, still bounded
    first, *later = server.records()
    assert first.fault_fired and later
    assert run.stream.stats["outcome_retry"] == 1


def test_no_bound_means_one_long_final(server: ScribeTestServer) -> None:
    words, audio = monologue(60)
    run = transcribe(server, audio, max_utterance_s=None)
    assert [t for t, _, _ in run.finals] == [" ".join(words)]
    assert server.records()[0].commit_requests == 1


def test_manual_commits_are_matched_to_their_answers() -> None:
    mc = ManualCommits(origin=0, slack=8000)  # 0.5 s
    mc.sent(320_000)  # a cut at 20 s
    mc.sent(640_000)  # another at 40 s
    assert mc.open_from == 640_000
    # a VAD commit before our first cut: its words end a VAD pause before it; the cut stays pending
    assert mc.bound((16_000, 300_000), sent_at=700_000) == 320_000
    mc.answered(300_000)
    # the answer to the cut (words end just before it): the next commit bounds what follows
    assert mc.bound((304_000, 319_000), sent_at=700_000) == 640_000
    mc.answered(650_000)  # the floor passed the second cut: nothing is pending
    assert mc.bound(None, sent_at=700_000) == 700_000


def test_quietest_frame_is_the_middle_of_the_latest_quiet_run() -> None:
    loudness = LoudnessMap(-50.0)
    frames = [0.3, 0.01, 0.3, 0.0, 0.0, 0.0, 0.3, 0.0, 0.3]  # amplitude per 100 ms
    loudness.add(np.concatenate([word_tone("alpha", 0.1, amplitude=a) for a in frames]))
    assert loudness.quietest(0, 9 * 1600) == 7 * 1600  # silent frames 3-5 and 7: the last run
    assert loudness.quietest(0, 7 * 1600) == 4 * 1600  # the middle of 3-5
    assert loudness.quietest(0, 3 * 1600) == 1 * 1600
    assert loudness.quietest(100, 1700) is None  # no whole frame inside


# ------------------------------------------------------------------------------------------ vocabulary
def test_custom_keyterms_reach_the_server(server: ScribeTestServer) -> None:
    terms = ("Itô's lemma", "put-call parity", "Black-Scholes")
    run = transcribe(server, keyterms=terms)
    assert_finals(run)
    (rec,) = server.records()
    assert rec.keyterms == list(terms)  # spaces, the apostrophe and "ô" survive the URL


def test_no_keyterms(server: ScribeTestServer) -> None:
    transcribe(server, keyterms=())
    assert server.records()[0].keyterms == []


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        (("x" * (MAX_KEYTERM_CHARS + 1),), "at most 20 per term"),
        (tuple(f"term {i}" for i in range(MAX_KEYTERMS + 1)), "at most 50 per session"),
        (("martingale", " "), "an empty term"),
    ],
    ids=["too-long", "too-many", "empty"],
)
def test_keyterms_beyond_the_documented_limits_are_refused_at_start(
    server: ScribeTestServer, terms: tuple[str, ...], message: str
) -> None:
    with pytest.raises(SttError, match=message):
        engine_for(server, keyterms=terms)
    assert server.records() == []


def test_keyterms_are_normalised_and_the_default_fits_the_limits() -> None:
    assert check_keyterms([" Black-Scholes ", "put-call  parity", "BLACK-SCHOLES"]) == (
        "Black-Scholes",
        "put-call parity",
    )
    assert check_keyterms(DEFAULT_KEYTERMS) == DEFAULT_KEYTERMS and "Black-Scholes" in DEFAULT_KEYTERMS


def test_detected_language_is_reported_as_iso_639_1(server: ScribeTestServer) -> None:
    settings = Settings(
        elevenlabs_api_key=Secret(KEY), elevenlabs_base_url=server.url, elevenlabs_language=""
    )
    engine = ElevenLabsEngine(settings, options=FAST)
    run = Run(engine.stream("r/p"))
    run.push(script_audio())
    run.finish()
    engine.close()
    assert "language_code" not in server.records()[0].params
    assert [e.language for e in run.events if e.kind == "final"] == ["en"] * 3  # the server said "eng"


# ------------------------------------------------------------------------------------------ resources
def test_push_never_blocks_and_retained_audio_is_bounded(server: ScribeTestServer) -> None:
    server.always = Fault("http_status", status=503)
    engine = engine_for(server, max_failures=1000, max_retained_s=2.0, backoff_max_s=0.05)
    stream = engine.stream("r/p")
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(16000 * 20) * 3000).astype(np.int16)  # loud, never committed
    slowest = 0.0
    for i in range(0, len(noise), 3200):
        t = time.perf_counter()
        stream.push_audio(noise[i : i + 3200])
        slowest = max(slowest, time.perf_counter() - t)
    assert slowest < 0.05
    assert stream.retained_seconds <= 2.0 + 0.2
    assert stream.stats["dropped_samples"] > 0
    stream.close()
    engine.close()


def test_close_releases_at_once(server: ScribeTestServer) -> None:
    engine = engine_for(server)
    stream = engine.stream("r/p")
    stream.push_audio(script_audio())
    Run(stream).wait(lambda: len(server.records()) == 1)
    t = time.perf_counter()
    engine.close()
    assert time.perf_counter() - t < 0.1
    assert stream.poll() is not None  # still safe to call


# ------------------------------------------------------------------------------------------ secrets
def test_api_key_never_in_logs_errors_or_reprs(
    server: ScribeTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.plan(MID_SECOND, Fault("error", error_type="rate_limited", at_audio_s=0.5))
    with caplog.at_level(logging.DEBUG):  # websockets logs request headers at DEBUG
        engine = engine_for(server)
        run = transcribe(server)
        assert_finals(run)
        bad = engine_for(server, key=KEY + "-wrong")
        failed = Run(bad.stream("r/p"))
        failed.push(script_audio())
        failed.finish()
        bad.close()
    assert "xi-api-key" in caplog.text  # the header was logged ...
    assert KEY not in caplog.text  # ... but not its value
    assert failed.error is not None and KEY not in str(failed.error) and KEY not in repr(failed.error)
    for obj in (engine, engine.url, run.stream, engine.options):
        assert KEY not in repr(obj) and KEY not in str(obj)
    engine.close()


def test_missing_key_is_refused(server: ScribeTestServer) -> None:
    with pytest.raises(SttError, match="ELEVENLABS_API_KEY"):
        ElevenLabsEngine(Settings(elevenlabs_base_url=server.url))
