"""Between the canonical order and SAP's sales order: pure functions, no I/O.

Hub -> ERP (``new_sales_order``, ``sales_order_update``)
    ``customer.id`` -> SoldToParty (at most 10 characters: SAP's customer number),
    ``customer_po_number`` -> PurchaseOrderByCustomer (35), ``requested_delivery`` ->
    RequestedDeliveryDate, ``currency`` -> TransactionCurrency (left out when the hub has none:
    SAP then takes the customer's), each line -> an item numbered like the line (``lines.10``
    -> ``000010``) with Material (40), RequestedQuantity (3 decimals) and RequestedQuantityUnit,
    the process requirements -> the header note, and the hub order id -> the ``ZHUB`` text.
    Sales area and order type come from the connector's configuration (``SalesArea``).

Units
    The hub speaks UN/ECE Recommendation 20 codes (C62, KGM); SAP's API shows its own units of
    measure (PC, KG) in ``RequestedQuantityUnit``, with the ISO code beside them only in
    S/4HANA's ``RequestedQuantityISOUnit`` (which mock-sap 0.22.0 lacks). So units go through a
    table, ``DEFAULT_UNITS``, that a site replaces with its own (SAP's T006). A code the table
    does not know is refused with a reason, never passed through: mock-sap stores any unit
    string, and a real system would refuse it later, or worse, read it as something else.
    Reading back, an SAP unit becomes the line's own code when that maps to it (so C62 stays
    C62 although H87 means PC too), else the first code in the table that maps to it.

ERP -> hub (``erp_changes``)
    Only what the ERP owns (ownership.yaml), and only where it differs from the hub's snapshot,
    compared in the hub's canonical form, so the echo of the hub's own write is no change:

    - ``currency``; ``amounts.net`` (TotalNetAmount), ``amounts.tax`` (the items' tax pricing
      elements, condition category D), ``amounts.gross`` (net + tax), once the order is priced
      (a non-zero net amount); ``lines.<n>.unit_price``: the item's net amount / quantity,
      rounded half up to 4 places (SAP's net price is a rounded figure too).
    - ``lines.<n>.confirmed_date``: the item's confirmed date; ``lines.<n>.confirmed_quantity``:
      the ERP's confirmed quantity, and where it publishes none (mock-sap: no schedule lines, no
      availability check) the whole quantity of a line with a confirmed date.
      ``promised_delivery``: the latest confirmed date, once every item has one.
    - ``lines.<n>.material.id`` / ``quantity`` / ``unit`` (the ERP owns them too: an ERP user's
      change flows back; an item the hub does not know becomes a new line); ``plant`` when
      every item has the same one.
    - ``credit_status`` from TotalCreditCheckStatus (A OK, B BLOCKED, C PARTIALLY_RELEASED,
      D RELEASED); B and C put the order on hold with the reason ``ERP credit block``, A and D
      take that reason away again (others' hold reasons are kept; the hold lifts when none is
      left). mock-sap 0.22.0 has no credit status, so against it none of this happens.
    - ``status``, one lifecycle step at a time and only steps the ERP may take:
      ``DRAFT>CONFIRMED`` when the order is priced and every item has a confirmed date and no
      credit block; ``COMPLETED>SHIPPED`` when OverallDeliveryStatus is C (fully delivered);
      ``SHIPPED>CLOSED`` when OverallSDProcessStatus is C (completely processed: delivered and
      billed); ``CANCELLED`` when every item is rejected (SalesDocumentRjcnReason, where
      published) or the order was deleted in the ERP (``erp_deletion_changes``). No forward
      step while the order stays on hold. ``CONFIRMED>APPROVED`` is not mapped: nothing in SAP's
      sales order (and nothing in mock-sap) means "approved", and the hub's own approvers take
      that step; OverallSDProcessStatus A/B (open, in process) mean no step.

Refusals are ``UnmappableOrder`` (a dead letter), naming every field and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Any, Mapping

from connectors.erp.client import NewSalesOrder, NewSalesOrderItem, SalesOrder, SalesOrderItem, SalesOrderUpdate
from hub.sdk import FINAL_STATUSES as FINAL
from hub.sdk import DeadLetterError, LifecycleStatus, OrderLine, OrderSnapshot, canonical_json, kind_of

ERP_SYSTEM = "ERP"
ERP_OBJECT_TYPE = "A_SalesOrder"
#: The hold reason a credit block puts on the order (and takes away again).
CREDIT_HOLD_REASON = "ERP credit block"
#: TotalCreditCheckStatus -> the hub's ``credit_status``.
CREDIT_STATUSES: Mapping[str, str] = MappingProxyType(
    {"A": "OK", "B": "BLOCKED", "C": "PARTIALLY_RELEASED", "D": "RELEASED"})
_CREDIT_BLOCKED = frozenset({"B", "C"})

#: UN/ECE Rec 20 code -> SAP unit of measure as API_SALES_ORDER_SRV shows it (English).
DEFAULT_UNITS: Mapping[str, str] = MappingProxyType({
    "C62": "PC",  # one: what the hub writes for pieces
    "H87": "PC",  # piece
    "EA": "EA",   # each
    "KGM": "KG", "GRM": "G", "TNE": "TO",
    "MTR": "M", "CMT": "CM", "MMT": "MM",
    "MTK": "M2", "MTQ": "M3", "LTR": "L", "MLT": "ML",
    "HUR": "H",
})

# SAP's field lengths (the ERP refuses longer values; better to say so before sending).
_CUSTOMER_LENGTH, _PO_LENGTH, _MATERIAL_LENGTH = 10, 35, 40
_QUANTITY_PLACES, _PRICE_PLACES = 3, 4


class UnmappableOrder(DeadLetterError):
    """An order (hub side or ERP side) that cannot be expressed on the other side; names every
    field and why."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        #: (field, reason) pairs: hub field paths, or SAP names where the ERP side is at fault.
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


@dataclass(frozen=True)
class SalesArea:
    """Where in the ERP an order from the hub is booked (connector configuration)."""

    #: SalesOrderType (OR: standard order).
    order_type: str = "OR"
    #: SalesOrganization.
    sales_organization: str = "1710"
    #: DistributionChannel.
    distribution_channel: str = "10"
    #: OrganizationDivision.
    division: str = "00"


# --- hub -> ERP ------------------------------------------------------------------------------


def new_sales_order(snapshot: OrderSnapshot, *, sales_area: SalesArea = SalesArea(),
                    units: Mapping[str, str] = DEFAULT_UNITS) -> NewSalesOrder:
    """The sales order to create for ``snapshot``; UnmappableOrder names everything that cannot be sent."""
    problems: list[tuple[str, str]] = []
    if _status(snapshot) in FINAL:
        problems.append(("status", f"a {_status(snapshot)} order is not sent to the ERP"))
    customer = snapshot.customer.id if snapshot.customer else None
    if not customer:
        problems.append(("customer.id", "missing: the ERP needs a sold-to party"))
    elif len(customer) > _CUSTOMER_LENGTH:
        problems.append(("customer.id", f"{customer!r} is longer than SAP's {_CUSTOMER_LENGTH}-character "
                                        "customer number"))
    po_number = snapshot.customer_po_number
    if po_number and len(po_number) > _PO_LENGTH:
        problems.append(("customer_po_number", f"longer than SAP's {_PO_LENGTH}-character customer reference"))
    if not snapshot.lines:
        problems.append(("lines", "no line: an ERP order needs at least one item"))
    items = []
    for line in snapshot.lines:
        item, line_problems = _new_item(line, units)
        items.append(item)
        problems += line_problems
    if problems:
        raise UnmappableOrder(problems)
    return NewSalesOrder(
        hub_order_id=snapshot.order_id, sold_to_party=customer or "", items=tuple(items),
        order_type=sales_area.order_type, sales_organization=sales_area.sales_organization,
        distribution_channel=sales_area.distribution_channel, division=sales_area.division,
        customer_reference=po_number, requested_delivery_date=snapshot.requested_delivery,
        currency=snapshot.currency, note=_note(snapshot))


def sales_order_update(snapshot: OrderSnapshot, order: SalesOrder) -> SalesOrderUpdate | None:
    """What the hub has that the ERP order lacks (customer reference, requested delivery date,
    quantities of existing items); None when the ERP is up to date."""
    reference = snapshot.customer_po_number if snapshot.customer_po_number != order.customer_reference else None
    requested = (snapshot.requested_delivery
                 if snapshot.requested_delivery and snapshot.requested_delivery != order.requested_delivery_date
                 else None)
    by_item = {item.item: item for item in order.items}
    quantities = {}
    for line in snapshot.lines:
        item = by_item.get(_item_number(line.line_no))
        if item is not None and item.quantity != line.quantity:
            quantities[item.item] = line.quantity
    if reference is None and requested is None and not quantities:
        return None
    return SalesOrderUpdate(customer_reference=reference, requested_delivery_date=requested,
                            item_quantities=quantities)


def _new_item(line: OrderLine, units: Mapping[str, str]) -> tuple[NewSalesOrderItem, list[tuple[str, str]]]:
    path = f"lines.{line.line_no}"
    problems = []
    if not 0 < line.line_no <= 999999:
        problems.append((path, "the line number does not fit SAP's six-digit item number"))
    if len(line.material.id) > _MATERIAL_LENGTH:
        problems.append((f"{path}.material.id", f"longer than SAP's {_MATERIAL_LENGTH}-character material number"))
    unit = units.get(line.unit)
    if unit is None:
        problems.append((f"{path}.unit", f"no SAP unit for the UN/ECE Rec 20 code {line.unit!r} "
                                         f"(the unit table knows {', '.join(sorted(units))})"))
    if -line.quantity.as_tuple().exponent > _QUANTITY_PLACES:  # type: ignore[operator]
        problems.append((f"{path}.quantity", f"more than SAP's {_QUANTITY_PLACES} decimal places"))
    return NewSalesOrderItem(item=_item_number(line.line_no), material=line.material.id, quantity=line.quantity,
                             unit=unit or ""), problems


def _note(snapshot: OrderSnapshot) -> str | None:
    lines = [f"{i.key}: {i.text}" if i.key else i.text for i in snapshot.instructions]
    return "\n".join(lines) or None


def _item_number(line_no: int) -> str:
    return f"{line_no:06d}"


# --- ERP -> hub ------------------------------------------------------------------------------


def erp_changes(order: SalesOrder, known: OrderSnapshot | None, *,
                units: Mapping[str, str] = DEFAULT_UNITS) -> dict[str, object]:
    """The canonical field changes the ERP owns (path -> plain JSON value) where ``order``
    differs from ``known``; empty when nothing differs (the echo of the hub's own write)."""
    problems: list[tuple[str, str]] = []
    proposed = _erp_view(order, known, units, problems)
    current = _current_values(known) if known is not None else {}
    changes: dict[str, object] = {}
    for path, value in proposed.items():
        try:
            canonical = _canonical(path, value)
        except ValueError as exc:
            problems.append((path, f"the ERP's value {value!r} does not fit: {exc}"))
            continue
        if path not in current or _canonical_or_none(path, current[path]) != canonical:
            changes[path] = json.loads(canonical) if canonical is not None else None
    if problems:
        raise UnmappableOrder(problems)
    return changes


def erp_deletion_changes(known: OrderSnapshot) -> dict[str, object]:
    """The changes of a sales order deleted in the ERP: the order is cancelled (unless it is
    closed or cancelled already)."""
    return {} if _status(known) in FINAL else {"status": "CANCELLED"}


def erp_reference(order: SalesOrder | str) -> dict[str, str]:
    """The cross-reference the connector attaches: ERP / A_SalesOrder / the document number
    (with the number people see, without leading zeros, when that differs)."""
    number = order.sales_order if isinstance(order, SalesOrder) else order
    reference = {"system": ERP_SYSTEM, "object_type": ERP_OBJECT_TYPE, "external_id": number}
    if number.lstrip("0") and number.lstrip("0") != number:
        reference["external_number"] = number.lstrip("0")
    return reference


def _erp_view(order: SalesOrder, known: OrderSnapshot | None, units: Mapping[str, str],
              problems: list[tuple[str, str]]) -> dict[str, Any]:
    """Every ERP-owned field as the ERP has it, as plain values (before comparison)."""
    view: dict[str, Any] = {}
    if order.currency:
        view["currency"] = order.currency
    priced = order.net_amount != 0
    if priced:
        view["amounts.net"] = str(order.net_amount)
        if (tax := order.tax_amount) is not None:
            view["amounts.tax"] = str(tax)
            view["amounts.gross"] = str(order.net_amount + tax)
    plants = {item.plant for item in order.items}
    if len(plants) == 1 and None not in plants:
        view["plant"] = plants.pop()
    known_lines = {line.line_no: line for line in known.lines} if known else {}
    for item in order.items:
        if not item.item.isdigit() or not 0 < int(item.item) <= 999999:
            problems.append((f"A_SalesOrderItem {item.item}", "an item number that is no hub line number"))
            continue
        view.update(_line_view(item, known_lines.get(int(item.item)), priced, units, problems))
    active = [item for item in order.items if item.rejection_reason is None]
    if active and all(item.confirmed_date for item in active):
        view["promised_delivery"] = max(item.confirmed_date for item in active).isoformat()  # type: ignore[type-var]
    view.update(_credit_view(order, known))
    if known is not None and (step := _lifecycle_step(order, known, view)) is not None:
        view["status"] = step
    return view


def _line_view(item: SalesOrderItem, line: OrderLine | None, priced: bool, units: Mapping[str, str],
               problems: list[tuple[str, str]]) -> dict[str, Any]:
    path = f"lines.{int(item.item)}"
    view: dict[str, Any] = {f"{path}.material.id": item.material, f"{path}.quantity": str(item.quantity)}
    unit = _hub_unit(item.unit, line, units)
    if unit is None:
        problems.append((f"{path}.unit", f"the ERP's unit {item.unit!r} is in no row of the unit table"))
    else:
        view[f"{path}.unit"] = unit
    if priced and item.quantity > 0:
        price = (item.net_amount / item.quantity).quantize(Decimal(1).scaleb(-_PRICE_PLACES), ROUND_HALF_UP)
        view[f"{path}.unit_price"] = str(price)
    if item.confirmed_date is not None:
        view[f"{path}.confirmed_date"] = item.confirmed_date.isoformat()
        confirmed = item.confirmed_quantity if item.confirmed_quantity is not None else item.quantity
        view[f"{path}.confirmed_quantity"] = str(confirmed)
    elif item.confirmed_quantity is not None:
        view[f"{path}.confirmed_quantity"] = str(item.confirmed_quantity)
    return view


def _hub_unit(sap_unit: str, line: OrderLine | None, units: Mapping[str, str]) -> str | None:
    if line is not None and units.get(line.unit) == sap_unit:
        return line.unit  # the hub's own spelling of this unit stays
    return next((code for code, unit in units.items() if unit == sap_unit), None)


def _credit_view(order: SalesOrder, known: OrderSnapshot | None) -> dict[str, Any]:
    if order.credit_status is None or order.credit_status not in CREDIT_STATUSES:
        return {}
    view: dict[str, Any] = {"credit_status": CREDIT_STATUSES[order.credit_status]}
    reasons = list(known.hold_reasons) if known else []
    blocked = order.credit_status in _CREDIT_BLOCKED
    if blocked and CREDIT_HOLD_REASON not in reasons:
        view["hold_reasons"] = reasons + [CREDIT_HOLD_REASON]
    elif not blocked and CREDIT_HOLD_REASON in reasons:
        view["hold_reasons"] = [reason for reason in reasons if reason != CREDIT_HOLD_REASON]
    if blocked:
        view["on_hold"] = True
    elif "hold_reasons" in view and not view["hold_reasons"]:
        view["on_hold"] = False  # the credit block was the last reason to hold the order
    return view


def _lifecycle_step(order: SalesOrder, known: OrderSnapshot, view: dict[str, Any]) -> str | None:
    status = _status(known)
    if status in FINAL:
        return None
    if order.items and all(item.rejection_reason for item in order.items):
        return "CANCELLED"
    if view.get("on_hold", known.on_hold):
        return None  # a held order takes no step forward
    active = [item for item in order.items if item.rejection_reason is None]
    confirmed = (order.net_amount != 0 and bool(active) and all(item.confirmed_date for item in active)
                 and order.credit_status not in _CREDIT_BLOCKED)
    if status == "DRAFT" and confirmed:
        return "CONFIRMED"
    if status == "COMPLETED" and order.delivery_status == "C":
        return "SHIPPED"
    if status == "SHIPPED" and order.process_status == "C":
        return "CLOSED"
    return None


def _current_values(known: OrderSnapshot) -> dict[str, Any]:
    """The snapshot's values of the paths ``_erp_view`` can produce, as plain values."""
    current: dict[str, Any] = {
        "currency": known.currency, "amounts.net": known.amounts.net, "amounts.tax": known.amounts.tax,
        "amounts.gross": known.amounts.gross, "plant": known.plant, "promised_delivery": known.promised_delivery,
        "credit_status": known.credit_status, "on_hold": known.on_hold, "hold_reasons": list(known.hold_reasons),
        "status": _status(known),
    }
    for line in known.lines:
        path = f"lines.{line.line_no}"
        current.update({f"{path}.material.id": line.material.id, f"{path}.quantity": line.quantity,
                        f"{path}.unit": line.unit, f"{path}.unit_price": line.unit_price,
                        f"{path}.confirmed_date": line.confirmed_date,
                        f"{path}.confirmed_quantity": line.confirmed_quantity})
    return {path: _plain(value) for path, value in current.items()}


def _status(snapshot: OrderSnapshot) -> str:
    return LifecycleStatus(snapshot.status).value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _canonical(path: str, value: Any) -> str | None:
    """The hub's canonical JSON of ``value`` at ``path`` (ValueError when it is not valid there)."""
    kind = kind_of(path)
    if kind is None:
        raise ValueError(f"the hub has no field {path}")
    return kind.canonical(canonical_json(value))


def _canonical_or_none(path: str, value: Any) -> str | None:
    """The canonical form of a value the hub already holds (None stays None)."""
    try:
        return _canonical(path, value)
    except ValueError:
        return None
