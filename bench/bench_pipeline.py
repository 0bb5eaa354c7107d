"""Audio pipeline throughput with STT replaced by a no-op engine, against raw soxr in the same run.

Prints audio-seconds per wall second and per CPU second for: soxr one-shot over whole files,
soxr streaming in 200 ms chunks, and the full flow (replay source -> resample -> transcribe(noop) ->
windowing) with 1 and 2 workers. Usage: python bench/bench_pipeline.py [--minutes 5] [--sessions 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main

from connectors.recording import load_session
from connectors.replay_source import ReplaySource
from flows.interview import FlowSinks, build_flow
from quantcoach.settings import Settings
from stt.noop import NoopEngine
from stt.pcm import STT_SAMPLE_RATE, to_float32

RATE, CHANNELS = 48_000, 2


def make_sessions(root: Path, sessions: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    dirs = []
    for s in range(sessions):
        d = root / f"bench-{s}"
        d.mkdir()
        people = []
        for role, ident in (("interviewer", "iv"), ("candidate", "cand")):
            t = np.arange(int(seconds * RATE)) / RATE
            x = 0.2 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((len(t), CHANNELS))
            sf.write(d / f"{role}.wav", x.astype(np.float32), RATE, subtype="PCM_16")
            people.append({"identity": ident, "name": ident, "role": role, "file": f"{role}.wav"})
        (d / "session.json").write_text(json.dumps({"room": f"bench-{s}", "participants": people}))
        dirs.append(d)
    return dirs


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - w0, cpu() - c0


def soxr_oneshot(files: list[Path]) -> None:
    for f in files:
        x, r = sf.read(f, dtype="float32")
        soxr.resample(x.mean(axis=1), r, STT_SAMPLE_RATE)


def soxr_stream(files: list[Path]) -> None:
    for f in files:
        x, r = sf.read(f, dtype="int16")
        stream = soxr.ResampleStream(r, STT_SAMPLE_RATE, 1, dtype="float32")
        step = r // 5
        for i in range(0, len(x), step):
            stream.resample_chunk(to_float32(x[i : i + step]).mean(axis=1))
        stream.resample_chunk(np.zeros(0, np.float32), last=True)


class _Drop(StatelessSinkPartition):
    def write_batch(self, items: list) -> None:
        pass


class NullSink(DynamicSink):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Drop:
        return _Drop()


def flow(dirs: list[Path], workers: int) -> None:
    sessions = [load_session(d) for d in dirs]
    engine = NoopEngine()
    sinks = FlowSinks(transcripts=[NullSink()], windows=[NullSink()])
    f = build_flow(Settings.from_env({}), ReplaySource(sessions, 200, None), sinks, lambda: engine)
    cli_main(f, workers_per_process=workers)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0, help="length of each track")
    ap.add_argument("--sessions", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = make_sessions(Path(tmp), args.sessions, args.minutes * 60)
        files = [f for d in dirs for f in sorted(d.glob("*.wav"))]
        audio_s = len(files) * args.minutes * 60
        print(
            f"# pipeline benchmark: {len(files)} tracks x {args.minutes:g} min at {RATE} Hz {CHANNELS} ch "
            f"= {audio_s:.0f} audio s; {os.cpu_count()} CPUs; python {sys.version.split()[0]}"
        )
        rows = [
            ("soxr one-shot (whole files)", timed(lambda: soxr_oneshot(files))),
            ("soxr stream, 200 ms chunks", timed(lambda: soxr_stream(files))),
            ("flow, noop STT, 1 worker", timed(lambda: flow(dirs, 1))),
            ("flow, noop STT, 2 workers", timed(lambda: flow(dirs, 2))),
        ]
        base = rows[0][1][1]
        print(
            f"{'what':32} {'wall s':>8} {'cpu s':>8} {'audio s/wall s':>15} {'audio s/cpu s':>14}"
            f" {'vs soxr (cpu)':>13}"
        )
        for name, (wall, cpu_s) in rows:
            print(
                f"{name:32} {wall:8.2f} {cpu_s:8.2f} {audio_s / wall:15.0f} {audio_s / cpu_s:14.0f} "
                f"{base / cpu_s:12.0%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
