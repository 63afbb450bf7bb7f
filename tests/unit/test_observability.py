"""Metrics, the lag exporter's arithmetic, the dashboards and the alert rules, without Kafka: what the
README says is what the code serves, the dashboards are what the code makes and read back through
Grafana's SDK, and promtool passes the rules and their unit tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from hub.leadtimes import LeadTime
from hub.observability import dashboards, metrics
from hub.observability.lag import HubCollector, Lag, ReadModelFacts, is_hub_group, lag_table, plan_lag
from hub.sdk.store import ConnectorStore, Pending
from hub.settings import PROJECT_DIR, Settings

RULES = PROJECT_DIR / "deploy" / "prometheus" / "rules" / "orderhub.yml"
RULE_TESTS = PROJECT_DIR / "deploy" / "prometheus" / "tests" / "orderhub.test.yml"
NAME = re.compile(r"\b(orderhub_[a-z_]+)\b")


def declared(name: str) -> bool:
    """Whether a name in a query is a declared metric (a histogram's series included)."""
    names = {spec.name for spec in metrics.SPECS}
    return name in names or any(name == f"{n}{suffix}" for n in names for suffix in ("_bucket", "_sum", "_count"))


def test_the_readme_lists_every_metric_as_the_code_declares_it() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    assert metrics.markdown_table() in readme, "regenerate with: python -m hub.observability.metrics"


def test_every_metric_name_is_unique_and_every_process_is_known() -> None:
    names = [spec.name for spec in metrics.SPECS]
    assert len(names) == len(set(names))
    assert all(set(spec.by) <= set(metrics.PROCESSES) for spec in metrics.SPECS)


def test_a_process_registers_only_its_own_metrics() -> None:
    registry = CollectorRegistry()
    metrics.register("notify", registry)
    metrics.register("notify", registry)  # once: a second call registers nothing twice
    text = generate_latest(registry).decode()
    assert "orderhub_notifications_pending" in text and "orderhub_process_info" in text
    assert "orderhub_api_requests_total" not in text and "orderhub_decisions_total" not in text


@pytest.mark.parametrize(("stage", "label"), [
    ("decide", "decide"), ("project:order_change", "project"), ("connector:erp-1:sink:on_release", "connector:sink"),
    ("connector:crm-sandbox:source", "connector:source"), ("alerts", "alerts")])
def test_a_dead_letters_stage_is_a_bounded_label(stage: str, label: str) -> None:
    assert metrics.dead_letter_stage(stage) == label


def test_a_process_serves_its_metrics_on_a_port_of_its_own_and_says_where(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, metrics_port=0)
    folder = metrics.targets_dir(settings)
    folder.mkdir(parents=True)
    (folder / "worker-999999999.json").write_text("[]")  # a process that died without removing its file
    port = metrics.serve(settings, "notify")
    assert port
    (target,) = folder.glob("*.json")
    assert target.name == f"notify-{os.getpid()}.json"
    assert json.loads(target.read_text()) == [{"targets": [f"127.0.0.1:{port}"],
                                               "labels": {"process": "notify", "worker": settings.worker_name}}]
    served = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'orderhub_process_info{process="notify"' in served and "orderhub_notifications_pending" in served
    assert metrics.serve(settings.model_copy(update={"metrics_port": -1}), "notify") is None


def test_plan_lag_counts_records_and_the_oldest_ones_wait() -> None:
    now = 1_800_000_000.0
    committed = {("g", "t", 0): 10, ("g", "t", 1): 7, ("g", "gone", 0): 3, ("h", "t", 0): 12}
    ends = {("t", 0): 12, ("t", 1): 7}
    oldest = {("g", "t", 0): int((now - 90) * 1000)}
    assert plan_lag(committed, ends, oldest, now) == [
        Lag("g", "t", 0, 10, 12, 2, 90.0),   # two records behind, the oldest written 90 s ago
        Lag("g", "t", 1, 7, 7, 0, 0.0),      # caught up: 0 s whatever was read
        Lag("h", "t", 0, 12, 12, 0, 0.0)]    # a topic that is gone has no row


def test_a_lag_whose_oldest_record_could_not_be_read_has_no_seconds_rather_than_zero() -> None:
    (row,) = plan_lag({("g", "t", 0): 10}, {("t", 0): 15}, {}, 1_800_000_000.0)
    assert (row.messages, row.seconds) == (5, None)
    assert lag_table([row]).splitlines()[1].split()[-2:] == ["5", "?"]


@pytest.mark.parametrize(("group", "namespace", "hub"), [
    ("orderhub-engine-v2", "", True), ("orderhub-alerts", "", True), ("orderhub-notify", "", True),
    ("orderhub.connector.erp-1.sink", "", True), ("plant-a.orderhub-notify", "plant-a.", True),
    ("plant-a.orderhub-notify", "", False),              # another hub's namespace on the same cluster
    ("orderhub-x.orderhub-engine-v2", "", False), ("orderhub-engine-v1", "", False), ("console-consumer-1", "", False),
    ("orderhub-notify", "plant-a.", False)])
def test_only_the_hubs_own_groups_in_its_namespace_are_measured(group: str, namespace: str, hub: bool) -> None:
    assert is_hub_group(group, namespace) is hub


def test_plan_lag_never_goes_below_zero() -> None:
    # an end offset below the committed one (a topic deleted and made again): no lag, not negative
    assert plan_lag({("g", "t", 0): 50}, {("t", 0): 4}, {}, 0.0) == [Lag("g", "t", 0, 50, 4, 0, 0.0)]


def test_the_lag_table_says_group_topic_partition_and_both_lags() -> None:
    text = lag_table([Lag("orderhub-engine-v2", "orderhub.order.proposals.v1", 3, 10, 12, 2, 90.0)])
    header, row = text.splitlines()
    assert header.split() == ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG", "SECONDS"]
    assert row.split() == ["orderhub-engine-v2", "orderhub.order.proposals.v1", "3", "10", "12", "2", "90.0"]
    assert lag_table([]) == "no consumer group of the hub has committed an offset yet"


def test_the_exporter_serves_the_last_measurement() -> None:
    start = dt.datetime(2026, 11, 30, 8, tzinfo=dt.timezone.utc)  # a Monday
    facts = ReadModelFacts(parked=2, parked_oldest_s=7200.0, approvals={"sales": 1, "plant": 0},
                           alerts={"due_soon": 3}, until=dt.date(2026, 12, 3),
                           open_lead_times={"release": 1, "conflict": 2, "alert": 0, "rejection": 0},
                           lead_times=[LeadTime("release", "o1", "N1", "s1", start, start + dt.timedelta(hours=5)),
                                       LeadTime("release", "o2", "N2", "s2", start, start + dt.timedelta(hours=30)),
                                       LeadTime("release", "o3", "N3", "s3", start, None)])
    collector = HubCollector()
    collector.update(lag=[Lag("g", "t", 0, 1, 3, 2, 12.5), Lag("g", "t", 1, 1, 3, 2, None)], facts=facts)
    registry = CollectorRegistry()
    registry.register(collector)
    lines = set(generate_latest(registry).decode().splitlines())
    assert 'orderhub_consumer_lag_seconds{group="g",partition="0",topic="t"} 12.5' in lines
    assert 'orderhub_consumer_lag_messages{group="g",partition="1",topic="t"} 2.0' in lines
    assert not any(line.startswith('orderhub_consumer_lag_seconds{group="g",partition="1"') for line in lines)
    collector.update(failed=["kafka"])  # the next measurement could not reach Kafka: said, and no stale lag
    text = generate_latest(registry).decode()
    lines = set(text.splitlines())
    assert not any(line.startswith("orderhub_consumer_lag_") for line in lines)
    assert 'orderhub_lag_measure_success{source="kafka"} 0.0' in lines
    assert 'orderhub_lag_measure_success{source="read_model"} 1.0' in lines
    assert "orderhub_conflicts_parked 2.0" in lines and 'orderhub_approvals_waiting{level="sales"} 1.0' in lines
    assert 'orderhub_alerts_open{stage="due_soon"} 3.0' in lines
    # two ended releases: 5 h is within the 6 h bucket, 30 h only from the 2-day one; the open one is not in it
    assert 'orderhub_lead_time_seconds_bucket{kind="release",le="14400.0"} 0.0' in lines
    assert 'orderhub_lead_time_seconds_bucket{kind="release",le="21600.0"} 1.0' in lines
    assert 'orderhub_lead_time_seconds_bucket{kind="release",le="86400.0"} 1.0' in lines
    assert 'orderhub_lead_time_seconds_bucket{kind="release",le="172800.0"} 2.0' in lines
    assert 'orderhub_lead_time_seconds_count{kind="release"} 2.0' in lines
    assert 'orderhub_lead_time_seconds_count{kind="conflict"} 0.0' in lines
    # the weekly nearest-rank p50 of [5 h, 30 h] is 5 h, as `orderhub report lead-times` says
    assert 'orderhub_lead_time_weekly_seconds{kind="release",quantile="0.50",week="2026-W49"} 18000.0' in lines
    assert 'orderhub_lead_time_open{kind="conflict"} 2.0' in lines


def test_a_connector_outbox_says_how_long_its_oldest_record_waited(tmp_path: Path) -> None:
    store = ConnectorStore(tmp_path / "c.db")
    try:
        assert store.oldest_age_s() == 0.0
        store.put([Pending(0, "e1", "proposals", "k", b"v")])
        stored_at = store._db.execute("SELECT stored_at FROM outbox").fetchone()[0]
        assert store.oldest_age_s(now=stored_at + 42) == pytest.approx(42)
    finally:
        store.close()


def test_the_api_counts_requests_by_route_template_never_by_order() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from hub.api.app import Measured

    app = FastAPI()

    @app.get("/api/v1/orders/{ref:path}")
    def order(ref: str) -> dict:
        return {"ref": ref}
    app.add_middleware(Measured)
    registry = CollectorRegistry()
    registry.register(metrics.API_REQUESTS)
    try:
        client = TestClient(app)
        client.get("/api/v1/orders/ORD-2026-00-000001")
        client.get("/nothing-here")
        client.request("BREW", "/api/v1/orders/x")  # any method a client makes up is counted as "other"
        text = generate_latest(registry).decode()
    finally:
        registry.unregister(metrics.API_REQUESTS)
    assert 'orderhub_api_requests_total{method="GET",route="/api/v1/orders/{ref:path}",status="200"}' in text
    assert 'route="unmatched",status="404"' in text and "ORD-2026" not in text
    assert 'method="other"' in text and "BREW" not in text


# --- the dashboards -----------------------------------------------------------------------------

def test_the_dashboard_files_are_what_the_code_makes() -> None:
    files = sorted(dashboards.OUT.glob("*.json"))
    assert [f.stem for f in files] == sorted(dashboards.DASHBOARDS)
    for path in files:
        assert path.read_text() == dashboards.to_json(path.stem), \
            f"{path.name} is stale: python -m hub.observability.dashboards"


def test_every_dashboard_reads_back_through_grafanas_sdk_unchanged() -> None:
    for path in sorted(dashboards.OUT.glob("*.json")):
        document = json.loads(path.read_text())
        assert dashboards.encode(dashboards.read(document)) == path.read_text()
        assert dashboards.queries(document), f"{path.name} has no query"


def test_dashboards_and_rules_use_only_declared_metrics() -> None:
    used = [expr for path in dashboards.OUT.glob("*.json") for _, expr in dashboards.queries(json.loads(path.read_text()))]
    used += [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    unknown = {name for expr in used for name in NAME.findall(expr) if not declared(name)}
    assert not unknown


def test_the_dashboards_are_provisioned_from_where_they_are_written() -> None:
    provider = yaml.safe_load((PROJECT_DIR / "deploy/grafana/provisioning/dashboards/orderhub.yml").read_text())
    datasource = yaml.safe_load((PROJECT_DIR / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    assert [d["uid"] for d in datasource["datasources"]] == [dashboards.DATASOURCE_UID]


# --- the alert rules, by Debian's promtool ---------------------------------------------------------

def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules_and_the_local_scrape_configuration() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    config = promtool("check", "config", str(PROJECT_DIR / "deploy" / "prometheus" / "local.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_every_alert() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == alerts, "every alert has a case in which it fires"
    ran = promtool("test", "rules", str(RULE_TESTS))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS" in ran.stdout


def test_every_dead_letter_is_counted_by_its_stage_where_it_is_made() -> None:
    from hub.streams.core import Inbound, dead_letter, error_headers
    from hub.topics import TopicNames

    registry = CollectorRegistry()
    registry.register(metrics.DEAD_LETTERS)
    try:
        def counted(stage: str) -> float:
            return registry.get_sample_value("orderhub_dead_letters_total", {"stage": stage}) or 0.0
        before = counted("project"), counted("connector:sink")
        dead_letter(TopicNames.of(Settings()), Inbound("t", 0, 7, 0, b"k", b"v"), "project:order_change",
                    ValueError("no"))
        error_headers("connector:erp-1:sink:on_release", ValueError("no"))  # how a connector's is made
        after = counted("project"), counted("connector:sink")
    finally:
        registry.unregister(metrics.DEAD_LETTERS)
    assert after == (before[0] + 1, before[1] + 1)
