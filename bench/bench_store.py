"""The transcript store: records/s from Kafka into SQLite and PostgreSQL, and store-to-SSE-client delay.

1. Throughput: v2 transcripts (~0.5 KB), windows (~3 KB, one per 10 transcripts) and metrics (one per
   window, each replacing its session's last) of 32 sessions are produced to a local tansu broker
   (started here, memory storage), then ``StoreJob`` (jobs/store.py: poll up to 1000 records, upsert
   them in one transaction, commit the offsets) consumes them into the store;
   records/s is counted from the job's start to the last record stored, for SQLite (a tmp file, WAL) and
   PostgreSQL (a server started here on a free loopback port from Debian's ``postgresql`` binaries).
   ``Store.upsert`` alone (same batches, no Kafka) is printed beside it: the database's share.
2. Delay: the API runs under gunicorn (``run_gunicorn``, gthread, default SSE timings: poll every
   0.25 s); one SSE client follows a session while this process commits records into the store, one at a
   time at random intervals, as the store job would from its own process; the delay of each record is
   its event's arrival at the client minus the return of the upsert that committed it (same clock).

Usage: python bench/bench_store.py [--records 20000] [--latency-records 300] [--poll-s 0.25]
                                   [--no-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for harness.*

from kafka import KafkaProducer

from connectors.kafka.client import ensure_topics
from connectors.store import Store
from harness.gunicorn import GunicornServer, SSEClient
from harness.kafka import TansuBroker
from harness.postgres import postgres_server
from jobs.store import StoreJob
from web.transcripts import SSE_DEFAULTS

SENTENCE = "So for the second question, walk me through how you would price an American put on a tree. "


def session_of(room: str) -> str:
    return f"S_{room}"


def transcript(room: str, i: int) -> dict[str, Any]:
    sid = session_of(room)
    return {
        "schema": "quantcoach.transcript/2",
        "room": room,
        "session_id": sid,
        "participant": "cand-3",
        "speaker": "candidate",
        "name": "Riley",
        "utterance_id": f"{sid}:cand-3:{i}",
        "text": SENTENCE * 2,
        "is_final": True,
        "start": i * 3.0,
        "end": i * 3.0 + 2.5,
        "language": "en",
        "confidence": 0.93,
        "engine": "w",
        "emitted_at": "2026-01-02T03:04:05.000Z",
    }


def window(room: str, seq: int) -> dict[str, Any]:
    sid = session_of(room)
    segs = [
        {
            "utterance_id": f"{sid}:{'iv-7' if k % 2 else 'cand-3'}:{seq * 8 + k}",
            "participant": "iv-7" if k % 2 else "cand-3",
            "speaker": "interviewer" if k % 2 else "candidate",
            "name": "",
            "text": SENTENCE,
            "start": float(k),
            "end": k + 2.0,
            "context": k < 2,
        }
        for k in range(8)
    ]
    return {
        "schema": "quantcoach.window/2",
        "room": room,
        "session_id": sid,
        "window_id": f"{sid}:{seq}",
        "seq": seq,
        "start": 0.0,
        "end": 9.0,
        "reason": "length",
        "participants": [
            {"identity": "iv-7", "name": "", "role": "interviewer"},
            {"identity": "cand-3", "name": "Riley", "role": "candidate"},
        ],
        "started_at": None,
        "segments": segs,
        "text": "\n".join(f"{s['speaker'].capitalize()}: {s['text']}" for s in segs),
        "emitted_at": "2026-01-02T03:04:06.000Z",
    }


def metrics(room: str, seq: int) -> dict[str, Any]:
    """The session's metrics as its window ``seq`` closed (each one newer: it replaces the last)."""
    speaker = {"identity": "cand-3", "name": "Riley", "role": "candidate", "talk_s": seq * 2.5, "turns": seq}
    speaker |= {"words": seq * 30, "wpm": 140.0, "longest_turn_s": 2.5, "questions": 0, "fillers": 1}
    speaker |= {"response_latency_s": 0.8, "interruptions": 0}
    return {
        "schema": "quantcoach.metrics/1",
        "room": room,
        "session_id": session_of(room),
        "final": False,
        "media_s": seq * 30.0,
        "speakers": [speaker],
        "longest_silence_s": 1.2,
        "overlaps": 0,
        "speaker_changes": seq,
        "emitted_at": "2026-01-02T03:04:07.000Z",
    }


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def produce(servers: str, topics: tuple[str, str, str], n: int) -> int:
    """n transcripts, n/10 windows and as many metrics over 32 rooms (one session each); returns how
    many records were produced."""
    producer = KafkaProducer(bootstrap_servers=[servers], acks="all", linger_ms=5, batch_size=256 * 1024)
    count = 0
    for i in range(n):
        room = f"mock-{i % 32}"
        producer.send(topics[0], key=room.encode(), value=dumps(transcript(room, i)).encode())
        count += 1
        if i % 10 == 9:
            producer.send(topics[1], key=room.encode(), value=dumps(window(room, i // 10)).encode())
            producer.send(topics[2], key=room.encode(), value=dumps(metrics(room, i // 10)).encode())
            count += 2
    producer.flush()
    producer.close()
    return count


def bench_store_job(servers: str, topics: tuple[str, str, str], total: int, url: str) -> tuple[float, int]:
    """Records/s of StoreJob from Kafka into the database at ``url``, and its batch count."""
    store = Store(url)
    job = StoreJob(
        store,
        [servers],
        topics,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        from_beginning=True,
        partitions=[0],
    )
    started = time.perf_counter()
    runner = threading.Thread(target=job.run, daemon=True)
    runner.start()
    while job.stats.stored + job.stats.duplicates < total:
        if not runner.is_alive():
            raise RuntimeError(f"store job ended early: {job.stats}")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    job.stop()
    runner.join(timeout=10)
    assert job.stats.stored == total and job.stats.bad == 0, job.stats
    store.close()
    return total / elapsed, job.stats.batches


def bench_upsert(url: str, n: int, batch: int = 1000) -> float:
    """Records/s of Store.upsert alone (no Kafka), in batches like the job's: the database's share."""
    store = Store(url)
    records = [transcript(f"upsert-{i % 32}", i) for i in range(n)]
    started = time.perf_counter()
    for i in range(0, n, batch):
        store.upsert(records[i : i + batch])
    elapsed = time.perf_counter() - started
    store.close()
    return n / elapsed


def bench_sse_delay(url: str, n: int, poll_s: float, workdir: Path) -> list[float]:
    """Delay (s) from each record's commit to its event at a connected SSE client under gunicorn."""
    writer = Store(url)
    room = f"bench-sse-{uuid.uuid4().hex[:8]}"
    writer.upsert([transcript(room, 0)])  # the session exists before the client connects (else 404)
    config = {**SSE_DEFAULTS, "SSE_POLL_S": poll_s, "SSE_MAX_S": 600.0}
    server = GunicornServer(url, workdir, threads=4, config=config)
    committed: dict[str, float] = {}
    arrived: dict[str, float] = {}
    try:
        with SSEClient(f"{server.base}/sessions/{session_of(room)}/events", read_timeout_s=30) as sse:
            sse.events(1)  # the backlog: the stream is live from here

            def read() -> None:
                for block in sse.events(n, within_s=n * 0.1 + 30):
                    arrived[block.json()["utterance_id"]] = block.at

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            rng = random.Random(7)
            for i in range(1, n + 1):
                record = transcript(room, i)
                writer.upsert([record])
                committed[record["utterance_id"]] = time.monotonic()
                time.sleep(rng.uniform(0.0, 0.03))  # land at random phases of the poll
            reader.join(timeout=30)
    finally:
        server.stop()
        writer.close()
    if len(arrived) != n:
        raise RuntimeError(f"{len(arrived)} of {n} events arrived")
    return [arrived[k] - committed[k] for k in committed]


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if p < 100 else max(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000, help="transcripts produced (plus 1/10 windows)")
    ap.add_argument("--latency-records", type=int, default=300)
    ap.add_argument("--poll-s", type=float, default=SSE_DEFAULTS["SSE_POLL_S"], help="SSE_POLL_S")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qc-bench-store-")))
        backends = {"sqlite": f"sqlite:///{workdir}/store.db"}
        if not args.no_postgres:
            backends["postgresql"] = stack.enter_context(postgres_server())

        broker = stack.enter_context(TansuBroker())
        topics = ("bench.transcripts", "bench.windows", "bench.metrics")
        ensure_topics([broker.bootstrap], topics, partitions=1)
        t0 = time.perf_counter()
        total = produce(broker.bootstrap, topics, args.records)
        print(
            f"Kafka -> store (StoreJob, 1 partition per topic, tansu memory storage): {total} records "
            f"({args.records} transcripts ~{len(dumps(transcript('mock-0', 0)))} B, "
            f"{(total - args.records) // 2} windows ~{len(dumps(window('mock-0', 0)))} B and as many "
            f"metrics ~{len(dumps(metrics('mock-0', 1)))} B), "
            f"produced in {time.perf_counter() - t0:.1f} s"
        )
        for name, url in backends.items():
            rate, batches = bench_store_job(broker.bootstrap, topics, total, url)
            alone = bench_upsert(url, args.records)
            print(
                f"  {name:<10} {rate:>9,.0f} records/s  ({batches} batches; Store.upsert alone, "
                f"batches of 1000: {alone:,.0f} records/s)"
            )

        print(
            f"\nstore commit -> SSE event at a connected client (gunicorn gthread, SSE_POLL_S={args.poll_s}, "
            f"{args.latency_records} records)"
        )
        for name, url in backends.items():
            delays = [d * 1000 for d in bench_sse_delay(url, args.latency_records, args.poll_s, workdir)]
            print(
                f"  {name:<10} p50 {pct(delays, 50):6.1f} ms   p90 {pct(delays, 90):6.1f} ms   "
                f"p99 {pct(delays, 99):6.1f} ms   max {max(delays):6.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
