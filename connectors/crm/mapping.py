"""A won Salesforce opportunity as canonical order fields, and the order as sales should see it.
Pure functions over the client's value types and the hub's ``OrderSnapshot``.

Salesforce -> canonical (``order_changes_for``; only a won opportunity, by IsWon)::

    Account.AccountNumber (else .Id)      customer.id (the ERP's customer number, when sales keep it)
    Account.Name                          customer.name
    Contact FirstName LastName            contact
    Opportunity.OwnerId                   sales_owner
    Customer_PO_Number__c                 customer_po_number
    Amount                                amounts.crm_expected
    CurrencyIsoCode                       currency
    Requested_Delivery_Date__c            requested_delivery (else the earliest line ServiceDate)
    Description                           instructions: one per non-empty line, "key: text"
                                          lines keep their key
    line Description                      instructions, key "line <n>"
    line items, in Id (creation) order    lines.10, lines.20, ...
      ProductCode                         lines.<n>.material.id
      Quantity                            lines.<n>.quantity
      Unit__c                             lines.<n>.unit (UN/ECE Rec 20), lines.<n>.raw_unit

UnitPrice is not mapped: the ERP owns prices (ownership.yaml lets the CRM write no price).
Every value is checked against the hub's field types (``hub.domain.fields``) and returned in
its canonical form, so what the hub would refuse as malformed is refused here already, as a
``CrmRecordRefused`` naming the Salesforce field. A mandatory field that is simply absent (no
requested delivery, no instructions) is left out: the hub rejects the creation naming it, which
is the answer sales needs to see.

Lines are numbered by position in Id order, so a line added later gets the next number and the
others keep theirs (Salesforce ids grow with creation); deleting a line in the CRM would shift
the numbers of the lines after it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

from connectors.crm.client import (CUSTOMER_PO_FIELD, LINE_UNIT_FIELD, REQUESTED_DELIVERY_FIELD, Account, Contact,
                                   CrmRecordRefused, LineItem, Opportunity)
from hub.sdk import OrderSnapshot, canonical_json, kind_of

CRM_SYSTEM = "CRM"
OPPORTUNITY = "Opportunity"
LINE_STEP = 10  # line numbers 10, 20, 30: room to insert by hand, as ERPs number items
#: UN/ECE Recommendation 20 codes for the units sales people type (lower case).
UNIT_CODES: dict[str, str] = {
    **dict.fromkeys(("each", "ea", "pc", "pcs", "piece", "pieces", "unit", "units", "st", "stk", "stück", "one"),
                    "C62"),
    **dict.fromkeys(("kg", "kgs", "kilogram", "kilograms", "kilo"), "KGM"),
    **dict.fromkeys(("g", "gram", "grams"), "GRM"),
    **dict.fromkeys(("t", "tonne", "tonnes", "metric ton"), "TNE"),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), "MTR"),
    **dict.fromkeys(("mm", "millimeter", "millimetre"), "MMT"),
    **dict.fromkeys(("cm", "centimeter", "centimetre"), "CMT"),
    **dict.fromkeys(("m2", "m²", "sqm", "square meter", "square metre"), "MTK"),
    **dict.fromkeys(("m3", "m³", "cbm", "cubic meter", "cubic metre"), "MTQ"),
    **dict.fromkeys(("l", "liter", "liters", "litre", "litres"), "LTR"),
    **dict.fromkeys(("h", "hr", "hour", "hours"), "HUR"),
    **dict.fromkeys(("set", "sets"), "SET"),
    **dict.fromkeys(("pair", "pairs"), "PR"),
}
_KNOWN_CODES = frozenset(UNIT_CODES.values()) | {"H87"}
#: (canonical path, value, the Salesforce field it came from, the record it came from)
_Sourced = tuple[str, Any, str, str | None]
_KEYED_LINE = re.compile(r"^(?P<key>[A-Za-z][\w .()/-]{0,98}?)\s*:\s*(?P<text>\S.*)$")


def is_won(opp: Opportunity) -> bool:
    """Whether the opportunity is won: IsWon, never the stage's label (orgs rename stages)."""
    return opp.is_won is True


def crm_reference(opp: Opportunity) -> dict[str, str]:
    """The opportunity as the order's external reference."""
    return {"system": CRM_SYSTEM, "object_type": OPPORTUNITY, "external_id": opp.id}


def order_changes_for(opp: Opportunity, lines: list[LineItem], account: Account, *,
                      contact: Contact | None = None) -> dict[str, object]:
    """The canonical field changes (path -> plain JSON value) of a won opportunity; {} when it
    is not won. ``CrmRecordRefused`` names the Salesforce field of a value that cannot be mapped."""
    if not is_won(opp):
        return {}
    _check_belongs(opp, lines, account, contact)
    numbered = list(zip(range(LINE_STEP, LINE_STEP * (len(lines) + 1), LINE_STEP), sorted(lines, key=lambda x: x.id)))
    sourced: list[_Sourced] = [
        ("customer.id", account.number or account.id, "Account.AccountNumber" if account.number else "Account.Id",
         account.id),
        ("customer.name", account.name, "Account.Name", account.id),
        ("contact", contact.name if contact else None, "Contact.Name", contact.id if contact else None),
        ("sales_owner", opp.owner_id, "Opportunity.OwnerId", opp.id),
        ("customer_po_number", opp.customer_po_number, f"Opportunity.{CUSTOMER_PO_FIELD}", opp.id),
        ("amounts.crm_expected", _number(opp.amount), "Opportunity.Amount", opp.id),
        ("currency", opp.currency, "Opportunity.CurrencyIsoCode", opp.id),
        _requested_delivery(opp, lines),
        ("instructions", _instructions(opp, numbered) or None, "Opportunity.Description", opp.id),
    ]
    for n, item in numbered:
        sourced += _line_changes(n, item)
    return {path: _canonical(path, value, source, record_id)
            for path, value, source, record_id in sourced if value not in (None, "")}


def write_back_fields(snapshot: OrderSnapshot, opp: Opportunity) -> dict[str, object]:
    """What sales should see of the order, only where the opportunity shows something else:
    ``OpportunityClient.write_back`` keywords (``order_id``, ``order_number``, ``status``,
    ``promised_date``); {} when it is up to date, so an unchanged order writes (and echoes) nothing."""
    wanted: dict[str, object] = {"order_id": snapshot.order_id, "order_number": snapshot.order_number,
                                 "status": sales_status(snapshot), "promised_date": snapshot.promised_delivery}
    shown: dict[str, object] = {"order_id": opp.order_id, "order_number": opp.order_number,
                                "status": opp.order_status, "promised_date": opp.promised_date}
    return {name: value for name, value in wanted.items() if shown[name] != value}


def sales_status(snapshot: OrderSnapshot) -> str:
    """The order's status as sales reads it: the lifecycle status, and ", ON HOLD" when held."""
    status = getattr(snapshot.status, "value", snapshot.status)
    return f"{status}, ON HOLD" if snapshot.on_hold else str(status)


def rec20_unit(raw: str | None, *, field: str = LINE_UNIT_FIELD, record_id: str | None = None) -> str:
    """The UN/ECE Rec 20 code of a unit as sales typed it ("pcs" -> C62, "kg" -> KGM)."""
    text = (raw or "").strip()
    if not text:
        raise CrmRecordRefused("no unit", field=f"OpportunityLineItem.{field}", record_id=record_id)
    code = UNIT_CODES.get(text.lower()) or (text.upper() if text.upper() in _KNOWN_CODES else None)
    if code is None:
        raise CrmRecordRefused(f"unknown unit {text!r} (known: {', '.join(sorted(UNIT_CODES))})",
                               field=f"OpportunityLineItem.{field}", record_id=record_id)
    return code


def _check_belongs(opp: Opportunity, lines: list[LineItem], account: Account, contact: Contact | None) -> None:
    if opp.account_id != account.id:
        raise CrmRecordRefused(f"the opportunity's account is {opp.account_id!r}, not {account.id!r}",
                               field="Opportunity.AccountId", record_id=opp.id)
    if contact is not None and opp.contact_id != contact.id:
        raise CrmRecordRefused(f"the opportunity's contact is {opp.contact_id!r}, not {contact.id!r}",
                               field="Opportunity.ContactId", record_id=opp.id)
    for item in lines:
        if item.opportunity_id != opp.id:
            raise CrmRecordRefused(f"the line belongs to {item.opportunity_id!r}, not {opp.id!r}",
                                   field="OpportunityLineItem.OpportunityId", record_id=item.id)


def _requested_delivery(opp: Opportunity, lines: list[LineItem]) -> _Sourced:
    if opp.requested_delivery is not None:
        return ("requested_delivery", opp.requested_delivery.isoformat(),
                f"Opportunity.{REQUESTED_DELIVERY_FIELD}", opp.id)
    dated = sorted((item.service_date, item.id) for item in lines if isinstance(item.service_date, dt.date))
    if not dated:
        return ("requested_delivery", None, f"Opportunity.{REQUESTED_DELIVERY_FIELD}", opp.id)
    return ("requested_delivery", dated[0][0].isoformat(), "OpportunityLineItem.ServiceDate", dated[0][1])


def _instructions(opp: Opportunity, numbered: list[tuple[int, LineItem]]) -> list[dict[str, str | None]]:
    result = [_instruction(text) for text in (opp.description or "").splitlines() if text.strip()]
    for n, item in numbered:
        if item.description and item.description.strip():
            note = {"key": f"line {n}", "text": item.description.strip()}
            _canonical("instructions", [note], "OpportunityLineItem.Description", item.id)  # blame the line
            result.append(note)
    return result


def _instruction(text: str) -> dict[str, str | None]:
    keyed = _KEYED_LINE.match(text.strip())
    if keyed:
        return {"key": keyed["key"].strip(), "text": keyed["text"].strip()}
    return {"key": None, "text": text.strip()}


def _line_changes(n: int, item: LineItem) -> list[_Sourced]:
    if not (item.product_code or "").strip():
        raise CrmRecordRefused("the line has no product code (material)", field="OpportunityLineItem.ProductCode",
                               record_id=item.id)
    if not isinstance(item.quantity, Decimal) or not item.quantity.is_finite():
        raise CrmRecordRefused(f"quantity is not a number: {item.quantity!r}", field="OpportunityLineItem.Quantity",
                               record_id=item.id)
    unit = rec20_unit(item.unit, record_id=item.id)
    line, unit_field = f"lines.{n}", f"OpportunityLineItem.{LINE_UNIT_FIELD}"
    return [(f"{line}.material.id", item.product_code, "OpportunityLineItem.ProductCode", item.id),
            (f"{line}.quantity", _number(item.quantity), "OpportunityLineItem.Quantity", item.id),
            (f"{line}.unit", unit, unit_field, item.id),
            (f"{line}.raw_unit", item.unit, unit_field, item.id)]


def _number(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _canonical(path: str, value: Any, source: str, record_id: str | None) -> object:
    """The value in the hub's canonical form for ``path``; refused naming ``source`` if invalid."""
    kind = kind_of(path)
    if kind is None:  # a mapping bug, not bad data: fail loudly
        raise AssertionError(f"the canonical order has no field {path}")
    try:
        return json.loads(kind.canonical(canonical_json(value)) or "null")
    except ValueError as exc:
        raise CrmRecordRefused(f"{value!r} is no valid {path}: {exc}", field=source, record_id=record_id) from None
