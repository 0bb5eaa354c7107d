"""The store's schema, versioned with Alembic: ``upgrade(engine)`` brings a database to ``HEAD``.

Programmatic, no ``alembic.ini``: ``config()`` points Alembic at this package (``env.py``,
``versions/``). Revisions: ``0001`` the first release's schema (baseline), ``0002`` sessions.

``upgrade`` is what every command that opens the store runs first (``connectors.store.Store``). It is
one transaction, and safe when several processes open the store at once: PostgreSQL takes an advisory
transaction lock, SQLite a ``BEGIN IMMEDIATE`` write lock, and whoever comes second finds the
database already at ``HEAD``. A database written by the first release (a ``records`` table and no
``alembic_version``) is stamped at ``0001`` first, then upgraded in place. A database at a revision
this release does not know (written by a newer one) is refused with ``MigrationError``.

A new revision: ``python -c "from alembic import command; from connectors.migrations import config;
command.revision(config(), 'what it does', rev_id='0003')"``, then write its ``upgrade()``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

# Alembic logs at INFO on every open ("Context impl ...", "Running upgrade ..."): noise in every command.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from alembic.util.exc import CommandError  # noqa: E402

HEAD = "0002"
BASELINE = "0001"
MIGRATION_LOCK = 0x5143_4D47  # advisory lock id ("QCMG") serialising migrations on PostgreSQL


class MigrationError(ValueError):
    """The database cannot be brought to this release's schema (e.g. it is at an unknown revision)."""


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent))
    return cfg


def current_revision(conn: sa.Connection) -> str | None:
    """The database's revision (``None``: none recorded), read without Alembic's start-up logging."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the head), in one locked transaction."""
    target = HEAD if revision == "head" else revision
    with engine.connect() as conn:  # the common case, a database already there: no write, no lock
        if current_revision(conn) == target:
            return
    migrating = _locking_engine(engine)
    try:
        with migrating.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            _run(conn, revision)
    except CommandError as exc:
        raise MigrationError(f"cannot migrate the store: {exc}") from None
    finally:
        if migrating is not engine:
            migrating.dispose()


def _run(conn: sa.Connection, revision: str) -> None:
    cfg = config()
    cfg.attributes["connection"] = conn
    tables = set(sa.inspect(conn).get_table_names())
    if "records" in tables and "alembic_version" not in tables:
        command.stamp(cfg, BASELINE)  # the first release's database: its schema is the baseline
    current = current_revision(conn)
    if current is not None and current not in _known(cfg):
        raise MigrationError(f"the store is at revision {current!r}, which this release does not know")
    command.upgrade(cfg, revision)


def _known(cfg: Config) -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}


def _locking_engine(engine: sa.Engine) -> sa.Engine:
    """PostgreSQL: the engine itself. SQLite: an engine whose transactions really begin, with
    ``BEGIN IMMEDIATE`` (pysqlite on its own would run DDL outside any transaction, unlocked)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    locking = sa.create_engine(engine.url, poolclass=sa.NullPool, connect_args={"timeout": 30})

    @sa.event.listens_for(locking, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver begins nothing; we do, below
        dbapi_conn.execute("PRAGMA busy_timeout=30000")

    @sa.event.listens_for(locking, "begin")
    def _begin_immediate(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return locking
