"""The interview dataflow, the same for live rooms and replays.

    source (LiveKit | replay)   ParticipantAnnounce, AudioChunk, TrackEnd     key room/participant
     -> resample     (soxr stream per participant, any rate/channels -> 16 kHz mono)
     -> transcribe   (one STT stream per participant: Transcript partial/final + ProgressMark)
     -> finals                                                    -> transcript sinks
     -> key by room -> windowing (media-ordered by marks)         -> window sinks
     -> partials, finals, marks, windows                          -> event sinks (terminal, progress)

``build_flow`` takes the source, sinks and STT engine factory from its caller (the CLI), so tests
run the very same flow with ``bytewax.testing`` sources and sinks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.stt.protocol import SttEngine
from operators.resample import ResampleLogic
from operators.transcribe import transcribe_builder
from operators.windowing import RoomWindowing, WindowRules
from quantcoach.records import (
    AudioChunk,
    EvaluationWindow,
    ParticipantAnnounce,
    ProgressMark,
    TrackEnd,
    Transcript,
    participant_key,
)
from quantcoach.settings import Settings


@dataclass
class FlowSinks:
    transcripts: list[Sink[dict[str, Any]]] = field(default_factory=list)  # final transcript records
    windows: list[Sink[dict[str, Any]]] = field(default_factory=list)  # window records
    events: list[Sink[Any]] = field(default_factory=list)  # Transcript, ProgressMark, window records


def event_key(event: ParticipantAnnounce | AudioChunk | TrackEnd) -> str:
    if isinstance(event, ParticipantAnnounce):
        return event.participant.key
    return participant_key(event.room, event.participant)


def _room_of(item: ParticipantAnnounce | ProgressMark | Transcript) -> str:
    return item.participant.room if isinstance(item, ParticipantAnnounce) else item.room


def _is_final(item: Any) -> bool:
    return isinstance(item, Transcript) and item.is_final


def _for_windowing(item: Any) -> bool:
    return isinstance(item, ParticipantAnnounce | ProgressMark) or _is_final(item)


def _window_record(w: EvaluationWindow) -> dict[str, Any]:
    return w.to_record()


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

    by_room = op.key_on("key_room", op.filter("for_windowing", stt, _for_windowing), _room_of)
    windows = op.stateful("windowing", by_room, lambda resume: RoomWindowing(rules, idle_s, resume))
    window_records = op.map("window_record", op.key_rm("windows_out", windows), _window_record)
    for i, sink in enumerate(sinks.windows):
        op.output(f"windows_out_{i}", window_records, sink)

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
    from pathlib import Path

    from connectors.jsonl_sink import JsonlSink
    from connectors.kafka_sink import KafkaSink, ensure_topics
    from connectors.livekit_source import LiveKitSource
    from connectors.room_events import consume_room_events
    from connectors.stt import engine_for

    settings = settings or Settings.from_env()
    room_events = None
    sinks = FlowSinks()
    if settings.kafka_configured:
        topics = [settings.kafka_topic_transcripts, settings.kafka_topic_windows, settings.kafka_topic_rooms]
        ensure_topics(settings.kafka_servers, topics, settings.kafka_partitions, settings.kafka_replication)
        sinks.transcripts.append(KafkaSink(settings.kafka_servers, settings.kafka_topic_transcripts))
        sinks.windows.append(KafkaSink(settings.kafka_servers, settings.kafka_topic_windows))

        def room_events(worker_index: int, worker_count: int) -> Any:
            return consume_room_events(settings.kafka_servers, settings.kafka_topic_rooms)
    else:
        sinks.transcripts.append(JsonlSink(lambda room: Path("out") / room / "transcripts.jsonl"))
        sinks.windows.append(JsonlSink(lambda room: Path("out") / room / "windows.jsonl"))
    source = LiveKitSource(
        settings, rooms=rooms, discover=discover, room_events=room_events, record_dir=record_dir
    )
    engine = engine_for(settings)
    return build_flow(settings, source, sinks, lambda: engine, live=True), source


def replay_flow(sessions: list[str], out: str = "out", speed: float | None = None) -> Dataflow:
    """Replay under Bytewax's own runner, e.g. across processes:
    ``python -m bytewax.run "flows.interview:replay_flow(['s1', 's2'], 'out')" -i 0 -a "h:p1;h:p2"``.
    Records go to ``<out>/<room>/`` (appended; every process writes its own rooms' records).
    """
    from pathlib import Path

    from connectors.jsonl_sink import JsonlSink
    from connectors.recording import load_session
    from connectors.replay_source import ReplaySource
    from connectors.stt import engine_for

    settings = Settings.from_env()
    loaded = [load_session(s) for s in sessions]
    sinks = FlowSinks(
        transcripts=[JsonlSink(lambda room: Path(out) / room / "transcripts.jsonl")],
        windows=[JsonlSink(lambda room: Path(out) / room / "windows.jsonl")],
    )
    engine = engine_for(settings)
    return build_flow(settings, ReplaySource(loaded, settings.chunk_ms, speed), sinks, lambda: engine)


def __getattr__(name: str) -> Any:
    # ``python -m bytewax.run flows.interview:flow``: the live flow, built from the environment only
    # when asked for, so that importing this module (tests, replay) needs no LiveKit settings.
    if name == "flow":
        return live_flow()[0]
    raise AttributeError(name)
