"""`quantcoach replay --kafka` and `quantcoach tail` against the real Kafka-protocol broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from kafka import KafkaConsumer, TopicPartition

from harness.ports import free_port
from quantcoach.cli import main
from quantcoach.wire import METRICS_SCHEMA, SESSION_SCHEMA, TRANSCRIPT_SCHEMA, WINDOW_SCHEMA, validate

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "interview"
ROOM = "sample-interview"
#: record kind -> (topic variable, topic, schema file, schema)
KINDS = {
    "transcripts": ("KAFKA_TOPIC_TRANSCRIPTS", "cli.transcripts", "transcript.v2", TRANSCRIPT_SCHEMA),
    "windows": ("KAFKA_TOPIC_WINDOWS", "cli.windows", "window.v2", WINDOW_SCHEMA),
    "sessions": ("KAFKA_TOPIC_SESSIONS", "cli.sessions", "session.v1", SESSION_SCHEMA),
    "metrics": ("KAFKA_TOPIC_METRICS", "cli.metrics", "metrics.v1", METRICS_SCHEMA),
}


def quantcoach(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def read_keyed(servers: str, topic: str, idle_s: float = 2.0) -> list[tuple[bytes, bytes]]:
    """(key, value) of every message of the topic, from the beginning, in order within each partition."""
    consumer = KafkaConsumer(bootstrap_servers=[servers], group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"no topic {topic}"
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes, bytes]] = []
        idle_until = time.monotonic() + idle_s
        while time.monotonic() < idle_until:
            batches = consumer.poll(timeout_ms=200)
            for tp in sorted(batches, key=lambda t: t.partition):
                out.extend((m.key, m.value) for m in batches[tp])
                idle_until = time.monotonic() + idle_s
        return out
    finally:
        consumer.close()


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_replay_sends_the_same_records_to_kafka_as_to_the_files(kafka_broker: str, tmp_path: Path) -> None:
    """``replay --kafka``: the v2 records of the session's JSONL files, the same ones, on the four
    topics, keyed by room, valid against their schemas; ``tail`` shows each topic readably."""
    topics = {variable: topic for variable, topic, _, _ in KINDS.values()}
    proc = quantcoach(
        "replay", str(SAMPLE), "--out", str(tmp_path), "--quiet", "--kafka", kafka_broker, env=topics
    )
    assert proc.returncode == 0, proc.stderr
    (session_dir,) = (tmp_path / ROOM).iterdir()  # <out>/<room>/<session_id>/
    sid = session_dir.name
    for kind, (_, topic, schema_file, schema) in KINDS.items():
        from_file = [json.loads(line) for line in (session_dir / f"{kind}.jsonl").read_text().splitlines()]
        messages = read_keyed(kafka_broker, topic)
        assert {key for key, _ in messages} == {ROOM.encode()}, kind  # keyed by room
        from_kafka = [json.loads(value) for _, value in messages]
        assert from_file, kind
        assert sorted(from_kafka, key=json.dumps) == sorted(from_file, key=json.dumps), kind
        check = validator(schema_file)
        for record in from_kafka:
            validate(record, schema)
            check.validate(record)
            assert (record["room"], record["session_id"]) == (ROOM, sid)
        if kind in ("sessions", "metrics"):  # one room, one partition: in the order emitted
            assert from_kafka == from_file, kind
    events = [json.loads(v)["event"] for _, v in read_keyed(kafka_broker, "cli.sessions", idle_s=0.5)]
    assert events == ["started", "ended"]

    # the simplest analytics consumer shows them readably, from the beginning, for one room
    def start_tail(kind: str) -> subprocess.Popen[str]:
        args = ["tail", "--topic", kind, "--from-beginning", "--room", ROOM, "--kafka", kafka_broker]
        return subprocess.Popen(
            [sys.executable, "-m", "quantcoach.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **topics},
        )

    tails = {kind: start_tail(kind) for kind in ("windows", "sessions", "metrics")}
    time.sleep(8)
    printed = {}
    for kind, tail in tails.items():
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=20)
        assert tail.returncode == 0, err
        assert "bad messages" not in err
        printed[kind] = out.splitlines()
    windows = "\n".join(printed["windows"])
    assert f"window {sid}:0 " in windows and "Interviewer" in windows and "Candidate" in windows
    assert [line.split(" at ")[0] for line in printed["sessions"]] == [
        f"[{ROOM}] session {sid} started",
        f"[{ROOM}] session {sid} ended",
    ]
    for line in printed["sessions"]:  # with the session's roster
        assert "Candidate (Riley)" in line.split(": ")[-1] and "Interviewer (Morgan)" in line.split(": ")[-1]
    metrics = printed["metrics"]
    assert metrics and all(line.startswith(f"[{ROOM}] metrics {sid} ") for line in metrics)
    assert [" final at " in line for line in metrics] == [False] * (len(metrics) - 1) + [True]
    assert "Interviewer (Morgan) talk " in metrics[-1] and "Candidate (Riley) talk " in metrics[-1]


def test_unreachable_broker_is_one_clear_line_within_seconds(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = quantcoach(
        "replay", str(SAMPLE), "--out", str(tmp_path), "--quiet", "--stt", "noop", "--kafka", dead
    )
    assert time.monotonic() - started < 20
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert dead in proc.stderr
    started = time.monotonic()
    proc = quantcoach("tail", "--kafka", dead, timeout=30)  # unreachable at start: 2, like replay
    assert proc.returncode == 2 and "error:" in proc.stderr and time.monotonic() - started < 20
    assert dead in proc.stderr and "Traceback" not in proc.stderr
    proc = quantcoach(
        "store", "--kafka", dead, env={"DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}, timeout=30
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and dead in proc.stderr


def test_malformed_kafka_address_is_a_usage_error() -> None:
    proc = quantcoach("replay", str(SAMPLE), "--quiet", "--stt", "noop", "--kafka", "no-port-here")
    assert proc.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in proc.stderr


# --- no broker needed: the CLI's own checks, in process ---------------------------------------------------
def test_kafka_commands_without_kafka_are_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "")
    for command in ("tail", "store"):
        assert main([command]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: Kafka is not configured") and "KAFKA_BOOTSTRAP_SERVERS" in err


@pytest.mark.parametrize("value", ["a,b", "0,,1", "-1", "1.5"])
def test_bad_partitions_name_the_option_and_the_form(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--partitions", value, "--kafka", "127.0.0.1:9"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "<lambda>" not in line
    assert line.startswith("error: quantcoach store: argument --partitions: must be partition numbers")
    assert "0,1" in line


def test_bad_bind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "--bind", "nowhere"]) == 2
    assert "argument --bind: must be HOST:PORT" in capsys.readouterr().err
