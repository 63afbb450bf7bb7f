"""``orderhub lag``: how far behind each of the hub's consumer groups is, and what waits in the read
model, as Prometheus metrics (or, with ``--once``, a table).

1. The hub's groups are, after the namespace, the engine and projector's (one Quix application),
   the due-date alerts', the notifier's, and each connector instance's source and sink groups
   (``orderhub.connector.<instance>.``): another hub's namespace on the same cluster is not one of
   them. A group whose processes all stopped is still listed, its lag growing: a removed connector
   instance's groups until Kafka expires their offsets (``offsets.retention.minutes``, 7 days by
   default) or someone deletes them (``kafka-consumer-groups.sh --delete --group ...``).
2. For every partition a group has committed an offset on, the lag in messages is the partition's
   end offset minus that offset (never below 0).
3. The lag in seconds is how long the oldest record the group has not consumed has waited: now
   minus the timestamp of the record at the committed offset (the first record after it, when
   retention or compaction removed it), and 0 when the lag is 0. That is kafka-lag-exporter's and
   Burrow's "time lag": it grows while a group is stuck even when nothing new arrives. When that
   record could not be read in time, the lag in seconds is unknown and left out (never 0).
4. The read model gives what is a fact of the whole hub: the parked conflicts nobody resolved (a
   conflict stays parked until a change writes one of its fields, or a person keeps the current
   value through the API), the confirmed orders waiting per approval level, the open due-date
   alerts per stage, and the lead times (``hub.leadtimes``): the ended ones of the last 12 ISO
   weeks as a histogram per kind, the weekly nearest-rank percentiles as ``orderhub report
   lead-times`` prints them, and how many are open.
5. Everything is measured every ``ORDERHUB_LAG_INTERVAL_S`` in the background; a scrape reads the
   last measurement and never waits for Kafka. A measurement that fails says so in
   ``orderhub_lag_measure_success{source}`` and leaves out what it could not measure: no lag is
   served while Kafka cannot be reached, no read-model facts while the database cannot.

``plan_lag`` is rule 2 and 3 without Kafka: what the tests check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from hub.leadtimes import KINDS, PERCENTILES, LeadTime, weekly
from hub.observability import metrics
from hub.settings import Settings

log = logging.getLogger(__name__)

#: How many ISO weeks of lead times the histograms and the weekly percentiles cover.
LEAD_TIME_WEEKS = 12
#: How long the timestamp of one oldest unconsumed record may take to read.
FETCH_TIMEOUT_S = 5.0
#: The beginning of each connector instance's group names, after the namespace (``hub.sdk.runtime``).
CONNECTOR_GROUPS = "orderhub.connector."


def is_hub_group(group: str, namespace: str) -> bool:
    """Rule 1: whether ``group`` is one of the hub's own consumer groups in ``namespace``."""
    from hub.streams.alerts import GROUP as ALERTS
    from hub.streams.app import APP_ID
    from hub.streams.notify import GROUP as NOTIFY

    if not group.startswith(namespace):
        return False
    rest = group[len(namespace):]
    return rest in (APP_ID, ALERTS, NOTIFY) or rest.startswith(CONNECTOR_GROUPS)


@dataclass(frozen=True)
class Lag:
    """One group's lag on one partition."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int
    messages: int
    #: None when the oldest unconsumed record's timestamp could not be read (rule 3).
    seconds: float | None


def plan_lag(committed: Mapping[tuple[str, str, int], int], ends: Mapping[tuple[str, int], int],
             oldest_ms: Mapping[tuple[str, str, int], int | None], now_s: float) -> list[Lag]:
    """Rules 2 and 3: per (group, topic, partition) committed offset, the partition's end offset and the
    timestamp (ms) of the oldest unconsumed record (missing when it could not be read: the seconds are
    then None), the lag in messages and in seconds; sorted by group, topic and partition."""
    rows = []
    for (group, topic, partition), offset in sorted(committed.items()):
        end = ends.get((topic, partition))
        if end is None:
            continue  # a topic the group once read that is gone
        messages = max(0, end - offset)
        stamp = oldest_ms.get((group, topic, partition))
        seconds = 0.0 if messages == 0 else None if stamp is None else max(0.0, now_s - stamp / 1000)
        rows.append(Lag(group, topic, partition, offset, end, messages, seconds))
    return rows


async def measure_lag(settings: Settings) -> list[Lag]:
    """Rules 1-3 against the cluster the settings name."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    reader = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False,
                              auto_offset_reset="earliest")
    try:
        await admin.start()
        await reader.start()
        groups = sorted(g[0] for g in await admin.list_consumer_groups()
                        if is_hub_group(g[0], settings.topic_namespace))
        committed: dict[tuple[str, str, int], int] = {}
        for group in groups:
            for tp, meta in (await admin.list_consumer_group_offsets(group)).items():
                if meta is not None and meta.offset >= 0:
                    committed[(group, tp.topic, tp.partition)] = meta.offset
        partitions = sorted({TopicPartition(t, p) for _, t, p in committed})
        ends = {(tp.topic, tp.partition): end for tp, end in (await reader.end_offsets(partitions)).items()} \
            if partitions else {}
        behind = {key: offset for key, offset in committed.items() if ends.get(key[1:], offset) > offset}
        oldest = await _oldest_timestamps(reader, behind)
        return plan_lag(committed, ends, oldest, time.time())
    finally:
        await reader.stop()
        await admin.close()


async def _oldest_timestamps(reader: Any, behind: Mapping[tuple[str, str, int], int]) -> dict[tuple[str, str, int], int]:
    """The timestamp of the record at each committed offset: one round per group (a partition has one
    position at a time), reading one record per partition."""
    from aiokafka import TopicPartition

    found: dict[tuple[str, str, int], int] = {}
    by_group: dict[str, dict[Any, int]] = {}
    for (group, topic, partition), offset in behind.items():
        by_group.setdefault(group, {})[TopicPartition(topic, partition)] = offset
    for group, offsets in by_group.items():
        reader.assign(list(offsets))
        for tp, offset in offsets.items():
            reader.seek(tp, offset)
        waiting = set(offsets)
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        while waiting and time.monotonic() < deadline:
            batch = await reader.getmany(*waiting, timeout_ms=500, max_records=len(waiting) * 10)
            for tp, records in batch.items():
                if records and tp in waiting:
                    found[(group, tp.topic, tp.partition)] = records[0].timestamp
                    waiting.discard(tp)
    return found


@dataclass
class ReadModelFacts:
    """Rule 4: what the read model says waits."""

    parked: int = 0
    parked_oldest_s: float = 0.0
    approvals: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    lead_times: list[LeadTime] = field(default_factory=list)
    open_lead_times: dict[str, int] = field(default_factory=dict)
    until: dt.date = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).date())


def read_model_facts(settings: Settings, now: dt.datetime) -> ReadModelFacts:
    """Rule 4 from the read model the settings name."""
    from hub.api.records import Resolutions
    from hub.domain import notify
    from hub.domain.fields import field_values
    from hub.events import LifecycleStatus
    from hub.leadtimes import window
    from hub.readmodel import ReadModel

    rules = settings.rules()
    model = ReadModel(settings.read_model_url)
    try:
        model.create_schema()
        kept = Resolutions(model.engine).resolved()
        every = model.lead_times()
        parked = [t for t in every if t.kind == "conflict" and t.ended_at is None and t.subject not in kept]
        facts = ReadModelFacts(until=now.date())
        facts.parked = len(parked)
        facts.parked_oldest_s = max(((now - t.started_at).total_seconds() for t in parked), default=0.0)
        since, _ = window(now.date(), LEAD_TIME_WEEKS)
        facts.lead_times = [t for t in every if t.started_at >= since]
        facts.open_lead_times = {kind: sum(1 for t in every if t.kind == kind and t.ended_at is None
                                           and t.subject not in kept) for kind in KINDS}
        for alert in _all(model.every_open_alert):
            facts.alerts[alert.stage] = facts.alerts.get(alert.stage, 0) + 1
        approvals = rules.workflow.approvals if rules.workflow else None
        if approvals is not None:
            facts.approvals = {level.name: 0 for level in approvals.levels}
            for summary in _all(lambda limit, offset: model.list_orders(status=LifecycleStatus.CONFIRMED, limit=limit,
                                                                      offset=offset)):
                order = model.order(summary.order_id)
                for level in notify.waiting(approvals, field_values(order.model_dump(mode="json"))):
                    facts.approvals[level.name] += 1
        return facts
    finally:
        model.close()


def _all(page: Any, size: int = 500) -> Iterable[Any]:
    offset = 0
    while True:
        rows = page(limit=size, offset=offset)
        yield from rows
        if len(rows) < size:
            return
        offset += size


class HubCollector(Collector):
    """Rule 5: serves the last measurement of the lag and of the read model."""

    def __init__(self) -> None:
        self.lag: list[Lag] = []
        self.facts: ReadModelFacts | None = None
        self.success = {"kafka": 0.0, "read_model": 0.0}
        self._lock = threading.Lock()

    def update(self, *, lag: list[Lag] | None = None, facts: ReadModelFacts | None = None,
               failed: Iterable[str] = ()) -> None:
        with self._lock:
            if lag is not None:
                self.lag, self.success["kafka"] = lag, 1.0
            if facts is not None:
                self.facts, self.success["read_model"] = facts, 1.0
            for source in failed:  # rule 5: what could not be measured is not served as if it were
                self.success[source] = 0.0
                if source == "kafka":
                    self.lag = []
                elif source == "read_model":
                    self.facts = None

    def collect(self) -> Iterable[Any]:
        with self._lock:
            lag, facts, success = list(self.lag), self.facts, dict(self.success)
        yield from _families(lag, facts, success)


def _gauge(spec: metrics.Spec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _families(lag: list[Lag], facts: ReadModelFacts | None, success: Mapping[str, float]) -> Iterable[Any]:
    ok = _gauge(metrics.LAG_SCRAPE_OK)
    for source, value in sorted(success.items()):
        ok.add_metric([source], value)
    yield ok
    messages, seconds = _gauge(metrics.LAG_MESSAGES), _gauge(metrics.LAG_SECONDS)
    for row in lag:
        labels = [row.group, row.topic, str(row.partition)]
        messages.add_metric(labels, row.messages)
        if row.seconds is not None:
            seconds.add_metric(labels, row.seconds)
    yield messages
    yield seconds
    if facts is None:
        return
    parked, oldest = _gauge(metrics.PARKED_BACKLOG), _gauge(metrics.PARKED_OLDEST)
    parked.add_metric([], facts.parked)
    oldest.add_metric([], facts.parked_oldest_s)
    yield parked
    yield oldest
    approvals, alerts = _gauge(metrics.APPROVALS_WAITING), _gauge(metrics.ALERTS_OPEN)
    for level, count in sorted(facts.approvals.items()):
        approvals.add_metric([level], count)
    for stage, count in sorted(facts.alerts.items()):
        alerts.add_metric([stage], count)
    yield approvals
    yield alerts
    histogram = HistogramMetricFamily(metrics.LEAD_TIMES.name, metrics.LEAD_TIMES.help, labels=metrics.LEAD_TIMES.labels)
    for kind in KINDS:
        ended = [t.duration.total_seconds() for t in facts.lead_times if t.kind == kind and t.duration is not None]
        buckets = [(_le(bound), sum(1 for d in ended if d <= bound)) for bound in metrics.LEAD_TIME_BUCKETS]
        histogram.add_metric([kind], buckets + [("+Inf", len(ended))], sum(ended))
    yield histogram
    weekly_family = _gauge(metrics.LEAD_TIMES_WEEKLY)
    for row in weekly(facts.lead_times, until=facts.until, weeks=LEAD_TIME_WEEKS):
        for p in PERCENTILES:
            value = getattr(row, f"p{p}")
            if value is not None:
                weekly_family.add_metric([row.kind, row.week, f"0.{p}"], value.total_seconds())
    yield weekly_family
    still_open = _gauge(metrics.LEAD_TIMES_OPEN)
    for kind in KINDS:
        still_open.add_metric([kind], facts.open_lead_times.get(kind, 0))
    yield still_open


def _le(bound: float) -> str:
    return f"{float(bound)}"


async def measure(settings: Settings, collector: HubCollector) -> None:
    """One measurement of everything (rule 5: what fails is said and left out)."""
    failed = []
    lag = facts = None
    try:
        lag = await asyncio.wait_for(measure_lag(settings), max(settings.lag_interval_s, 10.0))
    except Exception as exc:  # noqa: BLE001 - Kafka away: say so, measure again next time
        log.warning("consumer lag not measured: %s: %s", type(exc).__name__, exc)
        failed.append("kafka")
    try:
        facts = await asyncio.to_thread(read_model_facts, settings, dt.datetime.now(dt.timezone.utc))
    except Exception as exc:  # noqa: BLE001 - the database away: the same
        log.warning("read model not measured: %s: %s", type(exc).__name__, exc)
        failed.append("read_model")
    collector.update(lag=lag, facts=facts, failed=failed)


async def run_lag(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """``orderhub lag``: serve the metrics, measuring every ``lag_interval_s``, until SIGTERM or SIGINT."""
    import signal

    from hub.logs import configure

    configure(settings)
    collector = HubCollector()
    REGISTRY.register(collector)
    metrics.serve(settings, "lag")
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        await measure(settings, collector)
        try:
            await asyncio.wait_for(stop.wait(), settings.lag_interval_s)
        except asyncio.TimeoutError:
            pass
    return 0


def lag_table(rows: list[Lag]) -> str:
    """``orderhub lag --once``: one line per group, topic and partition."""
    if not rows:
        return "no consumer group of the hub has committed an offset yet"
    header = ("GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG SECONDS")
    lines = [header] + [(r.group, r.topic, str(r.partition), str(r.committed), str(r.end), str(r.messages),
                         "?" if r.seconds is None else f"{r.seconds:.1f}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                               for i, cell in enumerate(line)).rstrip() for line in lines)
