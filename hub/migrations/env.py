"""Alembic's environment for the read model.

``hub.migrations.upgrade`` hands it a connection that already holds the upgrade lock inside
an open transaction; the migrations then run in that transaction. Without one (``python -m
hub.migrations ...``, for writing revisions) it connects to ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from hub.readmodel import metadata


def run_migrations(connection: Connection) -> None:
    """Run the pending revisions on ``connection``."""
    # batch mode renders ALTERs SQLite can run (it recreates the table); PostgreSQL gets plain ALTERs
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    """Run on the connection handed over, or on a new one to ``sqlalchemy.url``."""
    if context.is_offline_mode():
        raise SystemExit("the read model's migrations run against a database, not as --sql scripts")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            run_migrations(conn)
            conn.commit()
    finally:
        engine.dispose()


run()
