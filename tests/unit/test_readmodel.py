"""The SQL read model projects events idempotently and answers the CLI, here on SQLite.

``ReadModelContract`` is the behaviour every backend must show; ``TestSqliteReadModel`` runs
it on a SQLite file and ``tests/integration/test_readmodel_postgres.py`` on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import func, insert, select

from hub import migrations
from hub.errors import ConfigError
from hub.events import (Amounts, Approval, ChangeOutcome, Customer, FieldDiff, Instruction, LifecycleStatus, Material,
                        OrderAlert, OrderLine, OrderSnapshot)
from hub.readmodel import (AmbiguousOrder, ConflictRecord, HistoryEntry, OrderNotFound, OrderSummary, ReadModel,
                           alembic_version, conflicts_text, history_text, order_conflicts, order_text, show_order_text)
from hub.settings import Settings
from tests.factories import (T0, make_change, make_conflict, make_diff, make_line, make_ref, make_snapshot,
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

    def test_history_names_the_references_a_change_attached(self, readmodel: ReadModel) -> None:
        """A change that attached an outside reference (the ERP's number) shows it in the history."""
        ref = make_ref("ERP", "A_SalesOrder", "0000004711", external_number="4711")
        readmodel.project_changes([make_change("O-5", 1, external_refs_added=[ref])])
        (entry,) = readmodel.history("O-5")
        assert entry.refs_added == (ref,)

    def test_alerts_are_kept_once_and_the_open_ones_show_with_the_order(self, readmodel: ReadModel) -> None:
        """Due-date alerts by record id; the ones raised and not cleared are the order's open alerts."""
        def alert(kind: str, stage: str, day: int) -> OrderAlert:
            return OrderAlert(record_id=f"O-1:alert:{stage}:2024-07-01:1:{kind.lower()}", order_id="O-1",
                              order_number="ORD-2024-00-000001", version=7, kind=kind, stage=stage,
                              notify="production_lead", due_date=dt.date(2024, 7, 1), occurrence=1, days_left=30 - day,
                              status="RELEASED", on_hold=False, reason=f"{stage} {kind}",
                              decided_at=dt.datetime(2024, 6, day, 8, tzinfo=dt.UTC))
        raised, escalated, cleared = alert("RAISED", "due_soon", 24), alert("RAISED", "escalated", 28), \
            alert("CLEARED", "due_soon", 29)
        readmodel.project_alerts([raised, escalated])
        readmodel.project_alerts([raised, cleared])  # a record read again is the same row
        assert readmodel.alerts("O-1") == [raised, escalated, cleared]
        assert readmodel.open_alerts("O-1") == [escalated]
        # the condition came back: its second occurrence is a row of its own, open until its own clearing
        again = raised.model_copy(update={"record_id": "O-1:alert:due_soon:2024-07-01:2:raised", "occurrence": 2,
                                          "decided_at": dt.datetime(2024, 6, 20, 8, tzinfo=dt.UTC)})  # an earlier clock
        readmodel.project_alerts([again])
        assert readmodel.open_alerts("O-1") == [again, escalated]
        readmodel.project_snapshots([full_snapshot("O-1")])
        text = order_text(readmodel.order("O-1"), alerts=readmodel.open_alerts("O-1"))
        assert "escalated for production_lead since 2024-06-28T08:00:00+00:00: escalated RAISED" in text

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
        entry = readmodel.history("O-1")[1]
        assert isinstance(entry, HistoryEntry)
        assert (entry.version, entry.previous_version, entry.base_version, entry.outcome) == (
            2, 1, 0, ChangeOutcome.APPLIED)
        assert (entry.source_system, entry.actor_id, entry.actor_role) == ("ERP", "erp-bot", "connector")
        assert entry.diffs == (FieldDiff(field="customer.name", before='"ACME"', after='"ACME GmbH"'),)
        assert entry.accepted_at == make_change("O-1", 2).accepted_at
        assert (entry.order_number, entry.event_id, entry.record_id) == ("SO-O-1", "evt-O-1-v2", "chg-O-1-v2")
        assert [e.version for e in readmodel.history(order_number_of("O-1"))] == [1, 2]

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
        assert "conflicts     1 parked, waiting for a person: orderhub orders conflicts SO-O-1" in \
            show_order_text(settings, "O-1")

    def test_a_reference_stays_with_the_order_that_had_it_first(self, readmodel: ReadModel) -> None:
        """A second order claiming an external id does not take it over (the resolver keeps the first too)."""
        readmodel.project_snapshots([make_snapshot("O-1", 1, external_refs=[make_ref("ERP", "A_SalesOrder", "4711")])])
        readmodel.project_snapshots([make_snapshot("O-2", 1, external_refs=[make_ref("ERP", "A_SalesOrder", "4711")])])
        assert readmodel.get_order("ERP/A_SalesOrder/4711")["order_id"] == "O-1"

    def test_order_is_the_typed_snapshot_by_every_name(self, readmodel: ReadModel) -> None:
        """``order`` returns the projected OrderSnapshot itself, found by id, number or any external id."""
        snap = full_snapshot("O-1")
        readmodel.project_snapshots([snap])
        for name in ("O-1", snap.order_number, "OPP-7", "4711", "ERP/A_SalesOrder/0000004711"):
            assert readmodel.order(name) == snap, name

    def test_order_without_a_snapshot_is_not_found(self, readmodel: ReadModel) -> None:
        """An order whose changes are projected but whose snapshot is not yet raises OrderNotFound."""
        readmodel.project_changes([make_change("O-1", 1)])
        with pytest.raises(OrderNotFound):
            readmodel.order("O-1")
        with pytest.raises(OrderNotFound):
            readmodel.order("O-404")

    def test_list_orders_filters_and_pages(self, readmodel: ReadModel) -> None:
        """``list_orders`` applies every filter given, newest update first, and pages with limit and offset."""
        readmodel.project_snapshots([
            make_snapshot("O-1", 1, requested_delivery=dt.date(2024, 6, 1), on_hold=True),
            make_snapshot("O-2", 2, status=LifecycleStatus.RELEASED, requested_delivery=dt.date(2024, 6, 10),
                          customer=Customer(id="CUST-2", name="Umbrella 100% Ltd")),
            make_snapshot("O-3", 3, external_refs=[make_ref("ERP", "A_SalesOrder", "0000004711", "4711")]),
        ])

        def ids(**filters: Any) -> list[str]:
            return [o.order_id for o in readmodel.list_orders(**filters)]

        assert ids() == ["O-3", "O-2", "O-1"]
        assert ids(status=LifecycleStatus.RELEASED) == ids(status="RELEASED") == ["O-2"]
        assert ids(customer_id="CUST-1") == ["O-3", "O-1"]
        assert ids(on_hold=True) == ["O-1"] and ids(on_hold=False) == ["O-3", "O-2"]
        assert ids(due_before=dt.date(2024, 6, 10)) == ["O-1"]
        assert ids(text="so-o-2") == ["O-2"] and ids(text="umbrella") == ["O-2"] and ids(text="cust-2") == ["O-2"]
        assert ids(text="4711") == ["O-3"] and ids(text="00047") == ["O-3"]
        assert ids(text="100%") == ["O-2"] and ids(text="%") == ["O-2"]  # wildcards are matched literally
        assert ids(customer_id="CUST-1", on_hold=False) == ["O-3"]
        assert ids(limit=2) == ["O-3", "O-2"] and ids(limit=2, offset=2) == ["O-1"]

    def test_list_orders_returns_summaries(self, readmodel: ReadModel) -> None:
        """Each listed order is a typed summary of the projected snapshot."""
        snap = full_snapshot("O-1")
        readmodel.project_snapshots([snap])
        assert readmodel.list_orders() == [OrderSummary(
            order_id="O-1", order_number=snap.order_number, version=snap.version, status=LifecycleStatus.APPROVED,
            on_hold=True, customer_id="CUST-42", customer_name="Initech AG", requested_delivery=dt.date(2024, 7, 1),
            promised_delivery=dt.date(2024, 7, 5), amount_net=Decimal("1190.50"), currency="CHF",
            updated_at=snap.updated_at)]

    def test_conflict_records_are_typed_with_their_order_number(self, readmodel: ReadModel) -> None:
        """``conflicts`` returns typed records carrying the order number and every field conflict."""
        conflict = make_conflict("O-1", 2)
        readmodel.project_conflicts([conflict])
        [record] = readmodel.conflicts("O-1")
        assert isinstance(record, ConflictRecord)
        assert (record.record_id, record.order_id, record.order_number, record.event_id) == (
            conflict.record_id, "O-1", "SO-O-1", conflict.event_id)
        assert (record.base_version, record.current_version, record.parked, record.resulting_version,
                record.decided_at) == (1, 2, True, None, conflict.decided_at)
        assert record.fields == tuple(conflict.fields)

    def test_parked_conflicts_across_orders_oldest_first(self, readmodel: ReadModel) -> None:
        """``parked_conflicts`` lists only parked conflicts, of every order, the longest waiting first, up to limit."""
        readmodel.project_conflicts([
            make_conflict("O-2", 5, record_id="c-new", event_id="e-new"),
            make_conflict("O-1", 3, record_id="c-old", event_id="e-old"),
            make_conflict("O-1", 4, record_id="c-done", event_id="e-done", parked=False, resulting_version=5),
        ])
        assert [(c.record_id, c.order_number) for c in readmodel.parked_conflicts()] == [
            ("c-old", "SO-O-1"), ("c-new", "SO-O-2")]
        assert [c.record_id for c in readmodel.parked_conflicts(limit=1)] == ["c-old"]

    def test_conflict_reason_is_printed_when_recorded(self, readmodel: ReadModel) -> None:
        """``orders conflicts`` prints a field conflict's reason under it when the record has one."""
        reason = "owner_wins: neither side owns the field (owner ERP); parked for a person"
        conflict = make_conflict("O-1", 2)
        readmodel.project_snapshots([make_snapshot("O-1", 2)])
        readmodel.project_conflicts([conflict.model_copy(update={
            "fields": [conflict.fields[0].model_copy(update={"reason": reason})]})])
        lines = conflicts_text(Settings(database_url=readmodel.url), "O-1").splitlines()
        assert lines[2].strip().startswith("priority: PARKED by MANUAL (owner ERP)")
        assert lines[3] == f"        why: {reason}"

    def test_conflicts_recorded_by_an_older_hub_still_read(self, readmodel: ReadModel) -> None:
        """Stored field conflicts without the newer keys (reason, base_value_known) read with their defaults."""
        stored = make_conflict("O-1", 2).fields[0].model_dump(mode="json")
        del stored["reason"], stored["base_value_known"]
        readmodel.project_snapshots([make_snapshot("O-1", 2)])
        with readmodel.engine.begin() as conn:
            conn.execute(insert(order_conflicts).values(
                record_id="old", order_id="O-1", event_id="e", base_version=1, current_version=2, parked=True,
                decided_at=T0, fields=json.dumps([stored])))
        [record] = readmodel.conflicts("O-1")
        assert (record.order_number, record.fields[0].reason, record.fields[0].base_value_known) == (None, None, True)
        assert record.fields[0] == make_conflict("O-1", 2).fields[0]
        assert "why:" not in conflicts_text(Settings(database_url=readmodel.url), "O-1")

    def test_show_text_has_every_canonical_field(self, readmodel: ReadModel) -> None:
        """``orders show`` prints every value of a snapshot with every field set, the lines' ones included."""
        snap = full_snapshot("O-1")
        readmodel.project_snapshots([snap])
        text = show_order_text(Settings(database_url=readmodel.url), "O-1")
        missing = [value for value in leaf_texts(snap) if value not in text]
        assert not missing, text
        assert "ON HOLD" in text and "credit block; quality hold" in text
        assert "coating: RAL 7016" in text and "2024-06-28" in text  # instructions as key: text; confirmed date

    def test_create_schema_leaves_the_newest_revision(self, readmodel: ReadModel) -> None:
        """The schema is at the newest migration, and creating it again changes nothing."""
        readmodel.project_snapshots([make_snapshot("O-1", 1)])
        readmodel.create_schema()
        assert readmodel.schema_revision() == migrations.head_revision()
        with readmodel.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(alembic_version)).scalar_one() == 1
        assert readmodel.order("O-1").version == 1


class TestSqliteReadModel(ReadModelContract):
    """The contract on a SQLite file."""

    @pytest.fixture
    def readmodel(self, tmp_path):
        model = ReadModel(f"sqlite:///{tmp_path / 'state' / 'orderhub.db'}")
        model.create_schema()
        yield model
        model.close()


def full_snapshot(order_id: str) -> OrderSnapshot:
    """A snapshot with every canonical field set to a value of its own (a test fails when a new field is not)."""
    snap = make_snapshot(
        order_id, 7, status=LifecycleStatus.APPROVED, on_hold=True, hold_reasons=["credit block", "quality hold"],
        external_refs=[make_ref("CRM", "Opportunity", "OPP-7"),
                       make_ref("ERP", "A_SalesOrder", "0000004711", external_number="4711")],
        customer=Customer(id="CUST-42", name="Initech AG"), contact="Jane Roe", sales_owner="bob.sales",
        customer_po_number="PO-99881", currency="CHF",
        amounts=Amounts(net=Decimal("1190.50"), tax=Decimal("91.67"), gross=Decimal("1282.17"),
                        crm_expected=Decimal("1200.00")),
        requested_delivery=dt.date(2024, 7, 1), promised_delivery=dt.date(2024, 7, 5),
        planned_start=dt.datetime(2024, 6, 20, 6, tzinfo=dt.UTC),
        planned_end=dt.datetime(2024, 6, 21, 14, tzinfo=dt.UTC),
        actual_start=dt.datetime(2024, 6, 20, 7, 30, tzinfo=dt.UTC),
        actual_end=dt.datetime(2024, 6, 21, 15, 45, tzinfo=dt.UTC),
        priority=87, terms="FCA Basel, 30 days net", plant="PL-0815", credit_status="BLOCKED",
        instructions=[Instruction(key="coating", text="RAL 7016"), Instruction(text="handle with gloves")],
        lines=[OrderLine(line_no=10, material=Material(id="MAT-771", revision="REV-C"), quantity=Decimal("250.000"),
                         unit="C62", raw_unit="pcs", unit_price=Decimal("4.762"), confirmed_date=dt.date(2024, 6, 28),
                         confirmed_quantity=Decimal("240.000"), good_quantity=Decimal("238.000"),
                         scrap_quantity=Decimal("2.000"))],
        approvals=[Approval(level="sales", decision="approved", comment="margin ok"),
                   Approval(level="plant", decision="refused", comment="no capacity in June")],
        created_at=dt.datetime(2024, 4, 30, 9, 15, tzinfo=dt.UTC))
    given: dict[str, bool] = {}
    for path, value in leaves(snap):  # a field counts as set when one of its occurrences has a value
        field = re.sub(r"\.\d+", "", path)
        given[field] = given.get(field, False) or value not in (None, [], "")
    unset = [field for field, has_value in given.items() if not has_value]
    assert not unset, f"full_snapshot leaves {unset} unset: give them values so orders show is checked for them"
    return snap


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every scalar inside a model, with its dotted path (empty lists count as leaves)."""
    if isinstance(value, BaseModel):
        return [leaf for name in type(value).model_fields for leaf in leaves(getattr(value, name), f"{path}{name}.")]
    if isinstance(value, list) and value:
        return [leaf for i, item in enumerate(value) for leaf in leaves(item, f"{path}{i}.")]
    return [(path.rstrip("."), value)]


def leaf_texts(snap: OrderSnapshot) -> list[str]:
    """How each non-boolean scalar of the snapshot is written for a person."""
    def text(value: Any) -> str:
        if isinstance(value, Enum):
            return value.value
        return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)
    return [text(value) for _, value in leaves(snap) if value is not None and not isinstance(value, bool)]


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


def test_a_database_from_a_newer_hub_is_refused(tmp_path) -> None:
    """A read model at a revision this hub does not know is a ConfigError naming it, not a crash later."""
    model = ReadModel(f"sqlite:///{tmp_path / 'orderhub.db'}")
    model.create_schema()
    with model.engine.begin() as conn:
        conn.execute(alembic_version.update().values(version_num="9999"))
    with pytest.raises(ConfigError, match="at revision '9999', which this orderhub does not know"):
        model.create_schema()
    with pytest.raises(ConfigError, match="'9999'"):
        show_order_text(Settings(database_url=model.url), "O-1")
    model.close()
