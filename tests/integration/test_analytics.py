"""The example analytics job (flows/analytics.py, bytewax's own Kafka connector) against a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka.client import ensure_topics, producer
from connectors.kafka.reader import iter_records
from operators.metrics import SessionMetrics
from quantcoach.records import utc_now_iso
from quantcoach.settings import Settings
from quantcoach.wire import validate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def metrics(room: str, session_id: str, cand_talk: float, iv_talk: float, latency: float, final: bool = True):
    m = SessionMetrics()
    m.add("iv-1", "Morgan", "interviewer", "Question?", 0.0, iv_talk)
    m.add("cand-1", "Riley", "candidate", "Answer.", iv_talk + latency, iv_talk + latency + cand_talk)
    return m.record(room, session_id, final=final, emitted_at=utc_now_iso())


def send(servers: str, topic: str, values: list[Any]) -> None:
    p = producer([servers])
    for v in values:
        raw = v if isinstance(v, bytes) else json.dumps(v).encode()
        room = v.get("room", "x") if isinstance(v, dict) else "x"
        p.send(topic, key=room.encode(), value=raw)
    p.flush(10)
    p.close()


def test_room_stats_roll_over_sessions_dedupe_and_skip_bad_messages(kafka_broker: str) -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_broker, "KAFKA_PARTITIONS": "1",
                                  "ANALYTICS_SESSIONS": "2"})  # fmt: skip
    topics = [settings.kafka_topic_metrics, settings.kafka_topic_room_stats]
    ensure_topics(settings.kafka_servers, topics, 1, 1)
    s1 = metrics("mock-42", "S1", cand_talk=6.0, iv_talk=2.0, latency=1.0)  # share 0.75
    s2 = metrics("mock-42", "S2", cand_talk=2.0, iv_talk=2.0, latency=3.0)  # share 0.5
    s3 = metrics("mock-42", "S3", cand_talk=1.0, iv_talk=3.0, latency=2.0)  # share 0.25
    other = metrics("other-room", "S9", cand_talk=1.0, iv_talk=1.0, latency=0.5)
    running = metrics("mock-42", "S4", cand_talk=9.0, iv_talk=1.0, latency=0.1, final=False)
    send(
        kafka_broker,
        topics[0],
        [s1, b"not json", {"schema": "quantcoach.metrics/1"}, s2, s2, running, other, s3],
    )

    proc = subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", "analytics", "--no-tail", "--kafka", kafka_broker],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KAFKA_PARTITIONS": "1",
             "ANALYTICS_SESSIONS": "2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("skipped message") == 2, proc.stderr[-3000:]  # errors as data: logged, not fatal

    out = list(iter_records(settings.kafka_servers, topics[1], from_beginning=True, stop_after_idle_s=3))
    for record in out:
        validate(record)
    mock = [r for r in out if r["room"] == "mock-42"]
    # one record per final metrics record; the repeated S2 replaces itself; the running S4 is not counted
    assert [r["last_session_id"] for r in mock] == ["S1", "S2", "S2", "S3"]
    assert [r["sessions"] for r in mock] == [1, 2, 2, 2]
    assert mock[1]["candidate_talk_share"] == pytest.approx((0.75 + 0.5) / 2)
    assert mock[-1]["candidate_talk_share"] == pytest.approx((0.5 + 0.25) / 2)  # window of 2: S1 dropped
    assert mock[-1]["candidate_response_latency_s"] == pytest.approx(2.5)  # median of 3.0 and 2.0
    assert [r["sessions"] for r in out if r["room"] == "other-room"] == [1]
