"""The read model's Alembic migrations keep every row, on SQLite and on PostgreSQL.

Each test runs on a SQLite file and on the session's PostgreSQL database (``postgres_url``),
emptied before and after the test.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from hub import migrations
from hub.readmodel import ReadModel, _history_row, alembic_version, metadata
from hub.settings import PROJECT_DIR
from localdev import process
from tests.factories import make_change, make_conflict, make_line, make_ref, make_snapshot

pytestmark = pytest.mark.integration

#: How many processes start the read model at once in the concurrency test.
STARTERS = 4
#: What a starter prints once it has imported everything and waits for the go.
READY = "ready"
#: A worker's start, reduced to the read model: wait for the go file, upgrade, print the revision.
STARTER = f"""
import sys
from pathlib import Path
from hub.readmodel import ReadModel
from localdev.process import wait_until
url, go = sys.argv[1], Path(sys.argv[2])
print({READY!r}, flush=True)
assert wait_until(go.exists, 60, interval=0.005)
model = ReadModel(url)
model.create_schema()
print("revision", model.schema_revision(), flush=True)
model.close()
"""


def initial_tables() -> MetaData:
    """The tables of revision 0001: exactly what ``create_all`` made before the hub had migrations."""
    return ScriptDirectory.from_config(migrations.alembic_config()).get_revision("0001").module.initial_tables()


def empty_database(url: str) -> None:
    """Drop every table in the database at ``url``, whatever revision made it."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        found = MetaData()
        found.reflect(engine)
        found.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file under tmp_path, or the session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'orderhub.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    empty_database(url)
    yield url
    empty_database(url)


@pytest.fixture
def model(database_url: str) -> Iterator[ReadModel]:
    """A read model on the empty database, its schema not created."""
    model = ReadModel(database_url)
    yield model
    model.close()


def fill_as_at_0001(model: ReadModel) -> None:
    """Orders, lines and references written by the projector; history and conflicts as 0001 stored them."""
    model.project_snapshots([
        make_snapshot("O-1", 2, lines=[make_line(10, "MAT-1"), make_line(20, "MAT-2", "0.125")],
                      external_refs=[make_ref("CRM", "Opportunity", "OPP-1")]),
        make_snapshot("O-3", 1, net="12345678901234.123456"),
    ])
    changes = [make_change("O-1", 1), make_change("O-1", 2), make_change("O-3", 1),
               make_change("O-2", 1, external_refs_added=[make_ref("ERP", "A_SalesOrder", "4711")])]
    stored = [_conflict_as_at_0001("O-1", "c-1"),   # its order has a snapshot
              _conflict_as_at_0001("O-2", "c-2"),   # only its history is projected yet
              _conflict_as_at_0001("O-9", "c-9")]   # the read model never saw its order
    tables = initial_tables().tables
    with model.engine.begin() as conn:  # history and conflicts as 0001 stored them (later columns absent)
        conn.execute(insert(tables["order_history"]), [
            {k: v for k, v in _history_row(c).items() if k in tables["order_history"].c} for c in changes])
        conn.execute(insert(tables["order_xrefs"]), [
            {"system": "ERP", "object_type": "A_SalesOrder", "external_id": "4711", "order_id": "O-2",
             "external_number": None}])
        conn.execute(insert(tables["order_conflicts"]), stored)


def _conflict_as_at_0001(order_id: str, record_id: str) -> dict[str, Any]:
    """A conflict row as revision 0001 stored it: no order number."""
    conflict = make_conflict(order_id, 2, record_id=record_id)
    row = conflict.model_dump(include={"record_id", "order_id", "event_id", "base_version", "current_version",
                                       "parked", "resulting_version", "decided_at"})
    return {**row, "fields": json.dumps([f.model_dump(mode="json") for f in conflict.fields])}


def rows_of_0001(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every 0001 table, the 0001 columns only, by primary key."""
    with engine.connect() as conn:
        return {table.name: [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]
                for table in initial_tables().sorted_tables}


def test_a_database_at_0001_keeps_every_row_when_upgraded(model: ReadModel) -> None:
    """A read model at revision 0001 holding orders is upgraded to head with every row kept and filled in."""
    migrations.upgrade(model.engine, "0001")
    assert model.schema_revision() == "0001"
    fill_as_at_0001(model)
    before = rows_of_0001(model.engine)
    model.create_schema()
    assert model.schema_revision() == migrations.head_revision()
    assert rows_of_0001(model.engine) == before and sum(map(len, before.values())) == 14
    numbers = {c.record_id: c.order_number for c in model.parked_conflicts()}
    assert numbers == {"c-1": "SO-O-1", "c-2": "SO-O-2", "c-9": None}  # from the order, its history, or none
    assert model.order("OPP-1").lines[1].quantity == make_line(20, "MAT-2", "0.125").quantity
    assert [o.order_id for o in model.list_orders(text="so-o")] == ["O-1", "O-3"]


def test_a_pre_migration_database_is_stamped_and_upgraded(model: ReadModel) -> None:
    """Tables made by ``create_all`` before migrations existed are taken for 0001 and upgraded, rows kept."""
    initial_tables().create_all(model.engine)
    fill_as_at_0001(model)
    before = rows_of_0001(model.engine)
    assert model.schema_revision() is None
    model.create_schema()
    assert model.schema_revision() == migrations.head_revision()
    assert rows_of_0001(model.engine) == before
    assert model.order("O-3").amounts.net == make_snapshot("O-3", 1, net="12345678901234.123456").amounts.net


def test_the_schema_at_head_is_the_metadata(model: ReadModel) -> None:
    """The migrations build exactly the tables, columns and indexes ``hub.readmodel.metadata`` declares."""
    model.create_schema()
    with model.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_a_downgrade_to_0001_and_back_keeps_every_row(model: ReadModel) -> None:
    """Each revision's downgrade undoes it without losing a row, and upgrading again restores it."""
    migrations.upgrade(model.engine, "0001")
    fill_as_at_0001(model)
    before = rows_of_0001(model.engine)
    model.create_schema()
    with model.engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "0001")
    assert model.schema_revision() == "0001" and rows_of_0001(model.engine) == before
    model.create_schema()
    assert model.schema_revision() == migrations.head_revision() and rows_of_0001(model.engine) == before


@pytest.mark.parametrize("start", ["empty", "pre-migration"])
def test_workers_starting_at_once_all_get_the_schema(database_url: str, start: str, tmp_path: Path) -> None:
    """Several processes upgrading one database at the same moment all succeed, and it is migrated once."""
    if start == "pre-migration":
        ReadModel(database_url).close()  # makes the SQLite file's folder
        engine = create_engine(database_url, poolclass=NullPool)
        initial_tables().create_all(engine)
        engine.dispose()
    go = tmp_path / "go"
    logs = [tmp_path / f"starter-{i}.log" for i in range(STARTERS)]
    pids = [process.spawn([sys.executable, "-c", STARTER, database_url, str(go)], log=log,
                          pidfile=log.with_suffix(".pid"), cwd=PROJECT_DIR) for log in logs]
    try:
        assert process.wait_until(lambda: all(READY in log.read_text() for log in logs), 60), \
            "\n".join(process.tail(log) for log in logs)
        go.touch()  # every starter has imported everything: they now race for the schema
        assert process.wait_until(lambda: not any(map(process.alive, pids)), 120)
    finally:
        process.stop(pids)
    head = migrations.head_revision()
    assert [process.tail(log, 1) for log in logs] == [f"revision {head}"] * STARTERS, \
        "\n\n".join(process.tail(log) for log in logs)
    model = ReadModel(database_url)
    try:
        model.project_snapshots([make_snapshot("O-1", 1)])
        assert model.order("O-1") == make_snapshot("O-1", 1)
        with model.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(alembic_version)).scalar_one() == 1
    finally:
        model.close()


def test_threads_upgrading_several_databases_at_once_all_succeed(tmp_path: Path) -> None:
    """Threads of one process upgrading several databases at once each get their own schema."""
    models = [ReadModel(f"sqlite:///{tmp_path / name / 'orderhub.db'}") for name in ("a", "b", "c", "d")]
    together = threading.Barrier(len(models))

    def start_worker(model: ReadModel) -> str | None:
        together.wait(timeout=30)
        model.create_schema()
        return model.schema_revision()

    try:
        with ThreadPoolExecutor(len(models)) as pool:
            revisions = [f.result(timeout=120) for f in [pool.submit(start_worker, m) for m in models]]
        assert revisions == [migrations.head_revision()] * len(models)
    finally:
        for model in models:
            model.close()
