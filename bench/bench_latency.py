"""End-to-end latency in a realtime replay: the real flow (local Whisper) -> Kafka -> a consumer.

Replays a recorded session (default samples/interview) paced to the wall clock (``--speed 1`` is real
time, ``--speed 2`` twice as fast) through ``build_flow`` with the Kafka sink, to a tansu broker started
here on loopback (memory storage). A consumer in this process reads both topics and notes when each
record arrives (``time.time()`` right after ``poll`` returns it).

The clock: media time ``m`` of a track maps to wall time ``t0 + m / speed``. ``t0`` is ``time.time()``
taken right before ``bytewax.run.cli_main`` starts the flow. But each replay partition paces its track
from its own origin, the "now" it takes when Bytewax builds it, after the sinks' Kafka producers have
connected (measured: 9 to 190 ms after ``t0``). So the benchmark also reads the clock right before and
right after each partition is built: that track's ``t0`` is known to within that interval (printed,
under 1 ms), and the figures use it. The same figures from the ``t0`` taken before ``cli_main`` are
printed too; they are overstated by the partitions' start-up offset (also printed), never understated.
A chunk is handed to the flow when it would have been complete in a live room (its end), as a live
source would, so up to one chunk (``CHUNK_MS`` of media, 50 ms by default) of every latency is the
chunking itself.

(a) utterance end -> final transcript on Kafka: for each final transcript, its receive time minus
    ``t0 + end / speed``, with ``end`` the transcript's media end time: the VAD's end of speech (the end
    of the last voiced 32 ms window). It includes the VAD's 0.5 s of silence that ends an utterance, the
    chunk that carries it, whatever of the Whisper decode is left (the decode starts 0.2 s into the
    silence, ``stt.whisper``), the flow and Kafka. When the session has a script.json (the sample does),
    how far the VAD's end lies from the script's true end of speech is printed too.
(c) utterance end -> its final caption sent (lk.transcription, the publisher behind a timing transport).
(d) speech start -> the utterance's first interim caption sent (Whisper: after 0.5 s of speech, then
    every WHISPER_PARTIAL_S).
(b) window trigger -> window on Kafka: receive time of the window record minus the wall time of what
    closed it, by reason:
      length          the emitted_at of the window's last segment's transcript (adding it made the
                      window span window_s);
      speaker_change  the emitted_at of the transcript that closed it: the session's next final transcript
                      after the window's last segment, in the windowing's media order (start, participant);
      end             the end of the session's last track, ``t0 + track end / speed`` (the end window is
                      released once every track has ended and its last results are in);
      idle            never in a replay.
    It includes the time windowing holds a transcript back until every other participant's progress
    mark has passed its start (media order), which is part of what a window costs.

Warm-up before ``t0``: the Whisper model and Silero VAD are loaded and one decode is run, so the numbers
are the steady state, not the first load. The consumer fetches with ``fetch_max_wait_ms=20``.

Usage: python bench/bench_latency.py [--speed 1] [--session samples/interview]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for harness.*

import numpy as np
from bytewax.run import cli_main
from kafka import KafkaConsumer, TopicPartition

from connectors.caption_sink import CaptionSink
from connectors.captions import CaptionPublisher
from connectors.kafka.client import ensure_topics
from connectors.kafka.reader import parse_record
from connectors.kafka.sink import KafkaSink
from connectors.recording import load_session
from connectors.replay_source import ReplaySource
from flows.interview import FlowSinks, build_flow
from harness.kafka import TansuBroker
from quantcoach.settings import Settings
from quantcoach.wire import TRANSCRIPT_SCHEMA, WINDOW_SCHEMA
from stt.engines import engine_for
from stt.vad import StreamingVad, VadParams

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ("bench.latency.transcripts", "bench.latency.windows")


class TimedReplaySource(ReplaySource):
    """The replay source, noting when each partition took its pacing origin.

    A partition's ``__init__`` opens its file, then takes "now" as the wall time of media 0; the clock is
    read right before and right after building it, so the origin lies within that interval.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.origins: dict[str, tuple[float, float]] = {}  # participant identity -> (before, after)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        before = time.time()
        part = super().build_part(step_id, for_part, resume_state)
        self.origins[self._tracks[for_part][1].participant.identity] = (before, time.time())
        return part


class Consumer(threading.Thread):
    """Reads both topics from the start (partitions assigned, no group) and timestamps each record."""

    def __init__(self, servers: str) -> None:
        super().__init__(daemon=True)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.flow_done = threading.Event()
        self.error: BaseException | None = None
        self._consumer = KafkaConsumer(
            bootstrap_servers=[servers],
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            client_id="bench-latency",
        )

    def run(self) -> None:
        c = self._consumer
        try:
            tps = [TopicPartition(t, p) for t in TOPICS for p in sorted(c.partitions_for_topic(t) or ())]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            for tp in tps:
                c.position(tp)  # resolve the offsets now, not on the first poll
            self.ready.set()
            while True:
                batches = c.poll(timeout_ms=50)
                now = time.time()
                for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
                    self.received.extend((now, parse_record(m.value)) for m in batches[tp])
                if self.flow_done.is_set() and not batches:
                    ends = c.end_offsets(tps)
                    if all(c.position(tp) >= ends[tp] for tp in tps):
                        return
        except BaseException as exc:  # reported by main
            self.error = exc
            self.ready.set()
        finally:
            c.close()


class TimedCaptions:
    """A caption transport that notes when each caption would have left for the room."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, Any]] = []
        self._lock = threading.Lock()

    def send(self, room: str, session_id: str, caption: Any) -> None:
        with self._lock:
            self.sent.append((time.time(), room, caption))


def parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (numpy's default), in ms."""
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:48} {0:>4}"
    return (
        f"{name:48} {len(values):>4} {pct(values, 50):8.0f} {pct(values, 95):8.0f} "
        f"{min(values) * 1000:8.0f} {max(values) * 1000:8.0f}"
    )


def trigger_times(
    transcripts: list[dict[str, Any]], windows: list[dict[str, Any]], end_wall: float
) -> list[tuple[dict[str, Any], float | None]]:
    """Each window with the wall time of its trigger (module docstring, (b))."""
    order = sorted(
        transcripts, key=lambda t: (t["session_id"], t["start"], t["participant"], t["utterance_id"])
    )
    index = {t["utterance_id"]: i for i, t in enumerate(order)}
    out: list[tuple[dict[str, Any], float | None]] = []
    for w in windows:
        last = w["segments"][-1]
        i = index.get(last["utterance_id"])  # the segment's own transcript
        trigger: float | None = None
        if w["reason"] == "end":
            trigger = end_wall
        elif i is not None and w["reason"] == "length":
            trigger = parse_time(order[i]["emitted_at"])
        elif (
            i is not None
            and w["reason"] == "speaker_change"
            and i + 1 < len(order)
            and order[i + 1]["session_id"] == w["session_id"]
        ):
            trigger = parse_time(order[i + 1]["emitted_at"])
        out.append((w, trigger))
    return out


def vad_end_lag(session_dir: Path, transcripts: list[dict[str, Any]], roles: dict[str, str]) -> list[float]:
    """For each transcript, its end minus the script's end of the last line it covers (seconds)."""
    script_path = session_dir / "script.json"
    if not script_path.exists():
        return []
    script = json.loads(script_path.read_text())
    lags = []
    for t in transcripts:
        lines = [
            s
            for s in script
            if s["role"] == roles.get(t["participant"]) and s["start"] < t["end"] and s["end"] > t["start"]
        ]
        if lines:
            lags.append(t["end"] - max(s["end"] for s in lines))
    return lags


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speed", type=float, default=1.0, help="factor of real time (1 = realtime)")
    ap.add_argument("--session", default=str(ROOT / "samples" / "interview"), help="session directory")
    ap.add_argument("--chunk-ms", type=int, default=None, help="CHUNK_MS (default: the setting's default)")
    args = ap.parse_args()
    if not args.speed > 0:
        ap.error("--speed must be > 0")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    session = load_session(args.session)
    with TansuBroker() as broker:
        chunk = {"chunk_ms": args.chunk_ms} if args.chunk_ms else {}
        settings = Settings.from_env(
            {}, kafka_bootstrap_servers=broker.bootstrap, stt_engine="whisper", **chunk
        )
        ensure_topics(settings.kafka_servers, TOPICS, settings.kafka_partitions)
        consumer = Consumer(broker.bootstrap)
        consumer.start()
        consumer.ready.wait(30)
        if consumer.error:
            raise consumer.error

        engine = engine_for(settings)  # warm-up: model, VAD session and one decode, before t0
        StreamingVad()
        engine.transcribe(np.zeros(16_000, np.float32))

        source = TimedReplaySource([session], settings.chunk_ms, args.speed)
        captions = TimedCaptions()
        sinks = FlowSinks(
            transcripts=[KafkaSink(settings.kafka_servers, TOPICS[0])],
            windows=[KafkaSink(settings.kafka_servers, TOPICS[1])],
            captions=[CaptionSink(lambda: CaptionPublisher(captions, settings.caption_interims_per_s))],
        )
        flow = build_flow(settings, source, sinks, lambda: engine)
        t0 = time.time()
        cli_main(flow, workers_per_process=1)
        flow_wall = time.time() - t0
        consumer.flow_done.set()
        consumer.join(60)
        engine.close()
        if consumer.error:
            raise consumer.error

    received = consumer.received
    transcripts = [(at, r) for at, r in received if r["schema"] == TRANSCRIPT_SCHEMA]
    windows = [(at, r) for at, r in received if r["schema"] == WINDOW_SCHEMA]
    # a track's t0: the middle of the interval its origin lies in (error: half its width)
    origin = {who: (lo + hi) / 2 for who, (lo, hi) in source.origins.items()}
    origin_err = max(hi - lo for lo, hi in source.origins.values()) / 2
    startup = max(origin.values()) - t0

    def utterance_latencies(base: dict[str, float]) -> list[float]:
        return [at - (base[r["participant"]] + r["end"] / args.speed) for at, r in transcripts]

    def window_latencies(base: dict[str, float]) -> dict[str, list[float]]:
        end_wall = max(base[t.participant.identity] + t.end / args.speed for t in session.tracks)
        window_at = {r["window_id"]: at for at, r in windows}
        out: dict[str, list[float]] = {}
        for w, trigger in trigger_times([r for _, r in transcripts], [r for _, r in windows], end_wall):
            if trigger is not None:
                out.setdefault(w["reason"], []).append(window_at[w["window_id"]] - trigger)
        return out

    naive = dict.fromkeys(origin, t0)
    utterance, utterance_naive = utterance_latencies(origin), utterance_latencies(naive)
    by_reason, by_reason_naive = window_latencies(origin), window_latencies(naive)
    all_windows = [v for vs in by_reason.values() for v in vs]
    roles = {t.participant.identity: t.participant.role for t in session.tracks}
    lags = vad_end_lag(session.path, [r for _, r in transcripts], roles)

    print(
        f"# end-to-end latency: {session.room}, {session.duration:.1f} s of media at speed {args.speed:g} "
        f"(flow ran {flow_wall:.1f} s); Whisper {settings.whisper_threads} threads, 1 Bytewax worker; "
        f"Kafka: tansu on loopback, {settings.kafka_partitions} partitions, acks=all; "
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}"
    )
    print(
        f"# t0 per track = its replay partition's pacing origin, read around its construction: "
        f"+/- {origin_err * 1000:.3f} ms; the partitions were built {startup * 1000:.0f} ms after "
        f"the t0 taken right before cli_main (the '(t0 before cli_main)' rows include that offset)"
    )
    print(f"{'latency (ms)':48} {'n':>4} {'p50':>8} {'p95':>8} {'min':>8} {'max':>8}")
    print(summary("(a) utterance end -> final transcript on Kafka", utterance))
    print(summary("    (t0 before cli_main)", utterance_naive))
    print(summary("(b) window trigger -> window on Kafka, all", all_windows))
    for reason in sorted(by_reason):
        print(summary(f"    reason={reason}", by_reason[reason]))
    print(summary("    all (t0 before cli_main)", [v for vs in by_reason_naive.values() for v in vs]))
    if lags:
        print(
            f"# the transcript's end (the VAD's cut) minus the script's end of speech: median "
            f"{statistics.median(lags) * 1000:+.0f} ms; add it to (a) for latency from the true end."
        )
    vad = VadParams()
    print(
        f"# of (a), {vad.min_silence_s * 1000 / args.speed:.0f} ms is the VAD waiting for "
        f"{vad.min_silence_s:g} s of silence past the last voice (transcripts carry speech bounds) "
        f"and 0-{settings.chunk_ms / args.speed:.0f} ms the chunk that carries that silence; the rest is the "
        "Whisper decode (behind any interim decode already running), the flow and Kafka"
    )
    # (c), (d): the live captions (lk.transcription), by the same per-track clock
    starts = {r["utterance_id"]: r["start"] for _, r in transcripts}
    final_caption, first_interim = [], []
    seen: set[str] = set()
    for at, _room, c in captions.sent:
        segment, who = c.attributes["lk.segment_id"], c.sender_identity
        if c.attributes["lk.transcription_final"] == "true":
            final_caption.append(at - (origin[who] + c.media_s / args.speed))
        elif segment not in seen and segment in starts:
            seen.add(segment)
            first_interim.append(at - (origin[who] + starts[segment] / args.speed))
    print(summary("(c) utterance end -> its final caption sent", final_caption))
    print(summary("(d) speech start -> first interim caption sent", first_interim))
    print(f"# captions: {len(final_caption)} finals, {len(first_interim)} utterances with an interim "
          f"(WHISPER_PARTIAL_S={settings.whisper_partial_s:g})")  # fmt: skip
    early = getattr(engine, "early_stats", None)
    if early is not None:
        context = settings.whisper_min_context_s
        print(f"# early final decodes: {early['used']} became finals, {early['wasted']} were dropped or "
              f"served as interims (speech resumed); WHISPER_MIN_CONTEXT_S={context:g}")  # fmt: skip
    missing = len(windows) - len(all_windows)
    if missing:
        print(f"# {missing} window(s) without an identifiable trigger were left out")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
