"""The ``quantcoach`` command: replay, flow (live), web here; tail, store and analytics in
``quantcoach.cli_kafka``; one small function each, on click.

The CLI modules are the only ones that import flows, jobs and web: they wire them together. Exit
statuses are the same for every command: 0 done, 2 bad input or a service unreachable at start (one
``error: ...`` line on stderr, never a traceback), 1 a failure while running (``error: <command>
failed: ...``), 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from quantcoach import cli_kafka  # noqa: F401  (registers tail, store, analytics on ``cli``)
from quantcoach.cli_base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    cli,
    recovery_for,
    run_flow,
    settings_from,
    snapshot_option,
    stt_option,
    workers_option,
)
from quantcoach.options import HostPort, NonNegative, Positive, Speed
from quantcoach.settings import SettingsError

log = logging.getLogger("quantcoach")


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


# --- replay ---------------------------------------------------------------------------------------------
@cli.command("replay", help="replay recorded sessions through the flow")
@click.argument("sessions", nargs=-1, required=True, metavar="SESSION_DIR...")
@click.option("--out", default="out", show_default=True, help="records go to OUT/<room>/<session_id>/")
@click.option("--speed", type=Speed(), default=None, help="max (default), realtime, or a factor")
@stt_option
@click.option("--window-s", type=Positive(float), help="window length in media seconds (20)")
@click.option("--overlap-s", type=NonNegative(), help="context carried into the next window (10)")
@click.option("--min-transcripts", type=Positive(int), help="new transcripts before a speaker change (2)")
@workers_option
@click.option("--quiet", is_flag=True, help="no transcripts or progress on the terminal")
@click.option(
    "--kafka",
    metavar="HOST:PORT",
    help="also send final transcripts and windows to Kafka (default KAFKA_BOOTSTRAP_SERVERS)",
)
@click.option("--store", is_flag=True, help="also write records into the store (DATABASE_URL)")
@click.option("--captions", is_flag=True, help="also write captions.jsonl: the room's live captions")
@click.option(
    "--recovery-dir",
    default="",
    help="Bytewax recovery state (default RECOVERY_DIR): a killed replay started again resumes from it",
)
@snapshot_option
def replay_command(
    sessions: tuple[str, ...],
    out: str,
    speed: float | None,
    stt: str | None,
    window_s: float | None,
    overlap_s: float | None,
    min_transcripts: int | None,
    workers: int,
    quiet: bool,
    kafka: str | None,
    store: bool,
    captions: bool,
    recovery_dir: str,
    snapshot_s: float,
) -> int:
    from connectors.replay_source import ReplaySource
    from connectors.session_files import write_session_files
    from connectors.stt_failures import SttFailures
    from connectors.terminal_sink import TerminalView
    from flows.interview import build_flow
    from flows.sinks import replay_sinks, session_dir
    from stt.engines import engine_for
    from stt.engines import release as release_engine

    settings = settings_from(
        window_s=window_s,
        overlap_s=overlap_s,
        min_transcripts=min_transcripts,
        stt_engine=stt,
        kafka_bootstrap_servers=kafka,
    )
    loaded = _load_sessions(sessions)
    root = Path(out)
    recovery, resuming = recovery_for(recovery_dir or settings.recovery_dir)
    view = None if quiet else TerminalView.for_sessions(loaded)
    ids = [(s.room, s.session_id) for s in loaded]
    sinks = replay_sinks(settings, ids, root, fresh=not resuming, store=store, captions=captions, view=view)
    stt_failures = SttFailures()
    sinks.events.append(stt_failures)
    engine = engine_for(settings, throughput=speed is None)  # --speed max: the packed decode
    flow = build_flow(settings, ReplaySource(loaded, settings.chunk_ms, speed), sinks, lambda: engine)
    if resuming:
        print(f"resuming from the recovery state in {recovery.db_dir}", file=sys.stderr)
    started = time.perf_counter()
    try:
        with view or contextlib.nullcontext():
            run_flow(flow, "replay", workers, snapshot_s, recovery)
    finally:
        release_engine(engine)
    wall = time.perf_counter() - started
    total = sum(s.audio_seconds for s in loaded)
    for room, session_id in ids:
        write_session_files(session_dir(root, room, session_id))
    where = ", ".join(str(session_dir(root, room, sid)) for room, sid in ids)
    print(
        f"replayed {len(loaded)} session(s), {total:.1f} s of audio in {wall:.1f} s "
        f"({total / wall if wall else 0:.1f}x real time); records in {where}",
        file=sys.stderr,
    )
    failed = stt_failures.failed
    if failed:
        print(f"error: speech-to-text gave up for {', '.join(failed)}: see the log above", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _load_sessions(paths: Iterable[str]) -> list[Any]:
    from connectors.recording import expand_sessions, load_session

    try:
        sessions = [load_session(p) for p in expand_sessions(list(paths))]
    except OSError as exc:
        raise UsageError(str(exc)) from None
    ids = [s.session_id for s in sessions]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise UsageError(f"the same session is given twice ({', '.join(dup)}); give each once")
    return sessions


# --- live -----------------------------------------------------------------------------------------------
@cli.command("flow", help="run the live flow: join LiveKit rooms and transcribe them")
@click.option("--room", multiple=True, help="a room to join (repeatable)")
@click.option("--no-discover", is_flag=True, help="do not poll RoomService for rooms")
@click.option("--record", metavar="DIR", help="also record each room in the session format, for replay")
@stt_option
@workers_option
@snapshot_option
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

    settings = settings_from(stt_engine=stt)
    if not settings.livekit_configured:
        raise UsageError("LiveKit is not configured: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
    if settings.stt_engine == "elevenlabs" and not settings.elevenlabs_api_key:
        raise UsageError("STT_ENGINE=elevenlabs needs ELEVENLABS_API_KEY")
    try:
        flow, source = live_flow(settings, list(room) or None, discover=not no_discover, record_dir=record)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _leave_rooms_on_signals(source)
    recovery, resuming = recovery_for(settings.recovery_dir)
    if resuming:
        log.info("resuming from the recovery state in %s", settings.recovery_dir)
    run_flow(flow, "flow", workers, snapshot_s, recovery)
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

    settings = settings_from(quiet_kafka=False)
    if not settings.api_key_list:
        log.warning("QUANTCOACH_API_KEYS is empty: every endpoint but / and /health answers 403")
    if not settings.livekit_configured:
        log.warning("LiveKit is not configured: room and token calls answer 503 (see /health)")
    return run_gunicorn(settings, bind, workers)


# --- Kafka consumers ------------------------------------------------------------------------------------
if __name__ == "__main__":
    sys.exit(main())
