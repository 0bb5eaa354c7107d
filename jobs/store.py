"""``quantcoach store``: consume the transcript, window, session and metrics topics into the store.

Offsets are committed only after the rows are: a crash between the two re-delivers records, and the
idempotent upsert turns that into nothing, so every record lands exactly once. A message that is not
a valid record is logged, counted and skipped (its offset is committed with the rest), never a crash
and never a stuck partition. Accepted are the v2 records of ``quantcoach.wire`` (transcript/2,
window/2, session/1, metrics/1), each validated against its model; a first-release record (v1, no
session) counts as bad: the store cannot tell which interview it belongs to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from connectors.kafka import client
from connectors.kafka.reader import decode
from connectors.store import KINDS, Store
from quantcoach.wire import RecordError, validate

log = logging.getLogger(__name__)

DEFAULT_GROUP = "quantcoach-store"
RETRY_MAX_S = 30.0  # longest wait between tries while the database is down


def parse_record(value: bytes | None) -> dict[str, Any]:
    """Decode and validate one message value as a v2 record; raises ``RecordError`` with the reason."""
    record = decode(value)
    if isinstance(record, dict) and isinstance(record.get("schema"), str) and record["schema"] not in KINDS:
        raise RecordError(f"unknown schema {record['schema']!r} (the store takes v2 records)")
    validate(record)
    return record


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
        self._rejected = 0  # records of the current batch the database refused
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
        valid: list[tuple[Any, dict[str, Any]]] = []
        for m in messages:
            try:
                record = parse_record(m.value)
            except RecordError as exc:
                self._bad(m, str(exc))
                continue
            if record.get("is_final", True):  # partial transcripts are not stored
                valid.append((m, record))
        new = self._upsert(valid)
        self.stats.stored += new
        self.stats.duplicates += len(valid) - new - self._rejected
        self.stats.batches += 1
        log.info(
            "stored %d new records (%d already stored, %d bad so far)",
            new,
            len(valid) - new - self._rejected,
            self.stats.bad,
        )

    def _upsert(self, valid: list[tuple[Any, dict[str, Any]]]) -> int:
        """The batch in one transaction. A record the database refuses (a value too long for its
        column) is a poison message too: the batch is then stored one record at a time, the refused
        ones counted as bad. A database that is down is waited for (the offsets stay uncommitted)."""
        self._rejected = 0
        delay = 0.5
        while True:
            try:
                try:
                    return self.store.upsert([r for _, r in valid])
                except (DataError, IntegrityError):
                    return self._one_by_one(valid)
            except OperationalError as exc:
                if self._stop.is_set():
                    raise
                log.warning("store unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _one_by_one(self, valid: list[tuple[Any, dict[str, Any]]]) -> int:
        new = 0
        for m, record in valid:
            try:
                new += self.store.upsert([record])
            except (DataError, IntegrityError) as exc:
                self._rejected += 1
                self._bad(m, f"refused by the database: {type(exc).__name__}")
        return new

    def _bad(self, m: Any, why: str) -> None:
        self.stats.bad += 1
        reason = why.split(":")[0][:80]
        self.stats.bad_reasons[reason] = self.stats.bad_reasons.get(reason, 0) + 1
        log.warning("skipping bad message at %s[%d]@%d: %s", m.topic, m.partition, m.offset, why)
