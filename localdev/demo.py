"""``orderhub demo``: one order the whole way, against the hub ``orderhub up`` runs, step by step.

Nobody types the order twice: a sales person wins an opportunity in the CRM; the hub makes the
order and its number; the ERP gets the sales order and a clerk prices and confirms it there;
two people edit the same field from the same version (a conflict, parked for a person); the
approver's step waits for the sales manager's approval (the amount is above workflow.yaml's first
threshold), which makes it APPROVED, and a planner releases it in the hub; the MES gets the job orders; the shop
floor starts, reports and finishes them; a rush order due in five days raises the due-date
alert; every status change reached the sales desk's mailbox (the mail sink) and the hall's
display (MQTT). Each step waits for the hub (the read model) to show it, with a deadline, and
says who did what.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from hub.client import HubClient
from hub.events import Actor, ChangeProposal, FieldChange, OrderRef, OrderSnapshot, ProposalIntent
from hub.readmodel import OrderNotFound, ReadModel
from hub.settings import Settings
from localdev.up import Stack

#: How long one step may take before the demo says what it waited for.
STEP_TIMEOUT_S = 90.0


@dataclass
class DemoRun:
    """What the demo did: the order, its references, the conflict, every step said."""

    #: The hub's order id, number and the opportunity, ERP order and MES jobs it is known by.
    order_id: str = ""
    order_number: str = ""
    opportunity_id: str = ""
    erp_number: str = ""
    job_ids: list[str] = field(default_factory=list)
    #: The event id of the parked proposal, and of the sales manager's approval.
    parked_event_id: str = ""
    approval_event_id: str = ""
    #: The rush order due in five days, which raises the due-date alert.
    rush_order_id: str = ""
    #: The customer's name (made unique per run).
    customer: str = ""
    #: The status-change notifications of the order the hall's display received over MQTT, once each.
    displayed: list[dict[str, Any]] = field(default_factory=list)
    #: Every line the demo said, in order.
    lines: list[str] = field(default_factory=list)


async def wait_for(what: str, check: Callable[[], Any], timeout_s: float = STEP_TIMEOUT_S) -> Any:
    """Poll ``check()`` until it returns something truthy; TimeoutError naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await asyncio.to_thread(check)
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo waited {timeout_s:.0f}s for {what}; is `orderhub up` running? "
                               "(its logs are under <state_dir>/up/)")
        await asyncio.sleep(0.3)


async def run_demo(settings: Settings, say: Callable[[str], None] = print) -> DemoRun:
    """Push one order the whole way through; return what happened."""
    from localdev.sandboxes import sap
    from localdev.sandboxes.mes import ShopFloor
    from localdev.sandboxes.salesforce import SalesDesk, line

    stack = Stack.read(settings)
    run = DemoRun()

    def tell(text: str) -> None:
        run.lines.append(text)
        say(text)

    model = ReadModel(settings.read_model_url)
    model.create_schema()

    def order() -> OrderSnapshot | None:
        try:
            return model.order(run.order_id or f"CRM/Opportunity/{run.opportunity_id}")
        except OrderNotFound:
            return None

    due = dt.date.today() + dt.timedelta(days=21)
    desk = SalesDesk(stack.crm["instance_url"], stack.crm["ca_file"])
    display_topic, display_seen = _display_topic(settings), []
    listening = asyncio.Event()
    display = asyncio.create_task(_watch_display(stack, display_topic, display_seen, listening))
    try:
        await asyncio.wait_for(listening.wait(), STEP_TIMEOUT_S)
        run.customer = f"ACME Maschinenbau {uuid.uuid4().hex[:4]}"
        tell("1. Sales (CRM): Anna wins the opportunity 'Brackets for ACME' (2 lines, due "
             f"{due.isoformat()}, zinc coating)")
        opp = desk.new_opportunity(
            run.customer, "Brackets for ACME", account_number="17100001",
            contact="Jane Roe",
            CurrencyIsoCode="EUR", Requested_Delivery_Date__c=due.isoformat(), Customer_PO_Number__c="PO-7781",
            Description="coating: zinc 12 um\ninspection: first article report",
            lines=[line("MAT-100", 250, unit="pcs", unit_price=48), line("MAT-200", 40, unit="kg", unit_price=13)])
        run.opportunity_id = opp.opportunity_id
        desk.win(opp.opportunity_id, stage="Signed")
        created = await wait_for("the order from the won opportunity", order)
        run.order_id, run.order_number = created.order_id, created.order_number
        tell(f"   hub: order {created.order_number} created from CRM opportunity {opp.opportunity_id} "
             f"(version 1, by the CRM connector; mandatory fields and ownership checked)")

        with_erp = await wait_for("the ERP sales order", lambda: _ref(order(), "ERP"))
        run.erp_number = with_erp
        tell(f"2. ERP: sales order {with_erp.lstrip('0')} created for it (the hub's id stored in the ERP order)")
        await asyncio.to_thread(sap.price_and_confirm, stack.erp["url"], with_erp,
                                unit_prices={"000010": Decimal("47.50"), "000020": Decimal("12.90")},
                                delivery_date=due - dt.timedelta(days=2))
        confirmed = await wait_for("the ERP's prices and confirmation",
                                   lambda: (o := order()) and o.status.value == "CONFIRMED" and o)
        tell(f"   ERP clerk priced and confirmed it: net {confirmed.amounts.net} {confirmed.currency or ''}, "
             f"promised {confirmed.promised_delivery}; hub: version {confirmed.version}, CONFIRMED")

        async with HubClient(settings) as client:
            base = confirmed.version
            tell(f"3. Two people edit the process requirements at once, both from version {base}:")
            first = await _propose(client, run.order_id, base, "HUB", "sam", "sales",
                                   {"instructions": [{"key": "coating", "text": "zinc 15 um"}]})
            tell(f"   sales (hub UI): {first.outcome.value}, version {first.version}")
            second = await _propose(client, run.order_id, base, "HUB", "pia", "planner",
                                    {"instructions": [{"key": "coating", "text": "zinc 12 um, passivated"}]},
                                    expect="PARKED")
            run.parked_event_id = second.event_id
            tell(f"   planner (hub UI): {second.outcome.value}: {second.message} "
                 f"(see `orderhub orders conflicts {run.order_number}`)")

            current = await wait_for("the edit in the read model", lambda: (o := order()) and o.version >= first.version and o)
            early = await _propose(client, run.order_id, current.version, "HUB", "alex", "approver",
                                   {"status": "APPROVED"}, expect="REJECTED")
            tell(f"4. Approver (hub UI) tries to approve: {early.outcome.value}: {early.message} (workflow.yaml)")
            approved = await _propose(client, run.order_id, current.version, "HUB", "maria", "sales_manager",
                                      {"approvals.sales": {"decision": "approved", "comment": "margin checked"}})
            run.approval_event_id = approved.event_id
            tell(f"   Sales manager (hub UI) approves level 'sales': {approved.outcome.value}, version "
                 f"{approved.version}; hub: every required level approved, so APPROVED")
            released = await _propose(client, run.order_id, approved.version, "HUB", "pia", "planner",
                                      {"status": "RELEASED"})
            tell(f"5. Planner (hub UI): {released.outcome.value}, version {released.version}, RELEASED to production")

        jobs = await wait_for("the MES job orders", lambda: _jobs(stack, run.order_id))
        run.job_ids = jobs
        tell(f"6. MES: job orders {', '.join(jobs)} stored on the ISA-95 job order receiver")
        async with ShopFloor(stack.mes["opc_url"], stack.mes["mqtt_host"], stack.mes["mqtt_port"]) as floor:
            await floor.start(jobs[0])
            started = await wait_for("IN_PRODUCTION", lambda: (o := order()) and o.status.value == "IN_PRODUCTION" and o)
            tell(f"7. Shop floor: job {jobs[0]} started; hub: version {started.version}, IN_PRODUCTION")
            await floor.report(jobs[0], Decimal("248"), Decimal("2"), "C62")
            reported = await wait_for("the good quantity",
                                      lambda: (o := order()) and o.lines[0].good_quantity == Decimal("248") and o)
            tell(f"   progress over MQTT: line 10 good 248, scrap 2; hub: version {reported.version}")
            for job in jobs[1:]:
                await floor.start(job)
            await floor.report(jobs[-1], Decimal("40"), Decimal("0"), "KGM")
            for job in jobs:
                await floor.finish(job)
            done = await wait_for("COMPLETED", lambda: (o := order()) and o.status.value == "COMPLETED" and o)
        tell(f"8. Shop floor: every job ended; hub: version {done.version}, COMPLETED")

        rush_due = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=5)  # the alert worker counts in UTC
        run.rush_order_id = f"rush-{uuid.uuid4().hex[:8]}"
        async with HubClient(settings) as client:
            rush = await _propose(client, run.rush_order_id, 0, "HUB", "sam", "sales", {
                "customer.id": "17100001", "customer.name": "ACME Maschinenbau", "requested_delivery": rush_due.isoformat(),
                "instructions": [{"key": "coating", "text": "zinc 12 um"}], "lines.10.material.id": "MAT-100",
                "lines.10.quantity": "20", "lines.10.unit": "C62"}, expect="CREATED", create=True)
        alert = await wait_for("the due-date alert", lambda: next(iter(model.open_alerts(run.rush_order_id)), None))
        tell(f"9. A rush order (hub UI, sales), due {rush_due.isoformat()}, not started: {rush.outcome.value}; "
             f"alert '{alert.stage}' for the {alert.notify}: {alert.reason}")

        statuses = ["DRAFT", "CONFIRMED", "APPROVED", "RELEASED", "IN_PRODUCTION", "COMPLETED"]
        mails = await wait_for("a notification e-mail of every status change in the mail sink",
                               lambda: _status_mails(stack, run.order_number, statuses))
        await wait_for(f"a notification of every status change on the display ({display_topic})",
                       lambda: _displayed(display_seen, run, statuses))
        rush_mail = await wait_for("the alert e-mail to the production lead", lambda: next(
            (m for m in _mails(stack) if m["To"] == "production@plant.example" and "Due-date alert" in m["Subject"]
             and alert.order_number in m["Subject"]), None))
        tell(f"10. Notifications: {len(mails)} status changes e-mailed to the sales desk, the last "
             f"'{mails[-1]['Subject']}'; {len(run.displayed)} on the hall display over MQTT ({display_topic}); "
             f"the production lead's e-mail '{rush_mail['Subject']}' (mail sink: {stack.mail['maildir']}; "
             "`orderhub notifications` lists what was sent)")
        tell(f"\nThe whole story: orderhub orders history {run.order_number}")
        return run
    finally:
        display.cancel()
        desk.close()
        model.close()


@dataclass(frozen=True)
class _Answered:
    event_id: str
    outcome: Any
    version: int | None
    message: str | None


async def _propose(client: HubClient, order_id: str, base: int, system: str, actor: str, role: str,
                   values: dict[str, Any], *, expect: str | None = "APPLIED", create: bool = False) -> _Answered:
    proposal = ChangeProposal(
        event_id=str(uuid.uuid4()), order_ref=OrderRef(order_id=order_id), base_version=base, source_system=system,
        intent=ProposalIntent.CREATE if create else ProposalIntent.UPDATE,
        actor=Actor(id=actor, role=role), occurred_at=dt.datetime.now(dt.timezone.utc),
        changes=[FieldChange(field=k, value=json.dumps(v)) for k, v in values.items()])
    decided = await client.propose(proposal, timeout_s=STEP_TIMEOUT_S)
    answer = decided.answer
    if expect is not None and answer.outcome.value != expect:
        raise DemoFailed(f"{actor} ({role}) proposed {values}: the hub answered {answer.outcome.value}"
                         f"{': ' + answer.message if answer.message else ''}; the demo expected {expect}")
    return _Answered(proposal.event_id, answer.outcome, answer.version, answer.message)


class DemoFailed(RuntimeError):
    """A step of the demo did not turn out as the demo expects (the hub said why)."""


def _ref(snapshot: OrderSnapshot | None, system: str) -> str | None:
    refs = [r.external_id for r in (snapshot.external_refs if snapshot else []) if r.system == system]
    return refs[0] if refs else None


def _display_topic(settings: Settings) -> str:
    """The MQTT topic of the first display workflow.yaml tells."""
    rules = settings.rules()
    config = rules.workflow.notifications if rules.workflow else None
    topics = [s.target for s in (config.subscribers if config else ()) if s.channel == "mqtt"]
    if not topics:
        raise DemoFailed(f"{settings.workflow_file} has no notifications subscriber with mqtt: nothing to watch")
    return topics[0]


async def _watch_display(stack: Stack, topic: str, seen: list[dict[str, Any]], listening: asyncio.Event) -> None:
    """What the hall's display receives, as it would (MQTT, QoS 1)."""
    import aiomqtt

    async with aiomqtt.Client(stack.mes["mqtt_host"], stack.mes["mqtt_port"],
                              identifier=f"demo-display-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe(topic, qos=1)
        listening.set()
        async for message in client.messages:
            seen.append(json.loads(message.payload))


def _displayed(seen: list[dict[str, Any]], run: DemoRun, statuses: list[str]) -> bool:
    once = {m["id"]: m for m in seen if m["kind"] == "status_changed" and m["order"]["id"] == run.order_id}
    run.displayed = [{"status": m["order"]["status"], "id": m["id"]} for m in once.values()]
    return [m["status"] for m in run.displayed] == statuses


def _mails(stack: Stack) -> list[Any]:
    from pathlib import Path

    from localdev.sandboxes import mailsink

    return mailsink.messages(Path(stack.mail["state_dir"]))


def _status_mails(stack: Stack, order_number: str, statuses: list[str]) -> list[Any] | None:
    mails = [m for m in _mails(stack) if f"{order_number} is now " in m["Subject"] and m["To"] == "sales@plant.example"]
    seen = {m["Subject"].split(" is now ", 1)[1].split(" ")[0] for m in mails}
    return mails if seen >= set(statuses) else None


def _jobs(stack: Stack, order_id: str) -> list[str]:
    from connectors.mes.opcua import JobOrderReceiverClient

    async def read() -> list[str]:
        async with JobOrderReceiverClient(stack.mes["opc_url"]) as client:
            return [job.job_order_id for job in await client.jobs_for_order(order_id)]
    return asyncio.run(read())


def run(settings: Settings) -> int:
    """The command."""
    from hub.readmodel import history_text

    try:
        demo = asyncio.run(run_demo(settings))
    except (TimeoutError, DemoFailed) as exc:
        print(f"orderhub demo: {exc}", file=sys.stderr)
        return 1
    print()
    print(history_text(settings, demo.order_number))
    return 0
