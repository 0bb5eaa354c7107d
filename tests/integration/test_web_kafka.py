"""Webhook -> rooms control topic on a real Kafka-protocol broker (tansu, from harness/kafka.py).

The room events carry the LiveKit room's sid: the session id the live flow gives a room it joins."""

from __future__ import annotations

import json
import uuid

from google.protobuf.json_format import MessageToJson
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from livekit.api import Room, WebhookEvent

from connectors.kafka.room_events import ROOM_EVENT_SCHEMA, KafkaRoomEventPublisher
from connectors.livekit.control import RoomControl, parse_room_event
from tests.support.twirp import TwirpRoomServer
from tests.support.web import sign
from web.app import create_app


def event_body(event: str, room: str, sid: str, n: int) -> str:
    ev = WebhookEvent(event=event, room=Room(sid=sid, name=room), id=f"EV_{n}", created_at=1700000000 + n)
    return MessageToJson(ev)


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
        sent = [
            ("room_started", "mock-1", "RM_a1"),
            ("room_started", "mock-2", "RM_b1"),
            ("room_finished", "mock-1", "RM_a1"),
            ("room_started", "mock-1", "RM_a2"),  # the name used again: a new room, a new session
        ]
        for n, (event, room, sid) in enumerate(sent):
            body = event_body(event, room, sid, n)
            resp = client.post("/livekit/webhook", data=body, headers={"Authorization": sign(body)})
            assert resp.status_code == 200 and resp.get_json()["forwarded"] is True
        publisher.close()

    got = read_all(kafka_broker, topic, 3, len(sent))
    assert sorted((r["event"], r["room"], r["sid"]) for _, _, r in got) == sorted(sent)
    assert all(key == r["room"].encode() and r["schema"] == ROOM_EVENT_SCHEMA for _, key, r in got)
    by_room = {}
    for partition, key, _ in got:
        by_room.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in by_room.values())  # one room, one partition: ordered
    mock1 = [(r["event"], r["sid"]) for _, k, r in got if k == b"mock-1"]
    assert mock1 == [("room_started", "RM_a1"), ("room_finished", "RM_a1"), ("room_started", "RM_a2")]
    # what the live flow's source makes of them: the room, and the sid that becomes the session id
    controls = [parse_room_event(json.dumps(r).encode()) for _, k, r in got if k == b"mock-1"]
    assert controls == [
        RoomControl("room_started", "mock-1", "RM_a1"),
        RoomControl("room_finished", "mock-1", "RM_a1"),
        RoomControl("room_started", "mock-1", "RM_a2"),
    ]
