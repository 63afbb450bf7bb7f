"""The ERP connector against mock-sap (a real process): the contract kit's sink side; on real
Kafka with the engine, a hub order becomes one sales order whose number, prices and confirmation
come back; two instances share the work and one killed mid-hook loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import signal
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from connectors.erp import ErpConfig, ErpConnector
from connectors.erp.client import NewSalesOrder, NewSalesOrderItem, SalesOrderClient
from hub.client import HubClient
from hub.readmodel import ReadModel
from hub.events import Actor, ChangeProposal, ExternalRef, FieldChange, OrderRef, OrderSnapshot
from hub.sdk import ConnectorRuntime
from hub.sdk.runtime import READY
from hub.sdk.contract import ConnectorContract, sample_order
from localdev import process
from localdev.sandboxes import sap
from tests.integration.kafka_helpers import WorkerProcess, poll_until

pytestmark = pytest.mark.integration


@pytest.fixture
def erp_url(tmp_path: Path) -> Iterator[str]:
    """mock-sap on a free port; stopped by PID afterwards."""
    url = sap.up(tmp_path / "erp", process.free_port(), slow_ms=200)
    yield url
    sap.down(tmp_path / "erp")


def erp_config(url: str) -> ErpConfig:
    return ErpConfig(service_url=url, user=sap.USER, password=sap.PASSWORD, poll_interval_s=0.5)


class TestErpContract(ConnectorContract):
    """The contract kit against mock-sap: hub orders go in through the sink, the clerk's pricing and
    confirmation come back through the source."""

    creates_orders = False

    @pytest.fixture
    def peer(self, erp_url: str) -> str:
        return erp_url

    def make_connector(self, peer: str) -> ErpConnector:
        return ErpConnector(erp_config(peer))

    def outside_orders(self, peer: str, order_id: str) -> int:
        return len(sap.sales_orders_with_text(peer, "ZHUB", order_id))

    async def put_outside_change(self, peer: str, connector: ErpConnector, key: str) -> OrderSnapshot:
        order = sample_order(f"erp-kit-{key}", status="DRAFT")
        await connector.on_state(order)  # the sink creates the sales order
        with SalesOrderClient(peer, sap.USER, sap.PASSWORD) as client:
            number = client.find_by_hub_id(order.order_id).sales_order
        sap.price_and_confirm(peer, number, unit_prices={"000010": Decimal("10.00"), "000020": Decimal("4.50")},
                              delivery_date=dt.date(2026, 12, 20))
        return order

    async def put_unmappable(self, peer: str) -> None:
        # an ERP order for a hub order whose item is in a unit the hub has no code for
        with SalesOrderClient(peer, sap.USER, sap.PASSWORD) as client:
            client.create(NewSalesOrder(hub_order_id="erp-kit-odd-unit", sold_to_party="17100001", items=(
                NewSalesOrderItem(item="000010", material="MAT-9", quantity=Decimal("3"), unit="ZZZ"),)))


def creation(order_id: str) -> ChangeProposal:
    values = {"customer.id": "17100001", "requested_delivery": "2026-12-20",
              "instructions": [{"key": None, "text": "zinc 12 um"}],
              "lines.10.material.id": "MAT-100", "lines.10.quantity": "250", "lines.10.unit": "C62"}
    return ChangeProposal(event_id=f"{order_id}:create", order_ref=OrderRef(order_id=order_id), intent="CREATE",
                          base_version=0, source_system="HUB", actor=Actor(id="sam", role="sales"),
                          occurred_at="2026-12-03T09:00:00Z",
                          changes=[FieldChange(field=k, value=json.dumps(v)) for k, v in values.items()])


def erp_number(runtime: ConnectorRuntime, order_id: str) -> str | None:
    snapshot = runtime.store.snapshot(order_id)
    refs = [r.external_id for r in (snapshot.external_refs if snapshot else []) if r.system == "ERP"]
    return refs[0] if refs else None


async def test_a_hub_order_becomes_one_sales_order_and_the_erp_prices_and_confirms_it(
        hub_settings, start_worker, erp_url: str, tmp_path: Path) -> None:
    """The order gets its ERP number as a cross-reference; the clerk's prices and confirmed date come
    back as amounts and CONFIRMED, made by the ERP; the ERP has one sales order for it."""
    start_worker(hub_settings).wait_ready()
    runtime = ConnectorRuntime(ErpConnector(erp_config(erp_url)), instance="erp-test", settings=hub_settings)
    running = asyncio.create_task(runtime.run())
    try:
        async with HubClient(hub_settings) as client:
            assert (await client.propose(creation("erp-order-1"), timeout_s=60)).answer.outcome.value == "CREATED"
        await poll_until(lambda: erp_number(runtime, "erp-order-1") is not None, 90, "the ERP number on the order")
        number = erp_number(runtime, "erp-order-1")
        sap.price_and_confirm(erp_url, number, unit_prices={"000010": Decimal("47.50")},
                              delivery_date=dt.date(2026, 12, 18))
        await poll_until(lambda: runtime.store.snapshot("erp-order-1").status.value == "CONFIRMED", 90,
                         lambda: f"CONFIRMED from the ERP (order now {runtime.store.snapshot('erp-order-1')})")
        order = runtime.store.snapshot("erp-order-1")
        assert order.amounts.net == Decimal("11875.00") and order.lines[0].unit_price == Decimal("47.5000")
        assert order.promised_delivery == dt.date(2026, 12, 18)
        assert len(sap.sales_orders_with_text(erp_url, "ZHUB", "erp-order-1")) == 1
        ref = ExternalRef(system="ERP", object_type="A_SalesOrder", external_id=number)
        assert runtime.store.snapshot_for(ref).order_id == "erp-order-1"

        # the hub's own write to the ERP comes back by delta, and makes no version
        async with HubClient(hub_settings) as client:
            po = ChangeProposal(event_id="erp-order-1:po", order_ref=OrderRef(order_id="erp-order-1"),
                                base_version=order.version, source_system="HUB", actor=Actor(id="sam", role="sales"),
                                occurred_at="2026-12-03T10:00:00Z",
                                changes=[FieldChange(field="customer_po_number", value=json.dumps("PO-991"))])
            assert (await client.propose(po, timeout_s=60)).answer.version == order.version + 1
        with SalesOrderClient(erp_url, sap.USER, sap.PASSWORD) as erp:
            await poll_until(lambda: erp.get(number).customer_reference == "PO-991", 60, "the PO written to the ERP")
        sap.price_and_confirm(erp_url, number, unit_prices={"000010": Decimal("46.00")},
                              delivery_date=dt.date(2026, 12, 18))  # a real ERP change after the echo
        await poll_until(lambda: runtime.store.snapshot("erp-order-1").amounts.net == Decimal("11500.00"), 90,
                         "the new price from the ERP")
        model = ReadModel(hub_settings.read_model_url)
        await poll_until(lambda: len(model.history("erp-order-1")) == order.version + 2, 60, "the history")
        last = model.history("erp-order-1")[-2:]
        assert [(h.source_system, [d.field for d in h.diffs][:1]) for h in last] == [
            ("HUB", ["customer_po_number"]), ("ERP", ["amounts.gross"])], "the echo made no version in between"
    finally:
        runtime.stop()
        await running


async def test_two_instances_share_the_sink_and_one_killed_mid_hook_loses_nothing(
        hub_settings, start_worker, erp_url: str, tmp_path: Path) -> None:
    """Two `orderhub connectors run` processes of one ERP instance share the orders; once both have made
    sales orders, one is killed with SIGKILL while it is creating one (the hook in flight, nothing
    committed): the other takes its partitions over, and every order has exactly one sales order."""
    start_worker(hub_settings).wait_ready()
    declared = tmp_path / "connectors.yaml"
    declared.write_text(yaml.safe_dump({"connectors": [{"name": "erp-shared", "kind": "erp", "config": {
        "service_url": erp_url, "user": sap.USER, "password": sap.PASSWORD, "poll_interval_s": 0.5}}]}))
    instances = [WorkerProcess(hub_settings.model_copy(update={"state_dir": tmp_path / name}), tmp_path / f"{name}.log",
                               command=("connectors", "run", "--file", str(declared)),
                               ready_mark=f"{READY}: erp-shared")
                 for name in ("erp-a", "erp-b")]
    orders: list[str] = []

    def creating(instance: WorkerProcess) -> list[str]:
        return re.findall(r"creating the sales order of hub order (\S+)", instance.log_path.read_text())

    try:
        for instance in instances:
            instance.start().wait_ready()
        async with HubClient(hub_settings) as client:
            async def more(count: int) -> None:
                new = [f"erp-shared-{uuid.uuid4().hex[:6]}-{len(orders) + n}" for n in range(count)]
                orders.extend(new)
                await asyncio.gather(*(client.propose(creation(o), timeout_s=60) for o in new))

            # both at work: the second instance may join after the first took every partition, so orders
            # keep coming until each has made sales orders; then one dies in the middle of a hook
            await more(12)
            for _ in range(12):
                with contextlib.suppress(AssertionError):
                    await poll_until(lambda: all(creating(i) for i in instances), 10, "sales orders from both")
                    break
                await more(4)
            assert all(creating(i) for i in instances), "both instances made sales orders"
            victim, survivor = instances
            seen = len(creating(victim))
            await more(8)
            await poll_until(lambda: len(creating(victim)) > seen or all(
                sap.sales_orders_with_text(erp_url, "ZHUB", o) for o in orders), 90, "the victim's next hook")
            assert victim.kill() == -signal.SIGKILL
        await poll_until(lambda: all(len(sap.sales_orders_with_text(erp_url, "ZHUB", o)) == 1 for o in orders), 120,
                         lambda: {o: len(sap.sales_orders_with_text(erp_url, "ZHUB", o)) for o in orders})
        assert all(len(sap.sales_orders_with_text(erp_url, "ZHUB", o)) == 1 for o in orders)
        assert set(creating(victim)) and set(creating(survivor)) >= set(orders) - set(creating(victim)), \
            "the survivor made every sales order the killed instance had not begun"
    finally:
        for instance in instances:
            instance.stop()
