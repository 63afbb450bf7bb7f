"""Approvals over amount thresholds (workflow.yaml, ``hub.domain.workflow``), through ``decide``.

Each test tells one approval path with the shipped workflow (sales above 10,000, plant above
50,000, finance above 200,000), written by the roles a plant has; the property at the end checks
that no sequence of proposals reaches APPROVED or RELEASED with a required level missing. Two
rules each keep that on their own (the gate refusing the step, and an APPROVED order going back to
CONFIRMED when a level goes missing): the property fails only when both are broken, as it did when
both were switched off by hand.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.domain import workflow
from hub.domain.decide import Decision, DecisionKind
from hub.domain.order import OrderState
from hub.domain.workflow import Workflow
from hub.errors import ConfigError
from hub.settings import PROJECT_DIR
from tests.domain_helpers import RULES, creation, proposal, run, value_of

WORKFLOW = Workflow.load(PROJECT_DIR / "workflow.yaml")
RULES_WF = RULES.with_workflow(WORKFLOW)
APPROVALS = WORKFLOW.approvals
assert APPROVALS is not None


def approve(event_id: str, level: str, role: str, base: int, **kwargs: Any) -> Any:
    """``HUB:<role>`` approving ``level``."""
    return proposal(event_id, {f"approvals.{level}": {"decision": "approved"}}, base=base, system="HUB", role=role,
                    **kwargs)


def refuse(event_id: str, level: str, role: str, base: int, comment: str | None = "no capacity") -> Any:
    """``HUB:<role>`` refusing ``level``, saying why."""
    return proposal(event_id, {f"approvals.{level}": {"decision": "refused", "comment": comment}}, base=base,
                    system="HUB", role=role)


def confirmed(gross: str, currency: str = "EUR") -> OrderState:
    """An order the ERP has priced at ``gross`` and confirmed (version 2)."""
    state, decisions = run([creation(), proposal("erp", {"amounts.gross": Decimal(gross), "currency": currency,
                                                         "status": "CONFIRMED"}, base=1, system="ERP")],
                           rules=RULES_WF)
    assert [d.kind for d in decisions] == [DecisionKind.CREATED, DecisionKind.APPLIED]
    return state


def decide_all(state: OrderState, *proposals: Any) -> tuple[OrderState, list[Decision]]:
    return run(proposals, state, rules=RULES_WF)


def step(event_id: str, status: str, base: int, system: str = "ERP", role: str = "connector") -> Any:
    return proposal(event_id, {"status": status}, base=base, system=system, role=role)


def test_below_the_first_threshold_nobody_needs_to_approve() -> None:
    state, (approved,) = decide_all(confirmed("9999.99"), step("approve", "APPROVED", 2))
    assert approved.kind == DecisionKind.APPLIED and state.status == "APPROVED"


def test_above_a_threshold_the_step_waits_for_the_level_and_the_approval_is_the_step() -> None:
    state, (early, approval) = decide_all(confirmed("12000.00"), step("approve", "APPROVED", 2),
                                          approve("ok", "sales", "sales_manager", 2, actor_id="maria"))
    assert early.kind == DecisionKind.REJECTED
    (error,) = early.rejection.errors  # said once, not again as "the rules give another status"
    assert (early.rejection.reason.value, error.field) == ("ILLEGAL_TRANSITION", "status")
    assert error.message == "the order cannot be APPROVED before sales approved (amount 12000.00 EUR)"
    assert approval.kind == DecisionKind.APPLIED and state.status == "APPROVED" and state.version == 3
    assert {d.field: d.after for d in approval.change.diffs} == {
        "approvals.sales": '{"comment":null,"decision":"approved"}', "status": '"APPROVED"'}
    # the approval is the person's, the step the workflow's: each field says who wrote it
    assert (state.fields["approvals.sales"].system, state.fields["approvals.sales"].actor) == ("HUB", "maria")
    assert (state.fields["status"].system, state.fields["status"].actor) == workflow.WORKFLOW_WRITER
    assert [(a.level, a.decision) for a in state.to_snapshot().approvals] == [("sales", "approved")]


def test_every_required_level_approves_in_any_order_before_approved() -> None:
    state, decisions = decide_all(confirmed("60000.00"), approve("plant", "plant", "plant_manager", 2),
                                  step("early", "APPROVED", 3),
                                  approve("sales", "sales", "sales_manager", 3))
    assert [d.kind for d in decisions] == [DecisionKind.APPLIED, DecisionKind.REJECTED, DecisionKind.APPLIED]
    assert "before sales approved" in decisions[1].rejection.errors[0].message
    assert decisions[0].state.status == "CONFIRMED" and state.status == "APPROVED"


def test_thresholds_by_currency_and_the_amount_fields_in_order() -> None:
    finance = APPROVALS.level("finance")
    assert finance is not None
    assert [lv.name for lv in workflow.required(APPROVALS, {"amounts.gross": "210000.00", "currency": "USD"})] == [
        "sales", "plant"]  # USD's finance threshold is 220,000
    assert [lv.name for lv in workflow.required(APPROVALS, {"amounts.gross": "210000.00", "currency": "JPY"})] == [
        "sales", "plant", "finance"]  # any other currency: "*"
    # no gross yet: the net counts, then what the CRM expected; no amount at all needs nobody
    assert workflow.amount_of(APPROVALS, {"amounts.net": "11000.00", "amounts.crm_expected": "1.00"}) == Decimal("11000.00")
    assert workflow.required(APPROVALS, {}) == ()


def test_only_the_levels_role_approves_and_only_levels_that_exist() -> None:
    state, decisions = decide_all(confirmed("12000.00"), approve("planner", "sales", "planner", 2),
                                  approve("erp-approves", "sales", "connector", 2).model_copy(update={"source_system": "ERP"}),
                                  approve("nolevel", "board", "sales_manager", 2))
    assert [d.kind for d in decisions] == [DecisionKind.REJECTED] * 3
    assert decisions[0].rejection.errors[0].rule == "workflow.approvals.levels: sales is approved by [HUB:sales_manager]"
    assert decisions[2].rejection.errors[0].rule == "workflow.approvals: no level 'board'"
    assert state.status == "CONFIRMED" and state.version == 2


def test_a_refusal_says_why_holds_the_order_and_the_levels_approval_lifts_it() -> None:
    state = confirmed("60000.00")
    state, decisions = decide_all(state, refuse("silent", "plant", "plant_manager", 2, comment=None),
                                  approve("sales", "sales", "sales_manager", 2),
                                  refuse("no", "plant", "plant_manager", 3, comment="no capacity in June"),
                                  step("planner", "RELEASED", 4, system="HUB", role="planner"))
    silent, sales, refused, release = decisions
    assert silent.kind == DecisionKind.REJECTED
    assert silent.rejection.errors[0].message == "approvals.plant: a refusal says why: comment is required"
    assert refused.kind == DecisionKind.APPLIED and refused.state.status == "CONFIRMED"
    assert value_of(state, "on_hold") is True
    assert value_of(state, "hold_reasons") == ["approval refused (plant): no capacity in June"]
    assert release.kind == DecisionKind.REJECTED
    state, (approved,) = decide_all(state, approve("yes", "plant", "plant_manager", 4))
    assert approved.kind == DecisionKind.APPLIED
    assert (value_of(state, "on_hold"), value_of(state, "hold_reasons"), state.status) == (False, [], "APPROVED")


def test_a_refusal_after_approval_sends_the_order_back() -> None:
    state, _ = decide_all(confirmed("12000.00"), approve("ok", "sales", "sales_manager", 2))
    assert state.status == "APPROVED"
    state, (refused,) = decide_all(state, refuse("second-thoughts", "sales", "sales_manager", 3, "customer unpaid"))
    assert refused.kind == DecisionKind.APPLIED
    assert (state.status, value_of(state, "on_hold")) == ("CONFIRMED", True)


def test_an_amount_raised_across_a_threshold_after_approval_asks_for_the_missing_level() -> None:
    state, _ = decide_all(confirmed("12000.00"), approve("ok", "sales", "sales_manager", 2))
    state, decisions = decide_all(state, proposal("raise", {"amounts.gross": Decimal("75000")}, base=3, system="ERP"),
                                  step("release", "RELEASED", 4, system="HUB", role="planner"),
                                  approve("plant", "plant", "plant_manager", 4),
                                  step("release2", "RELEASED", 5, system="HUB", role="planner"))
    raised, early, plant, release = decisions
    assert raised.kind == DecisionKind.APPLIED and raised.state.status == "CONFIRMED"
    assert {d.field for d in raised.change.diffs} == {"amounts.gross", "status"}
    # back in CONFIRMED, a release is no lifecycle step until plant has approved
    assert early.kind == DecisionKind.REJECTED
    assert early.rejection.errors[0].message == "an order cannot go from CONFIRMED to RELEASED"
    assert plant.state.status == "APPROVED"
    assert release.kind == DecisionKind.APPLIED and state.status == "RELEASED" and release.release is not None
    # within the same levels an amount change keeps the approval
    state, (kept,) = decide_all(confirmed("12000.00"), proposal("more", {"amounts.gross": Decimal("13000")}, base=2,
                                                                 system="ERP"))
    assert kept.state.status == "CONFIRMED"


def test_approvals_are_idempotent_and_racing_decisions_of_one_level_wait_for_a_person() -> None:
    state = confirmed("60000.00")
    state, decisions = decide_all(state, approve("sales", "sales", "sales_manager", 2),
                                  approve("sales", "sales", "sales_manager", 2),        # the same event again
                                  approve("plant-a", "plant", "plant_manager", 2, actor_id="pat"),
                                  refuse("plant-b", "plant", "plant_manager", 2))       # same base, another person
    assert [d.kind for d in decisions] == [DecisionKind.APPLIED, DecisionKind.DUPLICATE, DecisionKind.MERGED,
                                           DecisionKind.CONFLICT_PARKED]
    assert decisions[2].state.status == "APPROVED" and state.status == "APPROVED"
    assert decisions[3].conflict.fields[0].field == "approvals.plant"


def test_in_sequence_a_level_waits_for_the_ones_before_it() -> None:
    doc = yaml.safe_load((PROJECT_DIR / "workflow.yaml").read_text())
    doc["approvals"]["order"] = "sequence"
    rules = RULES.with_workflow(Workflow.parse(doc))
    state, decisions = run([approve("plant", "plant", "plant_manager", 2), approve("sales", "sales", "sales_manager", 2),
                            approve("plant2", "plant", "plant_manager", 3)], confirmed("60000.00"), rules=rules)
    assert [d.kind for d in decisions] == [DecisionKind.REJECTED, DecisionKind.APPLIED, DecisionKind.APPLIED]
    assert decisions[0].rejection.errors[0].message == "plant approves after sales"
    assert state.status == "APPROVED"


@pytest.mark.parametrize("change, message", [
    ({"extra": {}}, "unknown sections ['extra']"),
    ({"approvals": {"levels": []}}, "approvals.levels: expected a list"),
    ({"approvals": {"levels": [{"level": "Sales", "role": "x", "above": 1}]}}, "levels[0].level: 'Sales'"),
    ({"approvals": {"levels": [{"level": "a", "role": "x", "above": 1}, {"level": "a", "role": "y", "above": 2}]}},
     "repeated: ['a']"),
    ({"approvals": {"levels": [{"level": "a", "role": "x", "above": {"euro": 1, "*": 2}}]}},
     "'euro' is not an ISO 4217 code"),
    ({"approvals": {"levels": [{"level": "a", "role": "x", "above": {"EUR": 1}}]}}, "give '*' too"),
    ({"approvals": {}}, "approvals.levels: expected a list"),
    ({"approvals": {"amount": [{"a": 1}], "levels": [{"level": "a", "role": "x", "above": 1}]}},
     "is not a money field"),
    ({"approvals": {"levels": [{"level": "a", "role": "x", "above": -5}]}}, "above.*: -5 is not an amount >= 0"),
    ({"approvals": {"amount": "priority", "levels": [{"level": "a", "role": "x", "above": 1}]}},
     "'priority' is not a money field"),
    ({"approvals": {"order": "random", "levels": [{"level": "a", "role": "x", "above": 1}]}}, "'random' is neither"),
    ({"approvals": {"on_refusal": {"status": "RELEASED"}, "levels": [{"level": "a", "role": "x", "above": 1}]}},
     "on_refusal.status: 'RELEASED'"),
    ({"approvals": {"levels": [{"level": "a", "role": "x"}]}}, "expected exactly {level, role, above}"),
])
def test_a_wrong_workflow_file_names_what_is_wrong(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(change))
    with pytest.raises(ConfigError) as raised:
        Workflow.load(path)
    assert str(path) in str(raised.value) and message in str(raised.value)


def test_an_approval_lifts_only_the_hold_the_refusal_set() -> None:
    state, _ = decide_all(confirmed("12000.00"), proposal("hold", {"on_hold": True}, base=2, system="ERP"),
                          refuse("no", "sales", "sales_manager", 3), approve("yes", "sales", "sales_manager", 4))
    # the ERP's hold was there before the refusal: the approval takes its own reason away, not the hold
    assert (value_of(state, "on_hold"), value_of(state, "hold_reasons"), state.status) == (True, [], "CONFIRMED")
    state, (lifted,) = decide_all(state, proposal("unhold", {"on_hold": False}, base=5, system="ERP"))
    assert lifted.state.status == "APPROVED"  # nothing missing, nothing holding: the rules take the step


def test_approvals_only_before_release_never_in_a_creation_and_the_amount_is_kept() -> None:
    state, _ = decide_all(confirmed("12000.00"), approve("ok", "sales", "sales_manager", 2),
                          step("release", "RELEASED", 3, system="HUB", role="planner"))
    assert state.status == "RELEASED"
    state, (late, cleared) = decide_all(state, refuse("late", "sales", "sales_manager", 4),
                                        proposal("clear", {"amounts.gross": None}, base=4, system="ERP"))
    assert late.rejection.errors[0].message == "the order is RELEASED: approvals are decided before it is released"
    assert cleared.rejection.errors[0].rule == "workflow.approvals.amount: the amount is kept once set"
    _, (created,) = run([creation("c", {"approvals.sales": {"decision": "approved"}}, system="HUB", role="sales")],
                        rules=RULES_WF)
    assert "approvals are decided on an existing order, not in its creation" in [
        e.message for e in created.rejection.errors]


def test_a_long_refusal_fits_a_hold_reason_and_a_status_the_rules_overrule_is_refused() -> None:
    state, (refused,) = decide_all(confirmed("12000.00"), refuse("long", "sales", "sales_manager", 2, "x" * 2000))
    (reason,) = value_of(state, "hold_reasons")
    assert len(reason) == 500 and reason.startswith("approval refused (sales): xxx") and reason.endswith("...")
    # the ERP re-sending the hold reasons it sees is still a valid proposal
    state, (echo,) = decide_all(state, proposal("echo", {"hold_reasons": [reason, "credit"]}, base=3, system="ERP"))
    assert echo.kind == DecisionKind.APPLIED
    # a role that both approves a level and takes the step, refusing while stepping: the refusal holds the
    # order, so the step it asked for is refused rather than silently not taken
    doc = yaml.safe_load((PROJECT_DIR / "workflow.yaml").read_text())
    doc["approvals"]["levels"][1]["role"] = "approver"
    rules = RULES.with_workflow(Workflow.parse(doc))
    _, (both,) = run([proposal("both", {"approvals.plant": {"decision": "refused", "comment": "no"},
                                        "status": "APPROVED"}, base=2, system="HUB", role="approver")],
                     confirmed("9000.00"), rules=rules)
    assert both.kind == DecisionKind.REJECTED
    assert [e.message for e in both.rejection.errors] == ["the approvals leave the order CONFIRMED, not APPROVED"]


# --- the property: no sequence of proposals gets past CONFIRMED without the approvals it needs -------

WRITERS = (("ERP", "connector"), ("HUB", "planner"), ("HUB", "approver"), ("HUB", "sales_manager"),
           ("HUB", "plant_manager"), ("HUB", "finance"), ("MES", "connector"))
LEVEL_OF = {"sales_manager": "sales", "plant_manager": "plant", "finance": "finance"}
AMOUNTS = ("5000.00", "12000.00", "60000.00", "250000.00", None)


@st.composite
def moves(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], int]:
    system, role = draw(st.sampled_from(WRITERS))
    kind = draw(st.sampled_from(("status", "amount", "approve", "refuse", "hold")))
    if kind == "status":
        changes = {"status": draw(st.sampled_from(("CONFIRMED", "APPROVED", "RELEASED", "IN_PRODUCTION")))}
    elif kind == "amount":
        amount = draw(st.sampled_from(AMOUNTS))
        changes = {"amounts.gross": None if amount is None else Decimal(amount),
                   "currency": draw(st.sampled_from(("EUR", "USD")))}
    elif kind == "hold":
        changes = {"on_hold": draw(st.booleans())}
    else:
        level = LEVEL_OF.get(role) or draw(st.sampled_from(("sales", "plant", "finance")))
        changes = {f"approvals.{level}": {"decision": "approved"} if kind == "approve"
                   else {"decision": "refused", "comment": "no"}}
    return system, role, changes, draw(st.integers(min_value=0, max_value=2))  # how stale the base is


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(moves(), min_size=1, max_size=25))
def test_no_sequence_reaches_approved_or_released_without_every_required_approval(steps: list) -> None:
    state, _ = run([creation(), proposal("erp", {"amounts.gross": Decimal("60000"), "status": "CONFIRMED"},
                                         base=1, system="ERP")], rules=RULES_WF)
    for index, (system, role, changes, stale) in enumerate(steps):
        before = state
        state, (decision,) = run([proposal(f"p{index}", changes, base=max(0, state.version - stale), system=system,
                                           role=role)], state, rules=RULES_WF)
        values = {path: state.parsed(path) for path in ("status", "currency", *APPROVALS.amount, *APPROVALS.paths)}
        if state.status == "APPROVED":
            assert workflow.missing(APPROVALS, values) == (), (decision.kind, changes)
        if state.status == "RELEASED" and before.status != "RELEASED":
            assert workflow.missing(APPROVALS, values) == (), (decision.kind, changes)
