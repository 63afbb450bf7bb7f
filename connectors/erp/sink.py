"""The hub -> the ERP: every hub order gets its sales order, created once (looked up by the hub's
id first, so a redelivered state never makes a second one), and what the hub learns later
(customer reference, requested date, quantities) is written to it."""

from __future__ import annotations

import logging

from connectors.erp.client import SalesOrderClient
from connectors.erp.mapping import new_sales_order, sales_order_update
from connectors.erp.source import order_change
from hub.sdk import FINAL_STATUSES, Context, OrderSnapshot, OutsideChange, Unmappable

log = logging.getLogger(__name__)


def sync_sales_order(client: SalesOrderClient, snapshot: OrderSnapshot,
                     context: Context) -> list[OutsideChange | Unmappable]:
    """Create or update the order's sales order; the change that brings the ERP's number (and anything
    else the ERP owns) back to the hub."""
    erp_refs = [r.external_id for r in snapshot.external_refs if r.system == "ERP" and r.object_type == "A_SalesOrder"]
    if erp_refs:
        order = client.get(erp_refs[0])
        update = sales_order_update(snapshot, order)
        if update is not None:
            client.update(order.sales_order, update, etag=order.etag)
        return []
    if snapshot.status.value in FINAL_STATUSES:
        return []
    log.info("creating the sales order of hub order %s", snapshot.order_id)
    order = client.create(new_sales_order(snapshot))  # looks the hub's id up first: never a second order
    log.info("sales order %s is hub order %s", order.sales_order, snapshot.order_id)
    change = order_change(order, context)
    return [change] if change is not None else []
