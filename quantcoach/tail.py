"""``quantcoach tail``: records of a Kafka topic on the terminal, readably, until Ctrl-C.

The reading itself is ``connectors.kafka.reader.iter_records``; this module is the terminal side:
which topic a name means, and how each record looks as text: a transcript or a session event or a
metrics record on one line, a window as a header and one line per segment.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click
from kafka.errors import KafkaError

from connectors.kafka.client import DEFAULT_CONNECT_TIMEOUT_S
from connectors.kafka.reader import ConsumeStats, iter_records
from quantcoach.settings import Settings
from quantcoach.text import escape_control
from quantcoach.wire import (
    METRICS_SCHEMA,
    SESSION_SCHEMA,
    TRANSCRIPT_SCHEMA,
    TRANSCRIPT_SCHEMA_V1,
    WINDOW_SCHEMA,
    WINDOW_SCHEMA_V1,
)

Record = dict[str, Any]

#: ``--topic`` names and the settings that give their topic.
TOPICS = {
    "windows": "kafka_topic_windows",
    "transcripts": "kafka_topic_transcripts",
    "sessions": "kafka_topic_sessions",
    "metrics": "kafka_topic_metrics",
}


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(max(0.0, seconds), 1), 60.0)  # round first: 59.96 s is 01:00.0
    return f"{int(minutes):02d}:{secs:04.1f}"


def _who(speaker: str, name: str) -> str:
    role = speaker.capitalize() if speaker else "?"
    return f"{role} ({name})" if name else role


def _roster(participants: list[Record]) -> str:
    return ", ".join(_who(p.get("role", ""), p.get("name", "")) for p in participants) or "nobody yet"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _speaker_figures(s: Record) -> str:
    wpm = "" if s.get("wpm") is None else f", {s['wpm']:.0f} wpm"
    return f"{_who(s['role'], s.get('name', ''))} talk {s['talk_s']:.1f} s, {_count(s['turns'], 'turn')}{wpm}"


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape_control(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def format_record(record: Record) -> str:
    """Render a record for a terminal: a transcript, a session event or metrics on one line, a window
    as a header and one line per segment (overlap context marked). Anything else as its JSON.
    Control characters in the record's text (a newline in a name, an ANSI escape) are shown escaped."""
    record = _escaped(record)
    schema = record.get("schema")
    if schema in (TRANSCRIPT_SCHEMA, TRANSCRIPT_SCHEMA_V1):
        mark = "" if record.get("is_final", True) else " (partial)"
        return (
            f"[{record['room']}] {_clock(record['start'])}-{_clock(record['end'])} "
            f"{_who(record['speaker'], record.get('name', ''))}{mark}: {record['text']}"
        )
    if schema in (WINDOW_SCHEMA, WINDOW_SCHEMA_V1):
        segments = record.get("segments", [])
        new = sum(not s.get("context", False) for s in segments)
        lines = [
            f"== [{record['room']}] window {record['window_id']} "
            f"{_clock(record['start'])}-{_clock(record['end'])} reason={record['reason']} "
            f"segments={len(segments)} new={new}"
        ]
        lines += [
            f"   {_clock(s['start'])} {'(context) ' if s.get('context') else ''}"
            f"{_who(s['speaker'], s.get('name', ''))}: {s['text']}"
            for s in segments
        ]
        return "\n".join(lines)
    if schema == SESSION_SCHEMA:
        since = f" (started {record['started_at']})" if record.get("started_at") else ""
        return (
            f"[{record['room']}] session {record['session_id']} {record['event']} at {record['at']}"
            f"{since}: {_roster(record.get('participants', []))}"
        )
    if schema == METRICS_SCHEMA:
        kind = "final" if record.get("final") else "so far"
        speakers = "; ".join(_speaker_figures(s) for s in record.get("speakers", []))
        return (
            f"[{record['room']}] metrics {record['session_id']} {kind} at {_clock(record['media_s'])}: "
            f"{speakers or 'nobody spoke'}; longest silence {record['longest_silence_s']:.1f} s, "
            f"{_count(record['speaker_changes'], 'speaker change')}, {_count(record['overlaps'], 'overlap')}"
        )
    return json.dumps(record, ensure_ascii=False)


def topic_name(settings: Settings, topic: str) -> str:
    """``windows``/``transcripts``/``sessions``/``metrics`` map to the configured topic names; anything
    else is taken as is."""
    setting = TOPICS.get(topic)
    return getattr(settings, setting) if setting is not None else topic


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
    """Print records of ``topic`` (windows | transcripts | sessions | metrics, or a topic name) until
    Ctrl-C (or ``stop_after_idle_s`` of quiet).

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
