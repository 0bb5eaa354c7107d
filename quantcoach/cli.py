"""The ``quantcoach`` command: replay, flow (live), web, tail, store.

The only module of ``quantcoach/`` that imports flows, connectors and web: it wires them together.
Bad input ends with a one-line ``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from quantcoach.settings import Settings, SettingsError

log = logging.getLogger("quantcoach")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        _setup_logging(settings.log_level)
        return int(args.run(args, settings) or 0)
    except (UsageError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # a line per utterance otherwise
    logging.getLogger("livekit").setLevel(logging.WARNING)  # the SDK logs every signalling step


# --- replay ---------------------------------------------------------------------------------------------
def _speed(value: str) -> float | None:
    if value == "max":
        return None
    if value == "realtime":
        return 1.0
    try:
        factor = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be max, realtime or a positive factor such as 4") from None
    if not math.isfinite(factor) or factor <= 0:
        raise argparse.ArgumentTypeError("must be max, realtime or a positive factor such as 4")
    return factor


def _positive(kind: type) -> Any:
    def parse(value: str) -> Any:
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}") from None
        if not (isinstance(v, int) or math.isfinite(v)) or v <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}")
        return v

    return parse


def _non_negative_float(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number >= 0") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError("must be a number >= 0")
    return v


def expand_sessions(paths: list[str]) -> list[Path]:
    """Session directories from the arguments; a folder holding session folders expands to them."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        subs = sorted(d for d in p.iterdir() if d.is_dir()) if p.is_dir() else []
        is_session = (p / "session.json").exists() or any(p.glob("*.wav")) if p.is_dir() else False
        if p.is_dir() and not is_session and any((d / "session.json").exists() for d in subs):
            out.extend(d for d in subs if (d / "session.json").exists())
        else:
            out.append(p)
    return out


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from bytewax.run import cli_main

    from connectors.jsonl_sink import JsonlSink
    from connectors.recording import SessionError, load_session
    from connectors.replay_source import ReplaySource
    from connectors.stt import engine_for
    from connectors.stt.protocol import SttError
    from connectors.terminal_sink import TerminalSink, TerminalView
    from flows.interview import FlowSinks, build_flow

    overrides = {
        k: v
        for k, v in {
            "window_s": args.window_s,
            "overlap_s": args.overlap_s,
            "min_transcripts": args.min_transcripts,
            "stt_engine": args.stt,
            "kafka_bootstrap_servers": args.kafka,
        }.items()
        if v is not None
    }
    try:
        settings = settings.with_(**overrides)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    try:
        sessions = [load_session(p) for p in expand_sessions(args.sessions)]
    except (SessionError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if len({s.room for s in sessions}) != len(sessions):
        raise UsageError("two sessions share a room name; room names must be unique in one replay")

    out_root = Path(args.out) if args.out else None

    def out_dir(room: str) -> Path:
        if out_root is None:
            return Path("out") / room
        return out_root if len(sessions) == 1 else out_root / room

    recovery, resuming = _recovery(args.recovery_dir or settings.recovery_dir)
    for s in sessions:  # fresh, empty files: a session that yields nothing still leaves its two files
        out_dir(s.room).mkdir(parents=True, exist_ok=True)
        for name in ("transcripts.jsonl", "windows.jsonl"):
            if not resuming:  # a resumed replay appends: records are at-least-once, ids deterministic
                (out_dir(s.room) / name).write_bytes(b"")

    kafka_sinks = _kafka_sinks(settings)
    try:
        engine = engine_for(settings)
    except SttError as exc:
        raise UsageError(str(exc)) from None

    sinks = FlowSinks(
        transcripts=[JsonlSink(lambda room: out_dir(room) / "transcripts.jsonl")],
        windows=[JsonlSink(lambda room: out_dir(room) / "windows.jsonl")],
    )
    if kafka_sinks:
        sinks.transcripts.append(kafka_sinks[0])
        sinks.windows.append(kafka_sinks[1])
    if args.store:
        from connectors.store_sink import StoreSink

        _open_store(settings).close()  # tables created, URL checked, before the flow starts
        sinks.transcripts.append(StoreSink(settings.database_url))
        sinks.windows.append(StoreSink(settings.database_url))

    total = sum(s.audio_seconds for s in sessions)
    ends = {t.participant.key: t.end for s in sessions for t in s.tracks}
    view = TerminalView(total, ends)
    view.set_offsets({t.participant.key: t.participant.offset_s for s in sessions for t in s.tracks})
    if not args.quiet:
        sinks.events.append(TerminalSink(view))

    source = ReplaySource(sessions, settings.chunk_ms, args.speed)
    flow = build_flow(settings, source, sinks, lambda: engine)
    started = time.perf_counter()
    run_args = {
        "workers_per_process": args.workers,
        "epoch_interval": timedelta(seconds=args.snapshot_s),
        "recovery_config": recovery,
    }
    if resuming:
        print(f"resuming from the recovery state in {recovery.db_dir}", file=sys.stderr)
    try:
        if args.quiet:
            cli_main(flow, **run_args)
        else:
            with view:
                cli_main(flow, **run_args)
    except Exception as exc:  # a flow error arrives wrapped by Bytewax; show its root cause in one line
        log.debug("flow failed", exc_info=True)
        print(f"error: replay failed: {_root_cause(exc)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.close()
    wall = time.perf_counter() - started
    rooms = ", ".join(str(out_dir(s.room)) for s in sessions)
    print(
        f"replayed {len(sessions)} session(s), {total:.1f} s of audio in {wall:.1f} s "
        f"({total / wall if wall else 0:.1f}x real time); records in {rooms}",
        file=sys.stderr,
    )
    return EXIT_OK


def _recovery(directory: str) -> tuple[Any, bool]:
    """Bytewax recovery config for ``directory`` (initialised when empty) and whether it holds state."""
    if not directory:
        return None, False
    from bytewax.recovery import RecoveryConfig, init_db_dir

    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        resuming = any(path.glob("part-*.sqlite3"))
        if not resuming:
            init_db_dir(path, 1)
    except OSError as exc:
        raise UsageError(f"recovery directory {path}: {exc.strerror or exc}") from None
    return RecoveryConfig(str(path)), resuming


def _kafka_sinks(settings: Settings) -> tuple[Any, Any] | None:
    """(transcripts, windows) Kafka sinks when Kafka is configured; topics are created if missing.

    Checked before the flow starts, so an unreachable broker is one clear line within seconds.
    """
    if not settings.kafka_configured:
        return None
    from connectors.kafka_sink import KafkaSink, KafkaUnavailable, ensure_topics

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # one line per refused connection otherwise
    topics = [settings.kafka_topic_transcripts, settings.kafka_topic_windows]
    try:
        ensure_topics(settings.kafka_servers, topics, settings.kafka_partitions, settings.kafka_replication)
    except KafkaUnavailable as exc:
        raise UsageError(str(exc)) from None
    return tuple(KafkaSink(settings.kafka_servers, t) for t in topics)  # type: ignore[return-value]


def _open_store(settings: Settings) -> Any:
    from sqlalchemy.exc import ArgumentError, OperationalError

    from connectors.store import Store

    try:
        return Store(settings.database_url)
    except (ArgumentError, OperationalError, ValueError, ImportError) as exc:
        raise UsageError(f"cannot open DATABASE_URL: {type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def cmd_store(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from connectors.kafka_sink import KafkaUnavailable
    from connectors.store_job import StoreJob

    if args.kafka:
        settings = _with_kafka(settings, args.kafka)
    if not settings.kafka_configured:
        raise UsageError("Kafka is not configured: set KAFKA_BOOTSTRAP_SERVERS (HOST:PORT) or pass --kafka")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    store = _open_store(settings)
    try:
        job = StoreJob(
            store,
            settings.kafka_servers,
            [settings.kafka_topic_transcripts, settings.kafka_topic_windows],
            group_id=args.group,
            from_beginning=args.from_beginning,
            partitions=args.partitions,
        )
    except KafkaUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    signal.signal(signal.SIGTERM, lambda *_: job.stop())
    print(
        f"storing {', '.join(job.topics)} into {_safe_url(settings.database_url)}; Ctrl-C stops",
        file=sys.stderr,
    )
    try:
        stats = job.run()
    except KeyboardInterrupt:
        stats = job.stats
    print(
        f"stored {stats.stored} new records ({stats.duplicates} re-deliveries, {stats.bad} bad)",
        file=sys.stderr,
    )
    return EXIT_OK


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_flow(args: argparse.Namespace, settings: Settings) -> int:
    """The live flow in this process (``python -m bytewax.run flows.interview:flow`` runs it too)."""
    import signal

    from bytewax.run import cli_main

    from connectors.kafka_sink import KafkaUnavailable
    from connectors.stt.protocol import SttError
    from flows.interview import live_flow

    if args.stt:
        settings = settings.with_(stt_engine=args.stt)
    if not settings.livekit_configured:
        raise UsageError("LiveKit is not configured: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
    if settings.stt_engine == "elevenlabs" and not settings.elevenlabs_api_key:
        raise UsageError("STT_ENGINE=elevenlabs needs ELEVENLABS_API_KEY")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        flow, source = live_flow(
            settings, args.room or None, discover=not args.no_discover, record_dir=args.record
        )
    except (KafkaUnavailable, SttError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    stopping = []

    def stop(signum: int, _frame: Any) -> None:
        if stopping:  # a second signal: leave at once
            raise KeyboardInterrupt
        stopping.append(signum)
        log.info("stopping: leaving rooms (their last windows are emitted); signal again to quit now")
        source.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    recovery, resuming = _recovery(settings.recovery_dir)
    if resuming:
        log.info("resuming from the recovery state in %s", settings.recovery_dir)
    try:
        cli_main(
            flow,
            workers_per_process=args.workers,
            epoch_interval=timedelta(seconds=args.snapshot_s),
            recovery_config=recovery,
        )
    except Exception as exc:
        log.debug("flow failed", exc_info=True)
        print(f"error: flow failed: {_root_cause(exc)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from web.serve import run_gunicorn

    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--bind must be HOST:PORT, got {args.bind!r}")
    if not settings.api_key_list:
        log.warning("QUANTCOACH_API_KEYS is empty: every endpoint but / and /health answers 403")
    if not settings.livekit_configured:
        log.warning("LiveKit is not configured: room and token calls answer 503 (see /health)")
    return run_gunicorn(settings, args.bind, args.workers)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.kafka_consumer import tail

    if args.kafka:
        settings = _with_kafka(settings, args.kafka)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    return tail(settings, args.topic, args.room, args.from_beginning)


def _with_kafka(settings: Settings, servers: str) -> Settings:
    try:
        return settings.with_(kafka_bootstrap_servers=servers)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# --- parser ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``error:`` line (and a hint), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quantcoach", description="QuantCoach interview pipeline")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("replay", help="replay recorded sessions through the flow")
    p.add_argument(
        "sessions", nargs="+", metavar="SESSION_DIR", help="session directories (or a folder of them)"
    )
    p.add_argument("--out", help="output directory (default out/<room>/)")
    p.add_argument("--speed", type=_speed, default=None, help="max (default), realtime, or a factor")
    p.add_argument("--stt", choices=["whisper", "elevenlabs", "noop"], help="STT engine (default STT_ENGINE)")
    p.add_argument("--window-s", type=_positive(float), help="window length in media seconds (20)")
    p.add_argument("--overlap-s", type=_non_negative_float, help="context carried into the next window (10)")
    p.add_argument(
        "--min-transcripts", type=_positive(int), help="new transcripts before a speaker change (2)"
    )
    p.add_argument("--workers", type=_positive(int), default=1, help="Bytewax worker threads (1)")
    p.add_argument("--quiet", action="store_true", help="no transcripts or progress on the terminal")
    p.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        help="also send final transcripts and windows to Kafka (default KAFKA_BOOTSTRAP_SERVERS)",
    )
    p.add_argument("--store", action="store_true", help="also write records into the store (DATABASE_URL)")
    p.add_argument(
        "--recovery-dir",
        default="",
        help="Bytewax recovery state (default RECOVERY_DIR): a killed replay started again resumes from it",
    )
    p.add_argument(
        "--snapshot-s", type=_positive(float), default=5.0, help="recovery snapshot interval (5 s)"
    )
    p.set_defaults(run=cmd_replay)

    p = sub.add_parser("store", help="consume the Kafka topics into the transcript store (DATABASE_URL)")
    p.add_argument("--from-beginning", action="store_true", help="a new group starts at the oldest record")
    p.add_argument("--group", default="quantcoach-store", help="consumer group (quantcoach-store)")
    p.add_argument(
        "--partitions",
        type=lambda v: [int(x) for x in v.split(",")],
        help="assign these partitions (e.g. 0,1)",
    )
    p.add_argument("--kafka", metavar="HOST:PORT", help="bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS)")
    p.set_defaults(run=cmd_store)

    p = sub.add_parser("flow", help="run the live flow: join LiveKit rooms and transcribe them")
    p.add_argument("--room", action="append", default=[], help="a room to join (repeatable)")
    p.add_argument("--no-discover", action="store_true", help="do not poll RoomService for rooms")
    p.add_argument("--record", metavar="DIR", help="also record each room in the session format, for replay")
    p.add_argument("--stt", choices=["whisper", "elevenlabs"], help="STT engine (default STT_ENGINE)")
    p.add_argument("--workers", type=_positive(int), default=1, help="Bytewax worker threads (1)")
    p.add_argument(
        "--snapshot-s", type=_positive(float), default=5.0, help="recovery snapshot interval (5 s)"
    )
    p.set_defaults(run=cmd_flow)

    p = sub.add_parser("web", help="serve the REST API under gunicorn")
    p.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT to listen on (127.0.0.1:8000)")
    p.add_argument("--workers", type=_positive(int), default=2, help="gunicorn worker processes (2)")
    p.set_defaults(run=cmd_web)

    p = sub.add_parser("tail", help="print records from the Kafka topics as they arrive")
    p.add_argument("--topic", choices=["windows", "transcripts"], default="windows")
    p.add_argument("--room", help="only this room")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    p.add_argument("--kafka", metavar="HOST:PORT", help="bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS)")
    p.set_defaults(run=cmd_tail)
    return parser


if __name__ == "__main__":
    sys.exit(main())
