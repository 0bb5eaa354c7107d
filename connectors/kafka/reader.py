"""Read QuantCoach records back from Kafka: the simplest analytics consumer (``quantcoach tail`` uses it).

The consumer assigns partitions itself instead of joining a consumer group: no group coordination, no
committed offsets, and no ~20 s join on brokers such as tansu. A job that needs to resume where it
stopped should use a group (``group_id``) or keep its own offsets; ``iter_records`` is for reading.

Messages that are not valid records (bad UTF-8 or JSON, unknown or wrong schema: ``quantcoach.wire``)
are logged, counted in ``ConsumeStats`` and skipped, never raised: one poison message must not stop a
consumer.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.kafka import client
from quantcoach.wire import RecordError, validate

log = logging.getLogger(__name__)

Record = dict[str, Any]


@dataclass
class ConsumeStats:
    """What a consumer read: valid records, and skipped messages by reason."""

    records: int = 0
    bad: int = 0
    bad_reasons: Counter[str] = field(default_factory=Counter)

    def count_bad(self, reason: str) -> None:
        self.bad += 1
        self.bad_reasons[reason.split(":", 1)[0]] += 1


def decode(value: bytes | None) -> Any:
    """One message value as JSON (not yet validated); raises ``RecordError`` with the reason."""
    if value is None:
        raise RecordError("empty message (tombstone)")
    try:
        return json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError("bad UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RecordError(f"bad JSON: {getattr(exc, 'msg', 'too deeply nested')}") from None


def parse_record(value: bytes | None, schema: str | None = None) -> Record:
    """Decode and validate one message value (as ``schema`` when given, else any known record:
    transcript, window (v1 or v2), session, metrics); raises ``RecordError`` with the reason."""
    record = decode(value)
    validate(record, schema)
    return record


def iter_records(
    servers: Sequence[str],
    topic: str,
    room: str | None = None,
    from_beginning: bool = False,
    partitions: Sequence[int] | None = None,
    stop_after_idle_s: float | None = None,
    *,
    stats: ConsumeStats | None = None,
    connect_timeout_s: float = client.DEFAULT_CONNECT_TIMEOUT_S,
    poll_ms: int = 200,
) -> Iterator[Record]:
    """Yield valid records of ``topic`` (only ``room``'s when given), in order within each partition.

    Reads every partition of the topic (or ``partitions``), from the start or from now. Waits for a
    topic that does not exist yet. Runs until the caller stops iterating, or until nothing has
    arrived for ``stop_after_idle_s``. Raises ``KafkaUnavailable`` when no broker answers at start.
    """
    stats = stats if stats is not None else ConsumeStats()
    consumer = client.consumer(
        servers,
        timeout_s=connect_timeout_s,
        client_id="quantcoach-tail",
        group_id=None,
        allow_auto_create_topics=False,  # a reader must not create topics with broker defaults
        request_timeout_ms=max(5000, int(connect_timeout_s * 2000)),
    )
    try:
        idle_since = time.monotonic()

        def idle_over() -> bool:
            return stop_after_idle_s is not None and time.monotonic() - idle_since >= stop_after_idle_s

        # Assign partitions ourselves (no group join); wait for the topic if it is not there yet.
        every_s = (
            client.TOPIC_WAIT_S if stop_after_idle_s is None else min(client.TOPIC_WAIT_S, stop_after_idle_s)
        )
        tps = client.wait_for_partitions(
            consumer, topic, partitions, give_up=idle_over, wait=time.sleep, every_s=every_s
        )
        if tps is None:
            return
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
