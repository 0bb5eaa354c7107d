"""Records per second through the Kafka sink to a local tansu broker (started here, memory storage).

Measures, for transcript records (~0.3 KB) and window records (~1.5 KB):
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.kafka_broker

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.kafka.sink import KafkaSink
from quantcoach.records import EvaluationWindow, Segment, Transcript, dumps
from tests.kafka_broker import TansuBroker

ROOMS = [f"mock-{i}" for i in range(32)]
SENTENCE = "So for the second question, walk me through how you would price an American put on a tree. "


def transcripts(n: int) -> list[dict[str, Any]]:
    return [
        Transcript(
            room=ROOMS[i % len(ROOMS)],
            participant="cand-3",
            speaker="candidate",
            name="Riley",
            utterance_id=f"u{i}",
            text=SENTENCE * 2,
            is_final=True,
            start=i * 3.0,
            end=i * 3.0 + 2.5,
            engine="whisper",
        ).to_record()
        for i in range(n)
    ]


def windows(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        segs = tuple(
            Segment(
                "iv-7" if k % 2 else "cand-3", "interviewer" if k % 2 else "candidate", "", SENTENCE, k, k + 2
            )
            for k in range(8)
        )
        out.append(
            EvaluationWindow(room=ROOMS[i % len(ROOMS)], seq=i, reason="length", segments=segs).to_record()
        )
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
        for kind, make in (("transcript", transcripts), ("window", windows)):
            records = make(args.records)
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
