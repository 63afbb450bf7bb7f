"""The connectors under faults, on real Kafka with the engine: Kafka stopped while the CRM keeps
changing, a malformed CRM event and an order the ERP cannot take, and the same CRM change event
delivered three times."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from connectors.crm import CrmConnector
from connectors.erp import ErpConnector
from connectors.mes import MesConfig, MesConnector
from connectors.mes.opcua import JobOrderReceiverClient
from hub.client import HubClient
from hub.events import Actor, ChangeProposal, FieldChange, OrderRef, OrderSnapshot, ProposalOutcome
from hub.sdk import ConnectorRuntime
from hub.settings import Settings
from hub.topics import TopicNames
from localdev import kafka as localkafka, mosquitto, process
from localdev.sandboxes import mes, salesforce, sap
from localdev.sandboxes.salesforce import NewOpportunity, SalesDesk, line
from tests.e2e.connector_stack import (CrmPeer, answers, changes_of, dead_letter, deliver_signed, erp_config,
                                       latest_replay_id, opportunity_ref, order_changes, own_kafka_settings,
                                       proposals, read_until, running, snapshots, why, won_event)
from tests.integration.kafka_helpers import eventually, poll_until
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration

#: How long the hub's Kafka stays down while the sales person keeps working.
OUTAGE_S = 30.0
DUE = (dt.date.today() + dt.timedelta(days=30)).isoformat()


# --- what each test starts (stopped by PID afterwards) ------------------------------------------


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[Settings]:
    """A single-node Kafka of this test's own (the shared one on 9092 stays untouched); stopped by
    PID afterwards, whether the test left it up or down."""
    settings = own_kafka_settings(tmp_path / "kafka")
    localkafka.up(settings)
    try:
        yield settings
    finally:
        localkafka.down(settings)


@pytest.fixture
def own_hub(own_kafka: Settings, tmp_path: Path) -> Settings:
    """A topic namespace on that Kafka, topics applied. Ask for it before ``start_worker``: fixtures
    end in reverse, so the worker stops while this Kafka still runs."""
    return namespaced_settings(own_kafka, tmp_path / "hub")


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[CrmPeer]:
    """The Salesforce sandbox (TLS), pushing signed change events to a free port for the CRM connector."""
    peer_port, webhook_port, secret = process.free_port(), process.free_port(), "fault-test-secret"
    url = f"http://127.0.0.1:{webhook_port}/crm/events"
    sandbox = salesforce.up(tmp_path / "crm", peer_port, webhook_urls=[url], webhook_secret=secret)
    yield CrmPeer(sandbox, webhook_port, secret)
    salesforce.down(tmp_path / "crm")


@pytest.fixture
def erp_url(tmp_path: Path) -> Iterator[str]:
    """mock-sap on a free port."""
    url = sap.up(tmp_path / "erp", process.free_port(), slow_ms=200)
    yield url
    sap.down(tmp_path / "erp")


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """Mosquitto and the sandbox MES (OPC UA ISA-95) on free ports: (opc.tcp URL, MQTT port)."""
    mqtt_port = process.free_port()
    mosquitto.up(tmp_path / "broker", mqtt_port)
    opc_url = mes.up(tmp_path / "mes", process.free_port(), mqtt_port=mqtt_port)
    yield opc_url, mqtt_port
    mes.down(tmp_path / "mes")
    mosquitto.down(tmp_path / "broker")


# --- steps the tests share ----------------------------------------------------------------------


def sell(desk: SalesDesk, account: str, *, account_number: str | None, lines: list[dict[str, Any]],
         po: str | None = None) -> NewOpportunity:
    """A sales person creates an opportunity with every mandatory field and wins it."""
    fields = {"Customer_PO_Number__c": po} if po else {}
    opp = desk.new_opportunity(account, f"Brackets for {account}", account_number=account_number, contact="Jane Roe",
                               CurrencyIsoCode="EUR", Requested_Delivery_Date__c=DUE,
                               Description="coating: zinc 12 um", lines=lines, **fields)
    desk.win(opp.opportunity_id)
    return opp


async def the_order(runtime: ConnectorRuntime, opp: NewOpportunity, what: str,
                    holds: Callable[[OrderSnapshot], Any] = lambda order: True, timeout: float = 90) -> OrderSnapshot:
    """The hub's last word on the opportunity's order, as the connector saw it, once ``holds`` is true."""
    ref = opportunity_ref(opp.opportunity_id)

    def seen() -> bool:
        order = runtime.store.snapshot_for(ref)
        return order is not None and bool(holds(order))
    await poll_until(seen, timeout, lambda: f"{what} (the order now: {runtime.store.snapshot_for(ref)})")
    return runtime.store.snapshot_for(ref)


async def webhook_listening(peer: CrmPeer) -> None:
    """Wait until the CRM connector's webhook takes connections."""
    await poll_until(lambda: process.answers(peer.webhook_port), 30, "the CRM connector's webhook")


def erp_number(order: OrderSnapshot) -> str | None:
    """The ERP sales order the order is cross-referenced to, if any."""
    return next((r.external_id for r in order.external_refs if r.system == "ERP"), None)


def canonical(field: str, value: str | None) -> Any:
    """A diff's canonical JSON value, comparable with what the sales person typed."""
    plain = json.loads(value) if value is not None else None
    return Decimal(plain) if field.endswith("quantity") else plain


async def step(client: HubClient, order_id: str, base: int, status: str, role: str,
               path: str = "status", value: Any = None) -> int:
    """A person in the hub's UI takes one lifecycle step (or sets ``path`` to ``value``); the order's new version."""
    decided = await client.propose(ChangeProposal(
        event_id=f"{order_id}:{status}", order_ref=OrderRef(order_id=order_id), base_version=base,
        source_system="HUB", actor=Actor(id=f"{role}-1", role=role), occurred_at=dt.datetime.now(dt.UTC),
        changes=[FieldChange(field=path, value=json.dumps(status if value is None else value))]), timeout_s=60)
    assert decided.accepted, decided.answer
    return decided.answer.version


# --- 1. Kafka down while the CRM keeps changing -------------------------------------------------


async def test_kafka_stopped_for_30_s_while_the_crm_keeps_changing_loses_nothing_and_applies_each_change_once_in_order(
        own_kafka: Settings, own_hub: Settings, start_worker, crm: CrmPeer) -> None:
    """While the hub's Kafka is down for 30 s, every change the sales person makes is in the CRM
    connector's outbox before its webhook answers 200; once Kafka is back, each change is exactly one
    version of the order, in the order it was made, and the order has the final values."""
    start_worker(own_hub).wait_ready()
    runtime = ConnectorRuntime(CrmConnector(crm.config()), instance="crm-outage", settings=own_hub)
    desk, api = crm.desk(), crm.api()
    try:
        async with running(runtime):
            await webhook_listening(crm)
            opp = sell(desk, "ACME GmbH", account_number="17100001", po="PO-0",
                       lines=[line("MAT-100", 250, unit="pcs", unit_price=4)])
            order = await the_order(runtime, opp, "version 1 from the won opportunity")
            assert order.version == 1 and order.customer_po_number == "PO-0"
            await poll_until(lambda: api.opportunity(opp.opportunity_id).order_number == order.order_number, 60,
                             "the order number written back to the opportunity")
            await poll_until(lambda: runtime.store.waiting() == 0, 30, "the outbox drained")

            await asyncio.to_thread(localkafka.down, own_kafka)
            assert not localkafka.status(own_kafka).running
            made: list[tuple[str, Any]] = []  # (canonical field, value) in the order the sales person made them
            down_since = time.monotonic()
            while time.monotonic() - down_since < OUTAGE_S:  # the scenario: 30 s of work with Kafka away
                waiting = proposals_waiting(runtime)
                # one quantity change among the PO numbers: the ERP owns quantities, and today the hub parks
                # a second CRM quantity change made from the same base (a conflict of the CRM with itself)
                if len(made) == 2:
                    desk.change_line(opp.line_ids[0], Quantity=300)
                    made.append(("lines.10.quantity", Decimal("300")))
                else:
                    desk.change(opp.opportunity_id, Customer_PO_Number__c=f"PO-{len(made) + 1}")
                    made.append(("customer_po_number", f"PO-{len(made) + 1}"))
                replay_id = latest_replay_id(desk)
                await poll_until(lambda: crm.acknowledged() >= replay_id, 30,
                                 lambda: f"the webhook's 200 for change {len(made)} (replay id {replay_id})")
                assert proposals_waiting(runtime) == waiting + 1, \
                    f"change {len(made)} was answered 200 without its proposal stored in the outbox"
            assert not localkafka.status(own_kafka).running, "Kafka stayed down the whole time"
            assert proposals_waiting(runtime) == len(made), "every change waits in the outbox"

            await asyncio.to_thread(localkafka.up, own_kafka)  # the same state_dir: its data is kept
            final = 1 + len(made)
            await the_order(runtime, opp, f"version {final} after Kafka came back",
                            lambda o: o.version >= final, timeout=150)
            changes = await order_changes(own_hub, order.order_id, final)
            latest = runtime.store.snapshot_for(opportunity_ref(opp.opportunity_id))
    finally:
        desk.close()
        api.close()

    last_po = [value for field, value in made if field == "customer_po_number"][-1]
    assert (latest.version, latest.customer_po_number, latest.lines[0].quantity) == (final, last_po, Decimal("300"))
    assert sorted(c.version for c in changes) == list(range(1, final + 1)), "versions gapless, each once"
    event_ids = [c.event_id for c in changes]
    assert len(set(event_ids)) == len(event_ids), "no event applied twice"
    in_order = sorted(changes, key=lambda c: c.version)[1:]
    assert {c.source_system for c in in_order} == {"CRM"}
    applied = [(field, canonical(field, {d.field: d.after for d in c.diffs}.get(field))) for (field, _), c
               in zip(made, in_order)]
    assert applied == made, "each change made one version, in the order it was made"


# --- 2. dead letters with the reason, and the next good record flows --------------------------------

#: Signed correctly, but no change event: recordIds must be a list of ids.
MALFORMED_EVENT = json.dumps({
    "schema": "opportunity-change", "event": {"replayId": 1},
    "payload": {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": "006000000000001AAA",
                                      "changeType": "UPDATE", "commitTimestamp": 1767225600000,
                                      "transactionKey": "t-1", "changeOrigin": ""}}}).encode()


async def test_a_malformed_crm_event_and_an_order_the_erp_cannot_take_are_dead_lettered_with_why_and_the_next_flow(
        hub_settings: Settings, start_worker, crm: CrmPeer, erp_url: str) -> None:
    """A signed but malformed change event and an order whose customer number SAP cannot hold land on
    the dead-letter topic with ``__orderhub.errors.*`` headers naming the reason; the next won
    opportunity still becomes an order, and the next good order still gets its sales order."""
    start_worker(hub_settings).wait_ready()
    crm_runtime = ConnectorRuntime(CrmConnector(crm.config()), instance="crm-faults", settings=hub_settings)
    erp_runtime = ConnectorRuntime(ErpConnector(erp_config(erp_url)), instance="erp-faults", settings=hub_settings)
    desk = crm.desk()
    try:
        async with running(crm_runtime), running(erp_runtime):
            await webhook_listening(crm)
            answer = await deliver_signed(crm.webhook_url, MALFORMED_EVENT, crm.secret)
            assert answer.status_code == 200 and "dead_lettered" in answer.json(), answer.text
            letter = await dead_letter(hub_settings, lambda r: r.value == MALFORMED_EVENT)
            reason = why(letter)
            assert reason["__orderhub.errors.stage"] == "connector:crm-faults:source"
            assert "not a change event" in reason["__orderhub.errors.exception.message"]
            assert "recordIds" in reason["__orderhub.errors.exception.message"]
            assert reason["__orderhub.errors.exception.class.name"]

            # no AccountNumber: the customer id is Salesforce's 18-character account id, too long for SAP
            unnumbered = sell(desk, "Nonumber AG", account_number=None, lines=[line("MAT-7", 10, unit="pcs")])
            refused = await the_order(crm_runtime, unnumbered, "the next won opportunity as an order")
            letter = await dead_letter(hub_settings, lambda r: r.key == refused.order_id.encode())
            reason = why(letter)
            assert reason["__orderhub.errors.stage"] == "connector:erp-faults:sink:on_state"
            assert "customer.id" in reason["__orderhub.errors.exception.message"]
            assert "10-character" in reason["__orderhub.errors.exception.message"]
            assert reason["__orderhub.errors.exception.class.name"]

            good = sell(desk, "ACME GmbH", account_number="17100002", lines=[line("MAT-100", 25, unit="pcs")])
            taken = await the_order(crm_runtime, good, "the good order's ERP sales order", erp_number)
    finally:
        desk.close()
    assert sap.sales_orders_with_text(erp_url, "ZHUB", taken.order_id) == [erp_number(taken)]
    assert sap.sales_orders_with_text(erp_url, "ZHUB", refused.order_id) == [], "nothing half-made in the ERP"


# --- 3. one opportunity event delivered three times ------------------------------------------------


async def test_the_same_opportunity_event_delivered_three_times_makes_one_order_one_erp_order_and_one_job_per_line(
        hub_settings: Settings, start_worker, crm: CrmPeer, erp_url: str, shop: tuple[str, int]) -> None:
    """The won opportunity's change event, posted three more times at once, still makes one hub order
    (one CREATED, one CRM version), which goes CONFIRMED by the ERP, APPROVED and RELEASED by people,
    and ends as one ERP sales order and one MES job order per line."""
    opc_url, mqtt_port = shop
    start_worker(hub_settings).wait_ready()
    crm_runtime = ConnectorRuntime(CrmConnector(crm.config()), instance="crm-thrice", settings=hub_settings)
    erp_runtime = ConnectorRuntime(ErpConnector(erp_config(erp_url)), instance="erp-thrice", settings=hub_settings)
    mes_runtime = ConnectorRuntime(MesConnector(MesConfig(opc_url=opc_url, mqtt_host="127.0.0.1", mqtt_port=mqtt_port,
                                                          poll_interval_s=0.5)),
                                   instance="mes-thrice", settings=hub_settings)
    desk = crm.desk()
    try:
        async with running(crm_runtime), running(erp_runtime), running(mes_runtime):
            await webhook_listening(crm)
            opp = sell(desk, "ACME GmbH", account_number="17100003",
                       lines=[line("MAT-100", 250, unit="pcs"), line("MAT-200", 40, unit="kg")])
            event = json.dumps(won_event(desk, opp.opportunity_id)).encode()
            delivered = await asyncio.gather(*(deliver_signed(crm.webhook_url, event, crm.secret) for _ in range(3)))
            assert [d.status_code for d in delivered] == [200, 200, 200]

            order = await the_order(crm_runtime, opp, "the order's ERP sales order", erp_number)
            sap.price_and_confirm(erp_url, erp_number(order), unit_prices={"000010": Decimal("47.50"),
                                                                           "000020": Decimal("12.90")},
                                  delivery_date=dt.date.fromisoformat(DUE) - dt.timedelta(days=2))
            confirmed = await the_order(crm_runtime, opp, "CONFIRMED by the ERP", lambda o: o.status.value == "CONFIRMED")
            async with HubClient(hub_settings) as client:
                # 12,391 EUR: above workflow.yaml's first threshold, so the sales manager's approval is the step
                approved = await step(client, order.order_id, confirmed.version, "APPROVED", "sales_manager",
                                      "approvals.sales", {"decision": "approved"})
                await step(client, order.order_id, approved, "RELEASED", "planner")
            async with JobOrderReceiverClient(opc_url) as receiver:
                async def both_jobs() -> list | None:
                    jobs = await receiver.jobs_for_order(order.order_id)
                    return jobs if len(jobs) >= 2 else None
                jobs = await eventually(both_jobs, 90, "a job order per line at the MES")
                every_job = await receiver.list_jobs()
            # every proposal the CRM connector sent has been decided: nothing still on its way
            found = await read_until(hub_settings, ["proposals", "by_order", "answers", "state", "changes"],
                                     _crm_all_answered)
    finally:
        desk.close()

    created = [a for a in answers(found["answers"]) if a.outcome == ProposalOutcome.CREATED]
    assert [a.order_id for a in created] == [order.order_id], "one CREATED answer"
    assert {s.order_id for s in snapshots(found["state"])} == {order.order_id}, "one hub order"
    assert [c.version for c in changes_of(found["changes"], order.order_id) if c.source_system == "CRM"] == [1], \
        "the repeated event made no version"
    assert sap.sales_orders_with_text(erp_url, "ZHUB", order.order_id) == [erp_number(order)], "one ERP sales order"
    assert [j.job_order_id for j in jobs] == [f"{order.order_number}-L10", f"{order.order_number}-L20"]
    assert len(every_job) == 2, "one MES job order per line, none twice"


def proposals_waiting(runtime) -> int:
    """Proposals in the connector's outbox, by reference or by order id alike."""
    return sum(runtime.store.waiting(role) for role in TopicNames.PROPOSAL_ROLES)


def _crm_all_answered(records: dict[str, list]) -> bool:
    sent = {p.event_id for p in proposals(records["proposals"] + records["by_order"]) if p.source_system == "CRM"}
    answered = {a.event_id for a in answers(records["answers"])}
    return bool(sent) and sent <= answered
