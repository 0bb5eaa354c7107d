"""The transcript store (SQLite and a real PostgreSQL) and the store job against the real broker.

The records are tests/support/records.py's v2 wire records as plain dicts (``transcript``, ``window``,
``session_event``, ``metrics``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from connectors.kafka.client import ensure_topics
from connectors.store import Store, StoreUnavailable, safe_url
from jobs.store import StoreJob
from quantcoach.wire import validate
from tests.support.records import dumps, metrics, session_event, transcript, window

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "interview"


def empty(store: Store) -> None:
    """A shared PostgreSQL server: each test starts with empty tables."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE records, sessions RESTART IDENTITY")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    empty(s)
    yield s
    s.close()


def served(store: Store, session: str) -> list[dict[str, Any]]:
    """Everything the store serves of a session, each record checked against its schema."""
    out = [*store.transcripts(session), *store.windows(session), *store.session_events(session)]
    out += [m for m in [store.metrics(session)] if m] + [e.record for e in store.events_after(session, 0)]
    for record in out:
        validate(record)
    return out


def test_two_sessions_under_one_room_stay_two_sessions_newest_first(store: Store) -> None:
    first = [session_event("S1", "started", room="mock"), transcript("S1", 0, 1.0, room="mock")]
    first += [transcript("S1", 1, 4.0, "candidate", room="mock"), window("S1", 0, room="mock")]
    first += [session_event("S1", "ended", room="mock", at="2026-01-02T03:30:00.000Z")]
    second = [transcript("S2", 0, 1.0, room="mock"), window("S2", 0, room="mock", started_at="2026-01-03")]
    assert store.upsert(first) == 5
    assert store.upsert(second) == 2  # same room, same utterance numbers: another interview
    assert store.upsert(first) == 0 and store.upsert(second) == 0  # replayed again: nothing added

    found = store.sessions("mock")
    assert [(s.session_id, s.transcripts, s.windows) for s in found] == [("S2", 1, 1), ("S1", 2, 1)]
    assert (found[1].started_at, found[1].ended_at) == ("2026-01-02T03:00:00Z", "2026-01-02T03:30:00.000Z")
    assert (found[0].started_at, found[0].ended_at) == ("2026-01-03", None)
    assert store.latest_session("mock") == "S2" and store.latest_session("other") is None
    assert [t["utterance_id"] for t in store.transcripts("S1")] == ["S1:iv-7:0", "S1:cand-3:1"]
    assert [t["utterance_id"] for t in store.transcripts("S2")] == ["S2:iv-7:0"]
    assert store.session("S1") == found[1] and store.session("nope") is None
    assert [r["event"] for r in store.session_events("S1")] == ["started", "ended"]
    assert len(served(store, "S1")) == 10 and len(served(store, "S2")) == 4


def test_upsert_is_idempotent_partials_ignored_reads_ordered(store: Store) -> None:
    records = [transcript("A", 1, 5.0), transcript("A", 0, 1.0), window("A", 0), transcript("B", 0, 0.5)]
    assert store.upsert(records) == 4
    assert store.upsert(records + records) == 0  # delivered twice (even within one batch): one row each
    assert store.upsert([transcript("A", 2, 3.0, final=False)]) == 0  # partials are not stored
    assert [t["utterance_id"] for t in store.transcripts("A")] == ["A:iv-7:0", "A:iv-7:1"]
    assert [t["utterance_id"] for t in store.transcripts("A", since=2.0)] == ["A:iv-7:1"]
    assert store.transcripts("A")[0] == records[1]  # the record as it was on the wire
    assert [w["window_id"] for w in store.windows("A")] == ["A:0"]
    with pytest.raises(ValueError, match="v2 records only"):
        store.upsert([{**records[0], "schema": "quantcoach.transcript/1"}])


def test_positions_are_monotonic_per_arrival_and_per_session(store: Store) -> None:
    store.upsert([transcript("S", 0, 9.0), window("S", 0), transcript("T", 0, 0.0)])
    store.upsert([transcript("S", 1, 1.0), transcript("S", 0, 9.0), session_event("S", "ended")])
    events = store.events_after("S", 0)
    assert [e.kind for e in events] == ["transcript", "window", "transcript", "session"]
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 4
    assert [e.record.get("utterance_id") for e in store.events_after("S", positions[1])][:1] == ["S:iv-7:1"]
    assert [e.record["session_id"] for e in store.events_after("T", 0)] == ["T"]


def test_metrics_keeps_the_latest_final_wins(store: Store) -> None:
    store.upsert([transcript("M", 0, 0.0)])
    assert store.metrics("M") is None
    assert store.upsert([metrics("M", 10.0)]) == 1
    first = store.events_after("M", 0)[-1].position
    assert store.upsert([metrics("M", 20.0, at="2026-01-02T03:06:00.000Z")]) == 1
    assert store.upsert([metrics("M", 10.0)]) == 0  # older (or re-delivered): nothing
    assert store.upsert([metrics("M", 20.0, at="2026-01-02T03:06:00.000Z")]) == 0
    assert store.metrics("M")["media_s"] == 20.0
    assert store.upsert([metrics("M", 15.0, final=True)]) == 1  # final beats any non-final
    assert store.upsert([metrics("M", 30.0)]) == 0
    latest = store.metrics("M")
    assert latest["final"] and latest["media_s"] == 15.0
    kinds = [(e.kind, e.position) for e in store.events_after("M", 0)]
    assert [k for k, _ in kinds] == ["transcript", "metrics"]  # one metrics row: the latest
    assert kinds[-1][1] > first + 1  # a new position each time: never one handed out before
    # one batch holding several: the latest of them is kept
    assert store.upsert([metrics("N", 5.0), metrics("N", 7.0), metrics("N", 6.0)]) == 2
    assert store.metrics("N")["media_s"] == 7.0


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path}/sub/dir/q.db")  # parent directories are created
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def _produce(servers: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=[servers], acks="all")
    for v in values:
        producer.send(topic, key=b"r", value=v)
    producer.flush()
    producer.close()


def test_store_job_takes_four_kinds_skips_poison_and_commits_after(kafka_broker: str, tmp_path: Path) -> None:
    topics = ["store.t", "store.w", "store.s", "store.m"]
    ensure_topics([kafka_broker], topics, partitions=1)
    good = [transcript("J", i, float(i)) for i in range(3)]
    v1 = {k: v for k, v in good[0].items() if k not in ("session_id", "language", "confidence")}
    values = [
        dumps(good[0]).encode(),
        b"{not json",
        b"\xff\xfe",
        json.dumps({"schema": "quantcoach.transcript/2", "room": "r"}).encode(),  # missing fields
        json.dumps({"schema": "other/1"}).encode(),
        json.dumps({**v1, "schema": "quantcoach.transcript/1"}).encode(),  # no session: refused
        dumps({**good[0], "session_id": "bad id!"}).encode(),
        dumps(good[1]).encode(),
        dumps(good[1]).encode(),  # delivered twice
        dumps(transcript("J", 9, 9.0, final=False)).encode(),  # a partial: valid, not stored
        dumps(good[2]).encode(),
    ]
    _produce(kafka_broker, "store.t", values)
    _produce(kafka_broker, "store.w", [dumps(window("J", 0)).encode()])
    _produce(kafka_broker, "store.s", [dumps(session_event("J", "ended")).encode()])
    _produce(kafka_broker, "store.m", [dumps(metrics("J", 3.0, final=True)).encode()])
    store = Store(f"sqlite:///{tmp_path}/q.db")

    job = StoreJob(store, [kafka_broker], topics, group_id="g1", from_beginning=True, partitions=[0])
    stats = job.run(max_idle_s=2.0)
    assert (stats.stored, stats.duplicates, stats.bad) == (6, 1, 6)
    assert "unknown schema 'quantcoach.transcript/1' (the store takes v2 records)" in stats.bad_reasons
    assert [t["utterance_id"] for t in store.transcripts("J")] == [t["utterance_id"] for t in good]
    assert len(store.windows("J")) == 1 and store.metrics("J")["final"]
    assert store.session("J").ended_at is not None
    served(store, "J")

    # offsets were committed: the same group resumes after them and stores nothing again
    _produce(kafka_broker, "store.t", [dumps(transcript("J", 3, 3.0)).encode()])
    again = StoreJob(store, [kafka_broker], topics, group_id="g1", from_beginning=True, partitions=[0])
    stats = again.run(max_idle_s=2.0)
    assert (stats.stored, stats.duplicates, stats.bad) == (1, 0, 0)

    # a different group re-reads everything: at-least-once, but each record once in the database
    other = StoreJob(store, [kafka_broker], topics, group_id="g2", from_beginning=True, partitions=[0])
    stats = other.run(max_idle_s=2.0)
    assert stats.stored == 0 and stats.duplicates == 8 and stats.bad == 6
    assert len(store.transcripts("J")) == 4


def test_store_job_into_postgres_refuses_what_the_database_refuses(
    kafka_broker: str, postgres_url: str
) -> None:
    ensure_topics([kafka_broker], ["pg.t"], partitions=1)
    values = [dumps(transcript("PG", i, float(i), room="pg-room")).encode() for i in range(5)]
    too_long = transcript("PG", 99, 99.0, room="x" * 300)  # valid on the wire, too long for the column
    values.insert(2, dumps(too_long).encode())
    _produce(kafka_broker, "pg.t", values)
    store = Store(postgres_url)
    empty(store)
    job = StoreJob(store, [kafka_broker], ["pg.t"], group_id="pg", from_beginning=True, partitions=[0])
    stopper = threading.Timer(20, job.stop)  # a bound in case the broker misbehaves
    stopper.start()
    try:
        stats = job.run(max_idle_s=2.0)
    finally:
        stopper.cancel()
    assert (stats.stored, stats.bad) == (5, 1) and "refused by the database" in stats.bad_reasons
    assert len(store.transcripts("PG")) == 5 and store.sessions("pg-room")[0].transcripts == 5


def test_replay_store_writes_the_session_into_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/replay.db"
    cmd = [sys.executable, "-m", "quantcoach.cli", "replay", str(SAMPLE), "--out", str(tmp_path / "out")]
    proc = subprocess.run(
        [*cmd, "--quiet", "--store"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
    )
    assert proc.returncode == 0, proc.stderr
    store = Store(url)
    (only,) = store.sessions("sample-interview")
    sid = only.session_id
    (files,) = list((tmp_path / "out").glob(f"*/{sid}"))  # <out>/<room>/<session_id>/
    lines = {n: (files / n).read_text().splitlines() for n in ("transcripts.jsonl", "windows.jsonl")}
    from_file = [json.loads(line) for line in lines["transcripts.jsonl"]]
    served(store, sid)
    stored = store.transcripts(sid)
    assert sorted(t["utterance_id"] for t in stored) == sorted(t["utterance_id"] for t in from_file)
    assert len(store.windows(sid)) == len(lines["windows.jsonl"])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("not a url", "ArgumentError"),
        ("nonsense://", "NoSuchModuleError"),
        ("postgresql://u:pw@127.0.0.1:1/x", ""),
    ],
)
def test_a_store_that_cannot_be_opened_is_one_line_naming_the_cause(url: str, why: str) -> None:
    with pytest.raises(StoreUnavailable) as info:
        Store.open(url)
    message = str(info.value)
    assert message.startswith(f"cannot open DATABASE_URL: {why}") and "\n" not in message


def test_safe_url_hides_the_password() -> None:
    assert safe_url("postgresql://u:pw@db:5432/qc") == "postgresql://u:***@db:5432/qc"


def test_store_command_with_a_bad_database_url_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", "store", "--kafka", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": "nonsense://"},
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot open DATABASE_URL: ")
