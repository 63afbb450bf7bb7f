"""Pure translation between the hub's orders and the MES's ISA-95 job orders, both ways.

Out: one released order becomes one job order per line (``job_orders_for``). The job order id
is ``<order_number>-L<line_no>``; the hub order id, order number, released version and line
number travel in the job's ``JobOrderParameters`` (``PARAM_*``), so a redelivered release finds
its job orders by id and every shop-floor report finds its way back to the order line.

Back: what the MES says becomes canonical field changes, each a dict of field path to plain
JSON value (the ``changes`` mapping ``orderhub propose`` accepts), containing only fields
``ownership.yaml`` lets MES write:

- ``lifecycle_changes``: the first job of an order running moves RELEASED -> IN_PRODUCTION with
  ``actual_start``; every line's job Ended moves IN_PRODUCTION -> COMPLETED with ``actual_end``.
- ``progress_changes``: ``lines.<n>.good_quantity`` / ``lines.<n>.scrap_quantity``.
- ``quality_changes``: a hold sets ``on_hold`` and adds its reason to ``hold_reasons``; a
  release removes only that job's reason and lifts ``on_hold`` only when no reason is left.

No I/O here: ``connectors.mes.opcua`` turns these values into OPC UA structures.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from connectors.mes.mqtt import ProgressReport, QualityReport
from hub.sdk import Instruction, OrderRelease, UnmappableRecord, format_timestamp

#: JobOrderParameters IDs the hub writes into every job order it sends.
PARAM_ORDER_ID = "orderhub.order_id"
PARAM_ORDER_NUMBER = "orderhub.order_number"
PARAM_ORDER_VERSION = "orderhub.order_version"
PARAM_LINE_NO = "orderhub.line_no"
PARAM_REQUESTED_DELIVERY = "orderhub.requested_delivery"
PARAM_PLANT = "orderhub.plant"
#: A process requirement's parameter ID: this prefix plus its key (or its position for free text).
PARAM_INSTRUCTION_PREFIX = "orderhub.instruction."

INT16_RANGE = range(-32768, 32768)
_JOB_ORDER_ID = re.compile(r"^(?P<order_number>.+)-L(?P<line_no>[1-9][0-9]{0,5})$")
_QUANTITY_QUANTUM = Decimal("0.001")  # the hub's good/scrap quantities: decimal(18,3)
#: What a hold reason from a job starts with; a release removes exactly the reasons of its job.
HOLD_REASON_PREFIX = "MES quality hold on {job_order_id}: "


class JobState(str, Enum):
    """The top-level states of an ISA-95 job order (OPC 10031-4), valued by their StateText."""

    NOT_ALLOWED_TO_START = "NotAllowedToStart"
    ALLOWED_TO_START = "AllowedToStart"
    RUNNING = "Running"
    INTERRUPTED = "Interrupted"
    ENDED = "Ended"
    ABORTED = "Aborted"

    @property
    def number(self) -> int:
        """The StateNumber the nodeset gives the state (1..6)."""
        return list(JobState).index(self) + 1

    @classmethod
    def from_number(cls, number: int) -> "JobState":
        """The state with this StateNumber; ValueError for any other number."""
        if not 1 <= number <= len(cls):
            raise ValueError(f"no ISA-95 job order state has number {number}")
        return list(cls)[number - 1]


#: States in which production of the job has begun (it ran at some point).
STARTED_STATES = frozenset({JobState.RUNNING, JobState.INTERRUPTED, JobState.ENDED})


@dataclass(frozen=True)
class JobOrder:
    """One job order as the hub sends it to the MES: make one order line."""

    job_order_id: str
    """ISA-95 JobOrderID, ``<order_number>-L<line_no>`` for the hub's job orders."""
    material_id: str
    """Material to produce (MaterialDefinitionID of the produced material)."""
    quantity: Decimal
    """Quantity to produce."""
    unit: str
    """UN/ECE Rec 20 unit code of the quantity."""
    priority: int = 0
    """ISA-95 Int16 priority; higher is more urgent."""
    material_revision: str | None = None
    """Revision or specification to build, when the order names one."""
    due: dt.date | None = None
    """Due date (the order's requested delivery); the job's EndTime is midnight UTC of it."""
    order_id: str | None = None
    """Hub order id; None for a job order the hub did not send."""
    order_number: str | None = None
    """The hub's order number printed on the work order."""
    order_version: int | None = None
    """The order version that was released."""
    line_no: int | None = None
    """The order line this job produces."""
    plant: str | None = None
    """Producing plant, when the order names one."""
    instructions: tuple[Instruction, ...] = ()
    """Process requirements of the order, in order."""

    @property
    def from_hub(self) -> bool:
        """Whether the job carries the hub's order id and line (only those map back)."""
        return self.order_id is not None and self.line_no is not None


@dataclass(frozen=True)
class JobOrderState:
    """A job order as the MES holds it: the order, its state, and when it actually ran."""

    job: JobOrder
    """The job order as stored."""
    state: JobState
    """Its current top-level state."""
    started_at: dt.datetime | None = None
    """When execution actually started (the MES's job response), if it did."""
    ended_at: dt.datetime | None = None
    """When execution actually ended, if it did."""

    @property
    def job_order_id(self) -> str:
        """The job order's id."""
        return self.job.job_order_id


@dataclass(frozen=True)
class JobStateChange:
    """One job order appearing, changing state or disappearing in the MES."""

    job_order_id: str
    """The job order concerned."""
    previous: JobState | None
    """Its state before (None: the watcher had not seen it, e.g. on the first notification)."""
    current: JobOrderState | None
    """Its state now (None: it was removed, by Cancel or Clear)."""


def job_order_id(order_number: str, line_no: int) -> str:
    """The id of the job order producing one order line: ``<order_number>-L<line_no>``."""
    return f"{order_number}-L{line_no}"


def parse_job_order_id(value: str) -> tuple[str, int] | None:
    """``(order_number, line_no)`` of a hub-made job order id, or None for any other id."""
    match = _JOB_ORDER_ID.match(value)
    return (match["order_number"], int(match["line_no"])) if match else None


def job_orders_for(release: OrderRelease) -> list[JobOrder]:
    """One job order per line of a released order; ``UnmappableRecord`` if the release cannot be one."""
    if release.priority not in INT16_RANGE:
        raise UnmappableRecord(f"priority {release.priority} of {release.order_number} is outside ISA-95's Int16")
    if not release.lines:
        raise UnmappableRecord(f"release of {release.order_number} version {release.version} has no lines")
    return [
        JobOrder(
            job_order_id=job_order_id(release.order_number, line.line_no),
            material_id=line.material_id, material_revision=line.material_revision,
            quantity=line.quantity, unit=line.unit, priority=release.priority, due=release.requested_delivery,
            order_id=release.order_id, order_number=release.order_number, order_version=release.version,
            line_no=line.line_no, plant=release.plant, instructions=tuple(release.instructions),
        )
        for line in sorted(release.lines, key=lambda line: line.line_no)
    ]


def lifecycle_changes(jobs: Iterable[JobOrderState], *, status: str, on_hold: bool,
                      line_numbers: Collection[int]) -> list[dict[str, Any]]:
    """The lifecycle steps the MES's job states call for, in order: one proposal each.

    ``jobs`` are the job orders of one order, ``status``/``on_hold`` the order's current
    lifecycle status and hold flag, ``line_numbers`` its lines (the order is complete only when
    every line has an Ended job). Steps are proposed one at a time as the hub allows: RELEASED
    -> IN_PRODUCTION once any job has started, IN_PRODUCTION -> COMPLETED once all have ended.
    A held order takes no step (the hub would refuse it): call again when the hold is lifted.
    An Aborted job never completes its line: that needs a person.
    """
    if on_hold:
        return []
    mine = [job for job in jobs if job.job.line_no in line_numbers]
    steps: list[dict[str, Any]] = []
    current = status
    started = [job for job in mine if job.state in STARTED_STATES]
    if current == "RELEASED" and started:
        steps.append(_step("IN_PRODUCTION", "actual_start", min_time(job.started_at for job in started)))
        current = "IN_PRODUCTION"
    ended_lines = {job.job.line_no for job in mine if job.state is JobState.ENDED}
    if current == "IN_PRODUCTION" and line_numbers and ended_lines >= set(line_numbers):
        ended = [job for job in mine if job.state is JobState.ENDED]
        steps.append(_step("COMPLETED", "actual_end", max_time(job.ended_at for job in ended)))
    return steps


def progress_changes(job: JobOrder, report: ProgressReport) -> dict[str, Any]:
    """The order line's good and scrap quantities from a progress report on its job."""
    line_no = _hub_line(job, report.job_order_id)
    if report.unit != job.unit:
        raise UnmappableRecord(f"progress of {job.job_order_id} is in {report.unit}, the job is in {job.unit}")
    return {f"lines.{line_no}.good_quantity": _count(report.good_quantity, "good_quantity", job),
            f"lines.{line_no}.scrap_quantity": _count(report.scrap_quantity, "scrap_quantity", job)}


def quality_changes(report: QualityReport, *, current_reasons: Sequence[str]) -> dict[str, Any]:
    """``on_hold`` and ``hold_reasons`` after a quality hold or release on one job.

    ``current_reasons`` are the order's hold reasons now (other systems' included): a hold adds
    this job's reason, a release removes only this job's reasons, and the order stays held while
    any reason is left (an ERP credit hold is not lifted by the shop floor).
    """
    prefix = HOLD_REASON_PREFIX.format(job_order_id=report.job_order_id)
    if report.on_hold:
        reason = prefix + (report.reason or "quality hold")
        reasons = list(current_reasons) + ([reason] if reason not in current_reasons else [])
        return {"on_hold": True, "hold_reasons": reasons}
    remaining = [reason for reason in current_reasons if not reason.startswith(prefix)]
    return {"on_hold": bool(remaining), "hold_reasons": remaining}


def min_time(values: Iterable[dt.datetime | None]) -> dt.datetime | None:
    """The earliest of the known times (None when none is known)."""
    known = [value for value in values if value is not None]
    return min(known) if known else None


def max_time(values: Iterable[dt.datetime | None]) -> dt.datetime | None:
    """The latest of the known times (None when none is known)."""
    known = [value for value in values if value is not None]
    return max(known) if known else None


def _step(status: str, time_field: str, at: dt.datetime | None) -> dict[str, Any]:
    # Without the MES's job response the time is unknown: the status still moves, the time stays empty.
    return {"status": status, **({time_field: format_timestamp(at)} if at is not None else {})}


def _hub_line(job: JobOrder, reported_job_id: str) -> int:
    if reported_job_id != job.job_order_id:
        raise UnmappableRecord(f"report for {reported_job_id} was matched to job {job.job_order_id}")
    if not job.from_hub or job.line_no is None:
        raise UnmappableRecord(f"job order {job.job_order_id} carries no hub order line ({PARAM_ORDER_ID}, "
                               f"{PARAM_LINE_NO}): it was not sent by the hub")
    return job.line_no


def _count(value: Decimal, name: str, job: JobOrder) -> str:
    try:
        quantised = value.quantize(_QUANTITY_QUANTUM)
    except InvalidOperation:
        quantised = None
    if quantised is None or len(quantised.as_tuple().digits) > 18:
        raise UnmappableRecord(f"{name} {value} of {job.job_order_id} does not fit the hub's decimal(18,3)")
    if quantised != value:  # quantities are never rounded silently
        raise UnmappableRecord(f"{name} {value} of {job.job_order_id} has more than 3 decimal places")
    return str(quantised)
