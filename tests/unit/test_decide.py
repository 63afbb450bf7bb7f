"""Targeted rules of ``decide``: errors, atomic rejection, provenance, conflict records, releases, refs, values, state."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import yaml

from hub.domain.decide import Decision, DecisionKind, decide
from hub.domain.fields import rule_path
from hub.domain.order import HISTORY_DEPTH, DecidedIds, OrderState
from hub.events import (Actor, ChangeProposal, ConflictOutcome, ConflictPolicy, Customer, FieldChange, Instruction, LifecycleStatus,
                        OrderRef, RejectionReason, ReleaseLine, Writer)
from hub.settings import PROJECT_DIR
from tests.domain_helpers import (AT, ORDER_ID, RULES, OrderNumbers, creation, decide_one, proposal, ref, run,
                                  valid_creation, value_of)

OWNERSHIP = yaml.safe_load((PROJECT_DIR / "ownership.yaml").read_text())


def created(**changes) -> OrderState:
    """Version 1 of the test order, created by the CRM with the mandatory fields plus ``changes``."""
    state, (decision,) = run([creation(changes=changes)])
    assert decision.kind == DecisionKind.CREATED, decision.rejection
    return state


def file_rule(path: str) -> str:
    """The refusal text for a field, built straight from ownership.yaml (not from Rules)."""
    spec = OWNERSHIP["fields"][rule_path(path)]
    return f"fields.{rule_path(path)}: owner {spec['owner']}, writers [{', '.join(spec.get('writers', []))}]"


# --- rejections: every field named, nothing half-applied ------------------------------


def test_field_level_errors_name_each_field_and_the_ownership_rule() -> None:
    """A proposal with several bad fields is rejected with one error per field, each naming the field and the rule from ownership.yaml."""
    state = created()
    changes = {"customer.name": "ACME AG", "amounts.net": "99", "actual_end": "2026-03-01T10:00:00Z",
               "lines.10.scrap_quantity": "1", "lines.10.unit": "pieces", "colour": "red"}
    decision = decide_one(state, proposal("sales-1", changes, base=1, system="HUB", role="sales"))
    assert decision.kind == DecisionKind.REJECTED
    errors = {e.field: e for e in decision.rejection.errors}
    assert set(errors) == {"amounts.net", "actual_end", "lines.10.scrap_quantity", "lines.10.unit", "colour"}
    for path in ("amounts.net", "actual_end", "lines.10.scrap_quantity"):
        assert errors[path].rule == file_rule(path)
        assert path in errors[path].message and "HUB:sales" in errors[path].message
    assert errors["lines.10.unit"].rule == "UN/ECE Rec 20 code"
    assert errors["colour"].rule == "known field"
    assert decision.rejection.reason == RejectionReason.INVALID_VALUE  # the first error, in proposal order
    assert decision.rejection.proposal == proposal("sales-1", changes, base=1, system="HUB", role="sales")


def test_creation_names_missing_and_malformed_fields_together() -> None:
    """A creation with a malformed field and a missing mandatory field names both, so the writer fixes them in one go."""
    prop = creation(changes={"lines.10.quantity": "five"})
    prop = prop.model_copy(update={"changes": [c for c in prop.changes if c.field != "customer.id"]})
    decision = decide_one(None, prop)
    assert decision.kind == DecisionKind.REJECTED
    assert {e.field for e in decision.rejection.errors} == {"lines.10.quantity", "customer.id"}


def test_rejection_applies_nothing_but_remembers_the_event() -> None:
    """A rejected proposal leaves version, fields, refs and timestamps as they were, yet its event id is remembered so a replay is a duplicate."""
    state = created()
    prop = proposal("mixed-1", {"contact": "Jane Roe", "customer.name": "ACME AG", "amounts.net": "10"},
                    base=1, system="HUB", role="sales", refs=[("HUB", "Ticket", "T-1")])
    decision = decide_one(state, prop)
    assert decision.kind == DecisionKind.REJECTED
    after = decision.state
    assert (after.version, after.fields, after.external_refs, after.updated_at, after.order_number) == \
        (state.version, state.fields, state.external_refs, state.updated_at, state.order_number)
    assert after.decided == state.decided.remember("mixed-1", "rejected")
    assert (decision.change, decision.snapshot, decision.conflict, decision.release) == (None, None, None, None)
    replay = decide_one(after, prop)
    assert replay.kind == DecisionKind.DUPLICATE and replay.state == after


def test_rejected_proposal_stays_decided_after_the_order_changes() -> None:
    """A proposal rejected for a base version ahead is still a duplicate once the order reaches that version, not applied late."""
    state = created()
    ahead = proposal("ahead", {"contact": "Jane Roe"}, base=2)
    state, decisions = run([ahead, proposal("reach-2", {"customer.name": "ACME AG"}, base=1), ahead], state)
    assert [d.kind for d in decisions] == [DecisionKind.REJECTED, DecisionKind.APPLIED, DecisionKind.DUPLICATE]
    assert state.value("contact") is None and state.version == 2


def test_rejection_for_an_unknown_order_keeps_no_version() -> None:
    """A rejection for an order that does not exist reports no current version and leaves the order at version 0."""
    decision = decide_one(None, proposal("u-1", {"contact": "Jane"}, base=0))
    assert decision.rejection.reason == RejectionReason.UNKNOWN_ORDER
    assert decision.rejection.current_version is None and decision.rejection.order_id == ORDER_ID
    assert decision.state.version == 0 and not decision.state.exists
    assert decision.state.decided == DecidedIds().remember("u-1", "rejected")


# --- creation -------------------------------------------------------------------------


@pytest.mark.parametrize("creator", RULES.create)
def test_every_permitted_creator_can_create_an_order(creator: str) -> None:
    """Each writer ownership.yaml lets create orders can create one carrying just the mandatory fields."""
    system, _, role = creator.partition(":")
    mandatory_only = {p: v for p, v in valid_creation().items() if p != "customer.name"}
    decision = decide_one(None, proposal("c-1", mandatory_only, system=system, role=role or "connector", intent="CREATE"))
    assert decision.kind == DecisionKind.CREATED, decision.rejection and decision.rejection.errors


def test_creation_assigns_one_order_number_and_version_1() -> None:
    """A creation takes exactly one order number and makes version 1 with every field written at version 1,
    the lifecycle status DRAFT included (in the state and in the audit's diffs)."""
    numbers = OrderNumbers(start=123)
    decision = decide_one(None, creation(), numbers)
    state = decision.state
    assert numbers.issued == ["ORD-2026-000123"] == [state.order_number]
    assert state.version == 1 and decision.change.previous_version == 0 and decision.change.base_version == 0
    assert {p: s.version for p, s in state.fields.items()} == {p: 1 for p in [*valid_creation(), "status"]}
    assert state.created_at == state.updated_at == "2026-03-02T09:30:00.000Z"
    assert [d.before for d in decision.change.diffs] == [None] * (len(valid_creation()) + 1)
    assert {d.field: d.after for d in decision.change.diffs}["status"] == '"DRAFT"'
    assert decision.snapshot.status == "DRAFT"
    assert decision.change.record_id == "create-1:change" and decision.change.accepted_at == AT



def test_the_reference_a_creation_names_the_order_by_is_its_first_cross_reference() -> None:
    """Created by CRM/Opportunity/OPP-9 without listing it: the order still knows OPP-9, once, first."""
    opp, erp = ref("CRM", "Opportunity", "OPP-9"), ref("CRM", "Account", "ACC-1")
    named = creation().model_copy(update={"order_ref": OrderRef(external=opp)})

    def create(prop: ChangeProposal) -> Decision:
        return decide(None, prop, order_id=ORDER_ID, rules=RULES, at=AT, next_order_number=OrderNumbers())

    decision = create(named.model_copy(update={"external_refs": [erp, opp]}))
    assert decision.state.external_refs == (opp, erp) and decision.change.external_refs_added == [opp, erp]
    assert create(named).state.external_refs == (opp,)
    assert decide_one(None, creation(refs=[erp])).state.external_refs == (erp,)  # named by order id: nothing more


def test_a_creation_under_another_systems_reference_is_refused_unless_from_the_hub() -> None:
    """ERP may not create an order under a CRM opportunity (it names its own ids); the hub's UI may."""
    opp = ref("CRM", "Opportunity", "OPP-10")
    for system, role, kind in (("ERP", "connector", DecisionKind.REJECTED), ("HUB", "sales", DecisionKind.CREATED)):
        prop = creation(system=system, role=role).model_copy(update={"order_ref": OrderRef(external=opp)})
        decision = decide(None, prop, order_id=ORDER_ID, rules=RULES, at=AT, next_order_number=OrderNumbers())
        assert decision.kind == kind, system
    assert [(e.field, e.rule) for e in decision_errors(("ERP", "connector"), opp)] == [("order_ref", "own references only")]


def decision_errors(writer: tuple[str, str], named) -> list:
    prop = creation(system=writer[0], role=writer[1]).model_copy(update={"order_ref": OrderRef(external=named)})
    return decide(None, prop, order_id=ORDER_ID, rules=RULES, at=AT, next_order_number=OrderNumbers()).rejection.errors


def test_an_update_to_an_unknown_order_names_the_reference_it_was_sent_by() -> None:
    prop = proposal("u-9", {"customer.name": "X"}, base=1).model_copy(
        update={"order_ref": OrderRef(external=ref("CRM", "Opportunity", "OPP-NOPE"))})
    decision = decide(None, prop, order_id="c811d56a", rules=RULES, at=AT, next_order_number=OrderNumbers())
    assert decision.rejection.errors[0].message == "no order CRM/Opportunity/OPP-NOPE; only a CREATE proposal makes one"

# --- provenance per field -------------------------------------------------------------


def test_each_field_keeps_the_version_writer_and_history_of_its_last_change() -> None:
    """Every field records the version at which it last changed and who changed it; an equal write is UNCHANGED and moves nothing."""
    state = created()
    state, decisions = run([
        proposal("u2", {"customer.name": "ACME AG"}, base=1, system="HUB", role="sales", actor_id="sam"),
        proposal("u3", {"contact": "Jane Roe"}, base=2),
        proposal("u4", {"customer.name": "ACME AG", "lines.10.quantity": "5.0"}, base=3),
        proposal("u5", {"customer.name": "ACME SE"}, base=3, actor_id="carla"),
    ], state)
    assert [d.state.version for d in decisions] == [2, 3, 3, 4]
    assert decisions[2].kind == DecisionKind.UNCHANGED and decisions[2].change is None
    assert (decisions[2].answer.outcome.value, decisions[2].answer.version, decisions[2].answer.made_version) == \
        ("UNCHANGED", 3, None)
    name = state.fields["customer.name"]
    assert (name.version, name.system, name.actor) == (4, "CRM", "carla")
    assert name.earlier == ((2, '"ACME AG"'), (1, '"ACME GmbH"'))
    assert name.value_at(1) == '"ACME GmbH"' and name.value_at(3) == '"ACME AG"' and name.value_at(0) is None
    assert state.fields["contact"].version == 3
    assert state.fields["lines.10.quantity"].version == 1
    assert state.fields["customer.id"].version == 1


def test_field_history_is_bounded() -> None:
    """A field keeps at most HISTORY_DEPTH earlier values, newest first."""
    state = created()
    names = [f"Name {n}" for n in range(2, 2 + HISTORY_DEPTH + 2)]
    state, _ = run([proposal(f"u{n}", {"customer.name": name}, base=n - 1) for n, name in enumerate(names, 2)], state)
    earlier = state.fields["customer.name"].earlier
    assert len(earlier) == HISTORY_DEPTH
    assert [v for v, _ in earlier] == list(range(state.version - 1, state.version - 1 - HISTORY_DEPTH, -1))


def test_a_conflict_says_when_its_base_value_is_older_than_the_kept_history() -> None:
    """Base value null because unknown (base_value_known false) is not the same as a base that was empty."""
    state = created()
    names = [f"Name {n}" for n in range(2, 2 + HISTORY_DEPTH + 2)]
    state, _ = run([proposal(f"u{n}", {"customer.name": name}, base=n - 1, system="HUB", role="sales")
                    for n, name in enumerate(names, 2)], state)
    deep = decide_one(state, proposal("stale", {"customer.name": "Mine"}, base=1, system="ERP")).conflict.fields[0]
    assert (deep.base_value, deep.base_value_known) == (None, False)
    recent = decide_one(state, proposal("fresh", {"customer.name": "Mine"}, base=state.version - 1,
                                        system="ERP")).conflict.fields[0]
    assert (recent.base_value, recent.base_value_known) == (f'"{names[-2]}"', True)
    fresh = created()
    fresh, _ = run([proposal("c1", {"contact": "Jane"}, base=1, system="HUB", role="sales")], fresh)
    (empty,) = decide_one(fresh, proposal("e", {"contact": "Joe"}, base=1, system="HUB", role="sales",
                                          actor_id="kim")).conflict.fields
    assert (empty.base_value, empty.base_value_known) == (None, True)  # contact really was empty at v1


# --- conflicts ------------------------------------------------------------------------


def test_a_writer_supersedes_its_own_value_changed_since_its_base() -> None:
    """An offline writer's queued edits all carry the base it last saw: its later edit of a field it
    changed itself since is applied, not a conflict; another writer of the same system still conflicts."""
    state = created()
    state, (first, again, other) = run([
        proposal("po-1", {"customer_po_number": "PO-1"}, base=1, system="CRM", actor_id="anna"),
        proposal("po-2", {"customer_po_number": "PO-2"}, base=1, system="CRM", actor_id="anna"),
        proposal("po-3", {"customer_po_number": "PO-3"}, base=1, system="CRM", actor_id="ben"),
    ], state)
    assert (first.kind, again.kind) == (DecisionKind.APPLIED, DecisionKind.MERGED) and again.conflict is None
    assert other.conflict is not None and other.conflict.fields[0].current_writer.actor_id == "anna"


def test_conflict_record_carries_base_current_proposed_both_writers_policy_and_outcome() -> None:
    """A conflict is recorded whole: the value at the writer's base, the current and proposed values, who wrote each, the policy and the outcome."""
    state = created()
    state, _ = run([
        proposal("u2", {"customer.name": "ACME AG"}, base=1),                                     # v2, CRM
        proposal("u3", {"customer.name": "Acme Inc"}, base=2, system="HUB", role="sales", actor_id="sam"),  # v3
    ], state)
    late = proposal("crm-late", {"customer.name": "ACME SE", "contact": "Jane"}, base=2, actor_id="carla")
    decision = decide_one(state, late)
    assert decision.kind == DecisionKind.RESOLVED
    conflict = decision.conflict
    assert (conflict.record_id, conflict.event_id, conflict.order_id, conflict.order_number) == \
        ("crm-late:conflict", "crm-late", ORDER_ID, state.order_number)
    assert (conflict.base_version, conflict.current_version, conflict.parked, conflict.resulting_version) == (2, 3, False, 4)
    assert conflict.decided_at == AT and conflict.proposal == late
    (field,) = conflict.fields
    assert field.field == "customer.name"
    assert (field.base_value, field.current_value, field.proposed_value) == ('"ACME AG"', '"Acme Inc"', '"ACME SE"')
    assert field.current_writer == Writer(source_system="HUB", actor_id="sam", version=3)
    assert field.proposed_writer == Writer(source_system="CRM", actor_id="carla", version=2)
    assert (field.owner, field.policy, field.outcome) == ("CRM", ConflictPolicy.OWNER_WINS, ConflictOutcome.PROPOSED_WON)
    assert decision.change.version == 4 and decision.change.outcome.value == "RESOLVED"
    assert {d.field: d.after for d in decision.change.diffs} == {"customer.name": '"ACME SE"', "contact": '"Jane"'}


def test_status_never_conflicts() -> None:
    """A status step from a stale base is checked as a step against the current status, never reported as a conflict."""
    state = created()
    state, _ = run([proposal("confirm", {"status": "CONFIRMED"}, base=1)], state)
    decision = decide_one(state, proposal("approve", {"status": "APPROVED"}, base=1, system="ERP"))
    assert decision.kind == DecisionKind.MERGED and decision.conflict is None
    assert decision.state.status == "APPROVED"


def test_parked_proposal_applies_nothing_of_its_clean_fields() -> None:
    """A parked proposal changes no field, not even those that would merge cleanly, and attaches no refs."""
    state = created()
    state, _ = run([proposal("rev", {"lines.10.material.revision": "B"}, base=1, system="ERP")], state)
    prop = proposal("rev-crm", {"lines.10.material.revision": "C", "contact": "Jane"}, base=1,
                    refs=[("CRM", "Opportunity", "OPP-9")])
    decision = decide_one(state, prop)
    assert decision.kind == DecisionKind.CONFLICT_PARKED and decision.change is None
    assert decision.state.fields == state.fields and decision.state.external_refs == state.external_refs
    assert decision.conflict.parked and decision.conflict.fields[0].policy == ConflictPolicy.MANUAL


# --- the release ----------------------------------------------------------------------


def test_release_record_is_emitted_exactly_when_the_status_becomes_released() -> None:
    """Only the decision that moves the order to RELEASED emits a release, carrying what the MES needs to build it."""
    state = created(**{"lines.2.material.id": "MAT-2", "lines.2.quantity": "1.5", "lines.2.unit": "kgm",
                       "lines.2.material.revision": "B"})
    steps = [
        proposal("confirm", {"status": "CONFIRMED"}, base=1),
        proposal("approve", {"status": "APPROVED", "priority": 7}, base=2, system="ERP"),
        proposal("early-start", {"status": "IN_PRODUCTION"}, base=3, system="MES"),            # rejected
        proposal("release", {"status": "RELEASED", "plant": "P1"}, base=3, system="HUB", role="planner"),
        proposal("re-release", {"status": "RELEASED"}, base=4, system="HUB", role="planner"),  # no change
        proposal("plan", {"planned_start": "2026-03-10T06:00:00Z"}, base=4, system="MES"),
        proposal("start", {"status": "IN_PRODUCTION"}, base=6, system="MES"),
    ]
    state, decisions = run(steps, state)
    released = [d for d in decisions if d.release is not None]
    assert [d.change.event_id for d in released] == ["release"]
    release = released[0].release
    assert release.record_id == "release:release" and release.version == 4 and release.released_at == AT
    assert (release.order_number, release.priority, release.plant, release.requested_delivery) == \
        (state.order_number, 7, "P1", dt.date(2026, 12, 1))
    assert release.instructions == [Instruction(key="coating", text="zinc")]
    assert release.lines == [
        ReleaseLine(line_no=2, material_id="MAT-2", material_revision="B", quantity=Decimal("1.500"), unit="KGM"),
        ReleaseLine(line_no=10, material_id="MAT-100", material_revision=None, quantity=Decimal("5.000"), unit="C62"),
    ]
    replay = decide_one(state, steps[3])
    assert replay.kind == DecisionKind.DUPLICATE and replay.release is None


def test_release_is_emitted_by_a_resolved_decision_too() -> None:
    """A proposal that releases the order while one of its other fields conflicts still emits the release."""
    state = created()
    state, _ = run([proposal("confirm", {"status": "CONFIRMED"}, base=1),
                    proposal("approve", {"status": "APPROVED", "plant": "P1"}, base=2, system="ERP")], state)
    decision = decide_one(state, proposal("release", {"status": "RELEASED", "plant": "P2"}, base=2,
                                          system="HUB", role="planner"))
    assert decision.kind == DecisionKind.RESOLVED
    assert decision.conflict.fields[0].outcome == ConflictOutcome.CURRENT_KEPT
    assert decision.release is not None and decision.release.plant == "P1"


# --- external references --------------------------------------------------------------


def test_external_refs_are_merged_without_duplicates() -> None:
    """External references are attached once per (system, object type, id), in arrival order, and only new ones are reported."""
    opp, opp_again = ref("CRM", "Opportunity", "OPP-1"), ref("CRM", "Opportunity", "OPP-1", "Big deal")
    so = ref("ERP", "A_SalesOrder", "4711")
    state, decisions = run([
        creation(refs=[opp, opp]),
        proposal("erp-1", {}, base=1, system="HUB", role="sales", refs=[opp_again, so, so]),
        proposal("erp-2", {}, base=2, system="ERP", refs=[so]),
        proposal("kept-with-ref", {"customer.name": "Acme Inc"}, base=0, system="HUB", role="sales",
                 intent="CREATE", refs=[ref("HUB", "Ticket", "T-1")]),
    ])
    assert decisions[0].change.external_refs_added == [opp]
    assert decisions[1].change.external_refs_added == [so]
    assert decisions[2].kind == DecisionKind.UNCHANGED and decisions[2].state.version == 2
    assert decisions[3].kind == DecisionKind.RESOLVED and decisions[3].change.diffs == []
    assert state.external_refs == (opp, so, ref("HUB", "Ticket", "T-1"))
    assert decisions[3].snapshot.external_refs == list(state.external_refs)


def test_a_writer_attaches_only_its_own_references() -> None:
    """ERP attaching a CRM reference is refused whole, naming the rule; the hub's own UI may attach any."""
    state, decisions = run([
        creation(),
        proposal("erp-1", {"amounts.net": "10"}, base=1, system="ERP", refs=[ref("CRM", "Opportunity", "OPP-9")]),
        proposal("hub-1", {}, base=1, system="HUB", role="sales", refs=[ref("CRM", "Opportunity", "OPP-9")]),
    ])
    assert decisions[1].kind == DecisionKind.REJECTED
    assert [(e.field, e.rule) for e in decisions[1].rejection.errors] == [("external_refs", "own references only")]
    assert decisions[2].kind == DecisionKind.APPLIED and state.version == 2


# --- canonical values -----------------------------------------------------------------


@pytest.mark.parametrize("path, first, second, canonical", [
    ("lines.10.quantity", "6", "6.000", '"6.000"'),
    ("lines.10.quantity", 6, "6.0", '"6.000"'),
    ("lines.10.unit", "kgm", "KGM", '"KGM"'),
    ("customer.name", " ACME AG", "ACME AG ", '"ACME AG"'),
    ("requested_delivery", "20261215", "2026-12-15", '"2026-12-15"'),
    ("amounts.crm_expected", "10.5", "10.50", '"10.50"'),
    ("amounts.crm_expected", "0", "-0", '"0.00"'),
])
def test_equal_values_spelled_differently_converge(path: str, first, second, canonical: str) -> None:
    """Two writers setting the same value from the same base, spelled differently, converge on one canonical value: the second is UNCHANGED, not a conflict."""
    state = created()
    state, (a, b) = run([
        proposal("sales", {path: first}, base=1, system="HUB", role="sales"),
        proposal("crm", {path: second}, base=1, system="CRM"),
    ], state)
    assert a.kind == DecisionKind.APPLIED and a.state.value(path) == canonical
    assert b.kind == DecisionKind.UNCHANGED, f"{b.kind.value}: {b.conflict and b.conflict.fields}"
    assert b.conflict is None and b.change is None and b.answer.version == 2
    assert state.value(path) == canonical and state.fields[path].version == 2


@pytest.mark.parametrize("path, value, system", [
    ("amounts.net", "12.345", "ERP"),
    ("lines.10.quantity", "1.0005", "CRM"),
    ("lines.10.unit_price", "0.00001", "ERP"),
])
def test_decimals_with_more_places_than_the_field_holds_are_rejected(path: str, value: str, system: str) -> None:
    """A decimal with more places than its field's scale is rejected as invalid rather than silently rounded."""
    decision = decide_one(created(), proposal("too-precise", {path: value}, base=1, system=system))
    assert decision.kind == DecisionKind.REJECTED, f"accepted as {decision.state.value(path)}"
    assert decision.rejection.errors[0].field == path


@pytest.mark.parametrize("path, text", [
    ("customer.name", '"ACME \\ud800"'),
    ("hold_reasons", '["QA", "\\udfff"]'),
    ("instructions", '[{"key": "coating", "text": "zinc \\ud83d"}]'),
])
def test_text_with_a_lone_surrogate_is_rejected(path: str, text: str) -> None:
    """JSON can spell half of a surrogate pair alone; such a text could be neither published nor stored,
    so it is refused with its field named, and the order stays as it was."""
    prop = proposal("odd-text", {"contact": "Jane"}, base=1)
    prop = prop.model_copy(update={"changes": [FieldChange(field=path, value=text)]})
    decision = decide_one(created(), prop)
    assert decision.kind == DecisionKind.REJECTED
    (error,) = decision.rejection.errors
    assert error.field == path and error.message.startswith(f"{path}: not Unicode text: a lone surrogate '\\ud")
    assert OrderState.from_table(decision.state.to_table()) == decision.state
    fine = prop.model_copy(update={"event_id": "fine", "changes": [FieldChange(field="customer.name",
                                                                                value='"ACME \\ud83d\\ude00"')]})
    assert decide_one(created(), fine).state.parsed("customer.name") == "ACME \U0001F600"


# --- the state in the table, and the snapshot -----------------------------------------


def busy_state() -> OrderState:
    """An order with history, a conflict behind it, cleared fields, refs and two lines."""
    state = created(**{"lines.2.material.id": "MAT-2", "lines.2.quantity": "2", "lines.2.unit": "KGM"})
    state, decisions = run([
        proposal("net", {"amounts.net": "100", "currency": "eur", "lines.10.unit_price": "20"}, base=1, system="ERP",
                 refs=[("ERP", "A_SalesOrder", "4711", "SO 4711")]),
        proposal("po", {"customer_po_number": "PO-1", "contact": "Jane"}, base=2, system="HUB", role="sales"),
        proposal("po-crm", {"customer_po_number": "PO-2", "contact": None}, base=2, actor_id="ünï"),
        proposal("confirm", {"status": "CONFIRMED", "instructions": ["deburr", {"key": "ph", "text": "7"}]}, base=4),
        proposal("hold", {"on_hold": True, "hold_reasons": ["QA"], "planned_start": "2026-04-01T08:00:00.1234+02:00"},
                 base=5, system="MES"),
    ], state)
    assert all(d.accepted for d in decisions), [d.rejection for d in decisions]
    return state


def test_state_survives_its_table_value() -> None:
    """An order state written as its table value and read back is equal to the original, history and dedup ids included."""
    state = busy_state()
    again = OrderState.from_table(state.to_table())
    assert again == state
    assert again.to_dict() == state.to_dict()
    assert again.fields["customer_po_number"].earlier == state.fields["customer_po_number"].earlier != ()
    empty = OrderState(order_id="O-9", decided=DecidedIds.of([("x", "rejected", None), ("y", "applied", 3)]))
    assert OrderState.from_table(empty.to_table()) == empty


def test_snapshot_has_the_canonical_order_shape() -> None:
    """The snapshot nests fields by path, types their values, orders lines by number and omits cleared fields."""
    state = busy_state()
    snap = state.to_snapshot()
    assert (snap.order_id, snap.order_number, snap.version) == (ORDER_ID, state.order_number, state.version)
    assert snap.status == LifecycleStatus.CONFIRMED
    assert snap.customer == Customer(id="C-100", name="ACME GmbH")
    assert snap.amounts.net == Decimal("100.00") and snap.amounts.tax is None
    assert snap.currency == "EUR" and snap.customer_po_number == "PO-2" and snap.contact is None
    assert snap.requested_delivery == dt.date(2026, 12, 1)
    assert snap.planned_start == dt.datetime(2026, 4, 1, 6, 0, 0, 123000, tzinfo=dt.timezone.utc)
    assert snap.on_hold is True and snap.hold_reasons == ["QA"]
    assert snap.instructions == [Instruction(key=None, text="deburr"), Instruction(key="ph", text="7")]
    assert [line.line_no for line in snap.lines] == [2, 10]
    assert snap.lines[1].material.id == "MAT-100" and snap.lines[1].quantity == Decimal("5.000")
    assert snap.lines[1].unit_price == Decimal("20.0000") and snap.lines[0].unit_price is None
    assert snap.priority == 0
    assert [r.external_id for r in snap.external_refs] == ["4711"]
    assert snap.created_at == AT and snap.updated_at == AT
    assert value_of(state, "amounts.net") == "100.00"


def test_decisions_are_deterministic() -> None:
    """Deciding the same proposals from scratch twice gives equal records and states, so record ids dedup downstream."""
    props = [creation(), proposal("u", {"contact": "Jane"}, base=1), proposal("bad", {"amounts.net": "1"}, base=1)]
    first, second = run(props), run(props)
    assert first[0] == second[0]
    assert [(d.change, d.rejection) for d in first[1]] == [(d.change, d.rejection) for d in second[1]]
    assert [d.change.record_id for d in first[1][:2]] == ["create-1:change", "u:change"]
    assert first[1][2].rejection.record_id == "bad:rejection"
    assert first[1][1].change.actor == Actor(id="crm-connector", role="connector")
