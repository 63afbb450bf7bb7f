"""The CRM connector keeps the connector contract against the Salesforce sandbox (TLS, real process)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from connectors.crm import CrmConfig, CrmConnector
from connectors.crm.client import OpportunityClient
from connectors.crm.source import opportunity_change
from hub.client import HubClient
from hub.events import Actor, ChangeProposal, ExternalRef, FieldChange, OrderRef, OrderSnapshot
from hub.sdk import ConnectorRuntime
from hub.sdk.contract import ConnectorContract
from hub.settings import Settings
from localdev import process
from localdev.sandboxes import salesforce
from localdev.sandboxes.salesforce import CrmSandbox, NewOpportunity, SalesDesk, line
from tests.integration.kafka_helpers import poll_until

pytestmark = pytest.mark.integration


class TestCrmContract(ConnectorContract):
    """The whole contract kit, with Salesforce as the outside system."""

    @pytest.fixture
    def peer(self, tmp_path: Path) -> Iterator[CrmSandbox]:
        started = salesforce.up(tmp_path / "crm", process.free_port())
        yield started
        salesforce.down(tmp_path / "crm")

    def make_connector(self, peer: CrmSandbox) -> CrmConnector:
        return CrmConnector(CrmConfig(instance_url=peer.instance_url, session_id=peer.session_id, ca_file=peer.ca_file))

    def desk(self, peer: CrmSandbox) -> SalesDesk:
        return SalesDesk(peer.instance_url, peer.ca_file)

    async def put_outside_order(self, peer: CrmSandbox, key: str) -> None:
        desk = self.desk(peer)
        opp = desk.new_opportunity(f"ACME {key}", f"Deal {key}", contact="Jane Roe", Amount=1200,
                                   CurrencyIsoCode="EUR", Requested_Delivery_Date__c="2026-12-20",
                                   Description="coating: zinc 12 um", lines=[line("MAT-100", 5, unit="pcs")])
        desk.win(opp.opportunity_id)
        desk.close()

    async def put_unmappable(self, peer: CrmSandbox) -> None:
        desk = self.desk(peer)
        opp = desk.new_opportunity("Broken GmbH", "Deal without a product", Description="x",
                                   Requested_Delivery_Date__c="2026-12-20",
                                   lines=[line("MAT-1", 5, unit="furlongs")])
        desk.win(opp.opportunity_id)
        desk.close()

    async def sink_snapshot(self, peer: CrmSandbox, snapshot: OrderSnapshot) -> OrderSnapshot:
        desk = self.desk(peer)
        opp = desk.new_opportunity("ACME Sink", "Sink deal", lines=[line("MAT-1", 5)])
        desk.close()
        ref = ExternalRef(system="CRM", object_type="Opportunity", external_id=opp.opportunity_id)
        return snapshot.model_copy(update={"external_refs": [ref]})

    def outside_orders(self, peer: CrmSandbox, order_id: str) -> int:
        client = OpportunityClient(peer.instance_url, peer.session_id, ca_file=peer.ca_file)
        try:
            opportunities = client.changed_since(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
            return sum(1 for o in opportunities if o.order_id == order_id)
        finally:
            client.close()


def crm_ref(opp_id: str) -> ExternalRef:
    return ExternalRef(system="CRM", object_type="Opportunity", external_id=opp_id)


@contextlib.asynccontextmanager
async def running_crm(settings: Settings, folder: Path,
                      instance: str) -> AsyncIterator[tuple[ConnectorRuntime, SalesDesk, OpportunityClient]]:
    """A CRM connector instance on real Kafka, its sandbox pushing signed change events to it (the
    regular poll an hour away), once it holds the source lease: (runtime, the sales desk, a client)."""
    port = process.free_port()
    sandbox = salesforce.up(folder / "crm", process.free_port(), webhook_urls=[f"http://127.0.0.1:{port}/crm/events"],
                            webhook_secret="s3cret")
    config = CrmConfig(instance_url=sandbox.instance_url, session_id=sandbox.session_id, ca_file=sandbox.ca_file,
                       webhook_secret="s3cret", webhook_port=port, poll_interval_s=3600)
    runtime = ConnectorRuntime(CrmConnector(config), instance=instance, settings=settings)
    running = asyncio.create_task(runtime.run())
    desk = SalesDesk(sandbox.instance_url, sandbox.ca_file)
    crm = OpportunityClient(sandbox.instance_url, sandbox.session_id, ca_file=sandbox.ca_file)
    try:
        await poll_until(lambda: runtime.leader.is_set(), 60, "the source lease")
        yield runtime, desk, crm
    finally:
        try:
            runtime.stop()
            await running
        finally:
            desk.close()
            crm.close()
            salesforce.down(folder / "crm")


def brackets(desk: SalesDesk) -> NewOpportunity:
    """A new opportunity (not won yet): ACME's brackets, zinc coating."""
    return desk.new_opportunity("ACME GmbH", "Brackets", contact="Jane Roe", Amount=1200, CurrencyIsoCode="EUR",
                                Requested_Delivery_Date__c="2026-12-20", Description="coating: zinc 12 um",
                                lines=[line("MAT-100", 250, unit="pcs")])


async def test_a_won_opportunity_becomes_an_order_sales_sees_its_number_and_nothing_echoes(
        hub_settings, start_worker, tmp_path: Path) -> None:
    """On real Kafka with the engine: the win's signed change event creates the order (version 1);
    the hub writes the order number back to the opportunity; that write's own change event and the
    same event delivered three times make no version; a later CRM change becomes version 2."""
    start_worker(hub_settings).wait_ready()
    async with running_crm(hub_settings, tmp_path, "crm-test") as (runtime, desk, crm):
        opp = brackets(desk)
        desk.win(opp.opportunity_id, stage="Signed")  # a renamed won stage: IsWon decides
        ref = crm_ref(opp.opportunity_id)
        await poll_until(lambda: runtime.store.snapshot_for(ref) is not None, 90, "the order from the win")
        order = runtime.store.snapshot_for(ref)
        assert order.version == 1 and order.customer.name == "ACME GmbH" and order.lines[0].unit == "C62"
        await poll_until(lambda: crm.opportunity(opp.opportunity_id).order_number == order.order_number, 60,
                         "the order number written back to the opportunity")
        shown = crm.opportunity(opp.opportunity_id)
        assert (shown.order_id, shown.order_status) == (order.order_id, "DRAFT")
        events = desk.events(after=0)
        assert any("client=orderhub" in e["payload"]["ChangeEventHeader"]["changeOrigin"] for e in events)
        await poll_until(lambda: runtime.store.waiting() == 0, 30, "the outbox drained")
        await poll_until(lambda: runtime.store.settled(ref.key, runtime.store.snapshot_for(ref).version), 30,
                         "the hub's answer to the creation")
        proposed = runtime.counts["proposed"]
        for _ in range(3):  # the same state read again (a re-delivered or repeated event): no new proposal
            again = await asyncio.to_thread(opportunity_change, crm, crm.opportunity(opp.opportunity_id))
            await runtime.emit([again])
        assert runtime.counts["proposed"] == proposed
        desk.change(opp.opportunity_id, Customer_PO_Number__c="PO-77")
        await poll_until(lambda: (runtime.store.snapshot_for(ref) or order).version == 2, 60, "the PO as version 2")
        assert runtime.store.snapshot_for(ref).customer_po_number == "PO-77"

        # a gap: a change made while events were not delivered is recovered by the poll the next
        # event's jump in replayId asks for (the regular poll is an hour away here)
        other = desk.new_opportunity("Beta AG", "Pins", Requested_Delivery_Date__c="2026-12-22",
                                     Description="passivate", lines=[line("MAT-7", 10, unit="pcs")])
        desk.win(other.opportunity_id)
        await poll_until(lambda: runtime.store.snapshot_for(crm_ref(other.opportunity_id)) is not None, 60,
                         "the second order")
        desk.set_delivery(False)
        desk.change(opp.opportunity_id, Customer_PO_Number__c="PO-88")  # never pushed
        desk.set_delivery(True)
        desk.change(other.opportunity_id, Customer_PO_Number__c="PO-5")
        await poll_until(lambda: runtime.store.snapshot_for(ref).customer_po_number == "PO-88", 60,
                         "the change made during the gap")


async def test_the_hubs_edit_of_a_crm_field_stands_when_the_opportunity_is_read_again(
        hub_settings, start_worker, tmp_path: Path) -> None:
    """The sales desk changes the instructions in the hub (the CRM never takes them back); the hub's
    status written back to the opportunity moves its SystemModstamp, so the next poll reads it again:
    that read proposes nothing, and the hub's instructions stand (``Connector`` rule 4)."""
    start_worker(hub_settings).wait_ready()
    edited = [{"key": "coating", "text": "zinc 15 um"}]
    async with running_crm(hub_settings, tmp_path, "crm-reread") as (runtime, desk, crm):
        opp = brackets(desk)
        desk.win(opp.opportunity_id)
        ref = crm_ref(opp.opportunity_id)
        await poll_until(lambda: runtime.store.snapshot_for(ref) is not None, 90, "the order from the win")
        order = runtime.store.snapshot_for(ref)
        await poll_until(lambda: runtime.store.settled(ref.key, order.version), 30, "the hub's answer to the creation")
        async with HubClient(hub_settings) as client:
            for event_id, base, system, role, field, value in (
                    ("sales-edit", 1, "HUB", "sales", "instructions", edited),
                    ("erp-confirms", 2, "ERP", "connector", "status", "CONFIRMED")):
                decided = await client.propose(ChangeProposal(
                    event_id=f"{order.order_id}:{event_id}", order_ref=OrderRef(order_id=order.order_id),
                    base_version=base, source_system=system, actor=Actor(id="t", role=role),
                    occurred_at=dt.datetime.now(dt.UTC), changes=[FieldChange(field=field, value=json.dumps(value))]),
                    timeout_s=60)
                assert decided.accepted, decided.answer
        await poll_until(lambda: crm.opportunity(opp.opportunity_id).order_status == "CONFIRMED", 60,
                         "the status written back to the opportunity")
        stamp = crm.opportunity(opp.opportunity_id).system_modstamp
        proposed, suppressed = runtime.counts["proposed"], runtime.counts["suppressed"]
        runtime.poll_soon()
        await poll_until(lambda: f"{opp.opportunity_id}@{stamp.isoformat()}" in runtime.store.cursor().get("seen", []),
                         60, "the poll that reads the opportunity again")
        assert runtime.counts["suppressed"] == suppressed + 1 and runtime.counts["proposed"] == proposed
        now = runtime.store.snapshot_for(ref)
        assert now.version == 3 and [i.model_dump() for i in now.instructions] == edited
