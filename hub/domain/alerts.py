"""The due-date alert (workflow.yaml ``due_date_alert:``): which alerts an order should have now.

A pure function of the order's facts, the alerts it already has and today's date, so a worker
can call it for every order at an interval and for every change of one, with any clock:

1. An order's due date is the first of ``due_date_alert.date`` it has (by default the promised
   delivery, then the requested one). An order without one has no alert.
2. Production has not started while the order is open and before IN_PRODUCTION, or in
   production but on hold. COMPLETED, SHIPPED, CLOSED and CANCELLED orders have no alert.
3. Each stage (``due_soon`` at 7 days, ``escalated`` at 3 by default) is due while production has
   not started and the due date is at most ``within_days`` away (or past). A due stage that is not
   raised for this due date is raised, once: its id is the order, the stage, the due date and the
   occurrence (1, then 2 if the condition ends and comes back: an order held after production
   started, a due date moved away and back), so deciding it again is the same record (consumers
   dedup by it) and a condition that came back is a new one.
4. A raised stage that is no longer due is cleared, saying why: production started, the order
   ended, or its due date moved (an alert for the new date is a new alert).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from hub.domain import lifecycle

#: Statuses after which no alert is due (the work is done or abandoned).
ENDED = frozenset({"COMPLETED", "SHIPPED", "CLOSED", "CANCELLED"})
RAISED, CLEARED = "RAISED", "CLEARED"


@dataclass(frozen=True)
class Stage:
    """One alert stage: due this many days before the due date, for this role."""

    name: str
    within_days: int
    #: The role alerted (a HUB role, e.g. production_lead).
    notify: str


@dataclass(frozen=True)
class DueDateAlert:
    """The ``due_date_alert:`` section."""

    stages: tuple[Stage, ...]
    date: tuple[str, ...] = ("promised_delivery", "requested_delivery")
    #: Seconds between two looks at every order (besides every change of one).
    interval_s: float = 300.0

    def stage(self, name: str) -> Stage | None:
        """The stage called ``name``."""
        return next((stage for stage in self.stages if stage.name == name), None)


@dataclass(frozen=True)
class OrderFacts:
    """What the rules read of one order (from its snapshot)."""

    order_id: str
    order_number: str
    version: int
    status: str
    on_hold: bool
    dates: Mapping[str, dt.date | None]

    @classmethod
    def of(cls, snapshot: Any) -> "OrderFacts":
        """The facts of an ``OrderSnapshot``."""
        return cls(order_id=snapshot.order_id, order_number=snapshot.order_number, version=snapshot.version,
                   status=snapshot.status.value, on_hold=snapshot.on_hold,
                   dates={"promised_delivery": snapshot.promised_delivery,
                          "requested_delivery": snapshot.requested_delivery})


@dataclass(frozen=True)
class Raised:
    """An alert an order has: its stage, the due date it was raised for, and which occurrence it is."""

    stage: str
    due: dt.date
    occurrence: int = 1


@dataclass(frozen=True)
class Action:
    """Raise or clear one stage's alert for one order."""

    kind: str
    stage: Stage
    due: dt.date
    days_left: int
    reason: str
    occurrence: int = 1

    @property
    def record_id(self) -> str:
        """The same for the same stage, due date, occurrence and kind, however often it is decided."""
        return f"{self.stage.name}:{self.due.isoformat()}:{self.occurrence}:{self.kind.lower()}"


def due_date(config: DueDateAlert, facts: OrderFacts) -> dt.date | None:
    """Rule 1: the date that counts."""
    return next((facts.dates[path] for path in config.date if facts.dates.get(path) is not None), None)


def not_started(facts: OrderFacts) -> bool:
    """Rule 2: production has not started (and the order has not ended)."""
    if facts.status in ENDED:
        return False
    return facts.status not in lifecycle.PRODUCTION_STARTED or facts.on_hold


def actions(config: DueDateAlert, facts: OrderFacts, today: dt.date, raised: Iterable[Raised],
            occurrences: Mapping[tuple[str, dt.date], int] | None = None) -> list[Action]:
    """Rules 3-4: the alerts to raise and to clear now, given the ones the order has and how often each
    (stage, due date) was raised before (``occurrences``; none when not given)."""
    due = due_date(config, facts)
    days_left = (due - today).days if due is not None else 0
    waiting = due is not None and not_started(facts)
    raised = list(raised)
    have = {(r.stage, r.due) for r in raised}
    occurrence_of = {(r.stage, r.due): r.occurrence for r in raised}
    before = occurrences or {}
    found = []
    for stage in config.stages:
        if waiting and days_left <= stage.within_days and (stage.name, due) not in have:
            when = f"due {due.isoformat()}, in {days_left} days" if days_left >= 0 else \
                f"due {due.isoformat()}, {-days_left} days ago"
            found.append(Action(RAISED, stage, due, days_left,
                                f"{when} and production has not started ({facts.status}"
                                f"{', on hold' if facts.on_hold else ''})", before.get((stage.name, due), 0) + 1))
    for stage_name, raised_due in sorted(have):
        stage = config.stage(stage_name)
        if stage is None:
            continue  # a stage no longer configured: its alerts stay as they were
        if waiting and raised_due == due and days_left <= stage.within_days:
            continue
        if facts.status in ENDED:
            why = f"the order is {facts.status}"
        elif due is None:
            why = "the order has no due date any more"
        elif not waiting:
            why = f"production started ({facts.status})"
        elif raised_due != due:
            why = f"the due date moved to {due.isoformat() if due else 'none'}"
        else:
            why = f"the due date {due.isoformat()} is more than {stage.within_days} days away"
        found.append(Action(CLEARED, stage, raised_due, (raised_due - today).days, why,
                            occurrence_of[(stage_name, raised_due)]))
    return found
