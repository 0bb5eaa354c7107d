"""What every ``quantcoach`` command shares: exit statuses, the click group, settings and logging set-up,
the Bytewax runner, and the common options. ``quantcoach.cli`` and ``quantcoach.cli_kafka`` add the
commands to ``cli``.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from quantcoach.options import Positive
from quantcoach.settings import Settings
from stt.engines import ENGINES

log = logging.getLogger("quantcoach")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(click.ClickException):
    """Bad input, or a service unreachable at start: one ``error:`` line, exit status 2."""

    exit_code = EXIT_USAGE


def settings_from(*, quiet_kafka: bool = True, **options: Any) -> Settings:
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
    from connectors.kafka.client import configure

    configure(settings)  # SASL/TLS for every Kafka client of this process
    return settings


def need_kafka(settings: Settings) -> None:
    if not settings.kafka_configured:
        raise UsageError("Kafka is not configured: set KAFKA_BOOTSTRAP_SERVERS (HOST:PORT) or pass --kafka")


def recovery_for(directory: str) -> tuple[Any, bool]:
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


def run_flow(flow: Any, what: str, workers: int, snapshot_s: float, recovery: Any) -> None:
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


workers_option = click.option("--workers", type=Positive(int), default=1, help="Bytewax worker threads (1)")
snapshot_option = click.option(
    "--snapshot-s", type=Positive(float), default=5.0, help="recovery snapshot interval (5 s)"
)
stt_option = click.option("--stt", type=click.Choice(ENGINES), help="STT engine (default STT_ENGINE)")
kafka_option = click.option(
    "--kafka", metavar="HOST:PORT", help="bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS)"
)
