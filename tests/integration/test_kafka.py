"""Kafka sink and consumer against a real Kafka-protocol broker (tansu, started by the fixtures).

The records are the v2 contract's, built by the record classes themselves: transcripts, windows,
session events and metrics, each of a session (``session_id``), keyed by room on the wire."""

from __future__ import annotations

import io
import itertools
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
from harness.kafka import TansuBroker
from harness.ports import free_port
from operators.metrics import SessionMetrics
from quantcoach.records import (
    EvaluationWindow,
    Participant,
    Segment,
    SessionEvent,
    Transcript,
    dumps,
)
from quantcoach.settings import Settings
from quantcoach.tail import format_record, tail
from quantcoach.wire import (
    METRICS_SCHEMA,
    SESSION_SCHEMA,
    TRANSCRIPT_SCHEMA,
    TRANSCRIPT_SCHEMA_V1,
    WINDOW_SCHEMA,
    WINDOW_SCHEMA_V1,
    RecordError,
    validate,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
ROOMS = ("mock-42", "salle-é", "mock-7")  # a non-ASCII room checks the UTF-8 key
SESSION_IDS = {"mock-42": "RM_42abcXYZ", "salle-é": "RM_salle01", "mock-7": "rec-0123456789abcdef01234567"}
STARTED_AT = "2026-12-01T14:00:00.000Z"
#: every record kind: its schema file and its schema name
KINDS = {
    "transcripts": ("transcript.v2", TRANSCRIPT_SCHEMA),
    "windows": ("window.v2", WINDOW_SCHEMA),
    "sessions": ("session.v1", SESSION_SCHEMA),
    "metrics": ("metrics.v1", METRICS_SCHEMA),
}


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def topic(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def roster(room: str) -> tuple[Participant, ...]:
    sid = SESSION_IDS[room]
    return (
        Participant(room, "inte-0", "Morgan", "interviewer", session_id=sid, started_at=STARTED_AT),
        Participant(room, "cand-1", "Riley", "candidate", session_id=sid, started_at=STARTED_AT),
    )


def transcript(room: str, i: int) -> Transcript:
    speaker = ("interviewer", "candidate")[i % 2]
    participant = f"{speaker[:4]}-{i % 2}"
    sid = SESSION_IDS[room]
    return Transcript(
        room=room,
        participant=participant,
        speaker=speaker,
        name=("Morgan", "Riley")[i % 2],
        utterance_id=f"{sid}:{participant}:{i}",
        text=f"utterance {i} in {room}",
        is_final=True,
        start=i * 2.0,
        end=i * 2.0 + 1.5,
        engine="whisper",
        session_id=sid,
        language="en",
        confidence=None if i % 3 == 0 else 0.5 + i % 5 / 10,
    )


def window(room: str, seq: int) -> EvaluationWindow:
    """Window ``seq``: the previous window's last transcript as context, then a new one."""
    new = Segment.of(transcript(room, seq * 2 + 1))
    segments = (Segment.of(transcript(room, seq * 2)).as_context(), new) if seq else (new,)
    return EvaluationWindow(
        room=room,
        seq=seq,
        reason="length",
        segments=segments,
        session_id=SESSION_IDS[room],
        participants=roster(room),
        started_at=STARTED_AT,
    )


def session_event(room: str, event: str) -> dict[str, Any]:
    return SessionEvent(room, SESSION_IDS[room], event, roster(room), STARTED_AT).to_record()


def metrics(room: str, transcripts: int, final: bool = False) -> dict[str, Any]:
    """The session's metrics after its first ``transcripts`` transcripts, as the windowing step makes them."""
    m = SessionMetrics()
    for p in roster(room):
        m.meet(p.identity, p.name, p.role)
    for i in range(transcripts):
        t = transcript(room, i)
        m.add(t.participant, t.name, t.speaker, t.text, t.start, t.end)
    media_s = transcripts * 2.0 + 3.0 if final else None
    return m.record(room, SESSION_IDS[room], final=final, media_s=media_s, emitted_at=STARTED_AT)


def session_records(room: str) -> dict[str, list[dict[str, Any]]]:
    """One whole session of ``room``, by kind, in the order the flow emits them."""
    windows = [window(room, seq).to_record() for seq in range(3)]
    return {
        "transcripts": [transcript(room, i).to_record() for i in range(7)],
        "windows": windows,
        "sessions": [session_event(room, "started"), session_event(room, "ended")],
        "metrics": [metrics(room, 2 * seq + 2) for seq in range(3)] + [metrics(room, 7, final=True)],
    }


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


def interleave(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rooms' records mixed, as several sessions' records are on the wire: one of each in turn."""
    return [r for group in itertools.zip_longest(*lists) for r in group if r is not None]


def run_to_kafka(servers: str, records: list[dict[str, Any]], topics: dict[str, str]) -> None:
    """A flow that sends each record to the topic of its kind (``topics``: kind -> topic), as the
    interview flow's Kafka sinks do."""
    flow = Dataflow("kafka_test")
    items = op.input("in", flow, TestingSource(records, batch_size=7))
    for kind, topic_ in topics.items():
        schema = KINDS[kind][1]
        mine = op.filter(f"only_{kind}", items, lambda r, schema=schema: r["schema"] == schema)
        op.output(kind, mine, KafkaSink([servers], topic_, partitions=3))
    run_main(flow)


# --- against the shared broker ---------------------------------------------------------------------------


def test_flow_writes_keyed_schema_valid_records(kafka_broker: str) -> None:
    """Every kind of record reaches its topic, keyed by room (one partition per room), in the order
    the flow emitted it per room, as the compact JSON of the record, valid against its schema file."""
    topics = {kind: topic(kind) for kind in KINDS}
    sessions = {room: session_records(room) for room in ROOMS}
    sent = {kind: interleave(*(sessions[room][kind] for room in ROOMS)) for kind in KINDS}
    run_to_kafka(kafka_broker, [r for kind in KINDS for r in sent[kind]], topics)

    for kind, name in topics.items():
        messages = read_raw(kafka_broker, name, len(sent[kind]))
        assert len(messages) == len(sent[kind]), kind
        check = validator(KINDS[kind][0])
        partitions_of_room: dict[str, set[int]] = defaultdict(set)
        by_room: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
            record = json.loads(m.value.decode("utf-8"))
            check.validate(record)
            validate(record, KINDS[kind][1])
            assert m.key == record["room"].encode("utf-8")
            assert m.value == dumps(record).encode("utf-8")
            assert record["session_id"] == SESSION_IDS[record["room"]]
            partitions_of_room[record["room"]].add(m.partition)
            by_room[record["room"]].append(record)
        assert all(len(p) == 1 for p in partitions_of_room.values())  # key = room: one partition each
        for room in ROOMS:  # and in the order the flow emitted them
            assert by_room[room] == sessions[room][kind], (kind, room)


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


def v1(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the first release wrote it (ids under the room, no session)."""
    if record["schema"] == TRANSCRIPT_SCHEMA:
        dropped = {"session_id", "language", "confidence"}
        return {**{k: v for k, v in record.items() if k not in dropped}, "schema": TRANSCRIPT_SCHEMA_V1}
    dropped = {"session_id", "participants", "started_at"}
    segments = [
        {k: v for k, v in s.items() if k not in ("utterance_id", "context")} for s in record["segments"]
    ]
    window_id = f"{record['room']}:{record['seq']}"
    return {
        **{k: v for k, v in record.items() if k not in dropped},
        "schema": WINDOW_SCHEMA_V1,
        "window_id": window_id,
        "segments": segments,
    }


def test_consumer_skips_poison_messages_and_keeps_going(kafka_broker: str) -> None:
    """Every known record passes (v2 transcript and window, session, metrics, and the first release's
    v1 records still on a topic); anything else is counted and skipped."""
    name = topic("poison")
    ensure_topics([kafka_broker], [name], partitions=1)
    good_t = transcript("mock-42", 1).to_record()
    good_w = window("mock-42", 1).to_record()
    good_s = session_event("mock-42", "ended")
    good_m = metrics("mock-42", 3, final=True)
    old_t, old_w = v1(transcript("mock-42", 2).to_record()), v1(window("mock-42", 0).to_record())
    other_room = transcript("mock-7", 2).to_record()
    missing_field = {k: v for k, v in good_t.items() if k != "text"}
    no_session = {**good_w, "session_id": ""}
    bad_event = {**good_s, "event": "paused"}
    v1_named_v2 = {**old_t, "schema": TRANSCRIPT_SCHEMA}  # a v1 body under the v2 name: no session
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
        (b"mock-42", dumps(no_session).encode()),
        (b"mock-42", dumps(good_s).encode()),
        (b"mock-42", dumps(bad_event).encode()),
        (b"mock-42", dumps(good_m).encode()),
        (b"mock-42", dumps(v1_named_v2).encode()),
        (b"mock-42", dumps(old_t).encode()),
        (b"mock-42", dumps(old_w).encode()),
    ]:
        producer.send(name, key=key, value=value)
    producer.flush()
    producer.close()

    stats = ConsumeStats()
    got = list(iter_records([kafka_broker], name, from_beginning=True, stop_after_idle_s=0.8, stats=stats))
    assert got == [good_t, other_room, good_w, good_s, good_m, old_t, old_w]
    assert (stats.records, stats.bad) == (7, 8)
    assert stats.bad_reasons["bad JSON"] == 1

    only_room = list(
        iter_records([kafka_broker], name, room="mock-7", from_beginning=True, stop_after_idle_s=0.5)
    )
    assert only_room == [other_room]


def test_tail_prints_records_readably(kafka_broker: str) -> None:
    """``quantcoach tail --topic windows|transcripts|sessions|metrics``: each kind, one room's only."""
    settings = Settings(
        kafka_bootstrap_servers=kafka_broker,
        **{f"kafka_topic_{kind}": topic(kind) for kind in KINDS},
    )
    topics = {kind: getattr(settings, f"kafka_topic_{kind}") for kind in KINDS}
    ensure_topics([kafka_broker], topics.values(), partitions=2)
    records = session_records("mock-42"), session_records("mock-7")
    run_to_kafka(kafka_broker, [r for s in records for kind in KINDS for r in s[kind]], topics)
    printed = {}
    for kind in KINDS:
        out, err = io.StringIO(), io.StringIO()
        stats = tail(settings, kind, "mock-42", True, out=out, err=err, stop_after_idle_s=0.5)
        assert (stats.records, stats.bad) == (len(records[0][kind]), 0), err.getvalue()
        assert topics[kind] in err.getvalue()
        assert "mock-7" not in out.getvalue()
        printed[kind] = out.getvalue().splitlines()
    sid = SESSION_IDS["mock-42"]
    assert f"[mock-42] window {sid}:0 " in printed["windows"][0]
    assert "   00:02.0 Candidate (Riley): utterance 1 in mock-42" in printed["windows"]
    assert (
        printed["transcripts"][0] == "[mock-42] 00:00.0-00:01.5 Interviewer (Morgan): utterance 0 in mock-42"
    )
    started, ended = printed["sessions"]
    assert started.startswith(f"[mock-42] session {sid} started at ")
    assert ended.startswith(f"[mock-42] session {sid} ended at ")
    assert ended.endswith("(started 2026-12-01T14:00:00.000Z): Interviewer (Morgan), Candidate (Riley)")
    assert len(printed["metrics"]) == 4 and all(f"[mock-42] metrics {sid} " in m for m in printed["metrics"])
    assert [" final at " in m for m in printed["metrics"]] == [False, False, False, True]


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
    """The schema files and ``quantcoach.wire.validate`` agree on what the record classes produce
    and on what is drift."""
    t, w = transcript("mock-42", 3).to_record(), window("mock-42", 1).to_record()
    s, m = session_event("mock-42", "started"), metrics("mock-42", 4)
    good = {"transcript.v2": t, "window.v2": w, "session.v1": s, "metrics.v1": m}
    good |= {"transcript.v1": v1(t), "window.v1": v1(w)}
    for name, record in good.items():
        validator(name).validate(record)
        validate(record)
    segment = w["segments"][0]
    drift = {
        "transcript.v2": [
            {**t, "extra": 1},
            {**t, "speaker": "agent"},
            {**t, "session_id": "has space"},
            {**t, "confidence": 1.5},
            {k: v for k, v in t.items() if k != "language"},
        ],
        "window.v2": [
            {**w, "reason": "timeout"},
            {**w, "segments": []},
            {**w, "window_id": "RM_42abcXYZ"},
            {**w, "segments": [{k: v for k, v in segment.items() if k != "context"}]},
            {**w, "participants": [{"identity": "x", "name": "", "role": "boss"}]},
        ],
        "session.v1": [{**s, "event": "paused"}, {**s, "at": "yesterday"}, {**s, "session_id": ""}],
        "metrics.v1": [
            {**m, "final": "yes"},
            {**m, "overlaps": -1},
            {k: v for k, v in m.items() if k != "speakers"},
        ],
        "transcript.v1": [{**v1(t), "session_id": "RM_x"}],  # v1 has no session: unknown field
    }
    for name, records in drift.items():
        for record in records:
            assert not validator(name).is_valid(record), (name, record)
            with pytest.raises(RecordError):
                validate(record)


def test_format_record() -> None:
    line = format_record(transcript("mock-42", 31).to_record())
    assert line == "[mock-42] 01:02.0-01:03.5 Candidate (Riley): utterance 31 in mock-42"
    assert format_record(v1(transcript("mock-42", 31).to_record())) == line
    block = format_record(window("mock-42", 2).to_record()).splitlines()
    assert block[0] == "== [mock-42] window RM_42abcXYZ:2 00:08.0-00:11.5 reason=length segments=2 new=1"
    assert block[1] == "   00:08.0 (context) Interviewer (Morgan): utterance 4 in mock-42"
    assert block[2] == "   00:10.0 Candidate (Riley): utterance 5 in mock-42"
    old = format_record(v1(window("mock-42", 2).to_record())).splitlines()
    assert old[0] == "== [mock-42] window mock-42:2 00:08.0-00:11.5 reason=length segments=2 new=2"
    assert old[1] == "   00:08.0 Interviewer (Morgan): utterance 4 in mock-42"
    started = {**session_event("mock-42", "started"), "at": "2026-12-01T14:00:01.250Z"}
    assert format_record(started) == (
        "[mock-42] session RM_42abcXYZ started at 2026-12-01T14:00:01.250Z"
        " (started 2026-12-01T14:00:00.000Z): Interviewer (Morgan), Candidate (Riley)"
    )
    nobody = {**started, "event": "ended", "participants": [], "started_at": None}
    assert (
        format_record(nobody) == "[mock-42] session RM_42abcXYZ ended at 2026-12-01T14:00:01.250Z: nobody yet"
    )
    assert format_record(metrics("mock-42", 3, final=True)) == (
        "[mock-42] metrics RM_42abcXYZ final at 00:09.0: Interviewer (Morgan) talk 3.0 s, 2 turns,"
        " 160 wpm; Candidate (Riley) talk 1.5 s, 1 turn, 160 wpm; longest silence 3.5 s,"
        " 2 speaker changes, 0 overlaps"
    )
    silent = metrics("mock-7", 0)  # nobody spoke yet: no words per minute
    assert format_record(silent).endswith(
        "so far at 00:00.0: Interviewer (Morgan) talk 0.0 s, 0 turns; Candidate (Riley) talk 0.0 s,"
        " 0 turns; longest silence 0.0 s, 0 speaker changes, 0 overlaps"
    )
    assert format_record({"schema": "other/1"}) == '{"schema": "other/1"}'


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
