"""The live path end to end: LiveKitSource -> build_flow(live=True) -> real Whisper -> windows.

Everything is real except LiveKit's SFU, which cannot run here: the room is the fake ``rtc.Room`` of
tests/support/livekit_fakes.py (the SDK's event sequence on its ``EventEmitter``, real ``rtc.AudioFrame``).
Its participants speak the bundled sample interview, resampled to 48 kHz mono as the SDK delivers it,
in ``CHUNK_MS`` frames (the ``frame_size_ms`` the source asks the SDK for). Nothing waits for the wall
clock: the injected clock moves by each frame's duration just before the frame arrives, so the source
sees a real-time room while the audio goes in as fast as the source takes it, and the room ends right
after its last frame, with nearly all of the session still in flight in the flow. The source then ends
by itself (no discovery, control feed ended or none, every room over), so ``run_main`` returns.

Every record belongs to the room's session: its id is the fake room's sid (``FakeRoom(sid=...)``), and a
room created again under the same name is another session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
from bytewax.inputs import StatelessSourcePartition
from bytewax.testing import TestingSink, cluster_main, run_main
from livekit import rtc

from connectors.captions import ATTR_FINAL, ATTR_SEGMENT_ID, ATTR_TRACK_ID, TOPIC
from connectors.livekit.source import LiveKitSource
from flows.interview import FlowSinks, build_flow
from flows.sinks import add_room_captions
from quantcoach.records import AudioChunk, ParticipantAnnounce, TrackEnd
from quantcoach.wire import validate
from stt.engines import engine_for
from stt.vad import VadParams
from tests.support.livekit_fakes import (
    AGENT,
    AUDIO,
    RATE,
    Clock,
    FakeParticipant,
    FakePublication,
    FakeRoom,
    RoomFactory,
    StreamFactory,
    audio_pub,
    frames_of,
    make_settings,
)
from tests.support.speech import WER_LIMIT, normalise

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "interview"
ROOM = "live-interview"
SID = f"RM_{ROOM}"  # the fake room's sid unless a test gives another
# idle_s far beyond any run: the one wall-clock rule must not make windows depend on machine speed
SETTINGS = make_settings(window_s=12.0, overlap_s=4.0, min_transcripts=2, idle_s=3600.0, chunk_ms=200)
STEP_S = SETTINGS.chunk_ms / 1000
FRAME = RATE * SETTINGS.chunk_ms // 1000
#: A transcript's times are the VAD's speech bounds: within 0.15 s of its turn's first and last audible
#: sample (measured within 0.11 s here, the same as a replay of the sample gives). The script's own
#: times are the TTS clips', whose ends include the synthesiser's trailing silence.
SCRIPT_TOL_S = 0.15
AUDIBLE = 1e-3  # |sample| above which the sample's audio is speech, not silence
RUN_TIMEOUT_S = 120.0  # a source that does not end is stopped (and the test fails), never hangs the suite


# --- the sample interview, as the SDK would hand it out --------------------------------------------------


@cache
def script() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((SAMPLE / "script.json").read_text()))


@cache
def sample_audio() -> dict[str, np.ndarray]:
    """role -> the participant's track as 48 kHz mono int16 (what ``rtc.AudioStream`` delivers)."""
    session = json.loads((SAMPLE / "session.json").read_text())
    out = {}
    for p in session["participants"]:
        data, rate = sf.read(SAMPLE / p["file"], dtype="float32", always_2d=True)
        x = soxr.resample(data.mean(axis=1), rate, RATE)
        out[p["role"]] = (np.clip(x, -1.0, 32767 / 32768) * 32768).round().astype(np.int16)
    return out


def turns(role: str, start: float = 0.0, shift: float = 0.0) -> list[dict[str, Any]]:
    """The script's turns of ``role`` from ``start`` on, at their audible speech (first to last
    audible sample of the turn's clip), times moved by ``shift``."""
    return [
        {**t, "start": a + shift, "end": b + shift}
        for t in script()
        if t["role"] == role and t["start"] >= start
        for a, b in [audible(role, t["start"], t["end"])]
    ]


@cache
def audible(role: str, start: float, end: float) -> tuple[float, float]:
    clip = sample_audio()[role][round(start * RATE) : round(end * RATE)].astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(clip) > AUDIBLE)
    return start + loud[0] / RATE, start + loud[-1] / RATE


def full_steps() -> int:
    return math.ceil(len(sample_audio()["interviewer"]) / FRAME)


def step(media_s: float) -> int:
    return round(media_s / STEP_S)


# --- a scripted live room ------------------------------------------------------------------------------


@dataclass
class Speaker:
    """A participant and the audio it publishes (sample 0 at media time 0); agents publish too."""

    who: FakeParticipant
    audio: np.ndarray
    pub: FakePublication | None = None

    @property
    def identity(self) -> str:
        return self.who.identity


def interviewer(identity: str = "morgan", name: str = "Morgan") -> Speaker:
    return Speaker(FakeParticipant(identity, name, {"role": "interviewer"}), sample_audio()["interviewer"])


def candidate() -> Speaker:
    return Speaker(FakeParticipant("riley", "Riley", {"role": "candidate"}), sample_audio()["candidate"])


Action = Callable[["LiveRoom"], Awaitable[None]]


def room_deleted(live: LiveRoom) -> None:
    assert live.room is not None
    live.room.end(rtc.DisconnectReason.ROOM_DELETED)


@dataclass
class LiveRoom:
    """Plays a session into a FakeRoom step by step (``STEP_S`` of media time per step).

    At step ``i`` the actions scheduled for it run (joins, leaves, waits), the clock moves to the end
    of the step, then every subscribed speaker's frame for [i*STEP_S, (i+1)*STEP_S) is delivered, and
    taken by the source before the next step. After the last step, with no pause, the room is over:
    ``finish`` (default: the server deletes it, ``disconnected(ROOM_DELETED)``).
    """

    present: list[Speaker]
    steps: int
    actions: dict[int, list[Action]] = field(default_factory=dict)
    finish: Callable[[LiveRoom], None] = room_deleted
    clock: Clock = field(default_factory=Clock)
    sid: str = SID  # the server's room sid: the session id of every record of this room
    # what the flow's sinks have received so far (appended by the Bytewax worker while the room plays;
    # rooms played one after the other into one flow share these lists)
    transcripts: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    transcripts_at_end: list[dict[str, Any]] = field(default_factory=list)
    room: FakeRoom | None = None
    source: LiveKitSource | None = None
    speakers: list[Speaker] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def make(self, name: str) -> FakeRoom:
        assert self.room is None, "the source joined the room twice"
        self.room = FakeRoom(name, [(s.who, [AUDIO]) for s in self.present], self._script, sid=self.sid)
        return self.room

    async def _script(self, room: FakeRoom) -> None:
        try:
            t0 = self.clock.t  # the agent takes media time zero at its join; the clock stands still
            self.speakers = list(self.present)
            for s in self.speakers:
                s.pub = audio_pub(s.who)
            await self.until_subscribed([s for s in self.speakers if not is_agent(s)])
            for i in range(self.steps):
                for action in self.actions.get(i, []):
                    await action(self)
                self.clock.t = t0 + (i + 1) * STEP_S
                taken = []
                for s in self.speakers:
                    samples = s.audio[i * FRAME : (i + 1) * FRAME]
                    if s.pub is None or s.pub.track is None or not len(samples):
                        continue
                    (frame,) = frames_of(samples[:, None], SETTINGS.chunk_ms)
                    s.pub.track.frames.put_nowait(frame)
                    if s.pub.subscribed and not is_agent(s):  # nobody reads an agent's track
                        taken.append(s.pub.track.frames)
                for frames in taken:
                    await frames.join()
        except BaseException as exc:  # raised again by run_live; the room still ends, the flow stops
            self.error = exc
        finally:
            self.transcripts_at_end = list(self.transcripts)
            self.finish(self)
            self.done.set()

    @staticmethod
    async def until_subscribed(speakers: list[Speaker]) -> None:
        for _ in range(10_000):
            if all(s.pub is not None and s.pub.subscribed for s in speakers):
                return
            await asyncio.sleep(0)
        raise AssertionError("the source did not subscribe to every audio track")


def is_agent(s: Speaker) -> bool:
    return s.who.kind == AGENT or s.who.attributes.get("role") == "agent"


def join(speaker: Speaker) -> Action:
    """The speaker joins and publishes its audio; a rejoin is a new SDK participant object."""

    async def act(live: LiveRoom) -> None:
        assert live.room is not None
        old = speaker.who
        speaker.who = FakeParticipant(old.identity, old.name, old.attributes, old.kind, old.metadata)
        live.room.join(speaker.who)
        speaker.pub = live.room.publish(speaker.who)
        live.speakers.append(speaker)
        await live.until_subscribed([speaker])

    return act


def leave(speaker: Speaker) -> Action:
    async def act(live: LiveRoom) -> None:
        assert live.room is not None
        live.room.leave(speaker.who)
        speaker.pub = None
        live.speakers.remove(speaker)

    return act


def wait_for(what: str, ready: Callable[[LiveRoom], bool], timeout_s: float = 30.0) -> Action:
    """Hold the room (and its clock) until the flow has emitted something; a live room would simply
    go on, so this only makes the test deterministic. Fails the run after ``timeout_s`` of wall clock."""

    async def act(live: LiveRoom) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready(live):
            if time.monotonic() > deadline:
                raise AssertionError(f"the flow did not emit {what} within {timeout_s} s")
            await asyncio.sleep(0.01)

    return act


def ended_sessions(live: LiveRoom) -> list[dict[str, Any]]:
    return [r for r in live.sessions if r["event"] == "ended"]


def still_open(grace_s: float = 0.5) -> Action:
    """The session has not ended: no ``ended`` record and no final metrics, ``grace_s`` of wall clock
    after whatever the room was waiting for (the windowing step would have emitted them with it)."""

    async def act(live: LiveRoom) -> None:
        await asyncio.sleep(grace_s)
        assert not ended_sessions(live), f"the session ended while the room was open: {live.sessions}"
        assert not [m for m in live.metrics if m["final"]], "final metrics while the room was open"
        assert [r["event"] for r in live.sessions] == ["started"]

    return act


# --- running the flow ------------------------------------------------------------------------------------


@dataclass
class Run:
    transcripts: list[dict[str, Any]]
    windows: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    source_events: list[Any]  # what the source handed the flow
    streams: StreamFactory
    dropped: int

    def session(self, sid: str) -> Run:
        """Only the records (and source events) of session ``sid``."""

        def mine(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in records if r["session_id"] == sid]

        events = [e for e in self.source_events if _session(e) == sid]
        return Run(
            mine(self.transcripts),
            mine(self.windows),
            mine(self.sessions),
            mine(self.metrics),
            events,
            self.streams,
            self.dropped,
        )

    def heard(self, role: str) -> list[dict[str, Any]]:
        return sorted((t for t in self.transcripts if t["speaker"] == role), key=lambda t: t["start"])

    def of(self, kind: type, identity: str | None = None) -> list[Any]:
        out = [e for e in self.source_events if isinstance(e, kind)]
        if identity is not None:
            out = [e for e in out if _identity(e) == identity]
        return out


def _identity(event: Any) -> str:
    return event.participant.identity if isinstance(event, ParticipantAnnounce) else event.participant


def _session(event: Any) -> str:
    return event.participant.session_id if isinstance(event, ParticipantAnnounce) else event.session_id


class RecordingPartition(StatelessSourcePartition[Any]):
    """The source's own partition; every batch it hands the flow is kept for the test to read."""

    def __init__(self, inner: Any, events: list[Any]) -> None:
        self.inner, self.events = inner, events

    def next_batch(self) -> list[Any]:
        batch = self.inner.next_batch()
        self.events.extend(batch)
        return batch

    def next_awake(self) -> Any:
        return self.inner.next_awake()

    def close(self) -> None:
        self.inner.close()


class RecordingSource(LiveKitSource):
    """The real source, keeping what it handed the flow."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Any] = []
        self.parts: list[Any] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        part = super().build(step_id, worker_index, worker_count)
        self.parts.append(part)
        return RecordingPartition(part, self.events)


def run_live(
    live: LiveRoom | list[LiveRoom],
    engine: Any,
    room_events: Any = None,
    workers: int = 1,
    captions: bool = False,
) -> Run:
    """The live flow, as ``quantcoach flow`` builds it, until the source ends by itself.

    Several rooms are played one after the other under the one name ``ROOM``: the source joins the
    first at start, the others when ``room_events`` says so (``reopened``)."""
    rooms = live if isinstance(live, list) else [live]
    live = rooms[0]
    for other in rooms[1:]:  # one flow, one set of sinks
        other.transcripts, other.windows = live.transcripts, live.windows
        other.sessions, other.metrics = live.sessions, live.metrics
    next_room = iter(rooms)
    factory = RoomFactory(lambda name: next(next_room).make(name))
    streams = StreamFactory()
    source = RecordingSource(
        SETTINGS,
        rooms=[ROOM],
        discover=False,
        room_events=room_events,
        queue_size=100_000,  # the whole session may wait in the hand-off: nothing is dropped
        room_factory=factory,
        stream_factory=streams,
        clock=live.clock,
    )
    for room in rooms:
        room.source = source
    sinks = FlowSinks(
        transcripts=[TestingSink(live.transcripts)],
        windows=[TestingSink(live.windows)],
        sessions=[TestingSink(live.sessions)],
        metrics=[TestingSink(live.metrics)],
    )
    if captions:  # the production caption sink: the joined room's text streams, found by name
        add_room_captions(sinks, SETTINGS)
    flow = build_flow(SETTINGS, source, sinks, lambda: engine, live=True)
    timed_out = threading.Event()

    def give_up() -> None:
        timed_out.set()
        source.stop()

    watchdog = threading.Timer(RUN_TIMEOUT_S, give_up)
    watchdog.start()
    try:
        if workers == 1:
            run_main(flow)
        else:
            cluster_main(flow, [], 0, worker_count_per_proc=workers)
    finally:
        watchdog.cancel()
    assert not timed_out.is_set(), f"the flow did not end by itself within {RUN_TIMEOUT_S} s"
    for room in rooms:
        assert room.done.is_set(), "the flow ended before the room did"
        if room.error is not None:
            raise room.error
    assert len(factory.rooms) == len(rooms)
    dropped = sum(sum(p.outbox.dropped.values()) for p in source.parts)
    return Run(live.transcripts, live.windows, live.sessions, live.metrics, source.events, streams, dropped)


def reopened(rooms: list[LiveRoom]) -> Iterator[dict[str, str]]:
    """The control feed of rooms played one after the other under one name: once a room is over and
    the source has left it, the webhook says ``room_started`` again (a new room, the same name)."""
    for previous in rooms[:-1]:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not (previous.done.is_set() and _left(previous)):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        yield {"event": "room_started", "room": ROOM}


def _left(live: LiveRoom) -> bool:
    source = live.source
    if source is None or not source.parts:
        return False
    try:
        return all(ROOM not in part.supervisor.rooms for part in source.parts)
    except RuntimeError:  # read while the loop thread changed it: look again
        return False


# --- checks shared by the scenarios --------------------------------------------------------------------


def check_windows(run: Run, sid: str = SID) -> list[dict[str, Any]]:
    """Every record is session ``sid``'s, valid v2; window ids ``<sid>:0..n-1``; every final transcript
    (utterance id ``<sid>:<identity>:<n>``) is a new (``context: false``) segment of exactly one window,
    taken in media order, and a window's context segments are the previous window's tail; the
    session's last window has reason ``end``. Returns the windows in seq order."""
    for record in run.transcripts + run.windows:
        validate(record)
        assert (record["room"], record["session_id"]) == (ROOM, sid), record
    windows = sorted(run.windows, key=lambda w: w["seq"])
    assert [w["seq"] for w in windows] == list(range(len(windows))), "window seqs are not 0..n-1"
    assert [w["window_id"] for w in windows] == [f"{sid}:{w['seq']}" for w in windows]
    assert windows and windows[-1]["reason"] == "end"
    finals = sorted(run.transcripts, key=lambda t: (t["start"], t["participant"]))
    assert all(t["is_final"] for t in finals)
    for t in finals:
        assert t["utterance_id"].startswith(f"{sid}:{t['participant']}:"), t
    ids = [t["utterance_id"] for t in finals]
    assert len(ids) == len(set(ids))
    by_id = {t["utterance_id"]: t for t in finals}
    new: list[str] = []
    overlap: list[str] = []  # what the previous window leaves as the next one's context
    for w in windows:
        segs = w["segments"]
        for seg in segs:  # a segment is the session's own transcript, as it was emitted
            t = by_id[seg["utterance_id"]]
            assert (seg["participant"], seg["start"], seg["end"], seg["text"]) == (
                t["participant"], t["start"], t["end"], t["text"],
            )  # fmt: skip
        context = [seg["utterance_id"] for seg in segs if seg["context"]]
        assert segs[: len(context)] == [seg for seg in segs if seg["context"]], "context comes first"
        assert context == overlap, "the context is not the previous window's last overlap_s"
        assert [seg["start"] for seg in segs] == sorted(seg["start"] for seg in segs), "not in media order"
        assert w["start"] == segs[0]["start"] and w["end"] == segs[-1]["end"]
        new.extend(seg["utterance_id"] for seg in segs if not seg["context"])
        cutoff = w["end"] - SETTINGS.overlap_s  # an emptied room's window leaves no context
        overlap = [] if w["reason"] == "end" else [g["utterance_id"] for g in segs if g["end"] > cutoff]
    assert new == ids, "the final transcripts are not the windows' new segments, once each, in media order"
    return windows


def check_session(
    run: Run, sid: str = SID, roster: set[str] | None = None, ended: bool = True
) -> tuple[dict[str, Any], ...]:
    """Session ``sid``'s lifecycle: ``started`` first (with the roster it had), ``ended`` once the room
    finished (``ended=False``: never), after the session's last window and its final metrics; a
    metrics record after every window, the final one last. ``roster``: identities of the session."""
    for record in run.sessions + run.metrics:
        validate(record)
        assert (record["room"], record["session_id"]) == (ROOM, sid), record
    events = [r["event"] for r in run.sessions]
    assert events == (["started", "ended"] if ended else ["started"]), events
    started = run.sessions[0]
    started_at = started["started_at"]
    assert started_at is not None and datetime.fromisoformat(started_at).tzinfo is not None
    assert {w["started_at"] for w in run.windows} == {started_at}  # the session's start, on every window
    windows = sorted(run.windows, key=lambda w: w["seq"])
    assert all(started["at"] <= w["emitted_at"] for w in windows), "a window before the session started"
    finals = [m for m in run.metrics if m["final"]]
    running = [m for m in run.metrics if not m["final"]]
    assert len(running) == len(windows)  # one after every window
    if roster is not None:
        assert {p["identity"] for p in windows[-1]["participants"]} == roster
    if not ended:
        assert not finals
        return (started,)
    end = run.sessions[1]
    assert len(finals) == 1 and run.metrics[-1] is finals[0], "the final metrics are not the last"
    # emitted in this order by the session's step: last window, final metrics, ended
    assert windows[-1]["emitted_at"] <= finals[0]["emitted_at"] <= end["at"]
    assert end["started_at"] == started_at
    if roster is not None:
        assert {p["identity"] for p in end["participants"]} == roster
        assert {s["identity"] for s in finals[0]["speakers"]} == roster
    return started, end


def check_words(run: Run, role: str, said_turns: list[dict[str, Any]]) -> None:
    said = " ".join(normalise(t["text"]) for t in said_turns)
    heard = " ".join(normalise(t["text"]) for t in run.heard(role))
    value = jiwer.wer(said, heard)
    assert value < WER_LIMIT, f"{role}: WER {value:.2f}\nsaid:  {said}\nheard: {heard}"


def check_times(heard: list[dict[str, Any]], said: list[dict[str, Any]], tol: float) -> None:
    """One transcript per spoken turn, at the turn's media time."""
    assert len(heard) == len(said), (heard, said)
    for h, s in zip(heard, said, strict=True):
        assert h["start"] == pytest.approx(s["start"], abs=tol), (h, s)
        assert h["end"] == pytest.approx(s["end"], abs=tol), (h, s)


def check_decoded_whole(log: DecodeLog, heard: dict[str, Any], track_48k: np.ndarray) -> None:
    """The utterance's audio reached Whisper whole: its speech [start, end) with the VAD's padding
    before it and up to the padding after it (less where the track ended), and its text is what
    Whisper makes of that audio.

    Which words tiny.en gives at an utterance boundary depends on the CPU's int8 kernels, so the
    words are judged against an oracle on this machine: the same engine on the same samples."""
    sr, pad = 16_000, round(VadParams().speech_pad_s * 16_000)
    speech = round((heard["end"] - heard["start"]) * sr)
    decoded = [
        (a, text)
        for a, text in log.decodes
        if text == heard["text"] and speech <= len(a) <= speech + 2 * pad + 32
    ]
    assert decoded, (heard, [(len(a), t) for a, t in log.decodes])
    audio, _ = decoded[-1]
    # The samples are the track's own: compare with a one-shot resample of the published 48 kHz
    # track (the flow resamples in a stream, so equal within filter noise), at the padded start
    # (the record's times are rounded to 1 ms: looked for within a few samples).
    ref = soxr.resample(track_48k.astype(np.float32) / 32768.0, RATE, sr)
    nominal = round(heard["start"] * sr) - pad

    def corr(first: int) -> float:
        ref_span = ref[first : first + len(audio)]
        n = len(ref_span)  # past the track's end the VAD hears zeros
        x = audio[:n]
        return float(np.dot(x, ref_span) / (np.linalg.norm(x) * np.linalg.norm(ref_span) + 1e-12))

    first = max(range(max(0, nominal - 24), nominal + 25), key=corr)
    assert corr(first) > 0.99, f"the decoded audio is not the track's span (correlation {corr(first):.3f})"
    assert first <= round(heard["start"] * sr) and first + len(audio) >= round(heard["end"] * sr)
    assert not np.any(audio[len(ref) - first :]), "audio past the end of the track that is not silence"
    assert log.oracle(audio) == heard["text"]


def canonical(records: list[dict[str, Any]]) -> list[str]:
    """The records without their wall-clock times, sorted."""
    wall_clock = ("emitted_at", "at", "started_at")
    return sorted(
        json.dumps({k: v for k, v in r.items() if k not in wall_clock}, sort_keys=True) for r in records
    )


# --- 1 and 5. the whole interview, with two agents in the room -------------------------------------------


class DecodeLog:
    """The engine's own decodes, as it ran them: (16 kHz float32 audio, text), in submit order.

    It wraps the real engine's ``decode`` (which runs on its decode thread, for each utterance of a
    live stream), so what it records is exactly the audio the flow handed Whisper for each utterance."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.decodes: list[tuple[np.ndarray, str]] = []
        self._lock = threading.Lock()
        self._decode = engine.decode
        engine.decode = self._record

    def _record(self, audio: np.ndarray) -> Any:
        decoded = self._decode(audio)
        with self._lock:
            self.decodes.append((np.array(audio, copy=True), decoded.text))
        return decoded

    def clear(self) -> None:
        with self._lock:
            self.decodes.clear()

    def oracle(self, audio: np.ndarray) -> str:
        """The same engine on the same audio, called directly: what the flow must have produced."""
        return self._decode(audio).text


@pytest.fixture(scope="module")
def decode_log() -> DecodeLog:
    return DecodeLog(engine_for(SETTINGS, "whisper"))


@pytest.fixture
def whisper(decode_log: DecodeLog) -> Any:
    decode_log.clear()
    return decode_log.engine


FULL_SID = "RM_Hx7q2Lk9PzWe"  # the full session's room sid, as LiveKit would make it


def full_session_room() -> tuple[LiveRoom, list[Speaker]]:
    """Interviewer and candidate from the start, plus two agents that speak too: a LiveKit agent
    (kind AGENT, the interviewer's audio) present from the start, and a participant whose role
    attribute is ``agent`` (the candidate's audio) joining 1 s in, whose track the server subscribes
    us to anyway."""
    iv, cand = interviewer(), candidate()
    bot = Speaker(FakeParticipant("tts-bot", "Bot", kind=AGENT), sample_audio()["interviewer"])
    helper = Speaker(FakeParticipant("helper", "Helper", {"role": "agent"}), sample_audio()["candidate"])

    async def helper_joins(live: LiveRoom) -> None:
        assert live.room is not None
        live.room.join(helper.who)
        helper.pub = live.room.publish(helper.who)
        live.speakers.append(helper)
        live.room._subscription(helper.who, helper.pub, True)  # as if the server subscribed us
        await asyncio.sleep(0)

    live = LiveRoom([iv, cand, bot], full_steps(), {step(1.0): [helper_joins]}, sid=FULL_SID)
    return live, [iv, cand, bot, helper]


@pytest.fixture(scope="module")
def full_session(decode_log: DecodeLog) -> tuple[Run, LiveRoom, list[Speaker]]:
    live, speakers = full_session_room()
    return run_live(live, decode_log.engine), live, speakers


def test_words_come_back_attributed_to_the_right_speaker(full_session) -> None:
    run, _, _ = full_session
    assert run.dropped == 0
    for role in ("interviewer", "candidate"):
        check_words(run, role, turns(role))
    for turn in script():  # each turn heard once, at its time, from its speaker only
        overlapping = [t for t in run.transcripts if t["start"] < turn["end"] and t["end"] > turn["start"]]
        assert [t["speaker"] for t in overlapping] == [turn["role"]], (turn, overlapping)
    assert {(t["participant"], t["speaker"], t["name"]) for t in run.transcripts} == {
        ("morgan", "interviewer", "Morgan"),
        ("riley", "candidate", "Riley"),
    }


def test_every_final_is_in_exactly_one_window_and_the_last_is_end(full_session) -> None:
    run, _, _ = full_session
    windows = check_windows(run, FULL_SID)
    assert len(windows) >= 3
    assert [w["reason"] for w in windows].count("end") == 1
    assert any(s["context"] for w in windows for s in w["segments"])  # windows overlap


def test_every_record_is_the_rooms_session_which_ends_when_the_room_does(full_session) -> None:
    """The session id of every record (and of every source event) is the fake room's sid; the session
    starts with the roster (agents are not in it) and ends, after its last window and final
    metrics, when the room is deleted."""
    run, live, _ = full_session
    assert live.room is not None and live.room.sid_requests >= 1  # asked the server, as the SDK does
    records = run.transcripts + run.windows + run.sessions + run.metrics
    assert records and {r["session_id"] for r in records} == {FULL_SID}
    assert {_session(e) for e in run.source_events} == {FULL_SID}
    started, _ = check_session(run, FULL_SID, roster={"morgan", "riley"})
    starts = {p.started_at for e in run.of(ParticipantAnnounce) for p in (e.participant, *e.roster)}
    assert starts == {started["started_at"]}  # the agent's join: one start for the whole session
    assert started["participants"] and {p["identity"] for p in started["participants"]} <= {"morgan", "riley"}
    for w in run.windows:
        assert {p["identity"] for p in w["participants"]} == {"morgan", "riley"}
        assert {(p["name"], p["role"]) for p in w["participants"]} == {
            ("Morgan", "interviewer"),
            ("Riley", "candidate"),
        }
    final = run.metrics[-1]
    assert final["media_s"] == pytest.approx(live.steps * STEP_S, abs=STEP_S)
    words = {s["identity"]: s["words"] for s in final["speakers"]}
    for who in ("morgan", "riley"):  # the final metrics count what was transcribed
        assert words[who] == sum(len(t["text"].split()) for t in run.transcripts if t["participant"] == who)


def test_source_saw_a_real_time_room(full_session) -> None:
    """Media time follows the injected clock: tracks from 0, chunks contiguous, ended by the room."""
    run, live, _ = full_session
    assert {c[1:] for c in run.streams.calls} == {(RATE, 1, SETTINGS.chunk_ms)}
    total = len(sample_audio()["interviewer"]) / RATE
    for who in ("morgan", "riley"):
        (announce,) = run.of(ParticipantAnnounce, who)
        assert announce.participant.offset_s == 0.0
        chunks = run.of(AudioChunk, who)
        assert chunks[0].start == 0.0 and chunks[-1].end == pytest.approx(total)
        assert all(b.start == pytest.approx(a.end) for a, b in itertools.pairwise(chunks))
        (end,) = run.of(TrackEnd, who)
        assert end.reason == "room_finished" and end.at == pytest.approx(live.steps * STEP_S)


def test_agents_are_never_transcribed(full_session) -> None:
    run, _, (_, _, bot, helper) = full_session
    agents = {bot.identity, helper.identity}
    assert agents.isdisjoint(t["participant"] for t in run.transcripts)
    assert agents.isdisjoint(s["participant"] for w in run.windows for s in w["segments"])
    assert agents.isdisjoint(_identity(e) for e in run.source_events)
    assert audio_pub(bot.who).subscribe_requests == 0 and audio_pub(helper.who).subscribe_requests == 0
    assert audio_pub(helper.who).subscribed  # the server subscribed us: the track was still ignored
    agent_tracks = {audio_pub(bot.who).sid, audio_pub(helper.who).sid}
    assert agent_tracks.isdisjoint(c[0] for c in run.streams.calls)  # no audio stream ever opened


def test_two_workers_give_the_same_transcripts_and_windows(whisper, full_session) -> None:
    """The room is one worker's; its participants' transcribe steps and its windowing may be on
    others: the same live session gives the same records (apart from ``emitted_at``)."""
    live, _ = full_session_room()
    run = run_live(live, whisper, workers=2)
    reference, _, _ = full_session
    assert canonical(run.transcripts) == canonical(reference.transcripts)
    assert canonical(run.windows) == canonical(reference.windows)
    assert canonical(run.metrics) == canonical(reference.metrics)
    assert [r["event"] for r in run.sessions] == ["started", "ended"]
    check_session(run, FULL_SID, roster={"morgan", "riley"})


# --- 2. a candidate who joins late ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_late_joiner_is_heard_at_its_media_times(whisper, full_session, workers: int) -> None:
    join_at = 10.0
    iv, cand = interviewer(), candidate()
    run = run_live(LiveRoom([iv], full_steps(), {step(join_at): [join(cand)]}), whisper, workers=workers)
    assert run.dropped == 0
    (announce,) = run.of(ParticipantAnnounce, cand.identity)
    assert announce.participant.offset_s == pytest.approx(join_at)
    assert [p.identity for p in announce.roster] == ["morgan", "riley"]
    assert run.of(AudioChunk, cand.identity)[0].start == pytest.approx(join_at)
    heard = run.heard("candidate")
    check_times(heard, turns("candidate", start=join_at), SCRIPT_TOL_S)
    # at the times it is heard at when there from the start (up to the VAD's 32 ms steps)
    check_times(heard, full_session[0].heard("candidate"), 0.1)
    check_words(run, "candidate", turns("candidate", start=join_at))
    windows = check_windows(run)
    assert [w["start"] for w in windows] == sorted(w["start"] for w in windows)
    assert [w["end"] for w in windows] == sorted(w["end"] for w in windows)
    check_session(run, roster={"morgan", "riley"})  # one session, with the late joiner in it


# --- 3. leaving and rejoining ----------------------------------------------------------------------------


def test_candidate_leaves_and_rejoins(whisper) -> None:
    iv, cand = interviewer(), candidate()
    left_at, back_at = 19.4, 24.0  # after the candidate's second answer, before its third
    live = LiveRoom([iv, cand], full_steps(), {step(left_at): [leave(cand)], step(back_at): [join(cand)]})
    run = run_live(live, whisper)
    announces = run.of(ParticipantAnnounce, cand.identity)
    assert [a.participant.offset_s for a in announces] == [0.0, pytest.approx(back_at)]
    assert [(e.reason, e.at) for e in run.of(TrackEnd, cand.identity)] == [
        ("unsubscribed", pytest.approx(left_at)),
        ("room_finished", pytest.approx(live.steps * STEP_S)),
    ]
    heard = run.heard("candidate")
    assert [t for t in heard if t["end"] <= left_at] and [t for t in heard if t["start"] >= back_at]
    check_times(heard, turns("candidate"), SCRIPT_TOL_S)
    for role in ("interviewer", "candidate"):
        check_words(run, role, turns(role))
    windows = check_windows(run)
    assert [w["reason"] for w in windows].count("end") == 1
    check_session(run, roster={"morgan", "riley"})  # leaving and coming back: still the one session


def test_everyone_leaves_then_comes_back_window_ids_continue(whisper) -> None:
    """The room empties: its window closes with ``end``, but the session goes on (they may come
    back); when people come back the ids go on, in the same session, which ends with the room."""
    iv, cand = interviewer(), candidate()
    left_at, back_at = 19.0, 19.8  # both silent between the candidate's answer and the next question

    def emptied(live: LiveRoom) -> bool:
        return any(w["reason"] == "end" for w in live.windows)

    live = LiveRoom(
        [iv, cand],
        full_steps(),
        {
            step(left_at): [leave(iv), leave(cand)],
            step(back_at): [
                wait_for("the empty room's window", emptied),
                still_open(),
                join(iv),
                join(cand),
            ],
        },
    )
    run = run_live(live, whisper)
    windows = check_windows(run)
    reasons = [w["reason"] for w in windows]
    assert reasons.count("end") == 2, reasons
    first_end = reasons.index("end")
    assert windows[first_end]["end"] <= left_at < windows[first_end + 1]["start"]
    assert all(not s["context"] for s in windows[first_end + 1]["segments"])  # no context carried
    assert all(s["start"] > left_at for s in windows[first_end + 1]["segments"])
    for role in ("interviewer", "candidate"):
        check_words(run, role, turns(role))
    check_session(run, roster={"morgan", "riley"})


def test_everyone_leaving_does_not_end_the_session_the_room_finishing_does(whisper) -> None:
    """Both leave at 19 s and nobody comes back: the room's window closes, but the session stays open
    (they could come back) until the room finishes, 3 s later: then everyone of the session is told
    (TrackEnd ``room_finished``), and the session ends after its last window and final metrics."""
    iv, cand = interviewer(), candidate()
    left_at, finished_at = 19.0, 22.0

    def emptied(live: LiveRoom) -> bool:
        return any(w["reason"] == "end" for w in live.windows)

    live = LiveRoom(
        [iv, cand],
        step(finished_at),
        {
            step(left_at): [leave(iv), leave(cand)],
            step(finished_at) - 1: [wait_for("the empty room's window", emptied), still_open()],
        },
    )
    run = run_live(live, whisper)
    for who in ("morgan", "riley"):
        assert [(e.reason, e.at) for e in run.of(TrackEnd, who)] == [
            ("unsubscribed", pytest.approx(left_at)),
            ("room_finished", pytest.approx(finished_at)),
        ]
    windows = check_windows(run)
    assert [w["reason"] for w in windows].count("end") == 1 and windows[-1]["end"] <= left_at
    _, end = check_session(run, roster={"morgan", "riley"})
    assert end["at"] >= max(w["emitted_at"] for w in windows)
    assert run.metrics[-1]["media_s"] <= finished_at
    for role in ("interviewer", "candidate"):
        check_words(run, role, [t for t in turns(role) if t["end"] <= left_at])


def test_windows_keep_flowing_after_a_participant_leaves_for_good_and_another_joins(whisper) -> None:
    """The interviewer drops out for good at 19.4 s; a second interviewer joins at 29 s and asks the
    remaining questions. Its question, the candidate's answer and its closing line make a
    ``speaker_change`` window that a live room must get while it is still going on."""
    iv, cand, second = interviewer(), candidate(), interviewer("sam", "Sam")

    def first_interviewer_settled(live: LiveRoom) -> bool:  # needs the first one's track ended
        return any(s["start"] > 25.0 for w in live.windows for s in w["segments"])

    def closing_line_heard(live: LiveRoom) -> bool:
        return any(t["participant"] == "sam" and t["start"] > 39.0 for t in live.transcripts)

    def answer_windowed(live: LiveRoom) -> bool:
        return any(w["reason"] == "speaker_change" and w["end"] > 38.0 for w in live.windows)

    live = LiveRoom(
        [iv, cand],
        full_steps(),
        {
            step(19.4): [leave(iv)],
            step(29.0): [wait_for("the candidate's third answer", first_interviewer_settled), join(second)],
            full_steps() - 1: [
                wait_for("the closing line's transcript", closing_line_heard),
                wait_for("the window with the last answer", answer_windowed, timeout_s=3.0),
            ],
        },
    )
    run = run_live(live, whisper)
    windows = check_windows(run)
    assert [w["reason"] for w in windows][-2:] == ["speaker_change", "end"]
    assert [e.reason for e in run.of(TrackEnd, "morgan")] == ["unsubscribed", "room_finished"]
    check_session(run, roster={"morgan", "riley", "sam"})  # who left for good is still in the session


# --- 4. the room finishing while audio is in flight ------------------------------------------------------


def _room_closed(live: LiveRoom) -> None:
    assert live.room is not None
    live.room.end(rtc.DisconnectReason.ROOM_CLOSED)


def _shutdown(live: LiveRoom) -> None:  # what SIGTERM does in ``quantcoach flow``
    assert live.source is not None
    live.source.stop()


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("deleted", "room_finished"),
        ("closed", "room_finished"),
        ("room_finished_event", "room_finished"),
        ("shutdown", "shutdown"),
    ],
)
def test_room_ending_with_audio_in_flight_keeps_the_last_utterance(
    whisper: Any, decode_log: DecodeLog, how: str, reason: str
) -> None:
    """The last 13 s of the interview, cut just after the last word: the VAD still holds that
    utterance open when the room ends, right after its last frame, so its transcript can only come
    from the room's end flushing it through the flow."""
    begin, cut = 29.4, 42.6
    audio = {role: a[round(begin * RATE) : round(cut * RATE)] for role, a in sample_audio().items()}
    iv = Speaker(FakeParticipant("morgan", "Morgan", {"role": "interviewer"}), audio["interviewer"])
    cand = Speaker(FakeParticipant("riley", "Riley", {"role": "candidate"}), audio["candidate"])
    control: queue.Queue[Any] | None = queue.Queue() if how == "room_finished_event" else None

    def room_finished_event(live: LiveRoom) -> None:  # the API's webhook handler, on the control topic
        assert control is not None
        control.put({"event": "room_finished", "room": ROOM})
        control.put(None)  # the control feed ends: the source may end once the room is left

    finish = {
        "deleted": room_deleted,
        "closed": _room_closed,
        "room_finished_event": room_finished_event,
        "shutdown": _shutdown,
    }[how]
    live = LiveRoom([iv, cand], step(cut - begin), finish=finish)
    run = run_live(live, whisper, room_events=control)
    last = turns("interviewer", start=begin, shift=-begin)[-1]
    assert not [t for t in live.transcripts_at_end if t["end"] > last["start"]], "it was not in flight"
    assert {(e.participant, e.reason) for e in run.of(TrackEnd)} == {("morgan", reason), ("riley", reason)}
    for role in ("interviewer", "candidate"):
        check_times(run.heard(role), turns(role, start=begin, shift=-begin), SCRIPT_TOL_S)
    heard_last = run.heard("interviewer")[-1]
    check_decoded_whole(decode_log, heard_last, audio["interviewer"])
    windows = check_windows(run)
    assert windows[-1]["segments"][-1]["text"] == heard_last["text"]
    # the room finishing ends the session; a shutdown does not (a restarted flow resumes it)
    check_session(run, roster={"morgan", "riley"}, ended=reason == "room_finished")


# --- 6. a room name used again: another session -------------------------------------------------------


def test_a_room_created_again_under_its_name_is_a_second_session_of_its_own(whisper) -> None:
    """Interview A (the sample's first 19.4 s) in room ``ROOM``; the room is deleted; a new room of the
    same name (another sid) holds interview B (the sample's last 13.2 s, spoken from its media time
    0). B is a session of its own: its id is the new room's sid, its windows start again at seq 0
    under other ids, its times start at 0, and no record of one session carries anything of the other."""
    clock = Clock()
    cut, begin, end = 19.4, 29.4, 42.6
    tail_audio = {role: a[round(begin * RATE) : round(end * RATE)] for role, a in sample_audio().items()}
    first = LiveRoom([interviewer(), candidate()], step(cut), clock=clock, sid="RM_aaaa1111")
    second = LiveRoom(
        [
            Speaker(FakeParticipant("morgan", "Morgan", {"role": "interviewer"}), tail_audio["interviewer"]),
            Speaker(FakeParticipant("riley", "Riley", {"role": "candidate"}), tail_audio["candidate"]),
        ],
        step(end - begin),
        clock=clock,
        sid="RM_bbbb2222",
    )
    rooms = [first, second]
    run = run_live(rooms, whisper, room_events=reopened(rooms))
    a, b = run.session(first.sid), run.session(second.sid)
    for kind in ("transcripts", "windows", "sessions", "metrics"):  # every record is one of the two
        assert len(getattr(a, kind)) + len(getattr(b, kind)) == len(getattr(run, kind)), kind
    assert len(a.source_events) + len(b.source_events) == len(run.source_events)

    windows_a, windows_b = check_windows(a, first.sid), check_windows(b, second.sid)
    assert windows_a[0]["seq"] == windows_b[0]["seq"] == 0
    assert {w["window_id"] for w in windows_a}.isdisjoint(w["window_id"] for w in windows_b)
    assert {t["utterance_id"] for t in a.transcripts}.isdisjoint(t["utterance_id"] for t in b.transcripts)
    for session, windows in ((a, windows_a), (b, windows_b)):  # segments only of their own session
        own = {t["utterance_id"] for t in session.transcripts}
        assert {s["utterance_id"] for w in windows for s in w["segments"]} == own
    _, a_end = check_session(a, first.sid, {"morgan", "riley"})
    b_start, _ = check_session(b, second.sid, {"morgan", "riley"})
    # B's room was joined after A's had finished (A's records may still be in flight then: sessions
    # are independent, so nothing orders A's ended before B's started)
    assert a_end["started_at"] < b_start["started_at"]
    assert a.metrics[-1]["media_s"] <= cut + STEP_S and b.metrics[-1]["media_s"] <= end - begin + STEP_S

    # media time is B's own, from 0: the agent's join of the new room
    for who in ("morgan", "riley"):
        (announce,) = b.of(ParticipantAnnounce, who)
        assert announce.participant.offset_s == 0.0
        assert (
            [e.reason for e in a.of(TrackEnd, who)]
            == [e.reason for e in b.of(TrackEnd, who)]
            == ["room_finished"]
        )
    for role in ("interviewer", "candidate"):  # each heard at its own media times
        said_a = [t for t in turns(role) if t["end"] <= cut]
        check_times(a.heard(role), said_a, SCRIPT_TOL_S)
        check_words(a, role, said_a)  # (B's four short turns are too few words for a WER)
        check_times(b.heard(role), turns(role, start=begin, shift=-begin), SCRIPT_TOL_S)


# --- live captions: every participant's transcripts as lk.transcription text streams in the room ---------
def test_live_captions_in_the_room(whisper: Any) -> None:
    """The first 20 s of the interview (two turns each). The room stays open until the flow has every
    final (a live room would simply go on), so each final's caption can reach it."""
    cut = 20.0
    audio = {role: a[: round(cut * RATE)] for role, a in sample_audio().items()}
    iv = Speaker(FakeParticipant("morgan", "Morgan", {"role": "interviewer"}), audio["interviewer"])
    cand = Speaker(FakeParticipant("riley", "Riley", {"role": "candidate"}), audio["candidate"])
    spoken = [t for t in script() if t["end"] + 0.6 < cut]
    finals_in = wait_for(
        "the finals", lambda live: len([t for t in live.transcripts if t["is_final"]]) >= len(spoken)
    )
    live = LiveRoom([iv, cand], step(cut), {step(cut) - 1: [finals_in]})
    run = run_live(live, whisper, captions=True)
    assert live.room is not None
    streams = live.room.local_participant.streams
    finals = [t for t in run.transcripts if t["is_final"]]
    assert len(finals) == len(spoken)
    tracks = {s.identity: s.pub.sid for s in (iv, cand) if s.pub is not None}
    assert {s["topic"] for s in streams} == {TOPIC}
    by_segment: dict[str, list[dict[str, Any]]] = {}
    for s in streams:
        by_segment.setdefault(s["attributes"][ATTR_SEGMENT_ID], []).append(s)
    assert set(by_segment) == {t["utterance_id"] for t in finals}, "one segment id per utterance"
    for t in finals:
        sent = by_segment[t["utterance_id"]]
        flags = [s["attributes"][ATTR_FINAL] for s in sent]
        assert flags[-1] == "true" and set(flags[:-1]) <= {"false"}, "interims, then one final"
        assert sent[-1]["text"] == t["text"]
        assert {s["sender_identity"] for s in sent} == {t["participant"]}, "sent as the speaker"
        assert {s["attributes"][ATTR_TRACK_ID] for s in sent} == {tracks[t["participant"]]}
    interims = [s for s in streams if s["attributes"][ATTR_FINAL] == "false"]
    print(f"captions: {len(finals)} finals, {len(interims)} interims")
