"""The MES connector against the sandbox MES (OPC UA ISA-95) and a real Mosquitto: the contract
kit's sink side, and the whole way on real Kafka with the engine: release -> job orders ->
started -> IN_PRODUCTION -> good/scrap -> ended -> COMPLETED, a redelivered release making no
second job."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import aiomqtt
import pytest

from connectors.mes import MesConfig, MesConnector
from connectors.mes.opcua import JobOrderReceiverClient
from hub.client import HubClient
from hub.events import Actor, ChangeProposal, FieldChange, OrderRef, OrderSnapshot
from hub.sdk import ConnectorRuntime
from hub.sdk.contract import ConnectorContract, release_of, sample_order
from localdev import mosquitto, process
from localdev.sandboxes import mes
from localdev.sandboxes.mes import ShopFloor
from tests.integration.kafka_helpers import poll_until

pytestmark = pytest.mark.integration


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """Mosquitto and the sandbox MES on free ports; both stopped by PID afterwards."""
    port = process.free_port()
    mosquitto.up(tmp_path / "broker", port)
    url = mes.up(tmp_path / "mes", process.free_port(), mqtt_port=port)
    yield url, port
    mes.down(tmp_path / "mes")
    mosquitto.down(tmp_path / "broker")


class TestMesContract(ConnectorContract):
    """The contract kit against the sandbox MES: releases go in through the sink, the shop floor's
    job states come back through the source, a malformed shop-floor message is dead-lettered."""

    creates_orders = False

    @pytest.fixture
    def peer(self, shop: tuple[str, int]) -> tuple[str, int]:
        return shop

    def make_connector(self, peer: tuple[str, int]) -> MesConnector:
        return MesConnector(MesConfig(opc_url=peer[0], mqtt_host="127.0.0.1", mqtt_port=peer[1]))

    def outside_orders(self, peer: tuple[str, int], order_id: str) -> int:
        async def count() -> int:
            async with JobOrderReceiverClient(peer[0]) as client:
                return sum(1 for job in await client.jobs_for_order(order_id) if job.job.line_no == 10)
        return _run(count())  # the job orders of line 10 (each line has its own)

    async def put_outside_change(self, peer: tuple[str, int], connector: MesConnector, key: str) -> OrderSnapshot:
        order = sample_order(f"mes-kit-{key}", status="RELEASED")
        await connector.on_release(release_of(order))
        async with ShopFloor(peer[0], "127.0.0.1", peer[1]) as floor:
            await floor.start(f"{order.order_number}-L10")
        return order

    async def put_unmappable(self, peer: tuple[str, int]) -> None:
        async with aiomqtt.Client("127.0.0.1", peer[1]) as mqtt:
            await mqtt.publish("mes/main/jobs/NO-SUCH-L10/progress", b"{not json", qos=1)


def _run(coroutine):
    """Run a coroutine from a synchronous hook called inside the test's event loop."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def propose_status(client: HubClient, order_id: str, base: int, status: str, system: str, role: str,
                         **more: object) -> int:
    changes = [FieldChange(field="status", value=json.dumps(status))] + [
        FieldChange(field=k, value=json.dumps(v)) for k, v in more.items()]
    decided = await client.propose(ChangeProposal(
        event_id=f"{order_id}:{status}", order_ref=OrderRef(order_id=order_id), base_version=base,
        source_system=system, actor=Actor(id="t", role=role), occurred_at="2026-12-03T10:00:00Z", changes=changes),
        timeout_s=60)
    assert decided.accepted, decided.answer
    return decided.answer.version


async def test_a_release_becomes_jobs_and_the_shop_floor_completes_the_order(
        hub_settings, start_worker, shop: tuple[str, int]) -> None:
    """Release -> one job per line (once, however often delivered) -> started -> IN_PRODUCTION ->
    good/scrap and a quality hold (put on, lifted) over MQTT -> ended -> COMPLETED, each a version of
    the order made by the MES."""
    opc_url, mqtt_port = shop
    start_worker(hub_settings).wait_ready()
    runtime = ConnectorRuntime(MesConnector(MesConfig(opc_url=opc_url, mqtt_host="127.0.0.1", mqtt_port=mqtt_port,
                                                      poll_interval_s=0.3)),
                               instance="mes-test", settings=hub_settings)
    running = asyncio.create_task(runtime.run())
    try:
        async with HubClient(hub_settings) as client:
            create = ChangeProposal(
                event_id="mes-order-create", order_ref=OrderRef(order_id="mes-order-1"), intent="CREATE",
                base_version=0, source_system="ERP", actor=Actor(id="erp", role="connector"),
                occurred_at="2026-12-03T09:00:00Z", changes=[FieldChange(field=k, value=json.dumps(v)) for k, v in {
                    "customer.id": "C-1", "requested_delivery": "2026-12-20", "instructions": [{"key": None, "text": "deburr"}],
                    "lines.10.material.id": "MAT-1", "lines.10.quantity": "10", "lines.10.unit": "C62",
                    "lines.20.material.id": "MAT-2", "lines.20.quantity": "4", "lines.20.unit": "C62"}.items()])
            created = await client.propose(create, timeout_s=60)
            assert created.answer.outcome.value == "CREATED", created.answer.message
            version = 1
            for status, system, role in (("CONFIRMED", "ERP", "connector"), ("APPROVED", "ERP", "connector"),
                                         ("RELEASED", "HUB", "planner")):
                version = await propose_status(client, "mes-order-1", version, status, system, role)
        order = lambda: runtime.store.snapshot("mes-order-1")  # noqa: E731
        async with JobOrderReceiverClient(opc_url) as jobs:
            await poll_until(lambda: _run(jobs_count(opc_url)) == 2, 60, "two job orders at the MES")
            number = order().order_number
            floor_jobs = [f"{number}-L10", f"{number}-L20"]
            assert [j.job_order_id for j in await jobs.jobs_for_order("mes-order-1")] == floor_jobs
        async with ShopFloor(opc_url, "127.0.0.1", mqtt_port) as floor:
            await floor.start(floor_jobs[0])
            await poll_until(lambda: order().status.value == "IN_PRODUCTION", 60, "IN_PRODUCTION from the MES")
            await floor.report(floor_jobs[0], Decimal("9"), Decimal("1"), "C62")
            await poll_until(lambda: order().lines[0].good_quantity == Decimal("9"), 60, "good quantity 9")
            assert order().lines[0].scrap_quantity == Decimal("1")
            await floor.hold(floor_jobs[0], "burr on the flange")
            await poll_until(lambda: order().on_hold, 60, "the quality hold on the order")
            assert any("burr on the flange" in reason for reason in order().hold_reasons)
            await floor.release_hold(floor_jobs[0])
            await poll_until(lambda: not order().on_hold, 60, "the hold lifted")
            await floor.start(floor_jobs[1])
            await floor.finish(floor_jobs[0])
            await floor.finish(floor_jobs[1])
            await poll_until(lambda: order().status.value == "COMPLETED", 60, "COMPLETED from the MES")
        assert order().actual_start is not None and order().actual_end is not None
        assert _run(jobs_count(opc_url)) == 2, "no second job from redelivered or replayed releases"
    finally:
        runtime.stop()
        await running


async def jobs_count(opc_url: str) -> int:
    async with JobOrderReceiverClient(opc_url) as client:
        return len(await client.list_jobs())
