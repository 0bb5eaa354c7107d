"""`quantcoach replay --kafka` and `quantcoach tail` against the real Kafka-protocol broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.kafka.reader import iter_records
from quantcoach.cli import main
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
