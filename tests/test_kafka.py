"""Kafka sink and consumer against a real Kafka-protocol broker (tansu, started by the fixtures)."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import bytewax.operators as op
import jsonschema
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.kafka import client
from connectors.kafka.client import KafkaUnavailable, ensure_topics
from connectors.kafka.reader import ConsumeStats, iter_records
from connectors.kafka.room_events import consume_room_events
from connectors.kafka.sink import KafkaDeliveryError, KafkaSink
from quantcoach.records import EvaluationWindow, Segment, Transcript, dumps
from quantcoach.settings import Settings
from quantcoach.tail import format_record, tail
from tests.kafka_broker import TansuBroker, free_port
from tests.kafka_broker import kafka_broker as _kafka_broker  # noqa: F401
from tests.kafka_broker import tansu_broker as _tansu_broker  # noqa: F401

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
ROOMS = ("mock-42", "salle-é", "mock-7")  # a non-ASCII room checks the UTF-8 key


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def topic(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def transcript(room: str, i: int) -> Transcript:
    speaker = ("interviewer", "candidate")[i % 2]
    return Transcript(
        room=room,
        participant=f"{speaker[:4]}-{i % 2}",
        speaker=speaker,
        name=("Morgan", "Riley")[i % 2],
        utterance_id=f"u{i}",
        text=f"utterance {i} in {room}",
        is_final=True,
        start=i * 2.0,
        end=i * 2.0 + 1.5,
        engine="whisper",
    )


def window(room: str, seq: int) -> EvaluationWindow:
    segments = tuple(Segment.of(transcript(room, seq * 2 + k)) for k in range(2))
    return EvaluationWindow(room=room, seq=seq, reason="length", segments=segments)


def read_raw(servers: str, topic_: str, expect: int, timeout_s: float = 10.0) -> list[Any]:
    """Every message of the topic from the beginning, with assigned partitions (no group join)."""
    consumer = KafkaConsumer(bootstrap_servers=[servers], group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic_, p) for p in sorted(consumer.partitions_for_topic(topic_))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
        time.sleep(0.2)  # anything beyond ``expect`` would be a duplicate: collect it too
        for batch in consumer.poll(timeout_ms=200).values():
            out.extend(batch)
        return out
    finally:
        consumer.close()


def run_to_kafka(servers: str, records: list[dict[str, Any]], transcripts: str, windows: str) -> None:
    flow = Dataflow("kafka_test")
    items = op.input("in", flow, TestingSource(records, batch_size=7))
    split = op.branch("split", items, lambda r: r["schema"] == "quantcoach.transcript/1")
    op.output("transcripts", split.trues, KafkaSink([servers], transcripts, partitions=3))
    op.output("windows", split.falses, KafkaSink([servers], windows, partitions=3))
    run_main(flow)


# --- against the shared broker ---------------------------------------------------------------------------


def test_flow_writes_keyed_schema_valid_records(kafka_broker: str) -> None:
    t_topic, w_topic = topic("transcripts"), topic("windows")
    transcripts = [transcript(ROOMS[i % 3], i).to_record() for i in range(30)]
    windows = [window(ROOMS[i % 3], i // 3).to_record() for i in range(9)]
    run_to_kafka(kafka_broker, transcripts + windows, t_topic, w_topic)

    for name, sent, schema in ((t_topic, transcripts, "transcript"), (w_topic, windows, "window")):
        messages = read_raw(kafka_broker, name, len(sent))
        assert len(messages) == len(sent)
        check = validator(schema)
        partitions_of_room: dict[str, set[int]] = defaultdict(set)
        by_room: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
            record = json.loads(m.value.decode("utf-8"))
            check.validate(record)
            assert m.key == record["room"].encode("utf-8")
            assert m.value == dumps(record).encode("utf-8")
            partitions_of_room[record["room"]].add(m.partition)
            by_room[record["room"]].append(record)
        assert all(len(p) == 1 for p in partitions_of_room.values())  # key = room: one partition each
        for room in ROOMS:  # and in the order the flow emitted them
            assert by_room[room] == [r for r in sent if r["room"] == room]


def test_ensure_topics_creates_missing_topics_with_partitions(kafka_broker: str) -> None:
    a, b = topic("a"), topic("b")
    assert ensure_topics([kafka_broker], [a], partitions=4) == [a]
    assert ensure_topics([kafka_broker], [a, b], partitions=2) == [b]  # existing ones left alone
    assert ensure_topics([kafka_broker], [a, b], partitions=2) == []
    consumer = KafkaConsumer(bootstrap_servers=[kafka_broker], group_id=None)
    try:
        assert consumer.partitions_for_topic(a) == {0, 1, 2, 3}
        assert consumer.partitions_for_topic(b) == {0, 1}
    finally:
        consumer.close()


def test_consumer_skips_poison_messages_and_keeps_going(kafka_broker: str) -> None:
    name = topic("poison")
    ensure_topics([kafka_broker], [name], partitions=1)
    good_t = transcript("mock-42", 1).to_record()
    good_w = window("mock-42", 0).to_record()
    other_room = transcript("mock-7", 2).to_record()
    missing_field = {k: v for k, v in good_t.items() if k != "text"}
    producer = KafkaProducer(bootstrap_servers=[kafka_broker])
    for key, value in [
        (b"mock-42", b"{not json"),
        (b"mock-42", dumps(good_t).encode()),
        (b"mock-42", b"\xff\xfe"),
        (b"mock-42", b'{"schema": "other/1", "room": "mock-42"}'),
        (b"mock-42", b"[1, 2]"),
        (b"mock-42", dumps(missing_field).encode()),
        (b"mock-7", dumps(other_room).encode()),
        (b"mock-42", dumps(good_w).encode()),
    ]:
        producer.send(name, key=key, value=value)
    producer.flush()
    producer.close()

    stats = ConsumeStats()
    got = list(iter_records([kafka_broker], name, from_beginning=True, stop_after_idle_s=0.8, stats=stats))
    assert got == [good_t, other_room, good_w]
    assert (stats.records, stats.bad) == (3, 5)
    assert stats.bad_reasons["bad JSON"] == 1

    only_room = list(
        iter_records([kafka_broker], name, room="mock-7", from_beginning=True, stop_after_idle_s=0.5)
    )
    assert only_room == [other_room]


def test_tail_prints_records_readably(kafka_broker: str) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_broker, kafka_topic_windows=topic("windows"))
    ensure_topics([kafka_broker], [settings.kafka_topic_windows], partitions=2)
    run_to_kafka(kafka_broker, [window("mock-42", 0).to_record()], topic("t"), settings.kafka_topic_windows)
    out, err = io.StringIO(), io.StringIO()
    stats = tail(settings, "windows", "mock-42", True, out=out, err=err, stop_after_idle_s=0.5)
    assert (stats.records, stats.bad) == (1, 0), err.getvalue()
    assert "window mock-42:0" in out.getvalue()
    assert "Interviewer (Morgan): utterance 0 in mock-42" in out.getvalue()


# --- broker down or going away ---------------------------------------------------------------------------


def test_broker_down_at_start_fails_fast_with_a_clear_error() -> None:
    servers = [f"127.0.0.1:{free_port()}"]  # nothing listens there

    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as info:
        ensure_topics(servers, ["x"], partitions=1, timeout_s=2.0)
    assert time.monotonic() - started < 5
    assert servers[0] in str(info.value) and "\n" not in str(info.value)

    flow = Dataflow("down")
    op.output(
        "out",
        op.input("in", flow, TestingSource([{"room": "r"}])),
        KafkaSink(servers, "x", connect_timeout_s=2),
    )
    started = time.monotonic()
    with pytest.raises(Exception) as flow_info:
        run_main(flow)
    assert time.monotonic() - started < 5
    chain: list[BaseException] = []
    exc: BaseException | None = flow_info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    assert any(isinstance(e, KafkaUnavailable) for e in chain)

    settings = Settings(kafka_bootstrap_servers=servers[0])
    with pytest.raises(KafkaUnavailable, match="unreachable"):
        tail(settings, "windows", None, False, err=io.StringIO(), connect_timeout_s=1.0)


@pytest.mark.slow
def test_records_held_during_a_broker_restart_are_delivered(tansu_broker: TansuBroker) -> None:
    broker, name, stop_at = tansu_broker, topic("restart"), 20
    records = [{**transcript(ROOMS[i % 3], i).to_record(), "utterance_id": f"u{i}"} for i in range(60)]
    restart = threading.Timer(1.5, broker.start)

    def take_broker_down(record: dict[str, Any]) -> dict[str, Any]:
        # Runs before the sink sees this record, so it and all later ones reach the sink while the
        # broker is down (memory storage: what was delivered before the stop is gone after the restart).
        if record["utterance_id"] == f"u{stop_at}":
            broker.stop()
            restart.start()
        return record

    flow = Dataflow("restart")
    items = op.map("outage", op.input("in", flow, TestingSource(records)), take_broker_down)
    op.output("out", items, KafkaSink([broker.bootstrap], name, partitions=3, retry_timeout_s=30))
    started = time.monotonic()
    run_main(flow)
    restart.join()
    assert 1.4 < time.monotonic() - started < 20  # the sink did wait for the broker to come back

    held = records[stop_at:]
    got = [json.loads(m.value) for m in read_raw(broker.bootstrap, name, len(held))]
    assert {r["utterance_id"] for r in held} <= {r["utterance_id"] for r in got}  # nothing lost
    for room in ROOMS:  # still in order per room (duplicates allowed: at-least-once)
        ids = [int(r["utterance_id"][1:]) for r in got if r["room"] == room]
        assert ids == sorted(ids)


@pytest.mark.slow
def test_outage_longer_than_retry_time_raises(tansu_broker: TansuBroker) -> None:
    sink = KafkaSink([tansu_broker.bootstrap], topic("gone"), partitions=1, retry_timeout_s=2.0)
    part = sink.build("out", 0, 1)
    part.write_batch([transcript("mock-42", 0).to_record()])
    tansu_broker.stop()
    started = time.monotonic()
    with pytest.raises(KafkaDeliveryError, match="not delivered"):
        part.write_batch([transcript("mock-42", 1).to_record()])
    assert 1.5 < time.monotonic() - started < 8
    part.close()


def test_a_record_kafka_rejects_fails_at_once_without_retrying(kafka_broker: str) -> None:
    sink = KafkaSink([kafka_broker], topic("big"), partitions=1, retry_timeout_s=60)
    part = sink.build("out", 0, 1)
    huge = {**transcript("mock-42", 0).to_record(), "text": "x" * 2_000_000}  # over max_request_size
    started = time.monotonic()
    with pytest.raises(KafkaDeliveryError, match="not retried"):
        part.write_batch([transcript("mock-42", 1).to_record(), huge])
    assert time.monotonic() - started < 5
    part.close()


# --- no broker needed ------------------------------------------------------------------------------------


def test_schemas_accept_records_and_reject_drift() -> None:
    t, w = transcript("mock-42", 3).to_record(), window("mock-42", 1).to_record()
    validator("transcript").validate(t)
    validator("window").validate(w)
    assert not validator("transcript").is_valid({**t, "extra": 1})
    assert not validator("transcript").is_valid({**t, "speaker": "agent"})
    assert not validator("window").is_valid({**w, "reason": "timeout"})
    assert not validator("window").is_valid({**w, "segments": []})


def test_format_record() -> None:
    line = format_record(transcript("mock-42", 31).to_record())
    assert line == "[mock-42] 01:02.0-01:03.5 Candidate (Riley): utterance 31 in mock-42"
    block = format_record(window("mock-42", 2).to_record()).splitlines()
    assert block[0] == "== window mock-42:2 00:08.0-00:11.5 reason=length segments=2"
    assert block[1] == "   00:08.0 Interviewer (Morgan): utterance 4 in mock-42"


def test_room_events_wait_for_a_missing_topic_without_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    class Consumer:
        """Topic missing on the first look, there on the second, with one message."""

        def __init__(self, **config: Any) -> None:
            self.looks = 0

        def partitions_for_topic(self, topic: str) -> set[int] | None:
            self.looks += 1
            return {0} if self.looks > 1 else None

        def assign(self, tps: list[TopicPartition]) -> None:
            self.assigned = tps

        def seek_to_end(self) -> None:
            pass

        def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
            return {TopicPartition("rooms", 0): [type("Msg", (), {"value": b"event"})()]}

        def close(self) -> None:
            pass

    made: list[Consumer] = []
    monkeypatch.setattr(client, "consumer", lambda servers, **kw: made.append(Consumer()) or made[-1])
    started = time.monotonic()
    feed = consume_room_events(["127.0.0.1:9"], "rooms")  # no stop: the old feed spun here
    assert next(feed) == b"event"
    feed.close()
    assert made[0].looks == 2 and 0.9 < time.monotonic() - started < 3
