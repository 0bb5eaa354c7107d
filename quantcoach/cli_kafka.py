"""The Kafka consumers' commands: ``tail`` (print records), ``store`` (the store job), ``analytics`` (the
example analytics job). Same exit statuses as every command (``quantcoach.cli_base``).
"""

from __future__ import annotations

import signal
import sys

import click

from quantcoach.cli_base import EXIT_OK, cli, kafka_option, need_kafka, settings_from
from quantcoach.options import Partitions


@cli.command("tail", help="print records from the Kafka topics as they arrive")
@click.option(
    "--topic", type=click.Choice(["windows", "transcripts", "sessions", "metrics"]), default="windows"
)
@click.option("--room", help="only this room")
@click.option("--from-beginning", is_flag=True, help="start at the oldest retained record")
@kafka_option
def tail_command(topic: str, room: str | None, from_beginning: bool, kafka: str | None) -> int:
    from quantcoach.tail import tail

    settings = settings_from(kafka_bootstrap_servers=kafka)
    need_kafka(settings)
    tail(settings, topic, room, from_beginning)
    return EXIT_OK


@cli.command("store", help="consume the Kafka topics into the transcript store (DATABASE_URL)")
@click.option("--from-beginning", is_flag=True, help="a new group starts at the oldest record")
@click.option("--group", default="quantcoach-store", help="consumer group (quantcoach-store)")
@click.option("--partitions", type=Partitions(), help="assign these partitions (e.g. 0,1)")
@kafka_option
def store_command(from_beginning: bool, group: str, partitions: list[int] | None, kafka: str | None) -> int:
    from kafka.errors import KafkaError

    from connectors.store import Store, safe_url
    from jobs.store import StoreJob

    settings = settings_from(kafka_bootstrap_servers=kafka)
    need_kafka(settings)
    topics = [
        settings.kafka_topic_transcripts,
        settings.kafka_topic_windows,
        settings.kafka_topic_sessions,
        settings.kafka_topic_metrics,
    ]
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


@cli.command("analytics", help="the example analytics job: per-room aggregates to interview.room_stats")
@click.option("--from-end", is_flag=True, help="only metrics that arrive from now on")
@click.option("--no-tail", is_flag=True, help="stop at the end of the topic instead of waiting for more")
@kafka_option
def analytics_command(from_end: bool, no_tail: bool, kafka: str | None) -> int:
    from bytewax.testing import run_main

    from connectors.kafka.client import ensure_topics
    from flows.analytics import analytics_flow

    settings = settings_from(kafka_bootstrap_servers=kafka)
    need_kafka(settings)
    topics = [settings.kafka_topic_metrics, settings.kafka_topic_room_stats]
    ensure_topics(settings.kafka_servers, topics, settings.kafka_partitions, settings.kafka_replication)
    print(f"aggregating {topics[0]} into {topics[1]}; Ctrl-C stops", file=sys.stderr)
    run_main(analytics_flow(settings, tail=not no_tail, from_beginning=not from_end))  # Ctrl-C: exit 130
    return EXIT_OK
