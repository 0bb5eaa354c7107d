"""Records per second through the Kafka sink to a local tansu broker (started here, memory storage).

Measures, for the v2 contract's records (every one of a session, keyed by room): transcripts (~0.5 KB),
windows (~3 KB), session events (~0.3 KB) and metrics records (~0.4 KB):
  - write_batch directly, at several batch sizes: each call waits for every ack (acks=all), so small
    batches are bound by the round trip, large ones by encoding and the broker;
  - a whole Bytewax flow (TestingSource -> KafkaSink), where Bytewax chooses the batches.

Usage: python bench/bench_kafka_sink.py [--records 50000] [--batch-sizes 1,10,100,1000] [--servers H:P]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for harness.*

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.kafka.sink import KafkaSink
from harness.kafka import TansuBroker
from operators.metrics import SessionMetrics
from quantcoach.records import (
    EvaluationWindow,
    Participant,
    Segment,
    SessionEvent,
    Transcript,
    dumps,
    utc_now_iso,
)
from quantcoach.wire import validate

ROOMS = [f"mock-{i}" for i in range(32)]
SESSIONS = {room: f"RM_{i:04d}benchSession" for i, room in enumerate(ROOMS)}
STARTED_AT = "2026-12-01T14:00:00.000Z"
SENTENCE = "So for the second question, walk me through how you would price an American put on a tree. "


def room_of(i: int) -> str:
    return ROOMS[i % len(ROOMS)]


def roster(room: str) -> tuple[Participant, ...]:
    sid = SESSIONS[room]
    return (
        Participant(room, "iv-7", "Morgan", "interviewer", session_id=sid, started_at=STARTED_AT),
        Participant(room, "cand-3", "Riley", "candidate", session_id=sid, started_at=STARTED_AT),
    )


def transcripts(n: int) -> list[dict[str, Any]]:
    return [
        Transcript(
            room=room_of(i),
            participant="cand-3",
            speaker="candidate",
            name="Riley",
            utterance_id=f"{SESSIONS[room_of(i)]}:cand-3:{i}",
            text=SENTENCE * 2,
            is_final=True,
            start=i * 3.0,
            end=i * 3.0 + 2.5,
            engine="whisper",
            session_id=SESSIONS[room_of(i)],
            language="en",
            confidence=0.87,
        ).to_record()
        for i in range(n)
    ]


def windows(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        room, sid = room_of(i), SESSIONS[room_of(i)]
        segs = tuple(
            Segment(
                "iv-7" if k % 2 else "cand-3",
                "interviewer" if k % 2 else "candidate",
                "",
                SENTENCE,
                k,
                k + 2,
                utterance_id=f"{sid}:{'iv-7' if k % 2 else 'cand-3'}:{i * 8 + k}",
                context=k < 2,  # the previous window's tail
            )
            for k in range(8)
        )
        window = EvaluationWindow(
            room=room, seq=i, reason="length", segments=segs, session_id=sid,
            participants=roster(room), started_at=STARTED_AT,
        )  # fmt: skip
        out.append(window.to_record())
    return out


def sessions(n: int) -> list[dict[str, Any]]:
    return [
        SessionEvent(
            room_of(i),
            SESSIONS[room_of(i)],
            ("started", "ended")[i // len(ROOMS) % 2],
            roster(room_of(i)),
            STARTED_AT,
        ).to_record()
        for i in range(n)
    ]


def metrics(n: int) -> list[dict[str, Any]]:
    out = []
    tally = {room: SessionMetrics() for room in ROOMS}
    for i in range(n):
        room = room_of(i)
        m = tally[room]
        who = ("iv-7", "Morgan", "interviewer") if i % 2 else ("cand-3", "Riley", "candidate")
        m.add(*who, SENTENCE, i * 3.0, i * 3.0 + 2.5)
        out.append(m.record(room, SESSIONS[room], final=False, emitted_at=utc_now_iso()))
    return out


def crc_impl() -> str:
    """kafka-python checksums every record batch; pure-Python CRC32C is its main cost on bigger records."""
    from kafka.record import util

    if getattr(util, "crc32c_c", None) is not None:
        return "CRC32C: C extension (crc32c package)"
    return "CRC32C: pure Python (pip install crc32c: ~3x on windows)"


@contextlib.contextmanager
def broker(servers: str | None) -> Iterator[str]:
    if servers:
        yield servers
        return
    with TansuBroker() as b:
        yield b.bootstrap


def bench_write_batch(servers: str, records: list[dict[str, Any]], batch: int) -> float:
    sink = KafkaSink([servers], f"bench.{uuid.uuid4().hex[:8]}", partitions=6)
    part = sink.build("bench", 0, 1)
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        part.write_batch(records[i : i + batch])
    elapsed = time.perf_counter() - started
    part.close()
    return len(records) / elapsed


def bench_flow(servers: str, records: list[dict[str, Any]], source_batch: int) -> float:
    flow = Dataflow("bench_kafka")
    items = op.input("in", flow, TestingSource(records, batch_size=source_batch))
    op.output("out", items, KafkaSink([servers], f"bench.{uuid.uuid4().hex[:8]}", partitions=6))
    started = time.perf_counter()
    run_main(flow)
    return len(records) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-sizes", default="1,10,100,1000")
    parser.add_argument("--servers", help="use this broker instead of starting tansu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    with broker(args.servers) as servers:
        print(f"broker {servers}; {args.records} records per run; acks=all, idempotent; {crc_impl()}")
        kinds = (
            ("transcript", transcripts),
            ("window", windows),
            ("session", sessions),
            ("metrics", metrics),
        )
        for kind, make in kinds:
            records = make(args.records)
            for record in records[:100]:  # what a consumer would accept (quantcoach.wire)
                validate(record)
            size = sum(len(dumps(r).encode()) for r in records[:100]) / 100
            print(f"\n{kind} records (~{size:.0f} B each)")
            for batch in batch_sizes:
                n = min(len(records), max(batch * 20, 2000)) if batch < 100 else len(records)
                rate = bench_write_batch(servers, records[:n], batch)
                print(f"  write_batch({batch:>5}) {rate:>10,.0f} records/s  ({n} records)")
            for source_batch in (100, 1000):
                rate = bench_flow(servers, records, source_batch)
                print(f"  bytewax flow (source batch {source_batch:>4}) {rate:>10,.0f} records/s")


if __name__ == "__main__":
    main()
