"""The ``quantcoach`` command: replay, flow (live), web, tail, store; one small function each, on click.

The only module that imports flows, jobs and web: it wires them together. Exit statuses are the same
for every command: 0 done, 2 bad input or a service unreachable at start (one ``error: ...`` line on
stderr, never a traceback), 1 a failure while running (``error: <command> failed: ...``), 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from quantcoach.options import HostPort, NonNegative, Partitions, Positive, Speed
from quantcoach.settings import Settings, SettingsError
from stt.engines import ENGINES

log = logging.getLogger("quantcoach")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(click.ClickException):
    """Bad input, or a service unreachable at start: one ``error:`` line, exit status 2."""

    exit_code = EXIT_USAGE


def _start_errors() -> tuple[type[Exception], ...]:
    """What the connectors raise when the input or a service is wrong before anything runs (status 2)."""
    from connectors.kafka.client import KafkaUnavailable
    from connectors.recording import SessionError
    from connectors.store import StoreUnavailable
    from stt.protocol import SttError

    return (SettingsError, SessionError, KafkaUnavailable, StoreUnavailable, SttError)


def main(argv: list[str] | None = None) -> int:
    try:
        return int(cli.main(args=argv, prog_name="quantcoach", standalone_mode=False) or EXIT_OK)
    except click.UsageError as exc:  # click's own: an unknown option, a bad value, a missing argument
        print(f"error: {_usage_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except click.ClickException as exc:  # ours: UsageError (2), "<command> failed" (1)
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except click.Abort:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not isinstance(exc, _start_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _usage_line(exc: click.UsageError) -> str:
    path = exc.ctx.command_path if exc.ctx else "quantcoach"
    if type(exc) is click.BadParameter and isinstance(exc.param, click.Option):
        message = f"argument {'/'.join(exc.param.opts)}: {exc.message}"
    else:
        message = exc.format_message()
    return f"{path}: {message} (see {path} --help)"


def _settings(*, quiet_kafka: bool = True, **options: Any) -> Settings:
    """The environment's settings, with the options given on the command line (None: not given)."""
    settings = Settings.from_env().with_(**{k: v for k, v in options.items() if v is not None})
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # a line per utterance otherwise
    logging.getLogger("livekit").setLevel(logging.WARNING)  # the SDK logs every signalling step
    if quiet_kafka:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # one line per refused connection otherwise
    return settings


def _need_kafka(settings: Settings) -> None:
    if not settings.kafka_configured:
        raise UsageError("Kafka is not configured: set KAFKA_BOOTSTRAP_SERVERS (HOST:PORT) or pass --kafka")


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


def _run(flow: Any, what: str, workers: int, snapshot_s: float, recovery: Any) -> None:
    """Run ``flow`` in this process; its failure (wrapped by Bytewax) is one line: the root cause."""
    from bytewax.run import cli_main

    try:
        cli_main(
            flow,
            workers_per_process=workers,
            epoch_interval=timedelta(seconds=snapshot_s),
            recovery_config=recovery,
        )
    except Exception as exc:
        log.debug("%s failed", what, exc_info=True)
        while exc.__cause__ is not None:
            exc = exc.__cause__  # type: ignore[assignment]
        lines = str(exc).strip().splitlines()
        raise click.ClickException(f"{what} failed: {lines[-1] if lines else type(exc).__name__}") from None


@click.group(
    help="QuantCoach interview pipeline",
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    pass


_workers = click.option("--workers", type=Positive(int), default=1, help="Bytewax worker threads (1)")
_snapshot = click.option(
    "--snapshot-s", type=Positive(float), default=5.0, help="recovery snapshot interval (5 s)"
)
_stt = click.option("--stt", type=click.Choice(ENGINES), help="STT engine (default STT_ENGINE)")
_kafka = click.option(
    "--kafka", metavar="HOST:PORT", help="bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS)"
)


# --- replay ---------------------------------------------------------------------------------------------
@cli.command("replay", help="replay recorded sessions through the flow")
@click.argument("sessions", nargs=-1, required=True, metavar="SESSION_DIR...")
@click.option("--out", help="output directory (default out/<room>/)")
@click.option("--speed", type=Speed(), default=None, help="max (default), realtime, or a factor")
@_stt
@click.option("--window-s", type=Positive(float), help="window length in media seconds (20)")
@click.option("--overlap-s", type=NonNegative(), help="context carried into the next window (10)")
@click.option("--min-transcripts", type=Positive(int), help="new transcripts before a speaker change (2)")
@_workers
@click.option("--quiet", is_flag=True, help="no transcripts or progress on the terminal")
@click.option(
    "--kafka",
    metavar="HOST:PORT",
    help="also send final transcripts and windows to Kafka (default KAFKA_BOOTSTRAP_SERVERS)",
)
@click.option("--store", is_flag=True, help="also write records into the store (DATABASE_URL)")
@click.option(
    "--recovery-dir",
    default="",
    help="Bytewax recovery state (default RECOVERY_DIR): a killed replay started again resumes from it",
)
@_snapshot
def replay_command(
    sessions: tuple[str, ...],
    out: str | None,
    speed: float | None,
    stt: str | None,
    window_s: float | None,
    overlap_s: float | None,
    min_transcripts: int | None,
    workers: int,
    quiet: bool,
    kafka: str | None,
    store: bool,
    recovery_dir: str,
    snapshot_s: float,
) -> int:
    from connectors.replay_source import ReplaySource
    from connectors.terminal_sink import TerminalView
    from flows.interview import build_flow, replay_sinks
    from stt.engines import engine_for

    settings = _settings(
        window_s=window_s,
        overlap_s=overlap_s,
        min_transcripts=min_transcripts,
        stt_engine=stt,
        kafka_bootstrap_servers=kafka,
    )
    loaded = _load_sessions(sessions)
    out_dir = _out_dir(out, len(loaded))
    recovery, resuming = _recovery(recovery_dir or settings.recovery_dir)
    view = None if quiet else TerminalView.for_sessions(loaded)
    rooms = [s.room for s in loaded]
    sinks = replay_sinks(settings, rooms, out_dir, fresh=not resuming, store=store, view=view)
    engine = engine_for(settings)
    flow = build_flow(settings, ReplaySource(loaded, settings.chunk_ms, speed), sinks, lambda: engine)
    if resuming:
        print(f"resuming from the recovery state in {recovery.db_dir}", file=sys.stderr)
    started = time.perf_counter()
    try:
        with view or contextlib.nullcontext():
            _run(flow, "replay", workers, snapshot_s, recovery)
    finally:
        engine.close()
    wall = time.perf_counter() - started
    total = sum(s.audio_seconds for s in loaded)
    where = ", ".join(str(out_dir(r)) for r in rooms)
    print(
        f"replayed {len(loaded)} session(s), {total:.1f} s of audio in {wall:.1f} s "
        f"({total / wall if wall else 0:.1f}x real time); records in {where}",
        file=sys.stderr,
    )
    return EXIT_OK


def _load_sessions(paths: Iterable[str]) -> list[Any]:
    from connectors.recording import expand_sessions, load_session

    try:
        sessions = [load_session(p) for p in expand_sessions(list(paths))]
    except OSError as exc:
        raise UsageError(str(exc)) from None
    if len({s.room for s in sessions}) != len(sessions):
        raise UsageError("two sessions share a room name; room names must be unique in one replay")
    return sessions


def _out_dir(out: str | None, sessions: int) -> Callable[[str], Path]:
    """Where a room's records go: ``out/<room>/``, or ``--out DIR``: DIR itself for one session, else
    ``DIR/<room>``."""
    if not out:
        return lambda room: Path("out") / room
    root = Path(out)
    return (lambda room: root) if sessions == 1 else (lambda room: root / room)


# --- live -----------------------------------------------------------------------------------------------
@cli.command("flow", help="run the live flow: join LiveKit rooms and transcribe them")
@click.option("--room", multiple=True, help="a room to join (repeatable)")
@click.option("--no-discover", is_flag=True, help="do not poll RoomService for rooms")
@click.option("--record", metavar="DIR", help="also record each room in the session format, for replay")
@_stt
@_workers
@_snapshot
def flow_command(
    room: tuple[str, ...],
    no_discover: bool,
    record: str | None,
    stt: str | None,
    workers: int,
    snapshot_s: float,
) -> int:
    """The live flow in this process (``python -m bytewax.run flows.interview:flow`` runs it too)."""
    from flows.interview import live_flow

    settings = _settings(stt_engine=stt)
    if not settings.livekit_configured:
        raise UsageError("LiveKit is not configured: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
    if settings.stt_engine == "elevenlabs" and not settings.elevenlabs_api_key:
        raise UsageError("STT_ENGINE=elevenlabs needs ELEVENLABS_API_KEY")
    try:
        flow, source = live_flow(settings, list(room) or None, discover=not no_discover, record_dir=record)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _leave_rooms_on_signals(source)
    recovery, resuming = _recovery(settings.recovery_dir)
    if resuming:
        log.info("resuming from the recovery state in %s", settings.recovery_dir)
    _run(flow, "flow", workers, snapshot_s, recovery)
    return EXIT_OK


def _leave_rooms_on_signals(source: Any) -> None:
    """SIGINT/SIGTERM: leave the rooms (their last windows are emitted); a second signal quits now."""
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        log.info("stopping: leaving rooms (their last windows are emitted); signal again to quit now")
        source.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


@cli.command("web", help="serve the REST API under gunicorn")
@click.option(
    "--bind", type=HostPort(), default="127.0.0.1:8000", help="HOST:PORT to listen on (127.0.0.1:8000)"
)
@click.option("--workers", type=Positive(int), default=2, help="gunicorn worker processes (2)")
def web_command(bind: str, workers: int) -> int:
    from web.serve import run_gunicorn

    settings = _settings(quiet_kafka=False)
    if not settings.api_key_list:
        log.warning("QUANTCOACH_API_KEYS is empty: every endpoint but / and /health answers 403")
    if not settings.livekit_configured:
        log.warning("LiveKit is not configured: room and token calls answer 503 (see /health)")
    return run_gunicorn(settings, bind, workers)


# --- Kafka consumers ------------------------------------------------------------------------------------
@cli.command("tail", help="print records from the Kafka topics as they arrive")
@click.option("--topic", type=click.Choice(["windows", "transcripts"]), default="windows")
@click.option("--room", help="only this room")
@click.option("--from-beginning", is_flag=True, help="start at the oldest retained record")
@_kafka
def tail_command(topic: str, room: str | None, from_beginning: bool, kafka: str | None) -> int:
    from quantcoach.tail import tail

    settings = _settings(kafka_bootstrap_servers=kafka)
    _need_kafka(settings)
    tail(settings, topic, room, from_beginning)
    return EXIT_OK


@cli.command("store", help="consume the Kafka topics into the transcript store (DATABASE_URL)")
@click.option("--from-beginning", is_flag=True, help="a new group starts at the oldest record")
@click.option("--group", default="quantcoach-store", help="consumer group (quantcoach-store)")
@click.option("--partitions", type=Partitions(), help="assign these partitions (e.g. 0,1)")
@_kafka
def store_command(from_beginning: bool, group: str, partitions: list[int] | None, kafka: str | None) -> int:
    from kafka.errors import KafkaError

    from connectors.store import Store, safe_url
    from jobs.store import StoreJob

    settings = _settings(kafka_bootstrap_servers=kafka)
    _need_kafka(settings)
    topics = [settings.kafka_topic_transcripts, settings.kafka_topic_windows]
    store = Store.open(settings.database_url)
    job = StoreJob(
        store,
        settings.kafka_servers,
        topics,
        group_id=group,
        from_beginning=from_beginning,
        partitions=partitions,
    )
    signal.signal(signal.SIGTERM, lambda *_: job.stop())
    print(
        f"storing {', '.join(topics)} into {safe_url(settings.database_url)}; Ctrl-C stops", file=sys.stderr
    )
    try:
        stats = job.run()
    except KeyboardInterrupt:
        stats = job.stats
    except KafkaError as exc:
        raise click.ClickException(f"store failed: Kafka: {exc}") from None
    print(
        f"stored {stats.stored} new records ({stats.duplicates} re-deliveries, {stats.bad} bad)",
        file=sys.stderr,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
