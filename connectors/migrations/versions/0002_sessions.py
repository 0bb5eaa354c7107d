"""Sessions: a room name is not an interview. Records are keyed by session and carry v2 ids.

- ``sessions``: one row per session (``id`` counts in order of arrival: newest first is ``id`` desc),
  with its room, ``started_at`` and ``ended_at``.
- ``records`` is rebuilt keyed by (session_id, kind, record_id), for four kinds (transcript, window,
  session, metrics), with a nullable ``start`` and a ``rank`` (metrics: which record is the latest).
  On SQLite it is AUTOINCREMENT, so a position is never handed out twice even after the metrics row
  it belonged to was replaced (positions are SSE event ids).
- The first release's rows keep their positions; each room's rows become one session with a legacy
  id and are rewritten as v2 (``connectors.migrations.legacy``, where the rules are written down),
  followed by an ``ended`` record.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from connectors.migrations.legacy import LegacySession

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_V1 = sa.table(
    "records",
    sa.column("position", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("room", sa.String),
    sa.column("start", sa.Float),
    sa.column("seq", sa.Integer),
    sa.column("record", sa.JSON),
)


def _position() -> sa.Column:
    return sa.Column(
        "position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )


def upgrade() -> None:
    sessions = op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("room", sa.String(256), nullable=False),
        sa.Column("started_at", sa.String(64), nullable=True),
        sa.Column("ended_at", sa.String(64), nullable=True),
        sa.UniqueConstraint("session_id", name="uq_sessions_session_id"),
    )
    op.create_index("ix_sessions_room_id", "sessions", ["room", "id"])
    new = op.create_table(
        "records_v2",
        _position(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(512), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("room", sa.String(256), nullable=False),
        sa.Column("start", sa.Float, nullable=True),
        sa.Column("seq", sa.Integer, nullable=True),
        sa.Column("rank", sa.String(64), nullable=True),
        sa.Column("record", sa.JSON, nullable=False),
        sa.UniqueConstraint("session_id", "kind", "record_id", name="uq_records_session_kind_id"),
        sqlite_autoincrement=True,
    )
    _copy_first_release(op.get_bind(), sessions, new)
    op.drop_table("records")  # its indexes go with it
    op.rename_table("records_v2", "records")
    if op.get_bind().dialect.name == "postgresql":  # names that follow the table's, as create_all's would
        op.execute("ALTER INDEX records_v2_pkey RENAME TO records_pkey")
        op.execute("ALTER SEQUENCE records_v2_position_seq RENAME TO records_position_seq")
        top = "COALESCE((SELECT MAX(position) FROM records), 0) + 1"
        op.execute(f"SELECT setval('records_position_seq', {top}, false)")
    op.create_index("ix_records_session_position", "records", ["session_id", "position"])
    op.create_index("ix_records_session_kind_start", "records", ["session_id", "kind", "start"])


def _copy_first_release(conn: sa.Connection, sessions: sa.Table, new: sa.Table) -> None:
    """Each room of the v1 table -> one legacy session, its rows rewritten at their positions."""
    first = sa.func.min(_V1.c.position)
    rooms = conn.execute(sa.select(_V1.c.room, first).group_by(_V1.c.room).order_by(first)).all()
    if not rooms:
        return
    top = conn.execute(sa.select(sa.func.max(_V1.c.position))).scalar_one()
    for room, _ in rooms:  # oldest first: ids count in order of arrival
        legacy = LegacySession(room)
        rows = conn.execute(
            sa.select(_V1.c.position, _V1.c.kind, _V1.c.start, _V1.c.seq, _V1.c.record)
            .where(_V1.c.room == room)
            .order_by(_V1.c.position)
        ).all()
        kept_t = [r for r in rows if r.kind == "transcript"]
        kept_w = sorted((r for r in rows if r.kind == "window"), key=lambda r: r.seq)
        transcripts = legacy.transcripts(_json(r.record) for r in kept_t)
        windows = legacy.windows(_json(r.record) for r in kept_w)
        out = [_row(r.position, "transcript", t, r.start) for r, t in zip(kept_t, transcripts, strict=True)]
        out += [_row(r.position, "window", w, r.start, r.seq) for r, w in zip(kept_w, windows, strict=True)]
        top += 1
        ended = legacy.ended(transcripts)
        out.append(_row(top, "session", ended))
        conn.execute(sa.insert(new), sorted(out, key=lambda row: row["position"]))
        conn.execute(
            sa.insert(sessions),
            [{"session_id": legacy.session_id, "room": room, "started_at": None, "ended_at": ended["at"]}],
        )


def _row(
    position: int, kind: str, record: dict[str, Any], start: float | None = None, seq: int | None = None
) -> dict[str, Any]:
    sid = record["session_id"]
    rid = {"transcript": "utterance_id", "window": "window_id"}.get(kind)
    return {
        "position": position,
        "kind": kind,
        "record_id": record[rid] if rid else f"{sid}:{record['event']}",
        "session_id": sid,
        "room": record["room"],
        "start": start,
        "seq": seq,
        "rank": None,
        "record": record,
    }


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else value


def downgrade() -> None:
    raise NotImplementedError(
        "the sessions schema cannot go back to the first release's: two sessions of one room would "
        "collide under ids made from the room name"
    )
