"""The hub's Grafana dashboards, as code (Grafana's own Python SDK, grafana-foundation-sdk).

``python -m hub.observability.dashboards`` writes them to ``deploy/grafana/dashboards/*.json``,
where Grafana's file provisioning (``deploy/grafana/provisioning/``) loads them; a test checks the
files are what this module makes, that they read back through the SDK's own types, and (with a
real Prometheus scraping a running hub) that every panel's query returns data.

1. Every query uses only metrics ``hub.observability.metrics`` declares and plain PromQL: no
   Grafana variables, so a query reads the same in Grafana and in Prometheus' own API.
2. Rates are over 5 minutes; counts over an hour; the lead-time panels read what ``orderhub lag``
   computed from the audit trail (the last 12 ISO weeks), so they show weeks, not the last hour.
3. The datasource is the provisioned Prometheus (uid ``prometheus``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.settings import PROJECT_DIR

#: Where the generated dashboards go.
OUT = PROJECT_DIR / "deploy" / "grafana" / "dashboards"
#: The provisioned datasource's uid (``deploy/grafana/provisioning/datasources/prometheus.yml``).
DATASOURCE_UID = "prometheus"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    #: True: one value now (a table or a stat); False: a series over the dashboard's time range.
    instant: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: str  # timeseries, stat, table
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    width: int = 12
    #: For stats: (value, color) steps, the first value None.
    steps: tuple[tuple[float | None, str], ...] = ()


def _q(expr: str, legend: str = "", instant: bool = False) -> Query:
    return Query(expr, legend, instant)


RATE = "5m"

DASHBOARDS: dict[str, tuple[str, str, tuple[PanelSpec, ...]]] = {
    "orderhub-overview": ("orderhub: hub overview", "Throughput, decisions, conflicts, rejections, dead letters and "
                          "decision latency of the canonical order engine.", (
        PanelSpec("Proposals per second by source system", "timeseries",
                  (_q(f"sum by (source_system) (rate(orderhub_proposals_total[{RATE}]))", "{{source_system}}"),),
                  "reqps"),
        PanelSpec("Decisions per second by outcome", "timeseries",
                  (_q(f"sum by (outcome) (rate(orderhub_decisions_total[{RATE}]))", "{{outcome}}"),), "reqps"),
        PanelSpec("Decision latency (proposal -> accepted change)", "timeseries", tuple(
            _q(f"histogram_quantile({q}, sum by (le) (rate(orderhub_decision_latency_seconds_bucket[{RATE}])))",
               f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)), "s"),
        PanelSpec("Conflicts per hour by outcome", "timeseries",
                  (_q("sum by (outcome) (increase(orderhub_conflicts_total[1h]))", "{{outcome}}"),)),
        PanelSpec("Parked conflicts waiting for a person", "stat",
                  (_q("orderhub_conflicts_parked", "parked", instant=True),), width=6,
                  steps=((None, "green"), (1, "orange"), (20, "red"))),
        PanelSpec("Oldest parked conflict", "stat",
                  (_q("orderhub_conflicts_parked_oldest_age_seconds", "age", instant=True),), "s", width=6,
                  steps=((None, "green"), (4 * 3600, "orange"), (86400, "red"))),
        PanelSpec("Rejections per hour by reason", "timeseries",
                  (_q("sum by (reason) (increase(orderhub_rejections_total[1h]))", "{{reason}}"),)),
        PanelSpec("Dead letters per hour by stage", "timeseries",
                  (_q("sum by (stage) (increase(orderhub_dead_letters_total[1h]))", "{{stage}}"),)),
        PanelSpec("Read-model writes per second", "timeseries",
                  (_q(f"sum by (record) (rate(orderhub_projected_records_total[{RATE}]))", "{{record}}"),), "wps"),
        PanelSpec("Hub processes up", "table",
                  (_q("up{job=\"orderhub\"}", "{{process}} {{instance}}", instant=True),)),
    )),
    "orderhub-lag": ("orderhub: consumer lag", "How far behind each consumer group of the hub is, in records and in "
                     "seconds (the oldest unconsumed record's wait), per topic and partition.", (
        PanelSpec("Lag in seconds by group (the worst partition)", "timeseries",
                  (_q("max by (group) (orderhub_consumer_lag_seconds)", "{{group}}"),), "s"),
        PanelSpec("Lag in records by group and topic", "timeseries",
                  (_q("sum by (group, topic) (orderhub_consumer_lag_messages)", "{{group}} {{topic}}"),)),
        PanelSpec("Lag per group, topic and partition", "table",
                  (_q("orderhub_consumer_lag_messages", "records", instant=True),
                   _q("orderhub_consumer_lag_seconds", "seconds", instant=True)), width=24),
        PanelSpec("Lag exporter measuring", "stat",
                  (_q("min(orderhub_lag_measure_success)", "ok", instant=True),), width=6,
                  steps=((None, "red"), (1, "green"))),
    )),
    "orderhub-connectors": ("orderhub: connectors", "The CRM, ERP and MES connectors: health, errors, retries and "
                            "their offline outboxes.", (
        PanelSpec("Connector up (outside system answering)", "timeseries",
                  (_q("orderhub_connector_up", "{{connector}} ({{system}})"),)),
        PanelSpec("Since the last successful call", "timeseries",
                  (_q("time() - orderhub_connector_last_success_timestamp_seconds", "{{connector}}"),), "s"),
        PanelSpec("Errors per second by kind", "timeseries",
                  (_q(f"sum by (connector, kind) (rate(orderhub_connector_errors_total[{RATE}]))",
                      "{{connector}} {{kind}}"),)),
        PanelSpec("Retries per second", "timeseries",
                  (_q(f"sum by (connector) (rate(orderhub_connector_retries_total[{RATE}]))", "{{connector}}"),)),
        PanelSpec("Outbox depth (records waiting for Kafka)", "timeseries",
                  (_q("orderhub_connector_outbox_depth", "{{connector}}"),)),
        PanelSpec("Outbox: the oldest record's age", "timeseries",
                  (_q("orderhub_connector_outbox_oldest_age_seconds", "{{connector}}"),), "s"),
        PanelSpec("Proposals stored per second", "timeseries",
                  (_q(f"sum by (connector) (rate(orderhub_connector_proposals_total[{RATE}]))", "{{connector}}"),),
                  "reqps"),
        PanelSpec("Echoes suppressed per second", "timeseries",
                  (_q(f"sum by (connector) (rate(orderhub_connector_echoes_suppressed_total[{RATE}]))",
                      "{{connector}}"),)),
    )),
    "orderhub-workflow": ("orderhub: workflow", "Approvals waiting, due-date alerts, notifications and the REST API.", (
        PanelSpec("Approvals waiting by level", "timeseries", (_q("orderhub_approvals_waiting", "{{level}}"),)),
        PanelSpec("Open due-date alerts by stage", "timeseries", (_q("orderhub_alerts_open", "{{stage}}"),)),
        PanelSpec("Alerts raised and cleared per hour", "timeseries",
                  (_q("sum by (kind) (increase(orderhub_alerts_total[1h]))", "{{kind}}"),)),
        PanelSpec("Notifications per hour by channel and result", "timeseries",
                  (_q("sum by (channel, result) (increase(orderhub_notifications_total[1h]))",
                      "{{channel}} {{result}}"),)),
        PanelSpec("Notifications pending", "stat", (_q("orderhub_notifications_pending", "pending", instant=True),),
                  width=6, steps=((None, "green"), (50, "orange"), (500, "red"))),
        PanelSpec("Conflicts resolved through the API per hour", "timeseries",
                  (_q("sum by (choice) (increase(orderhub_conflicts_resolved_total[1h]))", "{{choice}}"),)),
        PanelSpec("API requests per second by status", "timeseries",
                  (_q(f"sum by (status) (rate(orderhub_api_requests_total[{RATE}]))", "{{status}}"),), "reqps"),
        PanelSpec("API p95 duration by route", "timeseries",
                  (_q(f"histogram_quantile(0.95, sum by (le, route) (rate(orderhub_api_request_duration_seconds_bucket"
                      f"[{RATE}])))", "{{route}}"),), "s"),
    )),
    "orderhub-lead-times": ("orderhub: lead times", "How long orders wait, from the audit trail: received -> released, "
                            "conflict parked -> resolved, alert raised -> cleared, rejection -> accepted. The "
                            "yardstick: received -> released from 48 h to 6 h.", (
        PanelSpec("Received -> released, p90 of the last 12 weeks (yardstick: 6 h, was 48 h)", "stat",
                  (_q("histogram_quantile(0.9, sum by (le) (orderhub_lead_time_seconds_bucket{kind=\"release\"}))",
                      "p90", instant=True),), "s", width=8,
                  steps=((None, "green"), (6 * 3600, "orange"), (48 * 3600, "red"))),
        PanelSpec("Lead time percentiles of the last 12 weeks by kind", "table", tuple(
            _q(f"histogram_quantile({q}, sum by (le, kind) (orderhub_lead_time_seconds_bucket))", f"p{int(q * 100)}",
               instant=True) for q in (0.5, 0.9, 0.95)), "s", width=16),
        PanelSpec("Weekly p90 by kind (ISO week of the start)", "table",
                  (_q("orderhub_lead_time_weekly_seconds{quantile=\"0.90\"}", "{{kind}} {{week}}", instant=True),),
                  "s", width=12),
        PanelSpec("Weekly p50 by kind", "table",
                  (_q("orderhub_lead_time_weekly_seconds{quantile=\"0.50\"}", "{{kind}} {{week}}", instant=True),),
                  "s", width=12),
        PanelSpec("Waits not ended yet by kind", "timeseries", (_q("orderhub_lead_time_open", "{{kind}}"),)),
    )),
}


def build(uid: str) -> Any:
    """One dashboard, as the SDK's model."""
    from grafana_foundation_sdk.builders import common
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models import common as common_model
    from grafana_foundation_sdk.models import prometheus as prom_model

    title, description, panels = DASHBOARDS[uid]
    source = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    board = (db.Dashboard(title).uid(uid).description(description).tags(["orderhub"]).refresh("30s")
             .time("now-6h", "now").timezone("browser").editable())
    x = y = row_height = 0
    for spec in panels:
        panel = {"timeseries": timeseries.Panel, "stat": stat.Panel, "table": table.Panel}[spec.kind]()
        panel.title(spec.title).datasource(source).unit(spec.unit).grid_pos(
            model.GridPos(h=8, w=spec.width, x=x, y=y))
        if spec.description:
            panel.description(spec.description)
        for index, query in enumerate(spec.queries):
            target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(65 + index))
            target = target.instant() if query.instant else target.range()
            if spec.kind == "table":
                target = target.format(prom_model.PromQueryFormat.TABLE)
            panel.with_target(target.datasource(source))
        if spec.kind == "timeseries":
            panel.legend(common.VizLegendOptions().display_mode(common_model.LegendDisplayMode.LIST)
                         .placement(common_model.LegendPlacement.BOTTOM).show_legend(True))
        elif spec.kind == "stat":
            panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        else:
            panel.show_header(True)
        if spec.steps:
            panel.thresholds(db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(
                [model.Threshold(value=value, color=color) for value, color in spec.steps]))
        board.with_panel(panel)
        x, row_height = x + spec.width, 8
        if x >= 24:
            x, y = 0, y + row_height
    return board.build()


def to_json(uid: str) -> str:
    """One dashboard as the file Grafana loads: as the SDK's types read it back (``read``), so the file
    is what a round trip through them gives."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return encode(read(json.loads(json.dumps(build(uid), cls=JSONEncoder))))


def read(document: dict[str, Any]) -> Any:
    """A dashboard file's JSON as the SDK's model (every panel type's options decoded)."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    return Dashboard.from_json(document)


def encode(board: Any) -> str:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def queries(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in a dashboard file."""
    return [(panel["title"], target["expr"]) for panel in document.get("panels", [])
            for target in panel.get("targets", [])]


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for uid in DASHBOARDS:
        path = out / f"{uid}.json"
        path.write_text(to_json(uid))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(f"wrote {path}")
