"""The SQL read model projects events idempotently and answers the CLI, here on SQLite.

``ReadModelContract`` is the behaviour every backend must show; ``TestSqliteReadModel`` runs
it on a SQLite file and ``tests/integration/test_readmodel_postgres.py`` on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from hub.errors import ConfigError
from hub.readmodel import (AmbiguousOrder, OrderNotFound, ReadModel, conflicts_text, history_text, order_conflicts,
                           show_order_text)
from hub.settings import Settings
from tests.factories import (make_change, make_conflict, make_diff, make_line, make_ref, make_snapshot,
                             order_number_of)


class ReadModelContract:
    """Behaviour shared by every backend; subclasses provide the ``readmodel`` fixture."""

    def test_replayed_changes_leave_the_same_rows(self, readmodel: ReadModel) -> None:
        """Projecting the same changes twice leaves exactly the rows the first projection wrote."""
        changes = [make_change("O-1", v) for v in (1, 2, 3)]
        readmodel.project_changes(changes)
        first = readmodel.history("O-1")
        readmodel.project_changes(changes)
        readmodel.project_changes(changes[1:2])
        assert readmodel.history("O-1") == first
        assert readmodel.count_history() == 3

    def test_versions_are_stored_per_order(self, readmodel: ReadModel) -> None:
        """Each order keeps its own ascending versions, whatever order the batch came in."""
        readmodel.project_changes([make_change("O-2", 2), make_change("O-1", 1), make_change("O-2", 1)])
        readmodel.project_changes([make_change("O-1", 2), make_change("O-1", 3)])
        assert readmodel.versions("O-1") == [1, 2, 3]
        assert readmodel.versions("O-2") == [1, 2]
        assert readmodel.versions("O-9") == []
        assert readmodel.all_order_versions() == {"O-1": [1, 2, 3], "O-2": [1, 2]}

    def test_history_rows_carry_the_change(self, readmodel: ReadModel) -> None:
        """A history row holds who, where, how and the decoded before/after of every field."""
        readmodel.project_changes([make_change("O-1", 1), make_change(
            "O-1", 2, source_system="ERP", actor_id="erp-bot", actor_role="connector", base_version=0,
            diffs=[make_diff("customer.name", '"ACME"', '"ACME GmbH"')])])
        row = readmodel.history("O-1")[1]
        assert (row["version"], row["previous_version"], row["base_version"], row["outcome"]) == (2, 1, 0, "APPLIED")
        assert (row["source_system"], row["actor_id"], row["actor_role"]) == ("ERP", "erp-bot", "connector")
        assert row["diffs"] == [{"field": "customer.name", "before": '"ACME"', "after": '"ACME GmbH"'}]
        assert row["accepted_at"] == make_change("O-1", 2).accepted_at

    def test_older_snapshot_does_not_overwrite_newer(self, readmodel: ReadModel) -> None:
        """A snapshot older than the stored one changes neither the order nor its lines."""
        readmodel.project_snapshots([make_snapshot("O-1", 3, lines=[make_line(10), make_line(20)])])
        readmodel.project_snapshots([make_snapshot("O-1", 2, lines=[make_line(30)], customer_name="Old")])
        order = readmodel.get_order("O-1")
        assert (order["version"], order["customer_name"]) == (3, "ACME GmbH")
        assert [line["line_no"] for line in order["lines"]] == [10, 20]

    def test_newer_snapshot_replaces_order_and_lines(self, readmodel: ReadModel) -> None:
        """A newer snapshot replaces the order's fields and its whole set of lines."""
        readmodel.project_snapshots([make_snapshot("O-1", 1, lines=[make_line(10), make_line(20)])])
        readmodel.project_snapshots([make_snapshot("O-1", 2, lines=[make_line(20, quantity="7")], net="250.50")])
        order = readmodel.get_order("O-1")
        assert (order["version"], order["amount_net"]) == (2, Decimal("250.50"))
        assert [(line["line_no"], line["quantity"]) for line in order["lines"]] == [(20, Decimal("7"))]

    def test_one_batch_keeps_the_newest_snapshot(self, readmodel: ReadModel) -> None:
        """Within one batch the highest version of an order wins, and replaying the batch changes nothing."""
        batch = [make_snapshot("O-1", 2), make_snapshot("O-1", 1, customer_name="Old"), make_snapshot("O-2", 1)]
        readmodel.project_snapshots(batch)
        first = readmodel.get_order("O-1")
        readmodel.project_snapshots(batch)
        assert readmodel.get_order("O-1") == first
        assert (first["version"], first["customer_name"]) == (2, "ACME GmbH")

    def test_values_round_trip_exactly(self, readmodel: ReadModel) -> None:
        """Decimals come back exact, dates as dates and timestamps as aware UTC instants."""
        snap = make_snapshot("O-1", 1, net="12345678901234.123456", requested_delivery=dt.date(2024, 6, 1),
                             lines=[make_line(10, quantity="0.001", good_quantity=Decimal("1.5"), revision="B")])
        readmodel.project_snapshots([snap])
        order = readmodel.get_order("O-1")
        assert order["amount_net"] == Decimal("12345678901234.123456")
        assert order["requested_delivery"] == dt.date(2024, 6, 1)
        assert order["updated_at"] == snap.updated_at and order["updated_at"].utcoffset() == dt.timedelta(0)
        line = order["lines"][0]
        assert (line["quantity"], line["good_quantity"], line["material_revision"]) == (Decimal("0.001"),
                                                                                        Decimal("1.5"), "B")
        assert type(snap).model_validate_json(order["snapshot"]) == snap

    def test_get_order_by_id_number_and_external_id(self, readmodel: ReadModel) -> None:
        """An order is found by its id, its number, an external id or number, and SYSTEM/Type/id."""
        readmodel.project_snapshots([make_snapshot("O-1", 1, external_refs=[make_ref("CRM", "Opportunity", "OPP-7")])])
        readmodel.project_changes([make_change("O-1", 2, external_refs_added=[
            make_ref("ERP", "A_SalesOrder", "0000004711", external_number="4711")])])
        for name in ("O-1", order_number_of("O-1"), "OPP-7", "0000004711", "4711", "ERP/A_SalesOrder/0000004711"):
            assert readmodel.get_order(name)["order_id"] == "O-1", name
        assert {r["external_id"] for r in readmodel.get_order("O-1")["external_refs"]} == {"OPP-7", "0000004711"}

    def test_unknown_and_ambiguous_orders_raise(self, readmodel: ReadModel) -> None:
        """An unknown name raises OrderNotFound, and an external id shared by two orders raises AmbiguousOrder."""
        readmodel.project_snapshots([make_snapshot("O-1", 1, external_refs=[make_ref("CRM", "Opportunity", "X")]),
                                     make_snapshot("O-2", 1, external_refs=[make_ref("EDI", "ORDERS", "X")])])
        with pytest.raises(OrderNotFound):
            readmodel.get_order("nope")
        with pytest.raises(OrderNotFound):
            readmodel.history("nope")
        with pytest.raises(AmbiguousOrder):
            readmodel.get_order("X")
        assert readmodel.get_order("EDI/ORDERS/X")["order_id"] == "O-2"

    def test_conflicts_upsert_by_record_id(self, readmodel: ReadModel) -> None:
        """Projecting a conflict again, even with a later outcome, keeps one row per record_id."""
        readmodel.project_conflicts([make_conflict("O-1", 2)])
        readmodel.project_conflicts([make_conflict("O-1", 2, parked=False, resulting_version=3)])
        with readmodel.engine.connect() as conn:
            rows = conn.execute(select(order_conflicts)).mappings().all()
        assert [(r["order_id"], r["parked"], r["resulting_version"]) for r in rows] == [("O-1", False, 3)]
        assert '"field": "priority"' in rows[0]["fields"]

    def test_show_text_has_header_and_lines(self, readmodel: ReadModel) -> None:
        """``orders show`` prints the number, status, customer, amounts and one row per line."""
        readmodel.project_snapshots([make_snapshot("O-1", 2, lines=[make_line(10, "MAT-100"), make_line(20, "MAT-200")],
                                                   on_hold=True)])
        text = show_order_text(Settings(database_url=readmodel.url), order_number_of("O-1"))
        for expected in ("SO-O-1", "version 2", "CONFIRMED", "ON HOLD", "ACME GmbH", "EUR", "net 100.00",
                         "MAT-100", "MAT-200"):
            assert expected in text

    def test_history_text_has_before_and_after(self, readmodel: ReadModel) -> None:
        """``orders history`` prints one line per version with actor, source, outcome and each before -> after."""
        readmodel.project_changes([
            make_change("O-1", 1, diffs=[make_diff("customer.name", None, '"ACME"')]),
            make_change("O-1", 2, source_system="ERP", actor_id="erp-bot", actor_role="connector",
                        diffs=[make_diff("customer.name", '"ACME"', '"ACME GmbH"')]),
        ])
        text = history_text(Settings(database_url=readmodel.url), "O-1")
        assert 'customer.name: "ACME" -> "ACME GmbH"' in text
        assert 'customer.name: null -> "ACME"' in text
        assert "erp-bot/connector" in text and "via ERP" in text and "APPLIED" in text
        assert text.index("v1 ") < text.index("v2 ")

    def test_text_for_unknown_order_says_so(self, readmodel: ReadModel) -> None:
        """Every CLI text names the unknown order and the read model it looked in (the CLI exits 1)."""
        settings = Settings(database_url=readmodel.url)
        for text in (show_order_text, history_text, conflicts_text):
            with pytest.raises(OrderNotFound, match="^no order 'SO-404' in the read model at "):
                text(settings, "SO-404")

    def test_parked_conflicts_are_listed_and_show_points_at_them(self, readmodel: ReadModel) -> None:
        """``orders conflicts`` lists parked ones first with every value and writer; ``show`` counts them."""
        readmodel.project_snapshots([make_snapshot("O-1", 3)])
        readmodel.project_conflicts([make_conflict("O-1", 2, parked=False, resulting_version=3),
                                     make_conflict("O-1", 3, field="instructions", proposed_value='["x"]',
                                                   record_id="e-2:conflict", event_id="e-2")])
        settings = Settings(database_url=readmodel.url)
        lines = conflicts_text(settings, "O-1").splitlines()
        assert lines[0] == "conflicts of order O-1: 1 parked, 2 in all"
        assert "PARKED, waiting for a person" in lines[1] and "decided, made v3" in lines[3]
        assert lines[2].strip() == ('instructions: PARKED by MANUAL (owner ERP): base 1, current 2 by ERP, '
                                    'proposed ["x"] by CRM')
        assert "conflicts   1 parked, waiting for a person: orderhub orders conflicts SO-O-1" in \
            show_order_text(settings, "O-1")

    def test_a_reference_stays_with_the_order_that_had_it_first(self, readmodel: ReadModel) -> None:
        """A second order claiming an external id does not take it over (the resolver keeps the first too)."""
        readmodel.project_snapshots([make_snapshot("O-1", 1, external_refs=[make_ref("ERP", "A_SalesOrder", "4711")])])
        readmodel.project_snapshots([make_snapshot("O-2", 1, external_refs=[make_ref("ERP", "A_SalesOrder", "4711")])])
        assert readmodel.get_order("ERP/A_SalesOrder/4711")["order_id"] == "O-1"


class TestSqliteReadModel(ReadModelContract):
    """The contract on a SQLite file."""

    @pytest.fixture
    def readmodel(self, tmp_path):
        model = ReadModel(f"sqlite:///{tmp_path / 'state' / 'orderhub.db'}")
        model.create_schema()
        yield model
        model.close()


def test_sqlite_file_gets_its_folder_and_wal(tmp_path) -> None:
    """A SQLite read model creates its file's folder and runs in WAL mode."""
    path = tmp_path / "a" / "b" / "orderhub.db"
    model = ReadModel(f"sqlite:///{path}")
    model.create_schema()
    model.project_snapshots([make_snapshot("O-1", 1)])
    model.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 1


def test_cli_text_defaults_to_the_state_folder(tmp_path) -> None:
    """Without a database URL the CLI reads an (empty, new) SQLite file in the state folder."""
    with pytest.raises(OrderNotFound) as raised:
        show_order_text(Settings(state_dir=tmp_path, database_url=None), "O-1")
    assert raised.value.args[0] == f"no order 'O-1' in the read model at sqlite:///{tmp_path / 'orderhub.db'}"
    assert (tmp_path / "orderhub.db").exists()


def test_unsupported_database_is_a_config_error() -> None:
    """A URL of a database other than SQLite or PostgreSQL is refused when the model is built."""
    with pytest.raises(ConfigError, match="sqlite or postgresql"):
        ReadModel("mysql://u@localhost/db")


def test_empty_batches_write_nothing(tmp_path) -> None:
    """Empty batches are accepted and leave the model empty."""
    model = ReadModel(f"sqlite:///{tmp_path / 'orderhub.db'}")
    model.create_schema()
    model.project_changes([])
    model.project_snapshots([])
    model.project_conflicts([])
    with model.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(order_conflicts)).scalar_one() == 0
    assert model.count_history() == 0 and model.all_order_versions() == {}
    model.close()
