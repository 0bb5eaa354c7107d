"""Replay decode at ``--speed max``: our Whisper engine (per-utterance and throughput modes) against
faster-whisper's own ``BatchedInferencePipeline`` on each track, same tiny.en model, same machine, same run.

Our path is driven as the flow drives it: the track's 16 kHz audio pushed through a stream in 200 ms
chunks, polled between chunks, then drained. The batched pipeline gets the whole track at once (its own
VAD, chunks of up to 30 s, batch_size 8). All decode greedily (beam 1, temperature 0). Each variant
runs ``--repeats`` times, interleaved, and the median wall time is reported with WER against
``script.json``. With ``--vocab`` every variant also runs primed with ``stt.vocabulary.QUANT_TERMS``
(faster-whisper ``hotwords``). The anchor is stock faster-whisper (its own ``WhisperModel``), whatever
model ``WhisperEngine`` builds. The CPU seconds other processes took during the run are printed: on a
shared 2-core machine they move wall times by more than the differences measured.

Usage: python bench/bench_replay_throughput.py [SESSION_DIR] [--repeats 3] [--threads N] [--vocab]
       [--no-per-utterance] [--batch-windows N] [--window-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np
import soxr

from connectors.recording import TrackReader, load_session
from quantcoach.settings import Settings
from stt.pcm import STT_SAMPLE_RATE, to_float32, to_int16
from stt.vocabulary import QUANT_TERMS, hotwords
from stt.whisper import WhisperEngine

CHUNK = STT_SAMPLE_RATE // 5  # 200 ms, as the flow pushes


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " "))).strip()


def run_stream(engine: WhisperEngine, key: str, pcm: np.ndarray) -> str:
    stream = engine.stream(key)
    texts: list[str] = []
    for i in range(0, len(pcm), CHUNK):
        stream.push_audio(pcm[i : i + CHUNK])
        texts.extend(e.text for e in stream.poll() if e.kind == "final")
    stream.end_input()
    while not stream.done:
        texts.extend(e.text for e in stream.poll() if e.kind == "final")
        time.sleep(0.001)
    texts.extend(e.text for e in stream.poll() if e.kind == "final")
    return " ".join(texts)


def run_batched(pipeline, pcm: np.ndarray, hot: str | None) -> str:
    segments, _ = pipeline.transcribe(
        to_float32(pcm), language="en", beam_size=1, temperature=0.0, batch_size=8, hotwords=hot
    )
    return " ".join(s.text.strip() for s in segments)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("session", nargs="?", default=str(Path(__file__).parents[1] / "samples" / "interview"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default WHISPER_THREADS)")
    ap.add_argument("--vocab", action="store_true", help="also run every variant with QUANT_TERMS")
    ap.add_argument("--no-per-utterance", action="store_true", help="skip the per-utterance variant (slow)")
    ap.add_argument("--batch-windows", type=int, default=0, help="throughput batch_windows (engine default)")
    ap.add_argument("--window-s", type=float, default=0.0, help="throughput window_s (engine default)")
    args = ap.parse_args()
    settings = Settings.from_env()
    threads = args.threads or settings.whisper_threads
    session = load_session(args.session)
    tracks: list[tuple[str, np.ndarray]] = []
    for track in session.tracks:
        x = to_float32(TrackReader(track).read(track.frames)).mean(axis=1)
        pcm = to_int16(soxr.resample(x, track.sample_rate, STT_SAMPLE_RATE))
        tracks.append((track.participant.role, pcm))
    script_file = Path(args.session) / "script.json"
    script = json.loads(script_file.read_text()) if script_file.exists() else None

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    vocabs = {"": None, "+vocab": hotwords(QUANT_TERMS)} if args.vocab else {"": None}
    variants: dict[str, Callable[[str, np.ndarray], str]] = {}
    engines: list[WhisperEngine] = []
    # the anchor stays stock: faster-whisper's own model and pipeline, whatever WhisperEngine builds
    stock = WhisperModel(
        str(settings.whisper_model_dir), device="cpu", compute_type="int8", cpu_threads=threads
    )
    for suffix, hot in vocabs.items():
        per = WhisperEngine(settings.whisper_model_dir, cpu_threads=threads, hotwords=hot)
        packing = {"batch_windows": args.batch_windows or None, "window_s": args.window_s or None}
        thr = WhisperEngine(
            settings.whisper_model_dir,
            cpu_threads=threads,
            hotwords=hot,
            mode="throughput",
            **{k: v for k, v in packing.items() if v is not None},
        )
        pipe = BatchedInferencePipeline(stock)
        engines += [per, thr]
        if not args.no_per_utterance:
            variants[f"per-utterance{suffix}"] = lambda k, p, e=per: run_stream(e, k, p)
        variants[f"throughput{suffix}"] = lambda k, p, e=thr: run_stream(e, k, p)
        variants[f"batched{suffix}"] = lambda k, p, pipe=pipe, hot=hot: run_batched(pipe, p, hot)
    for run in variants.values():  # warm-up: first decodes pay one-off allocation
        run("warm-up", tracks[0][1][: 3 * STT_SAMPLE_RATE])

    walls: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}  # CPU seconds, all threads: less moved by other load
    heard: dict[tuple[str, str], str] = {}
    names = list(variants)
    busy0, own0 = machine_cpu_s(), time.process_time()
    for rep in range(args.repeats):
        # rotate, so that no variant always runs first
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for role, pcm in tracks:
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                text = variants[name](role, pcm)
                walls.setdefault((name, role), []).append(time.perf_counter() - t0)
                cpus.setdefault((name, role), []).append(time.process_time() - c0)
                heard[(name, role)] = text
    others = max(machine_cpu_s() - busy0 - (time.process_time() - own0), 0.0)  # tick-rounded: about
    for e in engines:
        e.close()

    audio_s = sum(len(p) for _, p in tracks) / STT_SAMPLE_RATE
    print(
        f"# replay throughput: {args.session} ({len(tracks)} tracks, {audio_s:.1f} audio s), tiny.en int8, "
        f"{threads} threads, median of {args.repeats}; throughput windows of <= {thr.window_s:g} s, "
        f"{thr.batch_windows} a batch; other processes took {others:.0f} CPU s meanwhile"
    )
    print(f"{'variant':22} {'track':12} {'wall s':>7} {'cpu s':>7} {'WER':>6}  {'x batched':>9} {'cpu x':>6}")
    for name in names:
        batched = "batched" + name[name.index("+") :] if "+" in name else "batched"
        total = total_b = cpu_total = cpu_total_b = 0.0
        errors = words = 0
        for role, _ in tracks:
            wall, wall_b = statistics.median(walls[(name, role)]), statistics.median(walls[(batched, role)])
            cpu, cpu_b = statistics.median(cpus[(name, role)]), statistics.median(cpus[(batched, role)])
            total += wall
            total_b += wall_b
            cpu_total += cpu
            cpu_total_b += cpu_b
            e, n = word_errors(script, role, heard[(name, role)])
            errors, words = errors + e, words + n
            wer = e / max(n, 1)
            print(
                f"{name:22} {role:12} {wall:7.3f} {cpu:7.3f} {wer:6.3f}  "
                f"{wall / wall_b:9.2f} {cpu / cpu_b:6.2f}"
            )
        wer = errors / max(words, 1)
        print(
            f"{name:22} {'all':12} {total:7.3f} {cpu_total:7.3f} {wer:6.3f}  {total / total_b:9.2f} "
            f"{cpu_total / cpu_total_b:6.2f}"
        )
    return 0


def machine_cpu_s() -> float:
    """CPU seconds all processes have used (Linux ``/proc/stat``; 0 where there is none)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields[:8]]  # user .. steal (guest time is already in user)
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def word_errors(script: list[dict] | None, role: str, heard: str) -> tuple[int, int]:
    """(errors, reference words) of ``role``'s track against the script (WER = their ratio)."""
    if script is None:
        return 0, 0
    said = " ".join(normalise(t["text"]) for t in script if t["role"] == role)
    out = jiwer.process_words(said, normalise(heard) or "<nothing>")
    return out.substitutions + out.deletions + out.insertions, len(said.split())


if __name__ == "__main__":
    sys.exit(main())
