"""The example analytics job: rolling per-room aggregates across sessions, on bytewax's own Kafka connector.

    interview.metrics (final records)  -> validate (errors as data: logged, counted, routed aside)
     -> key by room -> RoomStats (keyed state: the room's last ``window`` sessions, by session_id)
     -> quantcoach.room_stats/1 -> interview.room_stats (keyed by room)

It is the pattern for analytics teams: ``bytewax.connectors.kafka.operators.input`` hands Kafka's own
errors out as a second stream, and a message that is not a valid record becomes an error record, so
neither can kill the job. Aggregates are kept per session id, so a final metrics record delivered twice
(at-least-once) replaces itself instead of counting twice. Run it as ``quantcoach analytics``.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Any

import bytewax.connectors.kafka.operators as kop
import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.dataflow import Dataflow

from connectors.kafka.client import confluent_config
from connectors.kafka.reader import parse_record
from quantcoach.records import dumps, utc_now_iso
from quantcoach.settings import Settings
from quantcoach.wire import METRICS_SCHEMA, ROOM_STATS_SCHEMA, RecordError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message that is not a valid metrics record: where it was and why (errors as data)."""

    topic: str | None
    partition: int | None
    offset: int | None
    reason: str


def parse(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> dict[str, Any] | BadMessage:
    try:
        return parse_record(msg.value, METRICS_SCHEMA)
    except RecordError as exc:
        return BadMessage(msg.topic, msg.partition, msg.offset, str(exc)[:200])


def candidate_figures(record: dict[str, Any]) -> tuple[float | None, float | None]:
    """A session's candidate talk share (of all talk) and candidate median response latency."""
    speakers = record["speakers"]
    total = sum(s["talk_s"] for s in speakers)
    candidates = [s for s in speakers if s["role"] == "candidate"]
    share = sum(s["talk_s"] for s in candidates) / total if candidates and total > 0 else None
    latencies = [s["response_latency_s"] for s in candidates if s["response_latency_s"] is not None]
    return share, (statistics.median(latencies) if latencies else None)


def room_stats(room: str, sessions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    shares = [s["share"] for s in sessions.values() if s["share"] is not None]
    latencies = [s["latency"] for s in sessions.values() if s["latency"] is not None]
    last = max(sessions.values(), key=lambda s: s["seen"])
    return {
        "schema": ROOM_STATS_SCHEMA,
        "room": room,
        "sessions": len(sessions),
        "candidate_talk_share": round(statistics.fmean(shares), 4) if shares else None,
        "candidate_response_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "last_session_id": last["session_id"],
        "emitted_at": utc_now_iso(),
    }


def roll(window: int) -> Any:
    """``stateful_map`` mapper: the room's state is {session_id: figures}, the last ``window`` sessions."""

    def mapper(state: dict[str, Any] | None, record: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        state = state or {"seen": 0, "sessions": {}}
        state["seen"] += 1
        share, latency = candidate_figures(record)
        sid = record["session_id"]
        seen = state["seen"]
        state["sessions"][sid] = {"session_id": sid, "share": share, "latency": latency, "seen": seen}
        while len(state["sessions"]) > window:  # forget the oldest session seen
            oldest = min(state["sessions"].values(), key=lambda s: s["seen"])
            del state["sessions"][oldest["session_id"]]
        return state, room_stats(record["room"], state["sessions"])

    return mapper


def analytics_flow(settings: Settings, *, tail: bool = True, from_beginning: bool = True) -> Dataflow:
    """The job's dataflow. ``tail=False`` ends at the topic's current end (tests, backfills)."""
    flow = Dataflow("analytics")
    starting = -2 if from_beginning else -1  # OFFSET_BEGINNING / OFFSET_END
    kafka = kop.input(
        "metrics_in",
        flow,
        brokers=list(settings.kafka_servers),
        topics=[settings.kafka_topic_metrics],
        tail=tail,
        starting_offset=starting,
        add_config=confluent_config(settings),
    )
    op.inspect("kafka_errors", kafka.errs, lambda _step, e: log.warning("Kafka error: %s", e.err))
    parsed = op.map("parse", kafka.oks, parse)
    branch = op.branch("valid", parsed, lambda x: isinstance(x, dict))
    op.inspect("bad_messages", branch.falses, lambda _step, bad: log.warning("skipped message: %s", bad))
    finals = op.filter("finals", branch.trues, lambda r: r["final"])
    by_room = op.key_on("by_room", finals, lambda r: r["room"])
    stats = op.stateful_map("room_stats", by_room, roll(settings.analytics_sessions))
    out = op.map(
        "to_kafka",
        stats,
        lambda kv: KafkaSinkMessage(key=kv[0].encode(), value=dumps(kv[1]).encode()),
    )
    brokers, topic = list(settings.kafka_servers), settings.kafka_topic_room_stats
    kop.output("room_stats_out", out, brokers=brokers, topic=topic, add_config=confluent_config(settings))
    return flow
