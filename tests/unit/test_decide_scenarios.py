"""Every edge-case scenario in tests/scenarios/ decided by ``decide``, step by step."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.domain.decide import Decision, DecisionKind
from hub.domain.order import OrderState
from tests.domain_helpers import (ORDER_ID, OrderNumbers, Scenario, decide_one, encode, load_scenario, ref,
                                  scenario_files)

SCENARIOS = [load_scenario(path) for path in scenario_files()]


def by_name(scenarios: list[Scenario]) -> list[Any]:
    """Scenarios as pytest parameters named after their files."""
    return [pytest.param(s, id=s.name) for s in scenarios]


def play(scenario: Scenario, *, persist: bool = False) -> tuple[dict[str, OrderState], list[Decision], OrderNumbers]:
    """Decide every delivery of a scenario; with ``persist``, each state goes through its table value first."""
    numbers = OrderNumbers()
    states: dict[str, OrderState] = {}
    decisions = []
    for step in scenario.steps:
        order_id = step.proposal.order_ref.order_id
        state = states.get(order_id)
        if persist and state is not None:
            state = OrderState.from_table(state.to_table())
        decision = decide_one(state, step.proposal, numbers)
        states[order_id] = decision.state
        decisions.append(decision)
    return states, decisions, numbers


def check_step(where: str, before: OrderState | None, decision: Decision, expect: dict[str, Any]) -> None:
    """Assert one decision against a step's ``expect`` block, plus the invariants every decision keeps."""
    state = decision.state
    version_before = before.version if before else 0
    assert decision.kind == DecisionKind(expect["kind"]), f"{where}: {decision.rejection or decision.conflict}"
    if "version" in expect:
        assert state.version == expect["version"], where

    # Invariants: a new version is exactly previous + 1; anything else leaves the fields alone.
    if decision.accepted:
        assert decision.change.version == state.version == version_before + 1, where
        assert decision.change.previous_version == version_before, where
        assert decision.snapshot is not None and decision.snapshot.version == state.version, where
    else:
        assert state.version == version_before, where
        assert state.fields == (before.fields if before else {}), where
        assert state.external_refs == (before.external_refs if before else ()), where
    if decision.kind == DecisionKind.DUPLICATE:
        assert state == before, where
        assert (decision.change, decision.conflict, decision.rejection, decision.release) == (None,) * 4, where
    else:
        assert state.has_seen(decision_event_id(decision)), where

    assert (decision.release is not None) == bool(expect.get("release", False)), where
    if decision.release is not None:
        assert decision.release.version == state.version and decision.release.order_number == state.order_number

    if "outcome" in expect:
        assert decision.change.outcome.value == expect["outcome"], where
    if "order_number" in expect:
        assert state.order_number == expect["order_number"], where
        assert decision.change.order_number == expect["order_number"], where
    if "diffs" in expect:
        got = {d.field: d.after for d in decision.change.diffs}
        assert got == {p: encode(v) for p, v in expect["diffs"].items()}, where
    if "refs_added" in expect:
        assert decision.change.external_refs_added == [ref(*map(str, r)) for r in expect["refs_added"]], where

    if "reason" in expect:
        assert decision.rejection is not None, where
        assert decision.rejection.reason.value == expect["reason"], f"{where}: {decision.rejection.errors}"
    if "errors" in expect or "errors_include" in expect:
        got_errors = {(e.field, e.rule) for e in decision.rejection.errors}
        if "errors" in expect:
            assert got_errors == {(e["field"], e["rule"]) for e in expect["errors"]}, where
        for e in expect.get("errors_include", ()):
            assert (e["field"], e["rule"]) in got_errors, f"{where}: {got_errors}"
    if decision.rejection is not None:
        assert decision.rejection.current_version == (version_before or None), where

    if "conflict" in expect:
        for key, value in expect["conflict"].items():
            assert getattr(decision.conflict, key) == value, f"{where}: conflict.{key}"
    if "conflicts" in expect:
        assert decision.conflict is not None, where
        got_fields = {c.field: c for c in decision.conflict.fields}
        assert set(got_fields) == {c["field"] for c in expect["conflicts"]}, where
        for want in expect["conflicts"]:
            check_field_conflict(f"{where} {want['field']}", got_fields[want["field"]], want)
    elif decision.kind not in (DecisionKind.RESOLVED, DecisionKind.CONFLICT_KEPT, DecisionKind.CONFLICT_PARKED):
        assert decision.conflict is None, where


def check_field_conflict(where: str, got: Any, want: dict[str, Any]) -> None:
    """Assert the listed attributes of one FieldConflict."""
    plain = {"outcome": got.outcome.value, "policy": got.policy.value, "owner": got.owner,
             "current_writer": got.current_writer.source_system, "proposed_writer": got.proposed_writer.source_system}
    for key, value in want.items():
        if key in plain:
            assert plain[key] == value, f"{where}: {key}"
        elif key in ("base", "current", "proposed"):
            assert getattr(got, f"{key}_value") == encode(value), f"{where}: {key}"


def decision_event_id(decision: Decision) -> str:
    """The event id a decision answers (every decision has its one answer)."""
    return decision.answer.event_id


@pytest.mark.parametrize("scenario", by_name(SCENARIOS))
def test_scenario_decisions(scenario: Scenario) -> None:
    """Each delivery of the scenario is decided as the file expects, and the order ends as the file says."""
    numbers = OrderNumbers()
    states: dict[str, OrderState] = {}
    for n, step in enumerate(scenario.steps, 1):
        order_id = step.proposal.order_ref.order_id
        before = states.get(order_id)
        decision = decide_one(before, step.proposal, numbers)
        check_step(f"{scenario.name} step {n} ({step.proposal.event_id})", before, decision, step.expect)
        states[order_id] = decision.state

    final, state = scenario.final, states[ORDER_ID]
    if "version" in final:
        assert state.version == final["version"]
    if "status" in final:
        assert state.status == final["status"]
    for path, value in final.get("fields", {}).items():
        assert state.value(path) == encode(value), path
    for path, version in final.get("field_versions", {}).items():
        assert state.fields[path].version == version, path
    if "order_numbers_issued" in final:
        assert len(numbers.issued) == final["order_numbers_issued"]


@pytest.mark.parametrize("scenario", by_name(SCENARIOS))
def test_scenario_replayed_whole_is_all_duplicates(scenario: Scenario) -> None:
    """Redelivering every proposal of a finished scenario again decides each one as a duplicate and changes no order."""
    states, _, numbers = play(scenario)
    for prop in scenario.proposals():
        order_id = prop.order_ref.order_id
        decision = decide_one(states[order_id], prop, numbers)
        assert decision.kind == DecisionKind.DUPLICATE, prop.event_id
        assert decision.state == states[order_id]


@pytest.mark.parametrize("scenario", by_name(SCENARIOS))
def test_scenario_survives_the_table_round_trip(scenario: Scenario) -> None:
    """Storing the state as JSON between deliveries (as the table does) changes no decision and no final state."""
    plain_states, plain, _ = play(scenario)
    stored_states, stored, _ = play(scenario, persist=True)
    assert [(d.kind, d.change, d.conflict, d.rejection, d.release) for d in stored] == \
        [(d.kind, d.change, d.conflict, d.rejection, d.release) for d in plain]
    assert stored_states == plain_states
