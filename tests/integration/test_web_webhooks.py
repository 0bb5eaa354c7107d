"""POST /livekit/webhook with payloads signed as livekit-server signs them (livekit-api's AccessToken)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from flask.testing import FlaskClient
from google.protobuf.json_format import MessageToJson
from kafka.errors import KafkaTimeoutError
from livekit.api import AccessToken
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent

from connectors.kafka.room_events import (
    ROOM_EVENT_SCHEMA,
    KafkaRoomEventPublisher,
    MemoryPublisher,
    PublishError,
    RoomEvent,
)
from tests.support.twirp import API_KEY, API_SECRET, TwirpRoomServer
from tests.support.web import sign
from web.app import create_app


def event_body(event: str, room: str = "mock-42", **extra: Any) -> str:
    room_ = Room(sid="RM_1", name=room)
    ev = WebhookEvent(event=event, room=room_, id="EV_1", created_at=1700000000, **extra)
    return MessageToJson(ev)


@pytest.fixture(scope="module")
def server() -> Iterator[TwirpRoomServer]:
    with TwirpRoomServer() as srv:
        yield srv


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
def client(server: TwirpRoomServer, publisher: MemoryPublisher) -> FlaskClient:
    return create_app(server.settings(), publisher=publisher).test_client()


def post(client: FlaskClient, body: str, auth: str | None) -> Any:
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth
    return client.post("/livekit/webhook", data=body, headers=headers)


@pytest.mark.parametrize("event", ["room_started", "room_finished"])
def test_room_events_are_forwarded(client: FlaskClient, publisher: MemoryPublisher, event: str) -> None:
    body = event_body(event)
    resp = post(client, body, sign(body))  # no API key: the signature is the authentication
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "event": event, "forwarded": True}
    [ev] = publisher.events
    assert (ev.event, ev.room, ev.sid, ev.event_id, ev.created_at) == (
        event,
        "mock-42",
        "RM_1",
        "EV_1",
        1700000000,
    )
    record = ev.to_record()
    assert record["schema"] == ROOM_EVENT_SCHEMA and record["emitted_at"].endswith("Z")


def test_bearer_prefix_is_accepted(client: FlaskClient, publisher: MemoryPublisher) -> None:
    body = event_body("room_started")
    assert post(client, body, "Bearer " + sign(body)).status_code == 200


def test_other_events_are_acknowledged_not_forwarded(client: FlaskClient, publisher: MemoryPublisher) -> None:
    body = event_body("participant_joined", participant=ParticipantInfo(identity="iv-7"))
    resp = post(client, body, sign(body))
    assert resp.status_code == 200 and resp.get_json()["forwarded"] is False
    assert publisher.events == []


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "",
        "Bearer ",
        "garbage",
        "wrong-secret",
        "tampered",
        "expired",
        "no-sha",
    ],
)
def test_bad_signatures_are_401(client: FlaskClient, publisher: MemoryPublisher, auth: str | None) -> None:
    body = event_body("room_started")
    if auth == "wrong-secret":
        auth = sign(body, secret="another-secret-another-secret-another-secret")
    elif auth == "tampered":
        auth = sign(body.replace("mock-42", "mock-43"))
    elif auth == "expired":
        auth = sign(body, ttl_s=-3600)
    elif auth == "no-sha":
        auth = AccessToken(API_KEY, API_SECRET).to_jwt()
    resp = post(client, body, auth)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "invalid_signature"
    assert publisher.events == []


def test_signed_but_not_an_event_is_400(client: FlaskClient) -> None:
    for body in ("{not json", json.dumps({"event": 5})):
        resp = post(client, body, sign(body))
        assert resp.status_code == 400
        assert resp.get_json()["error"]["code"] == "invalid_webhook"


def test_non_utf8_body_is_401(client: FlaskClient) -> None:
    resp = client.post("/livekit/webhook", data=b"\xff\xfe", headers={"Authorization": "x"})
    assert resp.status_code == 401


def test_forwarding_disabled(server: TwirpRoomServer, publisher: MemoryPublisher) -> None:
    client = create_app(server.settings(webhook_forward=False), publisher=publisher).test_client()
    body = event_body("room_started")
    resp = post(client, body, sign(body))
    assert resp.status_code == 200 and resp.get_json()["forwarded"] is False
    assert publisher.events == []


def test_no_kafka_acknowledges_without_forwarding(server: TwirpRoomServer) -> None:
    client = create_app(server.settings()).test_client()  # no KAFKA_BOOTSTRAP_SERVERS, no publisher
    body = event_body("room_finished")
    resp = post(client, body, sign(body))
    assert resp.status_code == 200 and resp.get_json()["forwarded"] is False


def test_publish_failure_is_503_so_livekit_retries(server: TwirpRoomServer) -> None:
    class Failing(MemoryPublisher):
        def publish(self, event: RoomEvent) -> None:
            raise PublishError("down")

    client = create_app(server.settings(), publisher=Failing()).test_client()
    body = event_body("room_started")
    resp = post(client, body, sign(body))
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "kafka_unavailable"


def test_without_livekit_keys_is_503(server: TwirpRoomServer) -> None:
    from quantcoach.settings import Secret

    client = create_app(server.settings(livekit_api_secret=Secret(""))).test_client()
    body = event_body("room_started")
    assert post(client, body, sign(body)).status_code == 503


# --- the Kafka publisher, with a stand-in producer (no tansu fixture in tests/ yet) ----------------
class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error:
            raise self.error


class FakeProducer:
    instances: ClassVar[list[FakeProducer]] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail: Exception | None = None
        FakeProducer.instances.append(self)

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture(self.fail)

    def close(self, timeout: float) -> None:
        pass


def test_kafka_publisher_keys_by_room_and_waits_for_ack() -> None:
    pub = KafkaRoomEventPublisher(["127.0.0.1:9"], "interview.rooms", producer_factory=FakeProducer)
    ev = RoomEvent("room_started", "mock-42", "RM_1", "EV_1", 1700000000)
    pub.publish(ev)
    pub.publish(ev)
    producer = FakeProducer.instances[-1]  # created once, reused
    assert producer.config["bootstrap_servers"] == ["127.0.0.1:9"] and producer.config["acks"] == "all"
    topic, key, value = producer.sent[0]
    assert (topic, key) == ("interview.rooms", b"mock-42")
    assert json.loads(value) == ev.to_record()
    assert len(producer.sent) == 2

    producer.fail = KafkaTimeoutError()
    with pytest.raises(PublishError):
        pub.publish(ev)
    pub.close()
