"""Room lifecycle events (room_started / room_finished) onto the Kafka control topic.

The web app receives LiveKit webhooks and passes these two events on, keyed by room name, so that the
live flow can join rooms as they start and let go of them when they finish. The app takes any
``RoomEventPublisher``; ``KafkaRoomEventPublisher`` is the production one, ``MemoryPublisher`` serves
tests and runs without Kafka.

Wire record (JSON, UTF-8, key = room name), topic ``settings.kafka_topic_rooms``:
``{"schema": "quantcoach.room_event/1", "event": "room_started" | "room_finished", "room", "sid",
"event_id", "created_at" (LiveKit's unix seconds), "emitted_at" (ISO 8601 UTC)}``
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka.errors import KafkaError
from livekit.protocol.webhook import WebhookEvent

from connectors.kafka import client
from quantcoach.records import dumps, utc_now_iso

log = logging.getLogger(__name__)

ROOM_EVENT_SCHEMA = "quantcoach.room_event/1"
ROOM_EVENTS = ("room_started", "room_finished")


@dataclass(frozen=True, slots=True)
class RoomEvent:
    event: str
    room: str
    sid: str
    event_id: str
    created_at: int
    emitted_at: str = field(default_factory=utc_now_iso)

    @classmethod
    def from_webhook(cls, ev: WebhookEvent) -> RoomEvent | None:
        """The control event for a verified webhook, or None for events the flow does not need."""
        if ev.event not in ROOM_EVENTS or not ev.room.name:
            return None
        return cls(ev.event, ev.room.name, ev.room.sid, ev.id, int(ev.created_at))

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": ROOM_EVENT_SCHEMA,
            "event": self.event,
            "room": self.room,
            "sid": self.sid,
            "event_id": self.event_id,
            "created_at": self.created_at,
            "emitted_at": self.emitted_at,
        }


class PublishError(Exception):
    """The event could not be handed to the broker in time."""


class RoomEventPublisher(Protocol):
    def publish(self, event: RoomEvent) -> None:
        """Deliver or raise ``PublishError``; blocking is fine (request threads call it)."""

    def close(self) -> None: ...


class MemoryPublisher:
    """Keeps events in a list (tests; a process without Kafka)."""

    def __init__(self) -> None:
        self.events: list[RoomEvent] = []

    def publish(self, event: RoomEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


class KafkaRoomEventPublisher:
    """kafka-python producer, created lazily in the process that publishes (gunicorn forks workers)."""

    def __init__(
        self,
        servers: list[str],
        topic: str,
        timeout_s: float = 5.0,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._servers = servers
        self.topic = topic
        self._timeout_s = timeout_s
        self._factory = producer_factory  # None = kafka.KafkaProducer; tests pass a stand-in
        self._lock = threading.Lock()
        self._producer: Any = None
        self._pid = -1

    def publish(self, event: RoomEvent) -> None:
        try:
            future = self._get_producer().send(
                self.topic, key=event.room.encode(), value=dumps(event.to_record()).encode()
            )
            # Wait for the broker's ack: LiveKit retries a webhook answered with an error, so a lost
            # event is better reported than swallowed.
            future.get(timeout=self._timeout_s)
        except (KafkaError, client.KafkaUnavailable) as exc:
            log.warning("room event %s for %s not published: %s", event.event, event.room, type(exc).__name__)
            raise PublishError("Kafka did not accept the room event") from None

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None and self._pid == os.getpid():
            producer.close(timeout=self._timeout_s)

    def _get_producer(self) -> Any:
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                ms = int(self._timeout_s * 1000)
                self._producer = client.producer(
                    self._servers,
                    timeout_s=self._timeout_s,
                    factory=self._factory,
                    acks="all",
                    linger_ms=0,
                    max_block_ms=ms,
                    request_timeout_ms=ms,
                )
                self._pid = os.getpid()
            return self._producer


def consume_room_events(
    servers: list[str], topic: str, stop: threading.Event | None = None
) -> Iterator[bytes]:
    """Raw control-topic values from now on, every partition assigned (no group: each worker of the
    live flow needs every event, and a group would share them out). For ``LiveKitSource(room_events=)``.

    Until the topic exists it is looked for once a second; ``stop`` ends the feed (without it, the feed
    runs until the consumer of this generator closes it).
    """
    stop = stop if stop is not None else threading.Event()
    consumer = client.consumer(servers)
    try:
        tps = client.wait_for_partitions(consumer, topic, give_up=stop.is_set, wait=stop.wait)
        if tps is None:
            return
        consumer.assign(tps)
        consumer.seek_to_end()
        while not stop.is_set():
            for messages in consumer.poll(timeout_ms=500).values():
                for m in messages:
                    yield m.value
    finally:
        consumer.close()
