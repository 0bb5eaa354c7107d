"""Alembic's environment: migrations run on the connection ``connectors.migrations`` hands over.

There is no ``alembic.ini`` and no URL here: ``upgrade(engine)`` opens the transaction (with the lock
that keeps two processes from migrating at once) and passes its connection in ``config.attributes``,
so the whole upgrade is one transaction of the caller's.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through connectors.migrations.upgrade(engine)")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():  # the caller's transaction: nothing is committed here
    context.run_migrations()
