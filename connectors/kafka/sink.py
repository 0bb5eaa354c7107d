"""Bytewax sink that writes wire records (``Transcript/EvaluationWindow.to_record()``) to one Kafka topic.

Each record goes out with key = its room (UTF-8), so Kafka's key partitioner keeps a room's records in
one partition, in order; the value is ``quantcoach.records.dumps(record)`` in UTF-8.

Delivery is at-least-once: the producer runs with ``acks=all`` and idempotence, and ``write_batch``
returns only once every record of the batch is acknowledged. When the broker goes away the sink keeps
retrying with backoff (``stt.retry.Backoff``) for up to ``retry_timeout_s`` (rebuilding its producer,
whose idempotence state the broker may have lost), then raises ``KafkaDeliveryError``; a broker that
comes back within that time gets everything the sink held. A broker that cannot be reached at start
raises ``KafkaUnavailable`` within ``connect_timeout_s`` instead of kafka-python's 30 s bootstrap wait.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kafka.errors as kerr
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from connectors.kafka import client
from quantcoach.records import dumps
from stt.retry import Backoff

log = logging.getLogger(__name__)

DEFAULT_RETRY_TIMEOUT_S = 180.0
#: 0.2 s, 0.4 s, ... up to 5 s between attempts, without jitter: one producer per worker.
DEFAULT_BACKOFF = Backoff(initial_s=0.2, max_s=5.0, multiplier=2.0, jitter=0.0)

Record = dict[str, Any]
_Encoded = tuple[bytes, bytes]

# Errors that retrying cannot fix (the record, topic or permissions are wrong): raised at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (
        getattr(kerr, name, None)
        for name in (
            "MessageSizeTooLargeError",
            "RecordListTooLargeError",
            "InvalidTopicError",
            "TopicAuthorizationFailedError",
            "ClusterAuthorizationFailedError",
            "InvalidRecordError",
            "CorruptRecordError",
            "UnsupportedVersionError",
            "UnsupportedForMessageFormatError",
            "InvalidRequiredAcksError",
            "PolicyViolationError",
            "KafkaConfigurationError",
        )
    )
    if isinstance(cls, type)
)


class KafkaDeliveryError(RuntimeError):
    """Records could not be delivered within the sink's retry time."""


class KafkaSink(DynamicSink[Record]):
    """Writes wire record dicts to ``topic``; one idempotent producer per worker.

    ``partitions``: when set, each worker creates the topic on start if it is missing (and again after
    a broker outage, in case the broker came back empty). ``producer_config`` overrides or extends the
    kafka-python producer settings (``acks`` and ``enable_idempotence`` stay on unless overridden).
    """

    def __init__(
        self,
        servers: Sequence[str],
        topic: str,
        *,
        partitions: int | None = None,
        replication: int = 1,
        connect_timeout_s: float = client.DEFAULT_CONNECT_TIMEOUT_S,
        retry_timeout_s: float = DEFAULT_RETRY_TIMEOUT_S,
        backoff: Backoff = DEFAULT_BACKOFF,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not servers:
            raise ValueError("KafkaSink needs at least one bootstrap server")
        self.servers = list(servers)
        self.topic = topic
        self.partitions = partitions
        self.replication = replication
        self.connect_timeout_s = connect_timeout_s
        self.retry_timeout_s = retry_timeout_s
        self.backoff = backoff
        self.producer_config = dict(producer_config or {})

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaSinkPartition:
        return _KafkaSinkPartition(self, client_id=f"quantcoach-{step_id}-{worker_index}")


class _KafkaSinkPartition(StatelessSinkPartition[Record]):
    def __init__(self, sink: KafkaSink, client_id: str) -> None:
        self._sink = sink
        self._client_id = client_id
        self._ensure_topic()
        self._producer: KafkaProducer | None = self._new_producer()

    # --- producer lifecycle ----------------------------------------------------------------------------
    def _ensure_topic(self) -> None:
        s = self._sink
        if s.partitions is not None:
            client.ensure_topics(
                s.servers, [s.topic], s.partitions, s.replication, timeout_s=s.connect_timeout_s
            )

    def _new_producer(self) -> KafkaProducer:
        s = self._sink
        # Per-record delivery timeout below the sink's total retry time, so that during a long outage
        # the producer gives records back to us and we can rebuild it when the broker returns.
        delivery_ms = int(min(s.retry_timeout_s, 30.0) * 1000)
        request_ms = min(10_000, max(1000, delivery_ms // 2))
        config: dict[str, Any] = {
            "client_id": self._client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "request_timeout_ms": request_ms,
            "delivery_timeout_ms": max(delivery_ms, request_ms + 5),
            "max_block_ms": int(max(s.connect_timeout_s, 1.0) * 2000),
            "reconnect_backoff_ms": 100,
            "reconnect_backoff_max_ms": 2000,  # notice a returning broker within ~2 s, not 30 s
            **s.producer_config,
        }
        return client.producer(s.servers, timeout_s=s.connect_timeout_s, **config)

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=0)
        except Exception:
            # close() flushes first and raises if records are still pending; abort them instead.
            sender = getattr(producer, "_sender", None)
            with contextlib.suppress(Exception):
                if sender is not None:
                    sender.force_close()

    # --- writing -----------------------------------------------------------------------------------
    def write_batch(self, items: list[Record]) -> None:
        if not items:
            return
        s = self._sink
        pending = [self._encode(record) for record in items]
        deadline = time.monotonic() + s.retry_timeout_s
        attempt = 0
        while True:
            attempt += 1
            failed, error = self._attempt(pending, deadline)
            if not failed:
                if attempt > 1:
                    log.info("Kafka %s: delivered after %d attempts", s.topic, attempt)
                return
            if isinstance(error, PERMANENT_ERRORS):
                raise KafkaDeliveryError(
                    f"{len(failed)} of {len(items)} records rejected by Kafka topic {s.topic!r}"
                    f" (not retried): {error}"
                ) from error
            self._discard_producer()  # its idempotence state may be stale (broker restarted)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaDeliveryError(
                    f"{len(failed)} of {len(items)} records not delivered to Kafka topic {s.topic!r}"
                    f" within {s.retry_timeout_s:g} s: {error}"
                ) from error
            pause = min(s.backoff.delay(attempt), remaining)
            log.warning(
                "Kafka %s: %d records not delivered (%s); retrying in %.1f s",
                s.topic,
                len(failed),
                error,
                pause,
            )
            time.sleep(pause)
            pending = failed

    def _attempt(
        self, pending: list[_Encoded], deadline: float
    ) -> tuple[list[_Encoded], BaseException | None]:
        try:
            if self._producer is None:
                self._ensure_topic()
                self._producer = self._new_producer()
            return self._deliver(self._producer, pending, deadline)
        except (client.KafkaUnavailable, KafkaError) as exc:  # broker still away, or back but not ready
            return pending, exc

    def _deliver(
        self, producer: KafkaProducer, pending: list[_Encoded], deadline: float
    ) -> tuple[list[_Encoded], BaseException | None]:
        """Send and flush; returns the records that failed (in their original order) and one error."""
        topic = self._sink.topic
        futures: list[FutureRecordMetadata] = []
        error: BaseException | None = None
        for key, value in pending:
            try:
                futures.append(producer.send(topic, key=key, value=value))
            except KafkaError as exc:  # no metadata in time, or the producer is in a fatal state
                error = exc
                break
        with contextlib.suppress(KafkaError):
            producer.flush(timeout=max(0.0, deadline - time.monotonic()))
        failed: list[_Encoded] = []
        for record, future in zip(pending, futures, strict=False):
            if not future.is_done or future.failed():
                failed.append(record)
                error = error or future.exception or KafkaError("delivery not confirmed before the deadline")
        failed.extend(pending[len(futures) :])
        return failed, error

    @staticmethod
    def _encode(record: Record) -> _Encoded:
        room = record.get("room") if isinstance(record, dict) else None
        if not isinstance(room, str) or not room:
            raise ValueError(f"KafkaSink items must be wire records with a 'room'; got {record!r:.200}")
        return room.encode("utf-8"), dumps(record).encode("utf-8")

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush(timeout=self._sink.retry_timeout_s)
            finally:
                with contextlib.suppress(Exception):
                    producer.close(timeout=5)
