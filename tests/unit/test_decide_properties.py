"""Properties of ``decide`` over generated interleavings of proposals from several writers for a few orders.

Each example builds proposals while folding them (a base version is chosen relative to the order's
version at that moment: current, stale, or one ahead), and checks the decisions against a model
kept by the test itself from the accepted diffs alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hub.domain.decide import Decision, DecisionKind
from hub.domain.fields import STATUS_PATH, kind_of
from hub.domain.lifecycle import LIFECYCLE
from hub.domain.order import OrderState
from hub.domain.rules import MANUAL
from hub.events import ChangeProposal, ConflictOutcome, ProposalIntent
from tests.domain_helpers import RULES, OrderNumbers, decide_one, proposal, ref, valid_creation

ORDERS = ("A", "B")
#: Writers with roles they really have; several may write the same fields, so conflicts happen.
WRITERS = (("CRM", "connector"), ("ERP", "connector"), ("MES", "connector"), ("MES", "supervisor"),
           ("HUB", "sales"), ("HUB", "planner"), ("HUB", "approver"), ("HUB", "sales_manager"), ("EDI", "connector"))
CREATORS = (("CRM", "connector"), ("EDI", "connector"), ("HUB", "sales"))
#: Small pools so writers collide: equal values spelled differently, and some invalid ones.
VALUES: dict[str, list[Any]] = {
    "customer.name": ["ACME GmbH", " ACME GmbH ", "ACME AG", "Acme Inc"],
    "contact": ["Jane", "Joe", None],
    "customer_po_number": ["PO-1", "PO-2"],
    "amounts.net": ["100", "100.00", "250.5"],
    "amounts.crm_expected": ["90", "95.00"],
    "requested_delivery": ["2026-12-01", "2026-12-15", None],             # None: a mandatory field cleared
    "priority": [0, 5, 40000],                                            # 40000: not an Int16
    "instructions": [[{"key": "coating", "text": "zinc"}], ["deburr"], []],  # []: mandatory, empty
    "plant": ["P1", "P2"],
    "on_hold": [True, False],
    "hold_reasons": [["QA"], []],
    "planned_start": ["2026-04-01T08:00:00Z", "2026-04-01T10:00:00+02:00", "2026-04-02T08:00:00Z"],
    "lines.10.quantity": ["5", "5.000", 7, "0"],                          # "0": quantities are > 0
    "lines.10.unit": ["C62", "c62", "KGM", "kilogram"],
    "lines.10.material.revision": ["A", "B"],
    "lines.10.good_quantity": ["1", "2.0"],
    "lines.20.material.id": ["MAT-200"],
    "lines.20.quantity": ["3"],
    "lines.20.unit": ["KGM"],
    STATUS_PATH: list(LIFECYCLE),
    "colour": ["red"],                                                    # not a field of the order
}
#: Fields several writers may write are drawn more often, so their changes overlap.
SHARED = ("customer.name", "contact", "customer_po_number", "instructions", "priority", "on_hold", "plant",
          "lines.10.quantity", "lines.10.unit", "lines.10.material.revision", "requested_delivery")
PATHS = sorted(VALUES) + [p for p in SHARED for _ in range(5)]
REFS = (ref("CRM", "Opportunity", "OPP-1"), ref("ERP", "A_SalesOrder", "4711"), ref("EDI", "ORDERS", "PO-1"))


@dataclass(frozen=True)
class Propose:
    """A writer proposes changes to an order; the base is chosen when the proposal is built."""

    order: int
    writer: int
    create: bool
    base_back: int      # 0: one ahead of the current version; 1: current; more: stale
    changes: dict[str, int]
    in_lane: bool       # keep only fields the writer may write (invalid values and status steps stay)
    refs: tuple[int, ...]


@dataclass(frozen=True)
class Redeliver:
    """An earlier proposal delivered again."""

    which: int


proposals_ = st.builds(
    Propose,
    order=st.integers(0, len(ORDERS) - 1),
    writer=st.sampled_from([0, 0, 0, 1, 1, 1, 2, 3, 4, 4, 5, 5, 6, 7, 8]),  # owners CRM and ERP more often
    create=st.sampled_from([False] * 9 + [True]),
    base_back=st.sampled_from([1, 1, 1, 2, 2, 3, 3, 4, 6, 0]),
    changes=st.dictionaries(st.sampled_from(PATHS), st.integers(0, 9), max_size=4),
    in_lane=st.sampled_from([True, True, True, False]),
    refs=st.lists(st.integers(0, len(REFS) - 1), max_size=2).map(tuple),
)
redeliveries_ = st.builds(Redeliver, st.integers(0, 10**6))
#: About one action in five redelivers an earlier proposal.
actions_ = st.lists(st.integers(0, 4).flatmap(lambda n: redeliveries_ if n == 4 else proposals_),
                    min_size=6, max_size=30)
openings_ = st.tuples(*[st.integers(0, len(CREATORS) - 1) for _ in ORDERS])


@dataclass
class OrderModel:
    """The test's own account of one order, kept from accepted diffs only."""

    version: int = 0
    values: dict[str, str | None] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    writers: dict[str, str] = field(default_factory=dict)
    actors: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    change_versions: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Run:
    """One fold: every delivered proposal with its decision, and the final states."""

    delivered: list[tuple[ChangeProposal, OrderState | None, Decision]]
    states: dict[str, OrderState]
    numbers: OrderNumbers


def build(action: Propose, state: OrderState | None, event_id: str) -> ChangeProposal:
    """The proposal an action describes, against the order's current version."""
    system, role = WRITERS[action.writer]
    changes = {p: VALUES[p][i % len(VALUES[p])] for p, i in action.changes.items()
               if not action.in_lane or p == STATUS_PATH or (kind_of(p) and RULES.may_write(p, system, role) is None)}
    if action.create:
        changes = {**valid_creation(), **changes}
    version = state.version if state else 0
    base = 0 if action.create else max(0, version + 1 - action.base_back)
    return proposal(event_id, changes, base=base, system=system, role=role, order_id=ORDERS[action.order],
                    intent=ProposalIntent.CREATE if action.create else ProposalIntent.UPDATE,
                    refs=[REFS[i] for i in action.refs])


def fold(openings: tuple[int, ...], actions: list[Propose | Redeliver]) -> Run:
    """Decide the opening creations and then every action, in order."""
    numbers = OrderNumbers()
    states: dict[str, OrderState] = {}
    built: list[ChangeProposal] = []
    delivered = []
    plan = [Propose(n, WRITERS.index(CREATORS[c]), True, 1, {}, True, ()) for n, c in enumerate(openings)] + actions
    for action in plan:
        if isinstance(action, Redeliver):
            if not built:
                continue
            prop = built[action.which % len(built)]
        else:
            prop = build(action, states.get(ORDERS[action.order]), f"e{len(built)}")
            built.append(prop)
        order_id = prop.order_ref.order_id
        before = states.get(order_id)
        decision = decide_one(before, prop, numbers)
        states[order_id] = decision.state
        delivered.append((prop, before, decision))
    return Run(delivered, states, numbers)


def canonical_changes(prop: ChangeProposal) -> dict[str, str | None]:
    """The proposal's values in canonical form (only called for proposals that were not rejected)."""
    return {c.field: kind_of(c.field).canonical(c.value) for c in prop.changes}


def expected_outcome(path: str, prop: ChangeProposal, model: OrderModel) -> ConflictOutcome:
    """The conflict policy as the module docstring states it, computed from the model."""
    owner = RULES.owner(path)
    if RULES.policy(path) == MANUAL:
        return ConflictOutcome.PARKED
    if prop.source_system == owner:
        return ConflictOutcome.PROPOSED_WON
    if model.writers[path] == owner:
        return ConflictOutcome.CURRENT_KEPT
    return ConflictOutcome.PARKED


def check_against_model(run: Run) -> dict[str, OrderModel]:
    """Walk the decisions with an independent model, asserting outcomes, conflicts and diffs on the way."""
    models = {order_id: OrderModel() for order_id in ORDERS}
    for prop, before, decision in run.delivered:
        model = models[prop.order_ref.order_id]
        where = f"{prop.event_id} {decision.kind.value}"
        event(f"decision: {decision.kind.value}")
        records = (decision.change, decision.conflict, decision.rejection)

        # Duplicates yield nothing; everything else yields exactly one outcome (RESOLVED: change and conflict).
        if prop.event_id in model.seen:
            assert decision.kind == DecisionKind.DUPLICATE, where
            assert records == (None, None, None) and decision.release is None, where
            assert decision.state == before, where
            continue
        model.seen.add(prop.event_id)
        assert decision.kind != DecisionKind.DUPLICATE, where
        present = tuple(r is not None for r in records)
        expected_present = {
            DecisionKind.CREATED: (True, False, False), DecisionKind.APPLIED: (True, False, False),
            DecisionKind.MERGED: (True, False, False), DecisionKind.RESOLVED: (True, True, False),
            DecisionKind.CONFLICT_PARKED: (False, True, False), DecisionKind.CONFLICT_KEPT: (False, True, False),
            DecisionKind.REJECTED: (False, False, True), DecisionKind.UNCHANGED: (False, False, False),
        }[decision.kind]
        assert decision.answer is not None and decision.answer.event_id == prop.event_id, where
        assert decision.answer.outcome.value == decision.kind.value.upper(), where
        assert present == expected_present, where
        if decision.kind == DecisionKind.REJECTED:
            continue

        # A conflict exactly where the overlap rule says: changed since the base, proposed to another value.
        proposed = canonical_changes(prop)
        existed = model.version > 0
        base = 0 if prop.intent == ProposalIntent.CREATE else prop.base_version
        expected_conflicts = {
            path for path, value in proposed.items()
            if existed and path != STATUS_PATH and value != model.values.get(path) and model.versions.get(path, 0) > base
            and (model.writers.get(path), model.actors.get(path)) != (prop.source_system, prop.actor.id)
        }
        got = {c.field: c for c in decision.conflict.fields} if decision.conflict else {}
        assert set(got) == expected_conflicts, where
        for path, conflict in got.items():
            event(f"conflict: {conflict.outcome.value}")
            assert conflict.current_value == model.values.get(path) and conflict.proposed_value == proposed[path], where
            assert conflict.outcome == expected_outcome(path, prop, model), f"{where} {path}"
        parked = any(c.outcome == ConflictOutcome.PARKED for c in got.values())
        assert (decision.kind == DecisionKind.CONFLICT_PARKED) == parked, where
        if decision.kind == DecisionKind.UNCHANGED:  # nothing it sets differs from the current values
            assert all(value == model.values.get(path) for path, value in proposed.items()), where
            assert decision.answer.version == model.version and decision.answer.made_version is None, where
        if not decision.accepted:
            continue

        # Nothing clean is dropped: every changed field not lost to a conflict is in the diffs, with its true before.
        change = decision.change
        expected_diffs = {
            path for path, value in proposed.items()
            if value != model.values.get(path) and (path not in got or got[path].outcome == ConflictOutcome.PROPOSED_WON)
        }
        if not existed:  # a creation writes every value it names, and the lifecycle starts at DRAFT
            if proposed.get(STATUS_PATH) is None:
                proposed[STATUS_PATH] = '"DRAFT"'
            expected_diffs = {p for p, v in proposed.items() if v is not None}
        assert {d.field for d in change.diffs} == expected_diffs, where
        assert change.diffs or change.external_refs_added, f"{where}: a version that changes nothing"
        assert change.version == model.version + 1 and change.previous_version == model.version, where
        for diff in change.diffs:
            assert diff.before == model.values.get(diff.field), where
            assert diff.after == proposed[diff.field], where
            model.values[diff.field] = diff.after
            model.versions[diff.field] = change.version
            model.writers[diff.field] = prop.source_system
            model.actors[diff.field] = prop.actor.id
        model.version = change.version
        model.change_versions.append((change.previous_version, change.version))
    return models


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(openings=openings_, actions=actions_)
def test_versions_are_gapless_and_no_accepted_change_is_lost(openings, actions) -> None:
    """Each order's accepted changes are versions 1..N in order, and its final fields equal the accepted diffs applied in order."""
    run = fold(openings, actions)
    models = check_against_model(run)
    for order_id, model in models.items():
        state = run.states.get(order_id)
        versions = [v for _, v in model.change_versions]
        assert versions == list(range(1, len(versions) + 1))
        assert all(previous == v - 1 for previous, v in model.change_versions)
        assert (state.version if state else 0) == len(versions)
        if state is None:
            continue
        assert set(state.fields) == set(model.values)
        for path, field_state in state.fields.items():
            assert field_state.value == model.values[path], path
            assert field_state.version == model.versions[path], path
            assert field_state.system == model.writers[path], path
    assert len(run.numbers.issued) == sum(1 for m in models.values() if m.version > 0)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(openings=openings_, actions=actions_)
def test_every_new_proposal_has_one_outcome_and_conflicts_follow_the_overlap_rule(openings, actions) -> None:
    """Every non-duplicate proposal yields exactly one outcome, duplicates none, and a conflict names exactly the fields changed since the base to another value."""
    check_against_model(fold(openings, actions))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(openings=openings_, actions=actions_, replays=st.lists(st.none() | st.integers(0, 10**6), max_size=40))
def test_replaying_any_prefix_changes_nothing(openings, actions, replays) -> None:
    """Replaying a prefix of the delivered proposals, interleaved with the run or after it, decides only duplicates and changes no state."""
    original = fold(openings, actions)
    delivered = [prop for prop, _, _ in original.delivered]

    # After the full run: every prefix, in order, is all duplicates against the final states.
    states = dict(original.states)
    for prop in delivered:
        decision = decide_one(states[prop.order_ref.order_id], prop, original.numbers)
        assert decision.kind == DecisionKind.DUPLICATE, prop.event_id
        assert decision.state == states[prop.order_ref.order_id]

    # Interleaved: after delivery i, replay deliveries 0..r (r <= i); then the rest of the run decides as before.
    numbers = OrderNumbers()
    states = {}
    for i, (prop, _, first) in enumerate(original.delivered):
        order_id = prop.order_ref.order_id
        decision = decide_one(states.get(order_id), prop, numbers)
        assert (decision.kind, decision.change, decision.conflict, decision.rejection, decision.release) == \
            (first.kind, first.change, first.conflict, first.rejection, first.release), prop.event_id
        states[order_id] = decision.state
        pick = replays[i] if i < len(replays) else None
        if pick is None:
            continue
        for earlier in delivered[: pick % (i + 1) + 1]:
            again = decide_one(states[earlier.order_ref.order_id], earlier, numbers)
            assert again.kind == DecisionKind.DUPLICATE, earlier.event_id
            assert again.state == states[earlier.order_ref.order_id]
    assert states == original.states
    assert numbers.issued == original.numbers.issued
