"""Baseline: the first release's schema (one ``records`` table, ids under the room name).

A database written by the first release has exactly this schema and no ``alembic_version`` table;
``connectors.migrations.upgrade`` stamps it at this revision before upgrading it.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "records",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(512), nullable=False),
        sa.Column("room", sa.String(256), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("seq", sa.Integer, nullable=True),
        sa.Column("record", sa.JSON, nullable=False),
        sa.UniqueConstraint("kind", "record_id", name="uq_records_kind_id"),
    )
    op.create_index("ix_records_room_position", "records", ["room", "position"])
    op.create_index("ix_records_room_kind_start", "records", ["room", "kind", "start"])


def downgrade() -> None:
    op.drop_table("records")
