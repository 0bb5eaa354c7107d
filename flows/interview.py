"""The interview dataflow, the same for live rooms and replays.

    source (LiveKit | replay)   ParticipantAnnounce, AudioChunk, TrackEnd     key room/participant
     -> resample     (soxr stream per participant, any rate/channels -> 16 kHz mono)
     -> transcribe   (one STT stream per participant: Transcript partial/final + ProgressMark)
     -> finals                                                    -> transcript sinks
     -> key by room -> windowing (media-ordered by marks)         -> window sinks
     -> partials, finals, marks, windows                          -> event sinks (terminal, progress)

``build_flow`` takes the source, sinks and STT engine factory from its caller, so tests run the very
same flow with ``bytewax.testing`` sources and sinks. The sinks of a replay and of the live flow are
assembled here, once (``replay_sinks``, ``live_sinks``); the CLI only says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

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
from stt.protocol import SttEngine


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


def jsonl_sinks(out_dir: Callable[[str], Path]) -> FlowSinks:
    """Final transcripts and windows as JSON lines, in ``out_dir(room)/{transcripts,windows}.jsonl``."""
    from connectors.jsonl_sink import JsonlSink

    return FlowSinks(
        transcripts=[JsonlSink(lambda room: out_dir(room) / "transcripts.jsonl")],
        windows=[JsonlSink(lambda room: out_dir(room) / "windows.jsonl")],
    )


def add_kafka_sinks(sinks: FlowSinks, settings: Settings, *more_topics: str) -> None:
    """Final transcripts and windows to their Kafka topics as well. The topics (and ``more_topics``) are
    created if missing, before the flow starts: an unreachable broker raises ``KafkaUnavailable`` now."""
    from connectors.kafka.client import ensure_topics
    from connectors.kafka.sink import KafkaSink

    topics = [settings.kafka_topic_transcripts, settings.kafka_topic_windows]
    ensure_topics(
        settings.kafka_servers, [*topics, *more_topics], settings.kafka_partitions, settings.kafka_replication
    )
    sinks.transcripts.append(KafkaSink(settings.kafka_servers, settings.kafka_topic_transcripts))
    sinks.windows.append(KafkaSink(settings.kafka_servers, settings.kafka_topic_windows))


def replay_sinks(
    settings: Settings,
    rooms: Iterable[str],
    out_dir: Callable[[str], Path],
    *,
    fresh: bool = True,
    kafka: bool = True,
    store: bool = False,
    view: Any = None,
) -> FlowSinks:
    """The sinks of a replay: JSONL files under ``out_dir(room)`` (emptied first when ``fresh``; a room
    that yields nothing still leaves its two files), Kafka when ``kafka`` and it is configured, the
    store (``DATABASE_URL``, checked now) when ``store``, and a ``TerminalView`` when given."""
    for room in rooms:
        out_dir(room).mkdir(parents=True, exist_ok=True)
        for name in ("transcripts.jsonl", "windows.jsonl"):
            if fresh:  # a resumed replay appends instead: records are at-least-once, ids deterministic
                (out_dir(room) / name).write_bytes(b"")
    sinks = jsonl_sinks(out_dir)
    if kafka and settings.kafka_configured:
        add_kafka_sinks(sinks, settings)
    if store:
        from connectors.store import Store
        from connectors.store_sink import StoreSink

        Store.open(settings.database_url).close()  # tables created, URL checked, before the flow starts
        sinks.transcripts.append(StoreSink(settings.database_url))
        sinks.windows.append(StoreSink(settings.database_url))
    if view is not None:
        from connectors.terminal_sink import TerminalSink

        sinks.events.append(TerminalSink(view))
    return sinks


def live_sinks(settings: Settings) -> FlowSinks:
    """The sinks of the live flow: Kafka (its control topic created too), or JSONL under ``out/<room>/``
    when Kafka is not configured."""
    if not settings.kafka_configured:
        return jsonl_sinks(lambda room: Path("out") / room)
    sinks = FlowSinks()
    add_kafka_sinks(sinks, settings, settings.kafka_topic_rooms)
    return sinks


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
    from connectors.kafka.room_events import consume_room_events
    from connectors.livekit.source import LiveKitSource
    from stt.engines import engine_for

    settings = settings or Settings.from_env()
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
    Records go to ``<out>/<room>/`` (appended; every process writes its own rooms' records).
    """
    from connectors.recording import load_session
    from connectors.replay_source import ReplaySource
    from stt.engines import engine_for

    settings = Settings.from_env()
    loaded = [load_session(s) for s in sessions]
    sinks = replay_sinks(settings, [], lambda room: Path(out) / room, fresh=False, kafka=False)
    engine = engine_for(settings)
    return build_flow(settings, ReplaySource(loaded, settings.chunk_ms, speed), sinks, lambda: engine)


def __getattr__(name: str) -> Any:
    # ``python -m bytewax.run flows.interview:flow``: the live flow, built from the environment only
    # when asked for, so that importing this module (tests, replay) needs no LiveKit settings.
    if name == "flow":
        return live_flow()[0]
    raise AttributeError(name)
