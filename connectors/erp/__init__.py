"""The ERP connector (SAP S/4HANA, OData V2 API_SALES_ORDER_SRV): every hub order becomes a
sales order; the ERP's number, prices, totals, confirmed dates, credit holds and status come back.

Files: ``config`` (ErpConfig), ``sink`` (hub order -> sales order), ``source`` (ERP changes ->
the hub), ``mapping`` (pure), ``client`` (pyodata, CSRF, retries). Needs the ``erp`` extra:
``pip install 'orderhub[erp]'``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from connectors.erp.config import ErpConfig
from hub.sdk import Connector, OrderSnapshot, OutsideChange, Polled


class ErpConnector(Connector[ErpConfig]):
    """Hub orders <-> SAP sales orders."""

    kind = "erp"
    system = "ERP"
    Config = ErpConfig
    owns = ("amounts.net", "amounts.tax", "amounts.gross", "currency", "lines.*.unit_price", "lines.*.confirmed_date",
            "lines.*.confirmed_quantity", "promised_delivery", "credit_status", "plant", "on_hold", "hold_reasons",
            "status (DRAFT>CONFIRMED, COMPLETED>SHIPPED>CLOSED, CANCELLED)")

    async def start(self) -> None:
        from connectors.erp.client import SalesOrderClient  # the erp extra; its ImportError says so

        password = self.config.password.get_secret_value()
        # pyodata's session is not thread-safe: the source and the sink each have their own client
        self.reader = SalesOrderClient(self.config.service_url, self.config.user, password)
        self.writer = SalesOrderClient(self.config.service_url, self.config.user, password)

    async def stop(self) -> None:
        for client in (getattr(self, "reader", None), getattr(self, "writer", None)):
            if client is not None:
                client.close()

    async def poll(self, cursor: dict[str, Any]) -> Polled:
        from connectors.erp.source import poll_changes

        return await asyncio.to_thread(poll_changes, self.reader, cursor, self.context)

    async def on_state(self, snapshot: OrderSnapshot) -> Sequence[OutsideChange]:
        from connectors.erp.sink import sync_sales_order

        return await asyncio.to_thread(sync_sales_order, self.writer, snapshot, self.context)
