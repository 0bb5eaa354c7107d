"""``quantcoach tail``: records of a Kafka topic on the terminal, readably, until Ctrl-C.

The reading itself is ``connectors.kafka.reader.iter_records``; this module is the terminal side:
which topic a name means, and how a transcript or a window looks as text.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click
from kafka.errors import KafkaError

from connectors.kafka.client import DEFAULT_CONNECT_TIMEOUT_S
from connectors.kafka.reader import ConsumeStats, iter_records
from quantcoach.records import TRANSCRIPT_SCHEMA, WINDOW_SCHEMA
from quantcoach.settings import Settings

Record = dict[str, Any]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(max(0.0, seconds), 1), 60.0)  # round first: 59.96 s is 01:00.0
    return f"{int(minutes):02d}:{secs:04.1f}"


def _who(speaker: str, name: str) -> str:
    role = speaker.capitalize() if speaker else "?"
    return f"{role} ({name})" if name else role


def format_record(record: Record) -> str:
    """Render a transcript (one line) or a window (a header and one line per segment) for a terminal."""
    schema = record.get("schema")
    if schema == TRANSCRIPT_SCHEMA:
        mark = "" if record.get("is_final", True) else " (partial)"
        return (
            f"[{record['room']}] {_clock(record['start'])}-{_clock(record['end'])} "
            f"{_who(record['speaker'], record.get('name', ''))}{mark}: {record['text']}"
        )
    if schema == WINDOW_SCHEMA:
        segments = record.get("segments", [])
        lines = [
            f"== window {record['window_id']} {_clock(record['start'])}-{_clock(record['end'])} "
            f"reason={record['reason']} segments={len(segments)}"
        ]
        lines += [
            f"   {_clock(s['start'])} {_who(s['speaker'], s.get('name', ''))}: {s['text']}" for s in segments
        ]
        return "\n".join(lines)
    return json.dumps(record, ensure_ascii=False)


def topic_name(settings: Settings, topic: str) -> str:
    """``windows``/``transcripts`` map to the configured topic names; anything else is taken as is."""
    if topic == "windows":
        return settings.kafka_topic_windows
    if topic == "transcripts":
        return settings.kafka_topic_transcripts
    return topic


def tail(
    settings: Settings,
    topic: str,
    room: str | None,
    from_beginning: bool,
    out: TextIO = sys.stdout,
    *,
    err: TextIO = sys.stderr,
    stop_after_idle_s: float | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> ConsumeStats:
    """Print records of ``topic`` (windows | transcripts) until Ctrl-C (or ``stop_after_idle_s`` of quiet).

    ``settings`` must have Kafka configured. Raises ``KafkaUnavailable`` when no broker answers at
    start, ``click.ClickException`` (exit status 1) when Kafka fails while tailing.
    """
    name = topic_name(settings, topic)
    stats = ConsumeStats()
    where = f"{name}" + (f" room {room}" if room else "")
    print(
        f"tailing {where} ({'from the beginning' if from_beginning else 'new records'}); Ctrl-C stops",
        file=err,
    )
    records = iter_records(
        settings.kafka_servers,
        name,
        room=room,
        from_beginning=from_beginning,
        stop_after_idle_s=stop_after_idle_s,
        stats=stats,
        connect_timeout_s=connect_timeout_s,
    )
    try:
        for record in records:
            print(format_record(record), file=out, flush=True)
    except KafkaError as exc:
        raise click.ClickException(f"Kafka failed while tailing {name}: {exc}") from exc
    except KeyboardInterrupt:
        pass
    finally:
        records.close()  # closes the consumer now, not when the generator is collected
    if stats.bad:
        print(f"skipped {stats.bad} bad messages: {dict(stats.bad_reasons)}", file=err)
    return stats
