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
