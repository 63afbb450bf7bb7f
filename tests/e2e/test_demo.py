"""The main job (`orderhub up`'s stack) and `orderhub demo`, as a person runs them: one order from
a won opportunity to COMPLETED, each step checked where a person would look (the read model, the
ERP, the MES), and everything `up` started stopped again by PID."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from hub.observability import metrics
from hub.readmodel import ReadModel
from hub.settings import Settings
from localdev import process, prometheus
from localdev.demo import run_demo
from localdev.sandboxes import mailsink, sap
from localdev.up import CHILDREN, Stack, child_environment, folder, start
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration


def test_up_and_demo_take_an_order_from_won_opportunity_to_completed(kafka_settings: Settings, tmp_path: Path) -> None:
    """Every step of the demo happens, made by the system that owns it, with one parked conflict, while
    a real Prometheus scrapes every process: each serves its metrics, `orderhub lag --once` shows every
    group's lag, and every dashboard panel's query and every alert rule's input has data. Ctrl-C's
    stop leaves no process of the stack running."""
    settings = namespaced_settings(kafka_settings, tmp_path).model_copy(update={"lag_interval_s": 2.0})
    said: list[str] = []
    ports = {name: process.free_port() for name in (
        "crm", "crm_webhook", "erp", "mes", "mqtt", "smtp", "api", *(f"metrics_{child}" for child in CHILDREN))}
    stack, stop_all = start(settings, said.append, local_kafka=False, ports=ports)
    home = folder(settings)
    pids = [process.recorded_pid(home / f"{name}.pid") for name in CHILDREN]
    try:
        # found as every hub process says where it serves (file_sd), not from a list of the test's own
        scraper = prometheus.up(tmp_path, process.free_port(), metrics.targets_dir(settings), interval_s=1)
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
        served = {name: httpx.get(url, timeout=30).text for name, url in stack.metrics.items()}
        lag = subprocess.run([sys.executable, "-m", "hub.cli", "lag", "--once"], env=child_environment(settings),
                             capture_output=True, text=True, timeout=120)
        empty, rules, alerting, scraped = _what_prometheus_has(scraper)
        traced = subprocess.run([sys.executable, "-m", "hub.cli", "trace", run.order_number],
                                env=child_environment(settings), capture_output=True, text=True, timeout=120)
    finally:
        prometheus.down(tmp_path)
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
    # operations: each process serves its own metrics; the lag of every group; Prometheus has data for all
    assert set(served) == {"worker", "alerts", "notify", "connectors", "api", "lag"}
    for name, text in served.items():
        assert f'orderhub_process_info{{process="{name}"' in text, name
    assert 'orderhub_decisions_total{outcome="CREATED"}' in served["worker"]
    assert "orderhub_api_requests_total" not in served["worker"], "a process exports only its own metrics"
    print(lag.stdout)
    assert lag.returncode == 0, lag.stderr
    groups = {line.split()[0] for line in lag.stdout.splitlines()[1:]}
    namespace = settings.topic_namespace
    assert {f"{namespace}orderhub-engine-v2", f"{namespace}orderhub-alerts", f"{namespace}orderhub-notify",
            f"{namespace}orderhub.connector.erp-sandbox.sink", f"{namespace}orderhub.connector.mes-sandbox.sink"} <= groups
    assert scraped == set(served), "Prometheus found every process by the files they wrote"
    assert not empty, f"dashboard panels without data: {empty}"
    assert rules and all(rule["health"] == "ok" for rule in rules), rules
    assert not alerting & {"OrderhubWorkerMissing", "OrderhubProcessDown", "OrderhubConnectorDown",
                           "OrderhubLagNotMeasured"}, alerting
    # one correlation id from the CRM opportunity's event to the MES and the notifications, in the trail,
    # the e-mails and the log lines of the ERP and MES work done for it; no secret in any log line
    print(traced.stdout)
    assert traced.returncode == 0, traced.stderr
    flow = history[0].correlation_id
    assert flow and flow == history[0].event_id and {h.correlation_id for h in history} == {flow}
    assert traced.stdout.splitlines()[0].endswith(f"correlation id {flow}")
    assert {"CRM", "ERP", "MES", "HUB"} <= {line.split()[2] for line in traced.stdout.splitlines()[1:]}
    assert all(m["X-Orderhub-Correlation-Id"] == flow for m in mails)
    logs = {path.name: path.read_text(errors="replace") for path in home.glob("*.log")}
    assert f"correlation_id={flow}" in logs["connectors.log"]
    secrets = [stack.crm["session_id"], stack.crm["webhook_secret"], stack.erp["password"],
               (settings.state_dir / "api" / "secret").read_text().strip()]
    leaked = [(name, secret[:4]) for name, text in logs.items() for secret in secrets if secret in text]
    assert not leaked, f"secrets in the logs: {leaked}"
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


def _what_prometheus_has(base: str) -> tuple[list[str], list[dict], set[str], set[str]]:
    """(the dashboard queries and rule inputs still without data after up to a minute of scraping, every
    rule's state, the alerts pending or firing, the processes scraped and up): each panel's PromQL
    evaluated through Prometheus' HTTP API, and each metric a rule reads."""
    import re

    from hub.observability import dashboards

    def rules() -> list[dict]:
        return [rule for group in httpx.get(f"{base}/api/v1/rules", timeout=30).json()["data"]["groups"]
                for rule in group["rules"]]
    queries = {f"{path.stem}: {title}": expr for path in sorted(dashboards.OUT.glob("*.json"))
               for title, expr in dashboards.queries(json.loads(path.read_text()))}
    for rule in rules():
        for name in re.findall(r"\b(orderhub_[a-z_]+|up(?=\{))", rule["query"]):
            queries[f"rule {rule['name']}: {name}"] = name

    def without_data() -> list[str]:
        return [f"{what} ({expr})" for what, expr in queries.items()
                if not httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=30).json()["data"]["result"]]
    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = without_data()
        return not empty
    process.wait_until(all_have_data, 60, interval=1)
    alerting = {alert["labels"]["alertname"]
                for alert in httpx.get(f"{base}/api/v1/alerts", timeout=30).json()["data"]["alerts"]}
    up = httpx.get(f"{base}/api/v1/query", params={"query": 'up{job="orderhub"} == 1'}, timeout=30).json()
    return empty, rules(), alerting, {series["metric"]["process"] for series in up["data"]["result"]}
