"""Every metric the hub exports, in one place: its name, labels, help and which process serves it.

The README's metrics table is generated from ``SPECS`` (``python -m hub.observability.metrics``),
and a test keeps the two in step; dashboards and alert rules use only names listed here.

1. Each process serves its own ``/metrics`` (``serve``) on ``ORDERHUB_METRICS_HOST``:
   ``ORDERHUB_METRICS_PORT``; port 0 lets the system pick one, so several workers on one host never
   collide, and every process writes where it serves into ``<state_dir>/metrics/targets/`` in
   Prometheus' ``file_sd`` format (a process that ended without removing its file is pruned by the
   next one to start).
2. Counters count events where they happen: the engine its decisions, a connector its calls, the
   notifier its deliveries, the API its requests. A worker that crashes decides the records after its
   last commit again, and counts them again: counters are at least once, like the records.
3. What is a fact about the whole hub, not about one process (consumer lag, the parked backlog,
   approvals waiting, open alerts, lead times), comes from ``orderhub lag`` alone, measured from Kafka
   and the read model every ``ORDERHUB_LAG_INTERVAL_S``: one exporter per hub, so a sum over
   processes never counts a backlog twice.
4. Label values are bounded: outcomes, reasons, stages, source systems, connector instances, route
   templates, ISO weeks. Never an order id or a number.
5. Label values known in advance are created at zero when the module loads (a process's own
   dead-letter stages when it starts serving), so a rate or an increase is defined from the first
   scrape (a first dead letter fires the alert) and a dashboard shows 0 rather than "no data".
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from hub.events import ConflictOutcome, ProposalOutcome, RejectionReason
from hub.settings import Settings

log = logging.getLogger(__name__)

#: The HTTP methods the API counts by name; any other is counted as ``other`` (rule 4).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The processes that serve metrics (the ``process`` label of their scrape targets).
PROCESSES = ("worker", "alerts", "notify", "connectors", "api", "lag")


@dataclass(frozen=True)
class Spec:
    """One metric as the README lists it."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    #: The processes that serve it.
    by: tuple[str, ...]


SPECS: list[Spec] = []
#: The dead-letter stages (``dead_letter_stage``) each process can report.
DEAD_LETTER_STAGES = {"worker": ("resolve", "link", "decide", "project", "route"), "alerts": ("alerts",),
                      "notify": ("notify",), "connectors": ("connector:source", "connector:sink")}
#: Each metric object with the processes that serve it: ``serve`` registers a process's own (a notifier
#: does not export the API's request counters as zeros).
_OWNED: list[tuple[Any, tuple[str, ...]]] = []
#: (registry, metric) pairs registered already.
_REGISTERED: set[tuple[int, int]] = set()


def _spec(name: str, kind: str, help: str, labels: Iterable[str], by: str) -> Spec:
    spec = Spec(name, kind, tuple(labels), help, PROCESSES if by == "every" else tuple(by.split(", ")))
    assert set(spec.by) <= set(PROCESSES), spec
    SPECS.append(spec)
    return spec


def _owned(metric: Any, spec: Spec) -> Any:
    _OWNED.append((metric, spec.by))
    return metric


def _counter(name: str, help: str, labels: Iterable[str] = (), *, by: str) -> Counter:
    spec = _spec(name, "counter", help, labels, by)
    return _owned(Counter(spec.name, spec.help, spec.labels, registry=None), spec)


def _gauge(name: str, help: str, labels: Iterable[str] = (), *, by: str) -> Gauge:
    spec = _spec(name, "gauge", help, labels, by)
    return _owned(Gauge(spec.name, spec.help, spec.labels, registry=None), spec)


def _histogram(name: str, help: str, labels: Iterable[str] = (), *, by: str, buckets: tuple[float, ...]) -> Histogram:
    spec = _spec(name, "histogram", help, labels, by)
    return _owned(Histogram(spec.name, spec.help, spec.labels, buckets=buckets, registry=None), spec)


def register(process: str, registry: Any = REGISTRY) -> None:
    """Put the metrics ``process`` serves into ``registry`` (once)."""
    for metric, by in _OWNED:
        if process in by and (id(registry), id(metric)) not in _REGISTERED:
            registry.register(metric)
            _REGISTERED.add((id(registry), id(metric)))


#: Seconds, from a twentieth of a second to a day: decisions, API calls and lead times alike.
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 8 * 3600,
           86400)
#: Lead times: an hour to four weeks (the brief's yardstick: received -> released from 48 h to 6 h).
LEAD_TIME_BUCKETS = (3600, 2 * 3600, 4 * 3600, 6 * 3600, 8 * 3600, 12 * 3600, 86400, 2 * 86400, 3 * 86400, 7 * 86400,
                     14 * 86400, 28 * 86400)

PROCESS_INFO = _gauge("orderhub_process_info", "1 for each running hub process.", ["process", "worker"], by="every")

# --- the engine (orderhub worker) ---------------------------------------------------------
PROPOSALS = _counter("orderhub_proposals_total", "Proposals the engine decided, by the system that sent them.",
                     ["source_system"], by="worker")
DECISIONS = _counter("orderhub_decisions_total", "Decisions by outcome (the answer each proposal got).", ["outcome"],
                     by="worker")
CONFLICTS = _counter("orderhub_conflicts_total",
                     "Conflicts raised (two writers changed a field from the same base version), by what became of "
                     "them: parked for a person, or decided by the ownership policy (proposed won, current kept).",
                     ["outcome"], by="worker")
REJECTIONS = _counter("orderhub_rejections_total", "Proposals refused, by reason.", ["reason"], by="worker")
DEAD_LETTERS = _counter("orderhub_dead_letters_total",
                        "Records sent to the dead-letter topic, by the stage that could not handle them.", ["stage"],
                        by="worker, alerts, notify, connectors")
DECISION_LATENCY = _histogram("orderhub_decision_latency_seconds",
                              "From a proposal's record timestamp to its accepted change being decided.", by="worker",
                              buckets=SECONDS)
PROJECTED = _counter("orderhub_projected_records_total",
                     "Records the projector wrote into the read model, by the record's schema (order_change, ...).",
                     ["record"], by="worker")

# --- the connectors (orderhub connectors run) ----------------------------------------------
CONNECTOR_UP = _gauge("orderhub_connector_up",
                      "1 while the connector's calls to its outside system succeed; 0 while they fail and are retried.",
                      ["connector", "system"], by="connectors")
CONNECTOR_LAST_SUCCESS = _gauge("orderhub_connector_last_success_timestamp_seconds",
                                "When a call to the outside system last succeeded (Unix time).", ["connector"],
                                by="connectors")
CONNECTOR_ERRORS = _counter("orderhub_connector_errors_total",
                            "Connector errors by kind: outside_call (retried), kafka_unavailable, dead_letter, held "
                            "(Kafka refused a record for good).", ["connector", "kind"], by="connectors")
CONNECTOR_RETRIES = _counter("orderhub_connector_retries_total", "Calls to the outside system tried again.",
                             ["connector"], by="connectors")
CONNECTOR_PROPOSALS = _counter("orderhub_connector_proposals_total", "Proposals stored in the connector's outbox.",
                               ["connector"], by="connectors")
CONNECTOR_ECHOES = _counter("orderhub_connector_echoes_suppressed_total",
                            "Outside changes dropped because the hub holds them already (its own writes coming back).",
                            ["connector"], by="connectors")
CONNECTOR_OUTBOX_DEPTH = _gauge("orderhub_connector_outbox_depth", "Records in the outbox not yet on Kafka.",
                                ["connector"], by="connectors")
CONNECTOR_OUTBOX_AGE = _gauge("orderhub_connector_outbox_oldest_age_seconds",
                              "Age of the oldest record in the outbox (0 when it is empty).", ["connector"],
                              by="connectors")

# --- workflow: alerts and notifications ----------------------------------------------------
ALERTS = _counter("orderhub_alerts_total", "Due-date alerts written, raised or cleared, by stage.", ["kind", "stage"],
                  by="alerts")
NOTIFICATIONS = _counter("orderhub_notifications_total",
                         "Notification deliveries by channel and result: sent; failed (tried again later); "
                         "undeliverable (given up, kept with the reason).", ["channel", "result"], by="notify")
NOTIFICATIONS_PENDING = _gauge("orderhub_notifications_pending", "Notifications waiting to be delivered.", by="notify")

# --- the REST API --------------------------------------------------------------------------
API_REQUESTS = _counter("orderhub_api_requests_total", "API requests by route template, method and status.",
                        ["route", "method", "status"], by="api")
API_DURATION = _histogram("orderhub_api_request_duration_seconds", "API request duration by route template.",
                          ["route"], by="api", buckets=SECONDS)
CONFLICTS_RESOLVED = _counter("orderhub_conflicts_resolved_total",
                              "Parked conflicts a person resolved through the API, by choice.", ["choice"], by="api")

# --- the whole hub, measured by `orderhub lag` (hub.observability.lag) -----------------------
LAG_MESSAGES = _spec("orderhub_consumer_lag_messages", "gauge",
                     "Records not yet consumed: end offset minus the group's committed offset.",
                     ["group", "topic", "partition"], "lag")
LAG_SECONDS = _spec("orderhub_consumer_lag_seconds", "gauge",
                    "How long the oldest unconsumed record has waited: now minus its timestamp (0 when none waits).",
                    ["group", "topic", "partition"], "lag")
LAG_SCRAPE_OK = _spec("orderhub_lag_measure_success", "gauge",
                      "1 when the last measurement reached Kafka and the read model; 0 when it failed.", ["source"],
                      "lag")
PARKED_BACKLOG = _spec("orderhub_conflicts_parked", "gauge",
                       "Parked conflicts nobody has resolved yet (the backlog).", [], "lag")
PARKED_OLDEST = _spec("orderhub_conflicts_parked_oldest_age_seconds", "gauge",
                      "Age of the oldest parked conflict nobody has resolved yet (0 when none).", [], "lag")
APPROVALS_WAITING = _spec("orderhub_approvals_waiting", "gauge",
                          "Confirmed orders waiting for an approval level.", ["level"], "lag")
ALERTS_OPEN = _spec("orderhub_alerts_open", "gauge", "Due-date alerts raised and not cleared.", ["stage"], "lag")
LEAD_TIMES = _spec("orderhub_lead_time_seconds", "histogram",
                   "Lead times that started in the last 12 ISO weeks and ended (release: received -> released; conflict: parked "
                   "-> resolved; alert: raised -> cleared; rejection: refused -> accepted), from the audit trail.",
                   ["kind"], "lag")
LEAD_TIMES_WEEKLY = _spec("orderhub_lead_time_weekly_seconds", "gauge",
                          "Per kind and ISO week (of the start), the nearest-rank percentile of the ended lead times, "
                          "as `orderhub report lead-times` prints it.", ["kind", "week", "quantile"], "lag")
LEAD_TIMES_OPEN = _spec("orderhub_lead_time_open", "gauge", "Waits of each kind started and not ended yet.",
                        ["kind"], "lag")


def _zeros() -> None:
    """Rule 5: the label values known in advance, at zero."""
    for outcome in ProposalOutcome:
        if outcome is not ProposalOutcome.UNKNOWN:
            DECISIONS.labels(outcome.value)
    for reason in RejectionReason:
        REJECTIONS.labels(reason.value)
    for conflict in (ConflictOutcome.PARKED, ConflictOutcome.PROPOSED_WON, ConflictOutcome.CURRENT_KEPT):
        CONFLICTS.labels(conflict.value)
    for choice in ("current", "proposed", "value"):
        CONFLICTS_RESOLVED.labels(choice)


_zeros()


# --- what the processes call ----------------------------------------------------------------

def dead_letter_stage(stage: str) -> str:
    """A dead letter's stage as a label: without the connector instance or the read-model table
    (``connector:erp-1:sink:on_release`` -> ``connector:sink``, ``project:order_change`` -> ``project``)."""
    parts = stage.split(":")
    if parts[0] == "connector" and len(parts) >= 3:
        return f"connector:{parts[2]}"
    return parts[0]


def observe_decision(record: Any, proposal: Any, outcome: Any, decision: Any, rejection: Any, *,
                     known: Callable[[str], bool] = lambda system: True) -> None:
    """What one answered proposal adds (``hub.streams.core.Observer``): the proposal, by its system
    (``other`` for a system ``known`` says the rules do not accept: rule 4), its outcome, its conflict,
    its rejection, and (when it made a version) how long after the proposal's record it was decided."""
    PROPOSALS.labels(proposal.source_system if known(proposal.source_system) else "other").inc()
    DECISIONS.labels(outcome.value).inc()
    conflict = decision.conflict if decision is not None else None
    if conflict is not None:
        outcomes = {f.outcome for f in conflict.fields}
        CONFLICTS.labels((ConflictOutcome.PARKED if ConflictOutcome.PARKED in outcomes else
                          ConflictOutcome.PROPOSED_WON if ConflictOutcome.PROPOSED_WON in outcomes else
                          ConflictOutcome.CURRENT_KEPT).value).inc()
    if rejection is not None:
        REJECTIONS.labels(rejection.reason.value).inc()
    if decision is not None and decision.change is not None:
        DECISION_LATENCY.observe(max(0.0, time.time() - record.timestamp_ms / 1000))


class ConnectorHealth:
    """One connector instance's metrics, as its runtime reports them."""

    def __init__(self, instance: str, system: str) -> None:
        self.instance = instance
        self._up = CONNECTOR_UP.labels(instance, system)
        self._up.set(1)
        self._retries = CONNECTOR_RETRIES.labels(instance)
        self.proposals = CONNECTOR_PROPOSALS.labels(instance)
        self.echoes = CONNECTOR_ECHOES.labels(instance)
        for kind in ("outside_call", "kafka_unavailable", "dead_letter", "held"):
            CONNECTOR_ERRORS.labels(instance, kind)

    def succeeded(self) -> None:
        """A call to the outside system succeeded."""
        self._up.set(1)
        CONNECTOR_LAST_SUCCESS.labels(self.instance).set(time.time())  # no series until the first success

    def failed(self) -> None:
        """A call to the outside system failed and will be tried again."""
        self._up.set(0)
        self._retries.inc()
        self.error("outside_call")

    def error(self, kind: str) -> None:
        CONNECTOR_ERRORS.labels(self.instance, kind).inc()

    def outbox(self, depth: int, oldest_age_s: float) -> None:
        CONNECTOR_OUTBOX_DEPTH.labels(self.instance).set(depth)
        CONNECTOR_OUTBOX_AGE.labels(self.instance).set(oldest_age_s)


# --- serving -------------------------------------------------------------------------------

def targets_dir(settings: Settings) -> Path:
    """Where processes say where they serve (Prometheus ``file_sd_configs`` files)."""
    return settings.state_dir / "metrics" / "targets"


def serve(settings: Settings, process: str) -> int | None:
    """Rule 1: serve this process's metrics; the port (None when ``ORDERHUB_METRICS_PORT`` is -1)."""
    import psutil
    from prometheus_client import start_http_server

    if settings.metrics_port < 0:
        return None
    register(process)
    PROCESS_INFO.labels(process, settings.worker_name).set(1)
    for stage in DEAD_LETTER_STAGES.get(process, ()):
        DEAD_LETTERS.labels(stage)
    server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    port = int(server.server_port)
    folder = targets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):  # a process that ended without removing its file
        pid = stale.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            stale.unlink(missing_ok=True)
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
    target = folder / f"{process}-{os.getpid()}.json"
    written = target.with_suffix(".tmp")  # renamed into place: Prometheus never reads half a file
    written.write_text(json.dumps([{"targets": [f"{host}:{port}"],
                                    "labels": {"process": process, "worker": settings.worker_name}}]))
    os.replace(written, target)
    atexit.register(target.unlink, missing_ok=True)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return port


def markdown_table() -> str:
    """The README's metrics table."""
    rows = ["| Metric | Type | Labels | Served by | Meaning |", "|---|---|---|---|---|"]
    for spec in SPECS:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
        by = "every process" if spec.by == PROCESSES else ", ".join(spec.by)
        rows.append(f"| `{spec.name}` | {spec.kind} | {labels} | {by} | {spec.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
