"""`quantcoach replay --kafka` and `quantcoach tail` against the real Kafka-protocol broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from connectors.kafka_consumer import iter_records
from tests.kafka_broker import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "interview"


def quantcoach(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_replay_sends_the_same_records_to_kafka_as_to_the_files(kafka_broker: str, tmp_path: Path) -> None:
    topics = {"KAFKA_TOPIC_TRANSCRIPTS": "cli.transcripts", "KAFKA_TOPIC_WINDOWS": "cli.windows"}
    proc = quantcoach(
        "replay", str(SAMPLE), "--out", str(tmp_path), "--quiet", "--kafka", kafka_broker, env=topics
    )
    assert proc.returncode == 0, proc.stderr
    for kind, topic in (("transcripts", "cli.transcripts"), ("windows", "cli.windows")):
        from_file = [json.loads(line) for line in (tmp_path / f"{kind}.jsonl").read_text().splitlines()]
        from_kafka = list(iter_records([kafka_broker], topic, from_beginning=True, stop_after_idle_s=2.0))
        assert from_file and sorted(from_kafka, key=json.dumps) == sorted(from_file, key=json.dumps)

    # the simplest analytics consumer shows them readably, from the beginning, for one room
    tail = subprocess.Popen(
        [sys.executable, "-m", "quantcoach.cli", "tail", "--topic", "windows", "--from-beginning",
         "--room", "sample-interview", "--kafka", kafka_broker],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **topics},
    )  # fmt: skip
    time.sleep(6)
    tail.send_signal(signal.SIGINT)
    out, err = tail.communicate(timeout=20)
    assert tail.returncode == 0, err
    assert "sample-interview:0" in out and "Interviewer" in out and "Candidate" in out


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
    proc = quantcoach("tail", "--kafka", dead, timeout=30)
    assert proc.returncode == 1 and "error:" in proc.stderr and time.monotonic() - started < 20


def test_malformed_kafka_address_is_a_usage_error() -> None:
    proc = quantcoach("replay", str(SAMPLE), "--quiet", "--stt", "noop", "--kafka", "no-port-here")
    assert proc.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in proc.stderr
