"""Alembic migrations of the SQL read model, run by the hub itself: users need no alembic.ini.

``upgrade(engine)`` brings a read model to the newest revision (``ReadModel.create_schema``
calls it when the projector starts and when the CLI reads). It works from an installed
package: the script folder is this package's own folder.

* A database without a recorded revision whose ``orders`` table exists was made before the
  hub had migrations (``metadata.create_all``): it is stamped at ``BASELINE`` (0001 creates
  exactly those tables), then upgraded.
* Several workers starting at once upgrade one after the other: on PostgreSQL under a
  transaction-scoped advisory lock, on SQLite inside one ``BEGIN IMMEDIATE`` write
  transaction. Both run the whole upgrade in that one transaction, so the one who waited
  finds the schema at head and does nothing, and a failed upgrade leaves nothing half done.
* A database already at head is recognised without taking the lock, so readers and
  restarts do not queue behind the projector's writes.
* Within one process, upgrades run one at a time: alembic's ``op`` and ``context`` are
  process-wide proxies, so two threads migrating at once would mix their connections.

Write a new revision with ``python -m hub.migrations revision -m "what changes"`` (the
whole alembic command line, against ``ORDERHUB_DATABASE_URL`` or the default SQLite file);
every revision must run on SQLite and PostgreSQL (``op.batch_alter_table`` for SQLite's
limited ALTER), inside one transaction (so no ``CREATE INDEX CONCURRENTLY``), and keep
every row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, func, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from hub.errors import ConfigError

#: This package's folder: env.py, script.py.mako and versions/.
SCRIPT_DIR = Path(__file__).resolve().parent
#: The revision that creates the tables the read model had before it had migrations.
BASELINE = "0001"
#: The table whose presence, without a recorded revision, marks a pre-migration database.
PRE_MIGRATION_MARKER = "orders"
#: Key of the PostgreSQL advisory lock that serialises upgrades (any fixed bigint; "orderhub" in ASCII).
ADVISORY_LOCK_KEY = 0x6F72646572687562
#: How long a SQLite upgrade waits for another process's write transaction, in seconds.
SQLITE_LOCK_TIMEOUT_S = 60.0

_one_upgrade_per_process = threading.Lock()


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config for the read model's scripts; env.py runs on ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of the hub knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "hub/migrations/versions holds no revision"
    return head


def schema_revision(engine: Engine) -> str | None:
    """The revision the database at ``engine`` is at; None when it has none recorded."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the read model at ``engine`` to ``revision``, stamping a pre-migration database first.

    ConfigError when the database is at a revision this hub does not know (a newer hub wrote it).
    """
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    target = script.get_current_head() if revision == "head" else revision
    if schema_revision(engine) == target:
        return  # the usual start: nothing to do, and no lock to wait for
    with _one_upgrade_per_process, _exclusive(engine) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        _refuse_unknown(script, current, engine)
        if current is None and inspect(conn).has_table(PRE_MIGRATION_MARKER):
            command.stamp(alembic_config(conn), BASELINE)
        command.upgrade(alembic_config(conn), revision)


def _refuse_unknown(script: ScriptDirectory, current: str | None, engine: Engine) -> None:
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        where = engine.url.render_as_string(hide_password=True)
        raise ConfigError(f"the read model at {where} is at revision {current!r}, which this orderhub does not "
                          f"know (its newest is {script.get_current_head()!r}): a newer orderhub migrated it")


@contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that no other upgrade of the same database runs beside."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # released at commit or rollback, so a crashed upgrade cannot leave it held
            conn.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
            yield conn
    elif engine.url.database in (None, "", ":memory:"):
        with engine.begin() as conn:  # one process's private database: nobody to race
            yield conn
    else:
        with _sqlite_write_transaction(engine) as conn:
            yield conn


@contextmanager
def _sqlite_write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection to the same SQLite file holding its write lock from the first statement on.

    Python's sqlite3 commits before DDL and begins only before DML, so two processes could
    interleave their CREATE TABLEs; with the driver's own transaction handling off, BEGIN
    IMMEDIATE takes the write lock before the revision is even read (SQLAlchemy's documented
    recipe for transactional DDL on pysqlite).
    """
    locked = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": SQLITE_LOCK_TIMEOUT_S})

    @event.listens_for(locked, "connect")
    def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(locked, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with locked.begin() as conn:
            yield conn
    finally:
        locked.dispose()
