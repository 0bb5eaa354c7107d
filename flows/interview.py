"""The interview dataflow, the same for live rooms and replays.

    source (LiveKit | replay)   ParticipantAnnounce, AudioChunk, TrackEnd   key room/session/participant
     -> resample     (soxr stream per participant, any rate/channels -> 16 kHz mono)
     -> transcribe   (one STT stream per participant: Transcript partial/final + ProgressMark)
     -> partials + finals                                         -> caption sinks
     -> finals                                                    -> transcript sinks
     -> key by session -> windowing (media-ordered by marks)      -> window, metrics, session sinks
     -> partials, finals, marks, windows                          -> event sinks (terminal, progress)

``build_flow`` takes the source, sinks and STT engine factory from its caller, so tests run the very
same flow with ``bytewax.testing`` sources and sinks. The sinks of a replay and of the live flow are
assembled once, in ``flows.sinks``; the CLI only says which.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source

from flows.sinks import FlowSinks, live_sinks, replay_sinks
from operators.resample import ResampleLogic
from operators.transcribe import transcribe_builder
from operators.windowing import SessionWindowing, WindowRules
from quantcoach.records import (
    AudioChunk,
    EvaluationWindow,
    MetricsUpdate,
    ParticipantAnnounce,
    ProgressMark,
    SessionEvent,
    TrackEnd,
    Transcript,
    participant_key,
    session_key,
)
from quantcoach.settings import Settings
from stt.protocol import SttEngine


def event_key(event: ParticipantAnnounce | AudioChunk | TrackEnd) -> str:
    if isinstance(event, ParticipantAnnounce):
        return event.participant.key
    return participant_key(event.room, event.participant, event.session_id)


def _session_of(item: ParticipantAnnounce | ProgressMark | Transcript) -> str:
    if isinstance(item, ParticipantAnnounce):
        return session_key(item.participant.room, item.participant.session_id)
    return session_key(item.room, item.session_id)


def _is_final(item: Any) -> bool:
    return isinstance(item, Transcript) and item.is_final


def _for_windowing(item: Any) -> bool:
    return isinstance(item, ParticipantAnnounce | ProgressMark) or _is_final(item)


def _window_record(w: EvaluationWindow) -> dict[str, Any]:
    return w.to_record()


def _is_window(item: Any) -> bool:
    return isinstance(item, EvaluationWindow)


def _is_metrics(item: Any) -> bool:
    return isinstance(item, MetricsUpdate)


def _is_session(item: Any) -> bool:
    return isinstance(item, SessionEvent)


def _to_record(item: MetricsUpdate | SessionEvent) -> dict[str, Any]:
    return item.to_record()


def _transcript_record(t: Transcript) -> dict[str, Any]:
    return t.to_record()


def build_flow(
    settings: Settings,
    source: Source[Any],
    sinks: FlowSinks,
    engine_factory: Callable[[], SttEngine],
    *,
    live: bool = False,
    flow_id: str = "interview",
) -> Dataflow:
    """The interview flow. ``live`` turns on the wall-clock ``idle_s`` window rule (never in replay)."""
    rules = WindowRules(settings.window_s, settings.overlap_s, settings.min_transcripts)
    idle_s = settings.idle_s if live else None

    flow = Dataflow(flow_id)
    events = op.input("source", flow, source)
    by_participant = op.key_on("key_participant", events, event_key)
    pcm16k = op.stateful("resample", by_participant, lambda _resume: ResampleLogic())
    stt = op.key_rm("stt_out", op.stateful("transcribe", pcm16k, transcribe_builder(engine_factory)))

    finals = op.map("transcript_record", op.filter("finals", stt, _is_final), _transcript_record)
    for i, sink in enumerate(sinks.transcripts):
        op.output(f"transcripts_out_{i}", finals, sink)

    if sinks.captions:
        spoken = op.filter("spoken", stt, lambda x: isinstance(x, Transcript))
        for i, sink in enumerate(sinks.captions):
            op.output(f"captions_out_{i}", spoken, sink)

    by_session = op.key_on("key_session", op.filter("for_windowing", stt, _for_windowing), _session_of)
    windowed = op.stateful("windowing", by_session, lambda resume: SessionWindowing(rules, idle_s, resume))
    session_out = op.key_rm("session_out", windowed)
    window_records = op.map("window_record", op.filter("windows", session_out, _is_window), _window_record)
    for i, sink in enumerate(sinks.windows):
        op.output(f"windows_out_{i}", window_records, sink)
    metric_records = op.map("metrics_record", op.filter("metrics", session_out, _is_metrics), _to_record)
    for i, sink in enumerate(sinks.metrics):
        op.output(f"metrics_out_{i}", metric_records, sink)
    session_records = op.map("session_record", op.filter("sessions", session_out, _is_session), _to_record)
    for i, sink in enumerate(sinks.sessions):
        op.output(f"sessions_out_{i}", session_records, sink)

    if sinks.events:
        shown = op.merge(
            "events",
            op.filter("shown", stt, lambda x: isinstance(x, Transcript | ProgressMark)),
            window_records,
        )
        for i, sink in enumerate(sinks.events):
            op.output(f"events_out_{i}", shown, sink)
    return flow


def live_flow(
    settings: Settings | None = None,
    rooms: list[str] | None = None,
    *,
    discover: bool = True,
    record_dir: str | None = None,
) -> tuple[Dataflow, Any]:
    """The production flow: LiveKit rooms in, Kafka out (JSONL under ``out/`` when Kafka is not set).

    Rooms come from ``rooms``, RoomService polling (``discover``) and the ``interview.rooms`` control
    topic that the API's webhook handler feeds. Returns the flow and its source (``source.stop()``
    leaves the rooms cleanly, emitting every room's last window).
    """
    from connectors.kafka.client import configure
    from connectors.kafka.room_events import consume_room_events
    from connectors.livekit.source import LiveKitSource
    from stt.engines import engine_for

    settings = settings or Settings.from_env()
    configure(settings)  # SASL/TLS for every Kafka client of this process (bytewax.run workers too)
    sinks = live_sinks(settings)
    room_events = None
    if settings.kafka_configured:

        def room_events(worker_index: int, worker_count: int) -> Any:
            return consume_room_events(settings.kafka_servers, settings.kafka_topic_rooms)

    source = LiveKitSource(
        settings, rooms=rooms, discover=discover, room_events=room_events, record_dir=record_dir
    )
    engine = engine_for(settings)
    return build_flow(settings, source, sinks, lambda: engine, live=True), source


def replay_flow(sessions: list[str], out: str = "out", speed: float | None = None) -> Dataflow:
    """Replay under Bytewax's own runner, e.g. across processes:
    ``python -m bytewax.run "flows.interview:replay_flow(['s1', 's2'], 'out')" -i 0 -a "h:p1;h:p2"``.
    Records go to ``<out>/<room>/<session_id>/`` (appended; every process writes its own sessions').
    """
    from connectors.recording import load_session
    from connectors.replay_source import ReplaySource
    from stt.engines import engine_for

    settings = Settings.from_env()
    loaded = [load_session(s) for s in sessions]
    sinks = replay_sinks(settings, [], Path(out), fresh=False, kafka=False)
    engine = engine_for(settings)
    return build_flow(settings, ReplaySource(loaded, settings.chunk_ms, speed), sinks, lambda: engine)


def __getattr__(name: str) -> Any:
    # ``python -m bytewax.run flows.interview:flow``: the live flow, built from the environment only
    # when asked for, so that importing this module (tests, replay) needs no LiveKit settings.
    if name == "flow":
        return live_flow()[0]
    raise AttributeError(name)
