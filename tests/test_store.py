"""The transcript store (SQLite and a real PostgreSQL) and the store job against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kafka import KafkaProducer

from connectors.kafka.client import ensure_topics
from connectors.store import Store, StoreUnavailable, safe_url
from jobs.store import StoreJob
from quantcoach.records import EvaluationWindow, Segment, Transcript, dumps

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "interview"


def transcript(room: str, n: int, start: float, final: bool = True) -> dict:
    return Transcript(
        room,
        "iv-7",
        "interviewer",
        "Morgan",
        f"{room}:iv-7:{n}",
        f"sentence {n}",
        final,
        start,
        start + 1,
        "t",
    ).to_record()


def window(room: str, seq: int) -> dict:
    seg = Segment("iv-7", "interviewer", "Morgan", f"sentence {seq}", float(seq), seq + 1.0)
    return EvaluationWindow(room, seq, "length", (seg,)).to_record()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    if request.param == "postgresql":  # one server for the session: start each test empty
        with s.engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE records RESTART IDENTITY")
    yield s
    s.close()


def test_upsert_is_idempotent_and_reads_are_ordered(store: Store) -> None:
    records = [transcript("r1", 1, 5.0), transcript("r1", 0, 1.0), window("r1", 0), transcript("r2", 0, 0.5)]
    assert store.upsert(records) == 4
    assert store.upsert(records) == 0  # delivered twice: one row each
    assert store.upsert([transcript("r1", 2, 3.0, final=False)]) == 0  # partials are not stored
    assert [t["utterance_id"] for t in store.transcripts("r1")] == ["r1:iv-7:0", "r1:iv-7:1"]
    assert [t["utterance_id"] for t in store.transcripts("r1", since=2.0)] == ["r1:iv-7:1"]
    assert store.transcripts("r1")[0] == records[1]  # the record as it was on the wire
    assert [w["window_id"] for w in store.windows("r1")] == ["r1:0"]
    assert store.room_exists("r1") and not store.room_exists("nope")


def test_positions_are_monotonic_per_arrival(store: Store) -> None:
    store.upsert([transcript("r", 0, 9.0), window("r", 0)])
    store.upsert([transcript("r", 1, 1.0), transcript("r", 0, 9.0)])  # one new, one re-delivery
    events = store.events_after("r", 0)
    assert [e.kind for e in events] == ["transcript", "window", "transcript"]
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert [e.record.get("utterance_id") for e in store.events_after("r", positions[1])] == ["r:iv-7:1"]


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


def test_store_job_skips_poison_stores_the_rest_and_commits_after(kafka_broker: str, tmp_path: Path) -> None:
    topics = ["store.t", "store.w"]
    ensure_topics([kafka_broker], topics, partitions=1)
    good = [transcript("r", i, float(i)) for i in range(3)]
    values = [
        dumps(good[0]).encode(),
        b"{not json",
        json.dumps({"schema": "quantcoach.transcript/1", "room": "r"}).encode(),  # missing fields
        json.dumps({"schema": "other/1"}).encode(),
        dumps(good[1]).encode(),
        dumps(good[1]).encode(),  # delivered twice
        dumps(good[2]).encode(),
    ]
    _produce(kafka_broker, "store.t", values)
    _produce(kafka_broker, "store.w", [dumps(window("r", 0)).encode()])
    store = Store(f"sqlite:///{tmp_path}/q.db")

    job = StoreJob(store, [kafka_broker], topics, group_id="g1", from_beginning=True, partitions=[0])
    stats = job.run(max_idle_s=2.0)
    assert (stats.stored, stats.duplicates, stats.bad) == (4, 1, 3)
    assert [t["utterance_id"] for t in store.transcripts("r")] == [t["utterance_id"] for t in good]
    assert len(store.windows("r")) == 1

    # offsets were committed: the same group resumes after them and stores nothing again
    _produce(kafka_broker, "store.t", [dumps(transcript("r", 3, 3.0)).encode()])
    again = StoreJob(store, [kafka_broker], topics, group_id="g1", from_beginning=True, partitions=[0])
    stats = again.run(max_idle_s=2.0)
    assert (stats.stored, stats.duplicates, stats.bad) == (1, 0, 0)

    # a different group re-reads everything: at-least-once, but each record once in the database
    other = StoreJob(store, [kafka_broker], topics, group_id="g2", from_beginning=True, partitions=[0])
    stats = other.run(max_idle_s=2.0)
    assert stats.stored == 0 and stats.duplicates == 6
    assert len(store.transcripts("r")) == 4


def test_store_job_into_postgres(kafka_broker: str, postgres_url: str) -> None:
    ensure_topics([kafka_broker], ["pg.t"], partitions=1)
    _produce(kafka_broker, "pg.t", [dumps(transcript("pg-room", i, float(i))).encode() for i in range(5)])
    store = Store(postgres_url)
    job = StoreJob(store, [kafka_broker], ["pg.t"], group_id="pg", from_beginning=True, partitions=[0])
    stopper = threading.Timer(20, job.stop)  # a bound in case the broker misbehaves
    stopper.start()
    try:
        assert job.run(max_idle_s=2.0).stored == 5
    finally:
        stopper.cancel()
    assert len(store.transcripts("pg-room")) == 5


def test_replay_store_writes_the_session_into_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/replay.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "quantcoach.cli",
            "replay",
            str(SAMPLE),
            "--out",
            str(tmp_path),
            "--quiet",
            "--store",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
    )
    assert proc.returncode == 0, proc.stderr
    store = Store(url)
    from_file = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    stored = store.transcripts("sample-interview")
    assert sorted(t["utterance_id"] for t in stored) == sorted(t["utterance_id"] for t in from_file)
    assert len(store.windows("sample-interview")) == len(
        (tmp_path / "windows.jsonl").read_text().splitlines()
    )


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
