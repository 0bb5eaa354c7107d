"""How many concurrent live participants one core holds with the local Whisper engine.

N participant streams are fed in real time (a ``CHUNK_MS`` chunk each every ``CHUNK_MS``, as a live
room's agent receives them) into one ``WhisperEngine`` (per-utterance mode, ``cpu_threads=1``), with the whole
process pinned to one CPU, so VAD and Whisper share that core as they would on a worker with one core.
Each stream plays a sample track rotated by its own offset, so utterances end at different times.
Measured per N: latency from the end of speech (the moment the speech's last sample was fed) to its
final coming out of ``poll``, the most finals ever queued, partials run and skipped (``--interim-s``),
and how far the feeding fell behind real time. N holds if the p95 latency stays under ``--limit-s``
and the feed kept real time; the run stops at the first N that does not hold. Latency is wall time, so
other load on the same CPU lowers it; the CPU the process used per participant (``cpu/N``, in cores)
does not depend on that, and gives a second figure: how many participants fit in 80 % of the core.

Usage: python bench/bench_live_capacity.py [--ns 1,2,4,6,8,10,12] [--seconds 40] [--interim-s 1.0]
                                           [--threads 1] [--cpu 0] [--limit-s 3.0] [--keep-going]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soxr

from connectors.recording import TrackReader, load_session
from quantcoach.settings import Settings
from stt.pcm import STT_SAMPLE_RATE, to_float32, to_int16
from stt.whisper import WhisperEngine

CHUNK = STT_SAMPLE_RATE * Settings.from_env({}).chunk_ms // 1000
TICK_S = CHUNK / STT_SAMPLE_RATE
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "interview"


def tracks() -> list[np.ndarray]:
    out = []
    for track in load_session(SAMPLE).tracks:
        x = to_float32(TrackReader(track).read(track.frames)).mean(axis=1)
        out.append(to_int16(soxr.resample(x, track.sample_rate, STT_SAMPLE_RATE)))
    return out


def run(engine: WhisperEngine, n: int, seconds: float, audio: list[np.ndarray]) -> dict[str, float]:
    length = round(seconds / TICK_S) * CHUNK
    feeds = []
    for i in range(n):
        base = np.tile(audio[i % len(audio)], 1 + length // len(audio[i % len(audio)]) + 1)
        shift = (i * len(audio[0])) // max(n, 1)  # stagger the streams' speech
        feeds.append(base[shift : shift + length])
    streams = [engine.stream(f"room/p{i}") for i in range(n)]
    fed_at: list[float] = []  # wall time chunk k was pushed (into every stream)
    latencies: list[float] = []
    max_queued = 0
    start = time.perf_counter()
    cpu0 = time.process_time()

    def collect(now: float) -> None:
        for s in streams:
            for e in s.poll():
                if e.kind == "final":
                    k = min(int(e.end * STT_SAMPLE_RATE) // CHUNK, len(fed_at) - 1)
                    latencies.append(now - fed_at[k])

    for k in range(length // CHUNK):
        due = start + k * TICK_S
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.005))
            collect(time.perf_counter())
        fed_at.append(time.perf_counter())
        for s, feed in zip(streams, feeds, strict=True):
            s.push_audio(feed[k * CHUNK : (k + 1) * CHUNK])
        collect(time.perf_counter())
        max_queued = max(max_queued, engine.scheduler.queued()[0])
    lag = fed_at[-1] - (start + (len(fed_at) - 1) * TICK_S)
    for s in streams:
        s.end_input()
    while not all(s.done for s in streams):
        collect(time.perf_counter())
        time.sleep(0.005)
    wall = time.perf_counter() - start
    return {
        "finals": len(latencies),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": float(np.percentile(latencies, 95)) if latencies else float("nan"),
        "max": max(latencies, default=float("nan")),
        "queued": max_queued,
        "lag": lag,
        "cpu": (time.process_time() - cpu0) / wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="1,2,4,6,8,10,12", help="participant counts to try")
    ap.add_argument("--seconds", type=float, default=40.0, help="audio per participant per run")
    ap.add_argument("--interim-s", type=float, default=None, help="also decode partials this often")
    ap.add_argument("--threads", type=int, default=1, help="Whisper CPU threads")
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last one)")
    ap.add_argument("--limit-s", type=float, default=3.0, help="p95 end-of-speech -> final latency")
    ap.add_argument("--keep-going", action="store_true", help="try every N, even after one fails")
    args = ap.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # before any thread starts: model and VAD threads inherit it
    settings = Settings.from_env()
    engine = WhisperEngine(settings.whisper_model_dir, cpu_threads=args.threads, interim_s=args.interim_s)
    audio = tracks()
    run(engine, 1, 4.0, audio)  # warm-up
    print(
        f"# live capacity: tiny.en int8, {args.threads} Whisper thread(s), pinned to CPU {cpu}, "
        f"{args.seconds:.0f} s per participant, interim_s {args.interim_s}, limit p95 {args.limit_s} s"
    )
    print(
        f"{'N':>3} {'finals':>6} {'p50 s':>6} {'p95 s':>6} {'max s':>6} {'queued':>6} {'lag s':>6} "
        f"{'cores':>5} {'partials run/skipped':>21}  holds"
    )
    held = 0
    per_participant: list[float] = []
    for n in (int(x) for x in args.ns.split(",")):
        before = engine.scheduler.stats.partials_done, engine.scheduler.stats.partials_skipped
        r = run(engine, n, args.seconds, audio)
        done = engine.scheduler.stats.partials_done - before[0]
        skipped = engine.scheduler.stats.partials_skipped - before[1]
        ok = r["p95"] <= args.limit_s and r["lag"] < 0.5
        held = n if ok else held
        per_participant.append(r["cpu"] / n)
        print(
            f"{n:3d} {r['finals']:6.0f} {r['p50']:6.2f} {r['p95']:6.2f} {r['max']:6.2f} {r['queued']:6.0f} "
            f"{r['lag']:6.2f} {r['cpu']:5.2f} {f'{done}/{skipped}':>21}  {'yes' if ok else 'no'}",
            flush=True,
        )
        if not ok and not args.keep_going:
            break
    print(f"one core holds {held} live participant(s) at p95 <= {args.limit_s} s (wall-clock latency)")
    cost = statistics.median(per_participant)
    print(f"CPU: {cost:.3f} cores per participant -> {int(0.8 / cost)} participant(s) in 80 % of one core")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
