"""The CRM connector (Salesforce): a won opportunity becomes a hub order; sales sees the order's
number, status and promised date on the opportunity.

Files: ``config`` (CrmConfig), ``source`` (webhook + polling), ``sink`` (write-back),
``mapping`` (pure), ``client`` (simple-salesforce), ``webhook`` (signature, change events).
Needs the ``crm`` extra: ``pip install 'orderhub[crm]'``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from connectors.crm.config import CrmConfig
from hub.sdk import Connector, OrderSnapshot, Polled


class CrmConnector(Connector[CrmConfig]):
    """Salesforce opportunities <-> hub orders."""

    kind = "crm"
    system = "CRM"
    Config = CrmConfig
    owns = ("customer.id", "customer.name", "contact", "sales_owner", "customer_po_number", "amounts.crm_expected",
            "currency", "requested_delivery", "instructions", "lines.*.material.id", "lines.*.quantity",
            "lines.*.unit", "lines.*.raw_unit")

    async def start(self) -> None:
        from connectors.crm.client import OpportunityClient  # the crm extra; its ImportError says so
        from connectors.crm.source import CrmWebhook

        self.client = OpportunityClient(self.config.instance_url, self.config.session_id.get_secret_value(),
                                        client_id=self.config.client_id, ca_file=self.config.ca_file)
        self.webhook = None
        if self.config.webhook_port is not None and self.config.webhook_secret is not None:
            self.webhook = CrmWebhook(self.client, self.config.webhook_secret.get_secret_value(), self.config.client_id,
                                      self.config.webhook_max_age_s, lambda changes: self.emit(changes),
                                      on_gap=lambda: self.poll_soon())
            await self.webhook.start(self.config.webhook_host, self.config.webhook_port)

    async def stop(self) -> None:
        if getattr(self, "webhook", None) is not None:
            await self.webhook.stop()
        if getattr(self, "client", None) is not None:
            self.client.close()

    async def poll(self, cursor: dict[str, Any]) -> Polled:
        from connectors.crm.source import poll_changes

        return await asyncio.to_thread(poll_changes, self.client, cursor)

    async def on_state(self, snapshot: OrderSnapshot) -> None:
        from connectors.crm.sink import write_back

        await asyncio.to_thread(write_back, self.client, snapshot)
