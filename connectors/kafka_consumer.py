"""Read QuantCoach records back from Kafka: the simplest analytics consumer, and ``quantcoach tail``.

The consumer assigns partitions itself instead of joining a consumer group: no group coordination, no
committed offsets, and no ~20 s join on brokers such as tansu. A job that needs to resume where it
stopped should use a group (``group_id``) or keep its own offsets; ``iter_records`` is for reading.

Messages that are not valid records (bad UTF-8 or JSON, unknown or wrong schema) are logged, counted in
``ConsumeStats`` and skipped, never raised: one poison message must not stop a consumer.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from connectors.kafka_sink import DEFAULT_CONNECT_TIMEOUT_S, KafkaUnavailable, bootstrap_config, unavailable
from quantcoach.records import (
    TRANSCRIPT_SCHEMA,
    WINDOW_SCHEMA,
    RecordError,
    Transcript,
    window_record_is_valid,
)
from quantcoach.settings import Settings

log = logging.getLogger(__name__)

Record = dict[str, Any]

# How often to look for a topic that does not exist yet (tail started before the flow).
_TOPIC_WAIT_S = 1.0


@dataclass
class ConsumeStats:
    """What a consumer read: valid records, and skipped messages by reason."""

    records: int = 0
    bad: int = 0
    bad_reasons: Counter[str] = field(default_factory=Counter)

    def count_bad(self, reason: str) -> None:
        self.bad += 1
        self.bad_reasons[reason.split(":", 1)[0]] += 1


def parse_record(value: bytes | None) -> Record:
    """Decode and validate one message value; raises ``RecordError`` with the reason."""
    if value is None:
        raise RecordError("empty message (tombstone)")
    try:
        record = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError("bad UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"bad JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    schema = record.get("schema")
    if schema == TRANSCRIPT_SCHEMA:
        Transcript.from_record(record)
    elif schema == WINDOW_SCHEMA:
        window_record_is_valid(record)
    else:
        raise RecordError(f"unknown schema {schema!r}")
    return record


def _consumer(servers: Sequence[str], timeout_s: float) -> KafkaConsumer:
    config: dict[str, Any] = {
        "bootstrap_servers": list(servers),
        "client_id": "quantcoach-tail",
        "group_id": None,
        "enable_auto_commit": False,
        "allow_auto_create_topics": False,  # a reader must not create topics with broker defaults
        "request_timeout_ms": max(5000, int(timeout_s * 2000)),
        **bootstrap_config(KafkaConsumer, timeout_s),
    }
    known = getattr(KafkaConsumer, "DEFAULT_CONFIG", config)
    try:
        return KafkaConsumer(**{k: v for k, v in config.items() if k in known})
    except KafkaError as exc:
        raise unavailable(servers, timeout_s, exc) from exc


def iter_records(
    servers: Sequence[str],
    topic: str,
    room: str | None = None,
    from_beginning: bool = False,
    partitions: Sequence[int] | None = None,
    stop_after_idle_s: float | None = None,
    *,
    stats: ConsumeStats | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    poll_ms: int = 200,
) -> Iterator[Record]:
    """Yield valid records of ``topic`` (only ``room``'s when given), in order within each partition.

    Reads every partition of the topic (or ``partitions``), from the start or from now. Waits for a
    topic that does not exist yet. Runs until the caller stops iterating, or until nothing has
    arrived for ``stop_after_idle_s``. Raises ``KafkaUnavailable`` when no broker answers at start.
    """
    stats = stats if stats is not None else ConsumeStats()
    consumer = _consumer(servers, connect_timeout_s)
    try:
        idle_since = time.monotonic()

        def idle_over() -> bool:
            return stop_after_idle_s is not None and time.monotonic() - idle_since >= stop_after_idle_s

        # Assign partitions ourselves (no group join); wait for the topic if it is not there yet.
        while True:
            known = consumer.partitions_for_topic(topic) or set()
            chosen = sorted(known if partitions is None else set(partitions) & known)
            if chosen:
                break
            if idle_over():
                return
            time.sleep(_TOPIC_WAIT_S if stop_after_idle_s is None else min(_TOPIC_WAIT_S, stop_after_idle_s))
        tps = [TopicPartition(topic, p) for p in chosen]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        room_key = room.encode("utf-8") if room is not None else None

        while True:
            batches = consumer.poll(timeout_ms=poll_ms)
            if not batches:
                if idle_over():
                    return
                continue
            idle_since = time.monotonic()
            for tp in sorted(batches, key=lambda t: t.partition):
                for msg in batches[tp]:
                    if room_key is not None and msg.key != room_key:
                        continue  # key = room, so other rooms are skipped before decoding
                    try:
                        record = parse_record(msg.value)
                    except RecordError as exc:
                        stats.count_bad(str(exc))
                        log.warning(
                            "skipping bad message at %s[%d]@%d: %s", tp.topic, tp.partition, msg.offset, exc
                        )
                        continue
                    if room is not None and record.get("room") != room:
                        continue
                    stats.records += 1
                    yield record
    finally:
        consumer.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(max(0.0, seconds), 1), 60.0)  # round first: 59.96 s is 01:00.0
    return f"{int(minutes):02d}:{secs:04.1f}"


def _who(speaker: str, name: str) -> str:
    role = speaker.capitalize() if speaker else "?"
    return f"{role} ({name})" if name else role


def format_record(record: Record) -> str:
    """Render a transcript (one line) or a window (a header and one line per segment) for a terminal."""
    schema = record.get("schema")
    if schema == TRANSCRIPT_SCHEMA:
        mark = "" if record.get("is_final", True) else " (partial)"
        return (
            f"[{record['room']}] {_clock(record['start'])}-{_clock(record['end'])} "
            f"{_who(record['speaker'], record.get('name', ''))}{mark}: {record['text']}"
        )
    if schema == WINDOW_SCHEMA:
        segments = record.get("segments", [])
        lines = [
            f"== window {record['window_id']} {_clock(record['start'])}-{_clock(record['end'])} "
            f"reason={record['reason']} segments={len(segments)}"
        ]
        lines += [
            f"   {_clock(s['start'])} {_who(s['speaker'], s.get('name', ''))}: {s['text']}" for s in segments
        ]
        return "\n".join(lines)
    return json.dumps(record, ensure_ascii=False)


TOPIC_ALIASES = ("windows", "transcripts")


def topic_name(settings: Settings, topic: str) -> str:
    """``windows``/``transcripts`` map to the configured topic names; anything else is taken as is."""
    if topic == "windows":
        return settings.kafka_topic_windows
    if topic == "transcripts":
        return settings.kafka_topic_transcripts
    return topic


def tail(
    settings: Settings,
    topic: str,
    room: str | None,
    from_beginning: bool,
    out: TextIO = sys.stdout,
    *,
    err: TextIO = sys.stderr,
    stop_after_idle_s: float | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> int:
    """``quantcoach tail``: print records of ``topic`` (windows | transcripts) until Ctrl-C.

    Returns the process exit code: 0 after Ctrl-C (or ``stop_after_idle_s`` of quiet), 2 when Kafka
    is not configured, 1 when it cannot be reached.
    """
    if not settings.kafka_configured:
        print("error: Kafka is not configured: set KAFKA_BOOTSTRAP_SERVERS (HOST:PORT)", file=err)
        return 2
    name = topic_name(settings, topic)
    stats = ConsumeStats()
    where = f"{name}" + (f" room {room}" if room else "")
    print(
        f"tailing {where} ({'from the beginning' if from_beginning else 'new records'}); Ctrl-C stops",
        file=err,
    )
    records = iter_records(
        settings.kafka_servers,
        name,
        room=room,
        from_beginning=from_beginning,
        stop_after_idle_s=stop_after_idle_s,
        stats=stats,
        connect_timeout_s=connect_timeout_s,
    )
    try:
        for record in records:
            print(format_record(record), file=out, flush=True)
    except KafkaUnavailable as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KafkaError as exc:
        print(f"error: Kafka failed while tailing {name}: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        records.close()  # closes the consumer now, not when the generator is collected
    if stats.bad:
        print(f"skipped {stats.bad} bad messages: {dict(stats.bad_reasons)}", file=err)
    return 0
