"""The ERP mapping both ways: canonical order -> SAP sales order, and SAP sales order -> field changes."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from connectors.erp.client import SalesOrder, SalesOrderItem
from connectors.erp.mapping import (CREDIT_HOLD_REASON, SalesArea, UnmappableOrder, erp_changes,
                                    erp_deletion_changes, erp_reference, new_sales_order, sales_order_update)
from hub.events import Customer, Instruction, LifecycleStatus, OrderSnapshot
from hub.propose import load_proposal
from tests.factories import make_line, make_snapshot


def snapshot(**fields: Any) -> OrderSnapshot:
    """A fresh DRAFT order as the CRM created it: two lines, no ERP values yet."""
    values: dict[str, Any] = {
        "status": LifecycleStatus.DRAFT, "customer": Customer(id="1000001", name="ACME"),
        "customer_po_number": "PO-4711", "requested_delivery": dt.date(2027, 1, 15), "currency": "EUR",
        "net": None, "instructions": [Instruction(key="coating", text="zinc 12 um"), Instruction(text="no pallets")],
        "lines": [make_line(10, "MAT-4711", "250", "C62"), make_line(20, "MAT-0815", "3.5", "KGM")],
    }
    return make_snapshot("ORD-1", **{**values, **fields})


def item(number: str = "000010", material: str = "MAT-4711", quantity: str = "250.000", unit: str = "PC",
         **fields: Any) -> SalesOrderItem:
    """An ERP item, unpriced and unconfirmed unless ``fields`` say otherwise."""
    values: dict[str, Any] = {"net_amount": Decimal("0.000"), "tax_amount": None, "confirmed_date": None,
                              "confirmed_quantity": None, "plant": None, "rejection_reason": None}
    return SalesOrderItem(item=number, material=material, quantity=Decimal(quantity), unit=unit,
                          **{**values, **fields})


def echo_order(**fields: Any) -> SalesOrder:
    """The sales order the ERP holds right after orderhub created it from ``snapshot()``."""
    values: dict[str, Any] = {
        "sales_order": "0000004737", "hub_order_id": "ORD-1", "sold_to_party": "1000001",
        "customer_reference": "PO-4711", "requested_delivery_date": dt.date(2027, 1, 15), "currency": "EUR",
        "net_amount": Decimal("0.000"), "process_status": "A", "delivery_status": "A", "credit_status": None,
        "last_change": dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.timezone.utc), "etag": None,
        "items": (item(), item("000020", "MAT-0815", "3.500", "KG")),
    }
    return SalesOrder(**{**values, **fields})


def priced_order(**fields: Any) -> SalesOrder:
    """The order after the ERP clerk priced it, added 19% tax and confirmed 2027-01-12 in plant 1710."""
    confirmed = {"confirmed_date": dt.date(2027, 1, 12), "plant": "1710"}
    items = (item(net_amount=Decimal("11875.000"), tax_amount=Decimal("2256.250"), **confirmed),
             item("000020", "MAT-0815", "3.500", "KG", net_amount=Decimal("7.000"), tax_amount=Decimal("1.330"),
                  **confirmed))
    return echo_order(**{"net_amount": Decimal("11882.000"), "items": items, **fields})


PRICED_CHANGES = {
    "amounts.net": "11882.00", "amounts.tax": "2257.58", "amounts.gross": "14139.58",
    "lines.10.unit_price": "47.5000", "lines.20.unit_price": "2.0000",
    "lines.10.confirmed_date": "2027-01-12", "lines.20.confirmed_date": "2027-01-12",
    "lines.10.confirmed_quantity": "250.000", "lines.20.confirmed_quantity": "3.500",
    "promised_delivery": "2027-01-12", "plant": "1710", "status": "CONFIRMED",
}


def applied(known: OrderSnapshot, changes: dict[str, object]) -> OrderSnapshot:
    """``known`` with the ERP's changes applied, as the hub would hold them afterwards."""
    lines = {line.line_no: line for line in known.lines}
    header: dict[str, Any] = {}
    amounts = known.amounts
    for path, value in changes.items():
        parts = path.split(".")
        if parts[0] == "lines":
            line = lines[int(parts[1])]
            attribute = parts[2]
            typed = dt.date.fromisoformat(value) if attribute == "confirmed_date" else Decimal(str(value))
            lines[line.line_no] = line.model_copy(update={attribute: typed})
        elif parts[0] == "amounts":
            amounts = amounts.model_copy(update={parts[1]: Decimal(str(value))})
        elif path == "promised_delivery":
            header[path] = dt.date.fromisoformat(str(value))
        else:
            header[path] = value
    return known.model_copy(update={**header, "amounts": amounts, "lines": [lines[n] for n in sorted(lines)]})


# --- hub -> ERP ------------------------------------------------------------------------------


def test_new_sales_order_maps_header_lines_units_and_the_hub_id() -> None:
    """A hub order becomes a sales order with its customer, PO number, due date, currency, note and items."""
    order = new_sales_order(snapshot())
    assert (order.hub_order_id, order.sold_to_party, order.customer_reference) == ("ORD-1", "1000001", "PO-4711")
    assert (order.requested_delivery_date, order.currency) == (dt.date(2027, 1, 15), "EUR")
    assert order.note == "coating: zinc 12 um\nno pallets"
    assert [(i.item, i.material, i.quantity, i.unit) for i in order.items] == [
        ("000010", "MAT-4711", Decimal("250"), "PC"), ("000020", "MAT-0815", Decimal("3.5"), "KG")]


def test_new_sales_order_books_into_the_configured_sales_area() -> None:
    """The sales area and order type come from the connector's configuration."""
    order = new_sales_order(snapshot(), sales_area=SalesArea(order_type="ZOR", sales_organization="1010",
                                                             distribution_channel="20", division="01"))
    assert (order.order_type, order.sales_organization, order.distribution_channel, order.division) == (
        "ZOR", "1010", "20", "01")


def test_new_sales_order_leaves_the_currency_to_the_erp_when_the_hub_has_none() -> None:
    """Without a hub currency the sales order names none, so SAP takes the customer's."""
    assert new_sales_order(snapshot(currency=None)).currency is None


def test_an_unknown_unit_code_is_refused_with_the_field_and_the_reason() -> None:
    """A UN/ECE code the unit table does not know is refused, never passed through to the ERP."""
    with pytest.raises(UnmappableOrder) as refused:
        new_sales_order(snapshot(lines=[make_line(10, "MAT-4711", "5", "XPP")]))
    assert refused.value.problems[0][0] == "lines.10.unit"
    assert "no SAP unit for the UN/ECE Rec 20 code 'XPP'" in refused.value.problems[0][1]


def test_every_unmappable_field_is_named_at_once() -> None:
    """A missing customer, an over-long PO number, material and quantity precision are all reported together."""
    broken = snapshot(customer=None, customer_po_number="P" * 36,
                      lines=[make_line(10, "M" * 41, "1.2345", "C62")])
    with pytest.raises(UnmappableOrder) as refused:
        new_sales_order(broken)
    assert [path for path, _ in refused.value.problems] == [
        "customer.id", "customer_po_number", "lines.10.material.id", "lines.10.quantity"]


def test_an_order_without_lines_is_refused() -> None:
    """The ERP needs at least one item."""
    with pytest.raises(UnmappableOrder, match="lines: no line"):
        new_sales_order(snapshot(lines=[]))


def test_a_cancelled_order_is_not_sent_to_the_erp() -> None:
    """A final order never becomes a sales order."""
    with pytest.raises(UnmappableOrder, match="a CANCELLED order is not sent"):
        new_sales_order(snapshot(status=LifecycleStatus.CANCELLED))


def test_sales_order_update_carries_what_the_hub_changed() -> None:
    """A new PO number, due date and quantity in the hub become one update of the ERP order."""
    changed = snapshot(customer_po_number="PO-4712", requested_delivery=dt.date(2027, 2, 1),
                       lines=[make_line(10, "MAT-4711", "300", "C62"), make_line(20, "MAT-0815", "3.5", "KGM")])
    update = sales_order_update(changed, echo_order())
    assert update is not None
    assert (update.customer_reference, update.requested_delivery_date) == ("PO-4712", dt.date(2027, 2, 1))
    assert dict(update.item_quantities) == {"000010": Decimal("300")}


def test_sales_order_update_is_none_when_the_erp_is_up_to_date() -> None:
    """Nothing to send when the ERP order already matches the hub."""
    assert sales_order_update(snapshot(), echo_order()) is None


# --- ERP -> hub ------------------------------------------------------------------------------


def test_the_echo_of_the_hubs_own_creation_is_no_change() -> None:
    """Reading back the sales order the hub just created proposes nothing."""
    assert erp_changes(echo_order(), snapshot()) == {}


def test_pricing_and_confirmation_become_amounts_dates_and_the_confirmed_step() -> None:
    """A priced, dated order gives net, tax, gross, unit prices, confirmed dates and DRAFT>CONFIRMED."""
    assert erp_changes(priced_order(), snapshot()) == PRICED_CHANGES


def test_the_echo_of_applied_erp_changes_is_no_change() -> None:
    """Once the hub holds the ERP's values, reading the same ERP order again proposes nothing."""
    known = applied(snapshot(), PRICED_CHANGES)
    assert erp_changes(priced_order(), known) == {}


def test_erp_changes_are_a_proposal_orderhub_propose_accepts() -> None:
    """The changes drop straight into the JSON proposal file `orderhub propose` reads."""
    proposal = load_proposal(json.dumps({
        "order_ref": {"order_id": "ORD-1"}, "base_version": 1, "source_system": "ERP",
        "actor": {"id": "erp-connector", "role": "connector"}, "changes": erp_changes(priced_order(), snapshot()),
        "external_refs": [erp_reference(priced_order())]}))
    assert {change.field for change in proposal.changes} == set(PRICED_CHANGES)
    assert proposal.external_refs[0].key == "ERP/A_SalesOrder/0000004737"


def test_an_erp_quantity_change_flows_back_and_keeps_the_hubs_unit_code() -> None:
    """A quantity changed in SAP becomes a line change; PC stays the line's C62, not another code."""
    order = echo_order(items=(item(quantity="300.000"), item("000020", "MAT-0815", "3.500", "KG")))
    assert erp_changes(order, snapshot()) == {"lines.10.quantity": "300.000"}


def test_an_item_added_in_the_erp_becomes_a_new_line() -> None:
    """An item the hub does not know arrives with material, quantity and unit."""
    order = echo_order(items=(*echo_order().items, item("000030", "MAT-9", "2.000", "M")))
    assert erp_changes(order, snapshot()) == {
        "lines.30.material.id": "MAT-9", "lines.30.quantity": "2.000", "lines.30.unit": "MTR"}


def test_an_erp_unit_outside_the_unit_table_is_refused() -> None:
    """An SAP unit no UN/ECE code maps to is refused with the line and the unit named."""
    order = echo_order(items=(item(unit="KAR"),))
    with pytest.raises(UnmappableOrder, match="lines.10.unit: the ERP's unit 'KAR'"):
        erp_changes(order, snapshot())


def test_an_amount_the_hub_cannot_hold_is_refused_not_rounded() -> None:
    """A net amount with three significant decimals (a 3-decimal currency) is refused, never rounded."""
    order = priced_order(net_amount=Decimal("11882.005"))
    with pytest.raises(UnmappableOrder, match="amounts.net"):
        erp_changes(order, snapshot())


def test_a_credit_block_holds_the_order_and_keeps_other_hold_reasons() -> None:
    """Credit status B puts the order on hold with the ERP's reason beside the existing ones, and no step."""
    known = snapshot(hold_reasons=["quality check"])
    changes = erp_changes(priced_order(credit_status="B"), known)
    assert (changes["credit_status"], changes["on_hold"]) == ("BLOCKED", True)
    assert changes["hold_reasons"] == ["quality check", CREDIT_HOLD_REASON]
    assert "status" not in changes


def test_a_credit_release_lifts_the_hold_it_caused() -> None:
    """Credit status D removes the ERP's hold reason and, with nothing else holding it, lifts the hold."""
    known = applied(snapshot(on_hold=True, hold_reasons=[CREDIT_HOLD_REASON], credit_status="BLOCKED"),
                    {k: v for k, v in PRICED_CHANGES.items() if k != "status"})
    changes = erp_changes(priced_order(credit_status="D"), known)
    assert changes == {"credit_status": "RELEASED", "hold_reasons": [], "on_hold": False, "status": "CONFIRMED"}


def test_a_credit_release_keeps_the_order_held_for_other_reasons() -> None:
    """Another writer's hold reason keeps the order on hold after the credit release."""
    known = snapshot(on_hold=True, hold_reasons=[CREDIT_HOLD_REASON, "quality check"], credit_status="BLOCKED")
    changes = erp_changes(priced_order(credit_status="A"), known)
    assert changes["hold_reasons"] == ["quality check"]
    assert "on_hold" not in changes and "status" not in changes


@pytest.mark.parametrize(("known_status", "order_fields", "step"), [
    ("COMPLETED", {"delivery_status": "C"}, "SHIPPED"),
    ("SHIPPED", {"delivery_status": "C", "process_status": "C"}, "CLOSED"),
    ("COMPLETED", {"delivery_status": "B"}, None),
    ("CONFIRMED", {"delivery_status": "C"}, None),
])
def test_delivery_and_completion_in_the_erp_step_the_lifecycle(known_status: str, order_fields: dict[str, str],
                                                               step: str | None) -> None:
    """Fully delivered ships a completed order, completely processed closes a shipped one, nothing else moves."""
    known = applied(snapshot(status=LifecycleStatus(known_status)),
                    {k: v for k, v in PRICED_CHANGES.items() if k != "status"})
    assert erp_changes(priced_order(**order_fields), known).get("status") == step


def test_every_item_rejected_cancels_the_order() -> None:
    """Rejection reasons on all items (where the ERP publishes them) cancel the order."""
    order = echo_order(items=tuple(replace(i, rejection_reason="Z1") for i in echo_order().items))
    assert erp_changes(order, snapshot(status=LifecycleStatus.CONFIRMED)) == {"status": "CANCELLED"}


def test_a_sales_order_deleted_in_the_erp_cancels_an_open_order_only() -> None:
    """Deletion in the ERP cancels an open order and leaves a closed one alone."""
    assert erp_deletion_changes(snapshot(status=LifecycleStatus.RELEASED)) == {"status": "CANCELLED"}
    assert erp_deletion_changes(snapshot(status=LifecycleStatus.CLOSED)) == {}


def test_without_a_snapshot_every_erp_value_is_proposed_but_no_step() -> None:
    """With nothing known, the ERP's own values all come through and no lifecycle step is guessed."""
    changes = erp_changes(priced_order(), None)
    assert changes["lines.10.unit"] == "C62" and changes["lines.20.unit"] == "KGM"
    assert {k: v for k, v in changes.items() if k in PRICED_CHANGES} == {
        k: v for k, v in PRICED_CHANGES.items() if k != "status"}
    assert "status" not in changes


def test_erp_reference_names_the_sales_order_and_its_short_number() -> None:
    """The cross-reference is ERP / A_SalesOrder / the document number, plus the number without zeros."""
    assert erp_reference(priced_order()) == {"system": "ERP", "object_type": "A_SalesOrder",
                                             "external_id": "0000004737", "external_number": "4737"}
