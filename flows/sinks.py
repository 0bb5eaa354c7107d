"""Where the interview flow's records go, assembled once for a replay and for the live flow.

Every record lands under its session: JSONL files in ``<out>/<room>/<session_id>/`` (``transcripts``,
``windows``, ``sessions``, ``metrics``, and ``captions`` when asked), the Kafka topics (keyed by room),
the store. The CLI only says which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bytewax.outputs import Sink

from quantcoach.records import Transcript
from quantcoach.settings import Settings

RECORD_FILES = ("transcripts.jsonl", "windows.jsonl", "sessions.jsonl", "metrics.jsonl")


@dataclass
class FlowSinks:
    transcripts: list[Sink[dict[str, Any]]] = field(default_factory=list)  # final transcript records
    windows: list[Sink[dict[str, Any]]] = field(default_factory=list)  # window records
    sessions: list[Sink[dict[str, Any]]] = field(default_factory=list)  # session started/ended records
    metrics: list[Sink[dict[str, Any]]] = field(default_factory=list)  # metrics records
    captions: list[Sink[Transcript]] = field(default_factory=list)  # partial and final Transcripts
    events: list[Sink[Any]] = field(default_factory=list)  # Transcript, ProgressMark, window records


def session_dir(out: Path, room: str, session_id: str) -> Path:
    return out / room / session_id


def jsonl_sinks(out: Path) -> FlowSinks:
    """Every record kind as JSON lines, in ``<out>/<room>/<session_id>/<kind>.jsonl``."""
    from connectors.jsonl_sink import JsonlSink

    def kind(name: str) -> JsonlSink:
        return JsonlSink(lambda room, session_id: session_dir(out, room, session_id) / name)

    return FlowSinks(
        transcripts=[kind("transcripts.jsonl")],
        windows=[kind("windows.jsonl")],
        sessions=[kind("sessions.jsonl")],
        metrics=[kind("metrics.jsonl")],
    )


def add_kafka_sinks(sinks: FlowSinks, settings: Settings, *more_topics: str) -> None:
    """Every record kind to its Kafka topic as well. The topics (and ``more_topics``) are created if
    missing, before the flow starts: an unreachable broker raises ``KafkaUnavailable`` now."""
    from connectors.kafka.client import ensure_topics
    from connectors.kafka.sink import KafkaSink

    topics = {
        "transcripts": settings.kafka_topic_transcripts,
        "windows": settings.kafka_topic_windows,
        "sessions": settings.kafka_topic_sessions,
        "metrics": settings.kafka_topic_metrics,
    }
    ensure_topics(
        settings.kafka_servers,
        [*topics.values(), *more_topics],
        settings.kafka_partitions,
        settings.kafka_replication,
    )
    for kind, topic in topics.items():
        getattr(sinks, kind).append(KafkaSink(settings.kafka_servers, topic))


def add_store_sinks(sinks: FlowSinks, settings: Settings) -> None:
    """Every record kind into the store (``DATABASE_URL``, opened and upgraded now, before the flow)."""
    from connectors.store import Store
    from connectors.store_sink import StoreSink

    Store.open(settings.database_url).close()
    for kind in ("transcripts", "windows", "sessions", "metrics"):
        getattr(sinks, kind).append(StoreSink(settings.database_url))


def add_caption_sinks(sinks: FlowSinks, out: Path) -> None:
    """``captions.jsonl`` per session: what the live room would have been sent (``connectors.captions``)."""
    from connectors.caption_sink import CaptionSink
    from connectors.captions import CaptionPublisher, JsonlCaptions

    files = JsonlCaptions(lambda room, session_id: session_dir(out, room, session_id) / "captions.jsonl")
    sinks.captions.append(CaptionSink(lambda: CaptionPublisher(files)))


def replay_sinks(
    settings: Settings,
    sessions: Iterable[tuple[str, str]],
    out: Path,
    *,
    fresh: bool = True,
    kafka: bool = True,
    store: bool = False,
    captions: bool = False,
    view: Any = None,
) -> FlowSinks:
    """The sinks of a replay: JSONL files under ``<out>/<room>/<session_id>/`` for each ``(room,
    session_id)`` (emptied first when ``fresh``; a session that yields nothing still leaves its files),
    Kafka when ``kafka`` and it is configured, the store when ``store``, captions when ``captions``, and
    a ``TerminalView`` when given."""
    for room, session_id in sessions:
        where = session_dir(out, room, session_id)
        where.mkdir(parents=True, exist_ok=True)
        names = RECORD_FILES + (("captions.jsonl",) if captions else ())
        for name in names:
            if fresh or not (where / name).exists():  # resumed: append (ids are deterministic)
                (where / name).write_bytes(b"")
    sinks = jsonl_sinks(out)
    if kafka and settings.kafka_configured:
        add_kafka_sinks(sinks, settings)
    if store:
        add_store_sinks(sinks, settings)
    if captions:
        add_caption_sinks(sinks, out)
    if view is not None:
        from connectors.terminal_sink import TerminalSink

        sinks.events.append(TerminalSink(view))
    return sinks


def add_room_captions(
    sinks: FlowSinks, settings: Settings, *, room_factory: Any = None, lookup: Any = None
) -> None:
    """Live captions: every participant's transcripts as ``lk.transcription`` text streams in its room,
    through the agent's connection where this process joined the room, else through a publish-only
    connection of the process's own (``connectors.livekit.caption_rooms``; ``room_factory`` and
    ``lookup`` replace its ``rtc.Room`` and RoomService look-up in tests)."""
    from connectors.caption_sink import CaptionSink
    from connectors.captions import CaptionPublisher, RoomTextStreams
    from connectors.livekit.caption_rooms import CaptionRooms
    from connectors.livekit.registry import JOINED

    def find(name: str) -> tuple[Any, Any] | None:
        joined = JOINED.get(name)
        return (joined.room, joined.loop) if joined is not None else None

    # One per process, shared by its workers' partitions; nothing starts before a caption needs it.
    remote = CaptionRooms(settings, room_factory=room_factory, lookup=lookup)
    rate = settings.caption_interims_per_s
    sinks.captions.append(
        CaptionSink(
            lambda: CaptionPublisher(RoomTextStreams(find, remote), rate), track_sid_for=JOINED.track_sid
        )
    )


def live_sinks(settings: Settings) -> FlowSinks:
    """The sinks of the live flow: Kafka (its control topic created too), or JSONL under ``out/`` when
    Kafka is not configured; and the rooms' live captions unless ``CAPTIONS`` is off."""
    if not settings.kafka_configured:
        sinks = jsonl_sinks(Path("out"))
    else:
        sinks = FlowSinks()
        add_kafka_sinks(sinks, settings, settings.kafka_topic_rooms)
    if settings.captions:
        add_room_captions(sinks, settings)
    return sinks
