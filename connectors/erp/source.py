"""The ERP -> the hub: what the ERP owns (its order number, pricing and totals, confirmed dates,
credit holds, status, cancellation), by delta token or last-change polling.

A change is named by the sales order, the hub version it was computed against and a hash of its
values: the same ERP state read twice (a repeated delta page, a poll after a restart) is one
event id, while the same values coming back after another change are a new one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from connectors.erp.client import SalesOrder, SalesOrderClient
from connectors.erp.mapping import UnmappableOrder, erp_changes, erp_deletion_changes, erp_reference
from hub.sdk import Actor, Context, ExternalRef, OutsideChange, Polled, Unmappable, utcnow

ACTOR = Actor(id="erp", role="connector")


def order_change(order: SalesOrder, context: Context) -> OutsideChange | Unmappable | None:
    """One ERP sales order as the change it makes to its hub order (None: not a hub order, or nothing new)."""
    ref = ExternalRef(**erp_reference(order))
    known = (context.order(order.hub_order_id) if order.hub_order_id else None) or context.order_for(ref)
    if known is None and not order.hub_order_id:
        return None  # an order entered in the ERP alone: not the hub's (yet)
    try:
        values = erp_changes(order, known)
    except UnmappableOrder as exc:
        return Unmappable({"SalesOrder": order.sales_order}, str(exc), key=order.sales_order)
    return _change(ref, order.hub_order_id or (known.order_id if known else None), known, values, order.last_change)


def poll_changes(client: SalesOrderClient, cursor: dict[str, Any], context: Context) -> Polled:
    """Everything changed in the ERP since the cursor's mark (a delta token, or a change stamp)."""
    changed = client.changed_since(cursor.get("mark"))
    changes: list[OutsideChange | Unmappable] = []
    for order in changed.orders:
        if (change := order_change(order, context)) is not None:
            changes.append(change)
    for number in changed.deleted:
        ref = ExternalRef(**erp_reference(number))
        known = context.order_for(ref)
        if known is not None and (values := erp_deletion_changes(known)):
            changes.append(_change(ref, known.order_id, known, values))
    return Polled(changes, {"mark": changed.mark})


def _change(ref: ExternalRef, order_id: str | None, known: Any, values: dict[str, Any],
            changed_at: dt.datetime | None = None) -> OutsideChange:
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return OutsideChange(ref=ref, order_id=order_id, event_id=f"erp:{ref.external_id}:v{known.version if known else 0}:{digest}",
                         values=values, refs=(ref,), actor=ACTOR, occurred_at=changed_at or utcnow())
