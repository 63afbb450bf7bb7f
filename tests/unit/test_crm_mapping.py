"""The CRM mapping: a won Salesforce opportunity as canonical order fields, and the order back."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from connectors.crm.client import Account, Contact, CrmRecordRefused, LineItem, Opportunity
from connectors.crm.mapping import (crm_reference, is_won, order_changes_for, rec20_unit, sales_status,
                                    write_back_fields)
from hub.domain.decide import DecisionKind
from hub.events import ExternalRef, LifecycleStatus, ProposalIntent
from tests.domain_helpers import decide_one, proposal

ACCOUNT = Account(id="001000000000001AAA", name="ACME Maschinenbau GmbH")
CONTACT = Contact(id="003000000000001AAA", first_name="Jana", last_name="Novak", email="jana@acme.example",
                  account_id=ACCOUNT.id)
WON = Opportunity(
    id="006000000000001AAA", name="ACME brackets 2027", account_id=ACCOUNT.id, contact_id=CONTACT.id,
    stage_name="Signed", is_won=True, is_closed=True, close_date=dt.date(2026, 11, 30), amount=Decimal("3128.3"),
    currency="eur", description="coating: zinc 12 um\nDeliver to gate 4, mornings only\n",
    owner_id="005000000000001AAA", requested_delivery=dt.date(2027, 1, 15), customer_po_number="PO-77",
    order_id=None, order_number=None, order_status=None, promised_date=None,
    system_modstamp=dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.timezone.utc))
LINES = [
    LineItem(id="00k000000000002AAA", opportunity_id=WON.id, product_id="01t000000000002AAA", product_code="MAT-2",
             quantity=Decimal("3.0"), unit_price=Decimal("1.1"), description=None, service_date=None, unit="kg"),
    LineItem(id="00k000000000001AAA", opportunity_id=WON.id, product_id="01t000000000001AAA", product_code="MAT-1",
             quantity=Decimal("250.0"), unit_price=Decimal("12.5"), description="deburred edges",
             service_date=dt.date(2027, 1, 10), unit="pcs"),
]


def test_a_won_opportunity_with_a_renamed_stage_maps_to_every_crm_field() -> None:
    """An opportunity won by IsWon under the org's own stage label maps to the canonical fields, lines in Id order."""
    assert order_changes_for(WON, LINES, ACCOUNT, contact=CONTACT) == {
        "customer.id": ACCOUNT.id,
        "customer.name": "ACME Maschinenbau GmbH",
        "contact": "Jana Novak",
        "sales_owner": "005000000000001AAA",
        "customer_po_number": "PO-77",
        "amounts.crm_expected": "3128.30",
        "currency": "EUR",
        "requested_delivery": "2027-01-15",
        "instructions": [{"key": "coating", "text": "zinc 12 um"},
                         {"key": None, "text": "Deliver to gate 4, mornings only"},
                         {"key": "line 10", "text": "deburred edges"}],
        "lines.10.material.id": "MAT-1", "lines.10.quantity": "250.000", "lines.10.unit": "C62",
        "lines.10.raw_unit": "pcs",
        "lines.20.material.id": "MAT-2", "lines.20.quantity": "3.000", "lines.20.unit": "KGM",
        "lines.20.raw_unit": "kg",
    }


def test_the_mapped_creation_is_accepted_by_the_hub() -> None:
    """The fields of a won opportunity, proposed as a CRM creation with its reference, create an order."""
    changes = order_changes_for(WON, LINES, ACCOUNT, contact=CONTACT)
    creation = proposal("crm-create-1", changes, intent=ProposalIntent.CREATE, system="CRM",
                        refs=[ExternalRef(**crm_reference(WON))])

    decision = decide_one(None, creation)

    assert decision.kind is DecisionKind.CREATED, decision.rejection
    assert decision.snapshot is not None and decision.snapshot.lines[0].material.id == "MAT-1"


def test_the_stage_label_alone_does_not_make_an_opportunity_won() -> None:
    """An opportunity in "Closed Won" with IsWon false is not won and maps to no changes."""
    labelled = dataclasses.replace(WON, stage_name="Closed Won", is_won=False)

    assert not is_won(labelled)
    assert order_changes_for(labelled, LINES, ACCOUNT) == {}


def test_an_open_opportunity_maps_to_nothing() -> None:
    """An opportunity that is not won maps to no changes, even with complete lines."""
    assert order_changes_for(dataclasses.replace(WON, is_won=False, is_closed=False, stage_name="Negotiation/Review"),
                             LINES, ACCOUNT) == {}


def test_the_requested_delivery_falls_back_to_the_earliest_line_date() -> None:
    """Without the requested-delivery field, the earliest line ServiceDate is the requested delivery."""
    changes = order_changes_for(dataclasses.replace(WON, requested_delivery=None), LINES, ACCOUNT)

    assert changes["requested_delivery"] == "2027-01-10"


def test_missing_mandatory_values_are_left_for_the_hub_to_name() -> None:
    """An opportunity without delivery date or description maps without those fields, so the hub names them."""
    bare = dataclasses.replace(WON, requested_delivery=None, description=None)
    lines = [dataclasses.replace(item, service_date=None, description=None) for item in LINES]

    changes = order_changes_for(bare, lines, ACCOUNT)

    assert "requested_delivery" not in changes and "instructions" not in changes


@pytest.mark.parametrize(("line_change", "field"), [
    ({"product_code": None}, "OpportunityLineItem.ProductCode"),
    ({"product_code": "  "}, "OpportunityLineItem.ProductCode"),
    ({"quantity": "a lot"}, "OpportunityLineItem.Quantity"),
    ({"quantity": None}, "OpportunityLineItem.Quantity"),
    ({"quantity": Decimal("NaN")}, "OpportunityLineItem.Quantity"),
    ({"quantity": Decimal("-2")}, "OpportunityLineItem.Quantity"),
    ({"quantity": Decimal("1.2345")}, "OpportunityLineItem.Quantity"),
    ({"unit": "bucket"}, "OpportunityLineItem.Unit__c"),
    ({"unit": None}, "OpportunityLineItem.Unit__c"),
    ({"description": "y" * 2001}, "OpportunityLineItem.Description"),
    ({"opportunity_id": "006000000000009AAA"}, "OpportunityLineItem.OpportunityId"),
])
def test_an_unmappable_line_is_refused_naming_the_field(line_change: dict, field: str) -> None:
    """A line value the hub cannot use is refused as a dead letter naming the Salesforce field and the line."""
    broken = dataclasses.replace(LINES[1], **line_change)

    with pytest.raises(CrmRecordRefused) as refused:
        order_changes_for(WON, [LINES[0], broken], ACCOUNT)

    assert refused.value.field == field
    assert refused.value.record_id == broken.id


@pytest.mark.parametrize(("opportunity_change", "field"), [
    ({"amount": Decimal("10.005")}, "Opportunity.Amount"),
    ({"currency": "euro"}, "Opportunity.CurrencyIsoCode"),
    ({"account_id": "001000000000009AAA"}, "Opportunity.AccountId"),
    ({"description": "x" * 2001}, "Opportunity.Description"),
])
def test_an_unmappable_opportunity_value_is_refused_naming_the_field(opportunity_change: dict, field: str) -> None:
    """An opportunity value the hub cannot use is refused as a dead letter naming the Salesforce field."""
    with pytest.raises(CrmRecordRefused) as refused:
        order_changes_for(dataclasses.replace(WON, **opportunity_change), LINES, ACCOUNT)

    assert refused.value.field == field


def test_units_as_typed_map_to_rec20_codes() -> None:
    """Units as sales types them map to UN/ECE Rec 20 codes, and codes pass through."""
    assert [rec20_unit(u) for u in ("pcs", "Each", "Stück", "KG", "m²", "l", "c62", "H87")] == \
        ["C62", "C62", "C62", "KGM", "MTK", "LTR", "C62", "H87"]


def test_the_crm_reference_is_the_opportunity_id() -> None:
    """The order's CRM reference is system CRM, object type Opportunity and the opportunity's id."""
    assert crm_reference(WON) == {"system": "CRM", "object_type": "Opportunity", "external_id": WON.id}


def _created_snapshot():
    creation = proposal("crm-create-1", order_changes_for(WON, LINES, ACCOUNT), intent=ProposalIntent.CREATE,
                        refs=[ExternalRef(**crm_reference(WON))])
    return decide_one(None, creation).snapshot


def test_write_back_sends_everything_an_opportunity_does_not_show_yet() -> None:
    """A fresh order writes back its id, number and status; an unpromised order leaves the promised date alone."""
    snapshot = _created_snapshot()

    assert write_back_fields(snapshot, WON) == {"order_id": snapshot.order_id, "order_number": snapshot.order_number,
                                                "status": "DRAFT"}


def test_write_back_sends_only_what_differs() -> None:
    """An opportunity already showing the order gets only the changed status and the new promised date."""
    snapshot = _created_snapshot()
    shown = dataclasses.replace(WON, order_id=snapshot.order_id, order_number=snapshot.order_number,
                                order_status="DRAFT")
    confirmed = snapshot.model_copy(update={"status": LifecycleStatus.CONFIRMED,
                                            "promised_delivery": dt.date(2027, 1, 20)})

    assert write_back_fields(confirmed, shown) == {"status": "CONFIRMED", "promised_date": dt.date(2027, 1, 20)}


def test_write_back_of_an_order_sales_already_sees_is_empty() -> None:
    """An opportunity that shows the order as it is gets nothing written back, so nothing echoes."""
    snapshot = _created_snapshot().model_copy(update={"on_hold": True, "promised_delivery": dt.date(2027, 1, 20)})
    shown = dataclasses.replace(WON, order_id=snapshot.order_id, order_number=snapshot.order_number,
                                order_status=sales_status(snapshot), promised_date=dt.date(2027, 1, 20))

    assert sales_status(snapshot) == "DRAFT, ON HOLD"
    assert write_back_fields(snapshot, shown) == {}
