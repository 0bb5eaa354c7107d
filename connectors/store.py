"""The transcript store: sessions and their records, idempotent writes and reads (SQLAlchemy 2 Core).

A room name is not an interview (names are reused), so everything is kept by session:

- ``sessions``: one row per ``session_id`` with its room, ``started_at`` (from the first record that
  carries one) and ``ended_at`` (the ``ended`` record's ``at``); ``id`` counts in order of arrival, so
  a room's sessions newest first are ``id`` descending, and its latest session is the highest ``id``.
- ``records``: every stored record with a monotonic ``position`` (the SSE event id, so a client that
  reconnects with ``Last-Event-ID`` misses nothing and gets nothing twice), of four kinds: final
  transcripts, windows, session events (``started``/``ended``) and metrics. A record is keyed by
  (session_id, kind, utterance_id | window_id | ``<session_id>:<event>`` | ``<session_id>:metrics``);
  inserting it again adds nothing, so at-least-once delivery leaves each record once, at its first
  position. Metrics are the exception by design: a session keeps only its latest record (final beats
  non-final, then the larger ``media_s``, then the later ``emitted_at``); a newer one replaces the
  row at a new position, an older or repeated one adds nothing.

The schema is Alembic's (``connectors.migrations``): ``Store(url)`` upgrades the database first, and a
database written by the first release is migrated in place (its rooms become legacy sessions).
SQLite (the embedded default) runs in WAL mode so the API reads while the store job writes.
"""

from __future__ import annotations

import itertools
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
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from connectors.migrations import upgrade
from quantcoach.wire import METRICS_SCHEMA, SESSION_SCHEMA, TRANSCRIPT_SCHEMA, WINDOW_SCHEMA

metadata = MetaData()

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(64), nullable=False),
    Column("room", String(256), nullable=False),
    Column("started_at", String(64), nullable=True),
    Column("ended_at", String(64), nullable=True),
    UniqueConstraint("session_id", name="uq_sessions_session_id"),
    Index("ix_sessions_room_id", "room", "id"),
)

records = Table(
    "records",
    metadata,
    # BigInteger on PostgreSQL, but SQLite needs INTEGER PRIMARY KEY to alias the rowid (autoincrement)
    Column("position", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # transcript | window | session | metrics
    Column("record_id", String(512), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("room", String(256), nullable=False),
    Column("start", Float, nullable=True),  # media start: transcripts and windows
    Column("seq", Integer, nullable=True),  # windows only
    Column("rank", String(64), nullable=True),  # metrics only: which record is the latest
    Column("record", JSON, nullable=False),
    UniqueConstraint("session_id", "kind", "record_id", name="uq_records_session_kind_id"),
    Index("ix_records_session_position", "session_id", "position"),
    Index("ix_records_session_kind_start", "session_id", "kind", "start"),
    sqlite_autoincrement=True,  # a position is never handed out twice, even after a metrics row went
)

POSITION_LOCK = 0x5143_5354  # advisory lock id ("QCST") serialising writers on PostgreSQL
KINDS = {
    TRANSCRIPT_SCHEMA: "transcript",
    WINDOW_SCHEMA: "window",
    SESSION_SCHEMA: "session",
    METRICS_SCHEMA: "metrics",
}


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    kind: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    room: str
    started_at: str | None
    ended_at: str | None
    transcripts: int
    windows: int


class StoreUnavailable(RuntimeError):
    """``DATABASE_URL`` names no store that can be opened (bad URL, missing driver, server down)."""


class Store:
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = _engine(url)
        if migrate:
            try:
                upgrade(self.engine)
            except BaseException:
                self.engine.dispose()
                raise

    @classmethod
    def open(cls, url: str) -> Store:
        """``Store(url)``, with every reason it cannot be opened as one ``StoreUnavailable`` line."""
        try:
            return cls(url)
        except (SQLAlchemyError, ValueError, ImportError, OSError) as exc:
            lines = str(exc).strip().splitlines()
            why = lines[0] if lines else type(exc).__name__
            raise StoreUnavailable(f"cannot open DATABASE_URL: {type(exc).__name__}: {why}") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ----------------------------------------------------------------------------------------
    def upsert(self, items: Iterable[dict[str, Any]]) -> int:
        """Store valid v2 wire records in one transaction; returns how many were new (a metrics
        record that became its session's latest counts as new). Partial transcripts are ignored."""
        rows: list[dict[str, Any]] = []
        seen: dict[str, dict[str, Any]] = {}
        for record in items:
            kind = _kind(record)
            if kind == "transcript" and not record.get("is_final"):
                continue
            sid = record["session_id"]
            s = seen.setdefault(
                sid, {"session_id": sid, "room": record["room"], "started_at": None, "ended_at": None}
            )
            if s["started_at"] is None and record.get("started_at"):
                s["started_at"] = record["started_at"]
            if kind == "session" and record["event"] == "ended" and s["ended_at"] is None:
                s["ended_at"] = record["at"]
            rows.append(_row(record, kind))
        if not seen:
            return 0
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # Positions are SSE event ids: writers must commit them in order, or a reader could see
                # 11 before 10 commits and never send 10. SQLite already serialises writers.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": POSITION_LOCK})
            conn.execute(_insert_ignoring(self.engine, sessions, ["session_id"]), list(seen.values()))
            for column in ("started_at", "ended_at"):
                known = [{"sid": s["session_id"], "v": s[column]} for s in seen.values() if s[column]]
                if known:
                    stmt = (
                        update(sessions)
                        .where(sessions.c.session_id == bindparam("sid"), sessions.c[column].is_(None))
                        .values({column: bindparam("v")})
                    )
                    conn.execute(stmt, known)
            # In the batch's order (a session's final metrics come before its ``ended``): runs of plain
            # records in one statement each, metrics one by one.
            new = 0
            insert = _insert_ignoring(self.engine, records, ["session_id", "kind", "record_id"])
            for is_metrics, run in itertools.groupby(rows, key=lambda r: r["kind"] == "metrics"):
                if is_metrics:
                    new += sum(_keep_latest_metrics(conn, row) for row in run)
                else:
                    new += len(conn.execute(insert.returning(records.c.position), list(run)).all())
            return new

    # -- sessions --------------------------------------------------------------------------------------
    def session(self, session_id: str) -> SessionInfo | None:
        found = self._sessions(sessions.c.session_id == session_id)
        return found[0] if found else None

    def sessions(self, room: str) -> list[SessionInfo]:
        """The room's sessions, newest (last to arrive) first."""
        return self._sessions(sessions.c.room == room)

    def latest_session(self, room: str) -> str | None:
        q = select(sessions.c.session_id).where(sessions.c.room == room).order_by(sessions.c.id.desc())
        with self.engine.connect() as conn:
            return conn.execute(q.limit(1)).scalar()

    def _sessions(self, where: Any) -> list[SessionInfo]:
        cols = [sessions.c[n] for n in ("session_id", "room", "started_at", "ended_at")]
        with self.engine.connect() as conn:
            found = conn.execute(select(*cols).where(where).order_by(sessions.c.id.desc())).all()
            if not found:
                return []
            counted = (
                select(records.c.session_id, records.c.kind, func.count())
                .where(
                    records.c.session_id.in_([f.session_id for f in found]),
                    records.c.kind.in_(("transcript", "window")),
                )
                .group_by(records.c.session_id, records.c.kind)
            )
            counts = {(sid, kind): n for sid, kind, n in conn.execute(counted)}
        return [
            SessionInfo(
                *f, counts.get((f.session_id, "transcript"), 0), counts.get((f.session_id, "window"), 0)
            )
            for f in found
        ]

    # -- a session's records ---------------------------------------------------------------------------
    def transcripts(self, session_id: str, since: float | None = None) -> list[dict[str, Any]]:
        """Final transcripts in media-time order (``since``: starting at or after it)."""
        q = select(records.c.record).where(records.c.session_id == session_id, records.c.kind == "transcript")
        if since is not None:
            q = q.where(records.c.start >= since)
        return self._records(q.order_by(records.c.start, records.c.record_id))

    def windows(self, session_id: str) -> list[dict[str, Any]]:
        q = select(records.c.record).where(records.c.session_id == session_id, records.c.kind == "window")
        return self._records(q.order_by(records.c.seq))

    def session_events(self, session_id: str) -> list[dict[str, Any]]:
        """The session's ``quantcoach.session/1`` records (started, ended) in arrival order."""
        q = select(records.c.record).where(records.c.session_id == session_id, records.c.kind == "session")
        return self._records(q.order_by(records.c.position))

    def metrics(self, session_id: str) -> dict[str, Any] | None:
        """The session's latest metrics record, or ``None``."""
        q = select(records.c.record).where(records.c.session_id == session_id, records.c.kind == "metrics")
        found = self._records(q.order_by(records.c.rank.desc()).limit(1))
        return found[0] if found else None

    def events_after(self, session_id: str, position: int, limit: int = 500) -> list[StoredEvent]:
        """The session's records stored after ``position``, in position order (at most ``limit``)."""
        q = (
            select(records.c.position, records.c.kind, records.c.record)
            .where(records.c.session_id == session_id, records.c.position > position)
            .order_by(records.c.position)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [StoredEvent(p, k, _json(r)) for p, k, r in conn.execute(q)]

    def _records(self, q: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [_json(r) for (r,) in conn.execute(q)]


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def metrics_rank(record: dict[str, Any]) -> str:
    """Orders a session's metrics records as strings: final first, then media_s, then emitted_at."""
    return f"{int(bool(record['final']))}:{float(record['media_s']):020.6f}:{record['emitted_at']}"


def _kind(record: dict[str, Any]) -> str:
    kind = KINDS.get(record.get("schema"))  # type: ignore[arg-type]
    if kind is None:
        raise ValueError(f"the store keeps v2 records only, not schema {record.get('schema')!r}")
    return kind


def _row(record: dict[str, Any], kind: str) -> dict[str, Any]:
    sid = record["session_id"]
    rid = {
        "transcript": lambda: record["utterance_id"],
        "window": lambda: record["window_id"],
        "session": lambda: f"{sid}:{record['event']}",
        "metrics": lambda: f"{sid}:metrics",
    }[kind]()
    media = kind in ("transcript", "window")
    return {
        "kind": kind,
        "record_id": rid,
        "session_id": sid,
        "room": record["room"],
        "start": float(record["start"]) if media else None,
        "seq": record["seq"] if kind == "window" else None,
        "rank": metrics_rank(record) if kind == "metrics" else None,
        "record": record,
    }


def _keep_latest_metrics(conn: Connection, row: dict[str, Any]) -> int:
    """Replace the session's metrics row when ``row`` ranks above it; 1 if ``row`` was stored. Runs
    inside the writer's transaction (PostgreSQL: under its lock; SQLite: after its first write)."""
    mine = (records.c.session_id == row["session_id"], records.c.kind == "metrics")
    conn.execute(delete(records).where(*mine, records.c.rank < row["rank"]))
    if conn.execute(select(records.c.position).where(*mine).limit(1)).first() is not None:
        return 0  # a record as new or newer is kept
    conn.execute(records.insert(), [row])
    return 1


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _insert_ignoring(engine: Engine, table: Table, keys: list[str]) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL")
    return insert(table).on_conflict_do_nothing(index_elements=keys)


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
