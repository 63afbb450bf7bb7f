"""The main job (`orderhub up`'s stack) and `orderhub demo`, as a person runs them: one order from
a won opportunity to COMPLETED, each step checked where a person would look (the read model, the
ERP, the MES), and everything `up` started stopped again by PID."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from hub.readmodel import ReadModel
from hub.settings import Settings
from localdev import process
from localdev.demo import run_demo
from localdev.sandboxes import mailsink, sap
from localdev.up import CHILDREN, Stack, folder, start
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration


def test_up_and_demo_take_an_order_from_won_opportunity_to_completed(kafka_settings: Settings, tmp_path: Path) -> None:
    """Every step of the demo happens, made by the system that owns it, with one parked conflict;
    Ctrl-C's stop leaves no process of the stack running."""
    settings = namespaced_settings(kafka_settings, tmp_path)
    said: list[str] = []
    ports = {name: process.free_port() for name in ("crm", "crm_webhook", "erp", "mes", "mqtt", "smtp", "api")}
    stack, stop_all = start(settings, said.append, local_kafka=False, ports=ports)
    home = folder(settings)
    pids = [process.recorded_pid(home / f"{name}.pid") for name in CHILDREN]
    try:
        assert Stack.read(settings) == stack
        assert any(line.startswith("CRM sandbox  https://127.0.0.1:") for line in said)
        try:
            run = asyncio.run(run_demo(settings, said.append))
        except Exception:
            _tell_what_the_stack_said(settings)
            raise
        erp_orders = sap.sales_orders_with_text(stack.erp["url"], "ZHUB", run.order_id)
        # the REST API `up` started: its description is published, the orders are not without a login
        assert httpx.get(f"{stack.api}/api/openapi.json", timeout=30).json()["info"]["title"] == "orderhub"
        refused = httpx.get(f"{stack.api}/api/v1/orders/{run.order_number}", timeout=30)
        assert refused.status_code == 401 and run.order_number not in refused.text
    finally:
        stop_all()
    assert not any(process.alive(pid) for pid in pids if pid), "the engine and the connectors are stopped"
    assert not (home / "stack.json").exists()

    print("\n".join(run.lines))  # what a person sees, in the test log
    steps = [line.split(".", 1)[0] for line in run.lines if line[:1].isdigit()]
    assert steps == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
    assert all(pids), "the engine, the alerts, the notifier and the connectors were started"
    said_outcomes = " ".join(run.lines)
    assert "sales (hub UI): APPLIED" in said_outcomes and "planner (hub UI): PARKED" in said_outcomes
    assert "Approver (hub UI) tries to approve: REJECTED: the order cannot be APPROVED before sales approved" \
        in said_outcomes
    assert "approves level 'sales': APPLIED" in said_outcomes and "RELEASED to production" in said_outcomes
    model = ReadModel(settings.read_model_url)
    order = model.order(run.order_number)
    assert order.status.value == "COMPLETED"
    assert {r.system for r in order.external_refs} == {"CRM", "ERP"}
    assert order.amounts.net == Decimal("12391.00") and order.lines[0].good_quantity == Decimal("248.000")
    history = model.history(run.order_number)
    made_by = [(h.version, h.source_system) for h in history]
    assert made_by[0] == (1, "CRM") and ("ERP" in {s for _, s in made_by}) and made_by[-1][1] == "MES"
    assert [h.version for h in history] == list(range(1, len(history) + 1))
    approval = next(h for h in history if h.event_id == run.approval_event_id)
    assert (approval.source_system, approval.actor_id, approval.actor_role) == ("HUB", "maria", "sales_manager")
    assert {d.field: d.after for d in approval.diffs} == {
        "approvals.sales": '{"comment":"margin checked","decision":"approved"}', "status": '"APPROVED"'}
    assert [(a.level, a.decision) for a in order.approvals] == [("sales", "approved")]
    (rush_alert,) = model.open_alerts(run.rush_order_id)
    assert (rush_alert.stage, rush_alert.notify, rush_alert.days_left) == ("due_soon", "production_lead", 5)
    assert "alert 'due_soon' for the production_lead: due " in said_outcomes
    # a notification of every status change, by e-mail in the mail sink and on the hall's display (MQTT)
    statuses = ["DRAFT", "CONFIRMED", "APPROVED", "RELEASED", "IN_PRODUCTION", "COMPLETED"]
    mails = [m for m in mailsink.messages(Path(stack.mail["state_dir"])) if run.order_number in m["Subject"]]
    told = {m["Subject"] for m in mails if m["To"] == "sales@plant.example" and " is now " in m["Subject"]}
    assert told == {f"[orderhub] {run.order_number} is now {s} ({run.customer})"
                    for s in statuses}
    assert [m["status"] for m in run.displayed] == statuses
    assert f"10. Notifications: {len(statuses)} status changes e-mailed to the sales desk" in said_outcomes
    rush_mail = [m for m in mailsink.messages(Path(stack.mail["state_dir"]))
                 if m["To"] == "production@plant.example" and "Due-date alert (due_soon)" in m["Subject"]]
    assert rush_mail, "the production lead got the rush order's alert by e-mail"
    parked = model.parked_conflicts()
    assert [c.event_id for c in parked] == [run.parked_event_id]
    assert len(erp_orders) == 1
    assert len(run.job_ids) == 2


def _tell_what_the_stack_said(settings: Settings) -> None:
    """When the demo fails: the tail of every log the stack wrote, printed with the failure."""
    for log in sorted(settings.state_dir.rglob("*.log")):
        if "engine" in log.parts:
            continue  # RocksDB's write-ahead logs
        lines = log.read_text(errors="replace").splitlines()
        print(f"--- {log.relative_to(settings.state_dir)} (last 40 of {len(lines)} lines)")
        print("\n".join(lines[-40:]))
