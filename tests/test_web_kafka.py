"""Webhook -> rooms control topic on a real Kafka-protocol broker (tansu, from tests/kafka_broker.py)."""

from __future__ import annotations

import json
import uuid

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from connectors.kafka.room_events import ROOM_EVENT_SCHEMA, KafkaRoomEventPublisher
from tests.kafka_broker import kafka_broker as _kafka_broker  # noqa: F401
from tests.test_web_webhooks import event_body, sign
from tests.twirp_server import TwirpRoomServer
from web.app import create_app


def read_all(bootstrap: str, topic: str, partitions: int, count: int) -> list[tuple[int, bytes, dict]]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=None, consumer_timeout_ms=5000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)  # no group join: tansu's group joins are slow
    consumer.seek_to_beginning(*tps)
    out = []
    for msg in consumer:
        out.append((msg.partition, msg.key, json.loads(msg.value)))
        if len(out) == count:
            break
    consumer.close()
    return out


def test_webhooks_reach_the_rooms_topic_keyed_by_room(kafka_broker: str) -> None:
    topic = f"interview.rooms.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=[kafka_broker])
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()

    with TwirpRoomServer() as srv:
        settings = srv.settings(kafka_bootstrap_servers=kafka_broker, kafka_topic_rooms=topic)
        app = create_app(settings)  # the publisher comes from the settings, not from the test
        publisher = app.extensions["quantcoach"].publisher
        assert isinstance(publisher, KafkaRoomEventPublisher) and publisher.topic == topic
        client = app.test_client()
        sent = [("room_started", "mock-1"), ("room_started", "mock-2"), ("room_finished", "mock-1")]
        for event, room in sent:
            body = event_body(event, room)
            resp = client.post("/livekit/webhook", data=body, headers={"Authorization": sign(body)})
            assert resp.status_code == 200 and resp.get_json()["forwarded"] is True
        publisher.close()

    got = read_all(kafka_broker, topic, 3, len(sent))
    assert sorted((r["event"], r["room"]) for _, _, r in got) == sorted(sent)
    assert all(key == r["room"].encode() and r["schema"] == ROOM_EVENT_SCHEMA for _, key, r in got)
    by_room = {}
    for partition, key, _ in got:
        by_room.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in by_room.values())  # one room, one partition: ordered
    mock1 = [r["event"] for _, k, r in got if k == b"mock-1"]
    assert mock1 == ["room_started", "room_finished"]
