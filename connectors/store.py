"""The transcript store: tables, idempotent upserts and reads (SQLAlchemy 2 Core).

One table of records keeps both kinds (final transcripts and windows) with a monotonic ``position``:
that is the SSE event id, so a client that reconnects with ``Last-Event-ID`` misses nothing and gets
nothing twice. A record is keyed by (kind, utterance_id | window_id); inserting it again does nothing,
so at-least-once delivery from Kafka leaves each record exactly once, at its first position.

SQLite (the embedded default) runs in WAL mode so the API reads while the store job writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from quantcoach.records import TRANSCRIPT_SCHEMA, WINDOW_SCHEMA

metadata = MetaData()

records = Table(
    "records",
    metadata,
    # BigInteger on PostgreSQL, but SQLite needs INTEGER PRIMARY KEY to alias the rowid (autoincrement)
    Column("position", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # transcript | window
    Column("record_id", String(512), nullable=False),  # utterance_id | window_id
    Column("room", String(256), nullable=False),
    Column("start", Float, nullable=False),
    Column("seq", Integer, nullable=True),  # windows only
    Column("record", JSON, nullable=False),
    UniqueConstraint("kind", "record_id", name="uq_records_kind_id"),
    Index("ix_records_room_position", "room", "position"),
    Index("ix_records_room_kind_start", "room", "kind", "start"),
)

POSITION_LOCK = 0x5143_5354  # advisory lock id ("QCST") serialising writers on PostgreSQL
KINDS = {TRANSCRIPT_SCHEMA: "transcript", WINDOW_SCHEMA: "window"}


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    kind: str
    record: dict[str, Any]


class StoreUnavailable(RuntimeError):
    """``DATABASE_URL`` names no store that can be opened (bad URL, missing driver, server down)."""


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        metadata.create_all(self.engine)

    @classmethod
    def open(cls, url: str) -> Store:
        """``Store(url)``, with every reason it cannot be opened as one ``StoreUnavailable`` line."""
        try:
            return cls(url)
        except (ArgumentError, OperationalError, ValueError, ImportError) as exc:
            lines = str(exc).strip().splitlines()
            why = lines[0] if lines else type(exc).__name__
            raise StoreUnavailable(f"cannot open DATABASE_URL: {type(exc).__name__}: {why}") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ----------------------------------------------------------------------------------------
    def upsert(self, items: Iterable[dict[str, Any]]) -> int:
        """Store valid wire records in one transaction; returns how many were new. Partials are ignored."""
        rows = [_row(r) for r in items if r.get("schema") != TRANSCRIPT_SCHEMA or r.get("is_final")]
        if not rows:
            return 0
        insert = _insert_ignoring_duplicates(self.engine)
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # Positions are SSE event ids: writers must commit them in order, or a reader could see
                # 11 before 10 commits and never send 10. SQLite already serialises writers.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": POSITION_LOCK})
            result = conn.execute(insert.returning(records.c.position), rows)
            return len(result.all())

    # -- reads -----------------------------------------------------------------------------------------
    def room_exists(self, room: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(select(records.c.position).where(records.c.room == room).limit(1)).first()
                is not None
            )

    def transcripts(self, room: str, since: float | None = None) -> list[dict[str, Any]]:
        q = select(records.c.record).where(records.c.room == room, records.c.kind == "transcript")
        if since is not None:
            q = q.where(records.c.start >= since)
        q = q.order_by(records.c.start, records.c.record_id)
        with self.engine.connect() as conn:
            return [_json(r) for (r,) in conn.execute(q)]

    def windows(self, room: str) -> list[dict[str, Any]]:
        q = select(records.c.record).where(records.c.room == room, records.c.kind == "window")
        with self.engine.connect() as conn:
            return [_json(r) for (r,) in conn.execute(q.order_by(records.c.seq))]

    def events_after(self, room: str, position: int, limit: int = 500) -> list[StoredEvent]:
        q = (
            select(records.c.position, records.c.kind, records.c.record)
            .where(records.c.room == room, records.c.position > position)
            .order_by(records.c.position)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [StoredEvent(p, k, _json(r)) for p, k, r in conn.execute(q)]


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    kind = KINDS[record["schema"]]
    rid = record["utterance_id"] if kind == "transcript" else record["window_id"]
    return {
        "kind": kind,
        "record_id": rid,
        "room": record["room"],
        "start": float(record["start"]),
        "seq": record.get("seq") if kind == "window" else None,
        "record": record,
    }


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _insert_ignoring_duplicates(engine: Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL")
    return insert(records).on_conflict_do_nothing(index_elements=["kind", "record_id"])


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)
