"""``quantcoach store``: consume the transcript and window topics into the transcript store.

Offsets are committed only after the rows are: a crash between the two re-delivers records, and the
idempotent upsert turns that into nothing, so every record lands exactly once. A message that is not
a valid record is logged, counted and skipped (its offset is committed with the rest), never a crash
and never a stuck partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from connectors.kafka import client
from connectors.kafka.reader import parse_record
from connectors.store import Store
from quantcoach.records import RecordError

log = logging.getLogger(__name__)

DEFAULT_GROUP = "quantcoach-store"


@dataclass
class StoreStats:
    stored: int = 0  # new rows
    duplicates: int = 0  # valid records already stored (re-deliveries)
    bad: int = 0  # poison messages skipped
    batches: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)


class StoreJob:
    def __init__(
        self,
        store: Store,
        servers: Sequence[str],
        topics: Sequence[str],
        *,
        group_id: str = DEFAULT_GROUP,
        from_beginning: bool = False,
        partitions: Sequence[int] | None = None,
        connect_timeout_s: float = client.DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.topics = list(topics)
        self.stats = StoreStats()
        self._stop = threading.Event()
        self.consumer = client.consumer(
            servers,
            timeout_s=connect_timeout_s,
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
        )
        if partitions is None:
            self.consumer.subscribe(self.topics)  # group membership: partitions shared between jobs
        else:
            # explicit assignment (tests, or a job pinned to partitions); offsets still go to the group
            self.consumer.assign([TopicPartition(t, p) for t in self.topics for p in partitions])

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_idle_s: float | None = None) -> StoreStats:
        """Consume until ``stop()`` (or ``max_idle_s`` without messages); returns the counters."""
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = self.consumer.poll(timeout_ms=500, max_records=1000)
                if not batch:
                    if max_idle_s is not None and time.monotonic() - idle_since >= max_idle_s:
                        break
                    continue
                idle_since = time.monotonic()
                self._store_batch([m for msgs in batch.values() for m in msgs])
                self.consumer.commit()  # only after the rows are committed
        finally:
            self.consumer.close(autocommit=False)
        return self.stats

    def _store_batch(self, messages: list[Any]) -> None:
        valid: list[dict[str, Any]] = []
        for m in messages:
            try:
                valid.append(parse_record(m.value))
            except RecordError as exc:
                self.stats.bad += 1
                reason = str(exc).split(":")[0][:80]
                self.stats.bad_reasons[reason] = self.stats.bad_reasons.get(reason, 0) + 1
                log.warning("skipping bad message at %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
        final = [r for r in valid if r.get("is_final", True)]
        new = self.store.upsert(final)
        self.stats.stored += new
        self.stats.duplicates += len(final) - new
        self.stats.batches += 1
        log.info(
            "stored %d new records (%d already stored, %d bad so far)", new, len(final) - new, self.stats.bad
        )
