"""The due-date alert's rules (``hub.domain.alerts``) with the shipped stages: due_soon at 7 days for
the production lead, escalated at 3 for the plant manager. Time is an argument: the tests move it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from hub.domain import alerts
from hub.domain.alerts import CLEARED, RAISED, OrderFacts, Raised
from hub.domain.workflow import Workflow
from hub.errors import ConfigError
from hub.settings import PROJECT_DIR

CONFIG = Workflow.load(PROJECT_DIR / "workflow.yaml").due_date_alert
assert CONFIG is not None
DUE = dt.date(2026, 12, 20)


def facts(status: str = "RELEASED", on_hold: bool = False, promised: dt.date | None = None,
          requested: dt.date | None = DUE) -> OrderFacts:
    return OrderFacts("O-1", "ORD-2026-00-000001", 5, status, on_hold,
                      {"promised_delivery": promised, "requested_delivery": requested})


def days_before(days: int) -> dt.date:
    return DUE - dt.timedelta(days=days)


def follow(order: OrderFacts, today: dt.date, raised: list[Raised],
           counts: dict | None = None) -> tuple[list[alerts.Action], list[Raised]]:
    """Decide, then keep what was raised and drop what was cleared, counting occurrences, as the worker does."""
    counts = {} if counts is None else counts
    found = alerts.actions(CONFIG, order, today, raised, counts)
    for action in found:
        key = Raised(action.stage.name, action.due, action.occurrence)
        if action.kind == RAISED:
            raised = raised + [key]
            counts[(key.stage, key.due)] = key.occurrence
        else:
            raised = [r for r in raised if r != key]
    return found, raised


def test_raised_at_seven_days_escalated_at_three_once_each_and_cleared_when_production_starts() -> None:
    raised: list[Raised] = []
    seen = []
    for days in (10, 8, 7, 6, 5, 3, 2):
        found, raised = follow(facts(), days_before(days), raised)
        seen += [(days, a.kind, a.stage.name, a.stage.notify) for a in found]
    assert seen == [(7, RAISED, "due_soon", "production_lead"), (3, RAISED, "escalated", "plant_manager")]
    found, raised = follow(facts("IN_PRODUCTION"), days_before(2), raised)
    assert [(a.kind, a.stage.name, a.reason) for a in found] == [
        (CLEARED, "due_soon", "production started (IN_PRODUCTION)"),
        (CLEARED, "escalated", "production started (IN_PRODUCTION)")]
    assert raised == [] and alerts.actions(CONFIG, facts("IN_PRODUCTION"), days_before(1), raised) == []


def test_an_order_past_due_or_on_hold_in_production_has_not_started() -> None:
    (soon, late) = alerts.actions(CONFIG, facts("IN_PRODUCTION", on_hold=True), DUE + dt.timedelta(days=2), [])
    assert (soon.kind, soon.days_left, late.stage.name) == (RAISED, -2, "escalated")
    assert soon.reason == "due 2026-12-20, 2 days ago and production has not started (IN_PRODUCTION, on hold)"
    assert soon.record_id == "due_soon:2026-12-20:1:raised"


def test_no_alert_without_a_due_date_or_once_the_order_ended() -> None:
    assert alerts.actions(CONFIG, facts(requested=None), days_before(1), []) == []
    for status in ("COMPLETED", "SHIPPED", "CLOSED", "CANCELLED"):
        assert alerts.actions(CONFIG, facts(status), days_before(1), []) == []
    (cleared,) = alerts.actions(CONFIG, facts("CANCELLED"), days_before(1), [Raised("due_soon", DUE)])
    assert (cleared.kind, cleared.reason) == (CLEARED, "the order is CANCELLED")


def test_the_promised_date_counts_first_and_a_moved_date_is_a_new_alert() -> None:
    later = DUE + dt.timedelta(days=30)
    assert alerts.actions(CONFIG, facts(promised=later), days_before(5), []) == []  # promised wins over requested
    raised = [Raised("due_soon", DUE)]
    found = alerts.actions(CONFIG, facts(promised=later), days_before(5), raised)
    assert [(a.kind, a.reason) for a in found] == [(CLEARED, f"the due date moved to {later.isoformat()}")]
    sooner = DUE - dt.timedelta(days=2)
    found = alerts.actions(CONFIG, facts(promised=sooner), days_before(5), raised)
    assert [(a.kind, a.stage.name, a.due) for a in found] == [
        (RAISED, "due_soon", sooner), (RAISED, "escalated", sooner), (CLEARED, "due_soon", DUE)]


def test_a_condition_that_comes_back_is_raised_again_as_its_next_occurrence() -> None:
    counts: dict = {}
    seen = []
    raised: list[Raised] = []
    for status, on_hold in (("RELEASED", False), ("IN_PRODUCTION", False), ("IN_PRODUCTION", True),
                            ("IN_PRODUCTION", True), ("IN_PRODUCTION", False)):
        found, raised = follow(facts(status, on_hold), days_before(5), raised, counts)
        seen += [a.record_id for a in found]
    # held after production started: not started again, so alerted again, with an id of its own
    assert seen == ["due_soon:2026-12-20:1:raised", "due_soon:2026-12-20:1:cleared",
                    "due_soon:2026-12-20:2:raised", "due_soon:2026-12-20:2:cleared"]


@pytest.mark.parametrize("section, message", [
    ({"stages": []}, "stages: expected a list"),
    ({"stages": [{"stage": "soon", "within_days": -1, "notify": "lead"}]}, "within_days: -1"),
    ({"stages": [{"stage": "soon", "within_days": 7, "notify": "Lead"}]}, "notify: 'Lead'"),
    ({"stages": [{"stage": "soon", "within_days": 7}]}, "expected exactly {stage, within_days, notify}"),
    ({"date": ["planned_start"], "stages": [{"stage": "s", "within_days": 7, "notify": "x"}]}, "expected date fields"),
    ({"interval_s": 0, "stages": [{"stage": "s", "within_days": 7, "notify": "x"}]}, "interval_s: 0"),
    ({"stages": [{"stage": "s", "within_days": 7, "notify": "x"}, {"stage": "s", "within_days": 3, "notify": "y"}]},
     "repeated: ['s']"),
])
def test_a_wrong_alert_section_names_what_is_wrong(tmp_path: Path, section: dict, message: str) -> None:
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump({"due_date_alert": section}))
    with pytest.raises(ConfigError, match="due_date_alert") as raised:
        Workflow.load(path)
    assert message in str(raised.value)


def test_a_clock_file_caught_empty_reads_as_the_time_it_said_before(tmp_path: Path) -> None:
    from hub.streams.alerts import file_clock

    path = tmp_path / "now"
    path.write_text("2026-12-01T08:00:00+01:00")
    clock = file_clock(path)
    assert clock() == dt.datetime(2026, 12, 1, 7, tzinfo=dt.timezone.utc)
    path.write_text("")  # a writer mid-way
    assert clock() == dt.datetime(2026, 12, 1, 7, tzinfo=dt.timezone.utc)
    path.write_text("tomorrow")
    with pytest.raises(ConfigError, match="is not an ISO timestamp"):
        clock()
