"""The shop floor -> the hub: job states read over OPC UA become lifecycle steps; progress and
quality holds arrive over MQTT and become line quantities and holds.

Event ids are deterministic, so reading the same state again is one decision at the hub: a
lifecycle step is ``mes:<order id>:<status>:v<version it was seen at>`` (a step the hub refused,
say while the order was held, is proposed again under a new id once the order has moved on), a
shop-floor message is ``mes:<job order id>/<seq>`` (its per-job sequence number).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any, Iterable

from connectors.mes.mapping import JobOrderState, lifecycle_changes, progress_changes, quality_changes
from connectors.mes.mqtt import ProgressReport, QualityReport
from hub.sdk import Actor, Context, ExternalRef, OutsideChange, Unmappable, UnmappableRecord, utcnow

ACTOR = Actor(id="mes", role="connector")


def job_ref(job_order_id: str) -> ExternalRef:
    """How the MES names (one job of) the order."""
    return ExternalRef(system="MES", object_type="JobOrder", external_id=job_order_id)


def lifecycle_steps(jobs: Iterable[JobOrderState], context: Context) -> list[OutsideChange]:
    """The lifecycle steps the job states call for, per order the hub has told us about."""
    by_order: dict[str, list[JobOrderState]] = defaultdict(list)
    for job in jobs:
        if job.job.order_id:
            by_order[job.job.order_id].append(job)
    changes = []
    for order_id, order_jobs in sorted(by_order.items()):
        known = context.order(order_id)
        if known is None:
            continue
        steps = lifecycle_changes(order_jobs, status=known.status.value, on_hold=known.on_hold,
                                  line_numbers=[line.line_no for line in known.lines])
        for values in steps:
            changes.append(OutsideChange(ref=job_ref(order_jobs[0].job_order_id), order_id=order_id,
                                         event_id=f"mes:{order_id}:{values['status']}:v{known.version}", values=values, actor=ACTOR,
                                         occurred_at=_when(values) or utcnow()))
    return changes


def report_change(report: ProgressReport | QualityReport, job: JobOrderState | None,
                  context: Context) -> OutsideChange | Unmappable:
    """One shop-floor message as an order change, or Unmappable naming why it cannot be one."""
    if job is None or not job.job.order_id:
        return Unmappable({"topic": report.topic, "seq": report.seq}, f"no job order {report.job_order_id} at the MES",
                          key=report.job_order_id)
    known = context.order(job.job.order_id)
    try:
        values = (progress_changes(job.job, report) if isinstance(report, ProgressReport)
                  else quality_changes(report, current_reasons=known.hold_reasons if known else []))
    except UnmappableRecord as exc:
        return Unmappable({"topic": report.topic, "seq": report.seq}, str(exc), key=report.job_order_id)
    return OutsideChange(ref=job_ref(job.job_order_id), order_id=job.job.order_id,
                         event_id=f"mes:{report.job_order_id}/{report.seq}", values=values, actor=ACTOR,
                         occurred_at=report.reported_at)


def _when(values: dict[str, Any]) -> dt.datetime | None:
    stamp = values.get("actual_end") or values.get("actual_start")
    return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
