"""`orderhub propose` reads what a person wrote: conveniences filled in, mistakes named, nothing sent."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from hub.errors import InvalidInput
from hub.events import ProposalIntent
from hub.client import Decided
from hub.events import OrderChange, OrderConflict, OrderRejection, ProposalAnswer
from hub.propose import decision_text, load_proposal
from hub.settings import PROJECT_DIR

NOW = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.timezone.utc)
EXAMPLES = PROJECT_DIR / "deploy" / "local" / "examples"
PROPOSAL = {"event_id": "e", "order_ref": {"order_id": "O-1"}, "base_version": 1, "source_system": "ERP",
            "actor": {"id": "x", "role": "connector"}, "occurred_at": NOW, "changes": []}


def test_every_example_is_a_valid_proposal_keyed_as_connectors_key() -> None:
    keys = {p.name: load_proposal(p.read_text(), NOW).order_ref.key for p in sorted(EXAMPLES.glob("*.json"))}
    assert keys == {"create-order.json": "CRM/Opportunity/OPP-4711", "erp-confirms.json": "CRM/Opportunity/OPP-4711",
                    "mes-cancels.json": "fb0bbf2d-21e6-54e2-b75c-ead36a1f09fb"}


def test_plain_values_become_canonical_json_and_defaults_are_filled() -> None:
    proposal = load_proposal((EXAMPLES / "create-order.json").read_text(), NOW)
    assert proposal.intent == ProposalIntent.CREATE and proposal.base_version == 0
    assert proposal.occurred_at == NOW and len(proposal.event_id) == 36
    values = {c.field: c.value for c in proposal.changes}
    assert values["lines.10.quantity"] == '"250"'
    assert values["instructions"] == '[{"key":"coating","text":"zinc 12 um"}]'
    assert load_proposal((EXAMPLES / "create-order.json").read_text(), NOW).event_id != proposal.event_id


def test_the_wire_form_of_changes_is_taken_as_it_is() -> None:
    doc = {"event_id": "e-1", "order_ref": {"order_id": "O-1"}, "base_version": 3, "source_system": "ERP",
           "actor": {"id": "x", "role": "connector"}, "occurred_at": "2026-12-01T10:00:00+00:00",
           "changes": [{"field": "amounts.net", "value": '"12.50"'}]}
    proposal = load_proposal(json.dumps(doc))
    assert proposal.event_id == "e-1" and proposal.base_version == 3
    assert [(c.field, c.value) for c in proposal.changes] == [("amounts.net", '"12.50"')]


@pytest.mark.parametrize("text, names", [
    ("{", "not JSON"),
    ("[]", "must be a JSON object"),
    ('{"order_ref": {}, "source_system": "CRM", "actor": {"id": "a", "role": "sales"}, "changes": {}}', "names no order"),
    ('{"order_ref": {"order_id": "O-1"}, "actor": {"id": "a", "role": "sales"}, "changes": {}}', "source_system"),
    ('{"order_ref": {"order_id": "O-1"}, "source_system": "CRM", "actor": {"id": "a"}, "changes": {}}', "actor.role"),
    ('{"order_ref": {"order_id": "O-1"}, "source_system": "CRM", "actor": {"id": "a", "role": "s"}, "changes": {},'
     ' "colour": "red"}', "colour"),
])
def test_mistakes_are_named(text: str, names: str) -> None:
    with pytest.raises(InvalidInput, match=names):
        load_proposal(text, NOW)


def answer(outcome: str, **fields) -> ProposalAnswer:
    return ProposalAnswer(record_id="e:answer", event_id="e", order_id="O-1", order_number="ORD-1", source_system="ERP",
                          outcome=outcome, decided_at=NOW, **fields)


def test_a_resolved_conflict_prints_its_change_and_its_conflict() -> None:
    """A resolved conflict shows the new version's diffs, then each field's verdict."""
    writer = {"source_system": "CRM", "actor_id": "a", "version": 1}
    conflict = OrderConflict.model_validate({
        "record_id": "e:conflict", "event_id": "e", "order_id": "O-1", "order_number": "ORD-1", "base_version": 1,
        "current_version": 2, "parked": False, "resulting_version": 3, "decided_at": NOW, "proposal": PROPOSAL,
        "fields": [{"field": "customer.name", "outcome": "PROPOSED_WON", "policy": "OWNER_WINS", "base_value": None,
                    "current_value": '"A"', "proposed_value": '"B"', "current_writer": writer,
                    "proposed_writer": writer, "owner": "ERP"}]})
    change = OrderChange.model_validate({
        "record_id": "e:change", "event_id": "e", "outcome": "RESOLVED", "order_number": "ORD-1", "version": 3,
        "previous_version": 2, "base_version": 1, "order_id": "O-1", "source_system": "ERP",
        "actor": {"id": "x", "role": "connector"}, "occurred_at": NOW, "accepted_at": NOW,
        "diffs": [{"field": "customer.name", "before": '"A"', "after": '"B"'}]})
    decided = Decided(answer("RESOLVED", version=3, made_version=3), change=change, conflict=conflict)
    assert decided.accepted
    assert decision_text(decided).splitlines() == [
        "RESOLVED: ORD-1 version 3 (order id O-1)", '  customer.name: "A" -> "B"',
        "CONFLICT: ORD-1 (base version 1, current 2)",
        '  customer.name: PROPOSED_WON by OWNER_WINS (current "A", proposed "B")']
    parked = Decided(answer("PARKED", version=2), conflict=conflict.model_copy(update={"parked": True}))
    assert not parked.accepted and decision_text(parked).startswith("PARKED for a person: ORD-1")


def test_an_unchanged_or_duplicate_answer_says_so_with_its_version() -> None:
    """Answers without decision records print the outcome, the version and the hub's one line."""
    unchanged = Decided(answer("UNCHANGED", version=4, message="every value was already current at version 4"))
    assert decision_text(unchanged).splitlines() == [
        "UNCHANGED: ORD-1 at version 4 (order id O-1)", "  every value was already current at version 4"]
    duplicate = Decided(answer("DUPLICATE", made_version=2, first_outcome="APPLIED",
                               message="event id e was already decided as APPLIED, making version 2"))
    assert not duplicate.accepted and decision_text(duplicate).splitlines() == [
        "DUPLICATE: ORD-1 (order id O-1)", "  event id e was already decided as APPLIED, making version 2"]


def test_a_field_named_twice_is_refused_rather_than_last_wins() -> None:
    text = ('{"order_ref": {"order_id": "O-1"}, "source_system": "ERP", "actor": {"id": "a", "role": "c"},'
            ' "changes": {"amounts.net": "1.00", "amounts.net": "2.00"}}')
    with pytest.raises(InvalidInput, match="names amounts.net more than once"):
        load_proposal(text, NOW)


def test_a_rejection_names_each_field_once_and_a_change_its_new_references() -> None:
    rejection = OrderRejection.model_validate({
        "record_id": "e:rejection", "event_id": "e", "reason": "INVALID_VALUE", "order_id": None, "decided_at": NOW,
        "proposal": PROPOSAL, "errors": [
            {"field": "requested_delivery", "rule": "date", "message": "requested_delivery: expected an ISO date"},
            {"field": "colour", "rule": "known field", "message": "the order has no field colour"},
            {"field": None, "rule": "create: [CRM]", "message": "MES:connector may not create orders"}]})
    assert decision_text(Decided(answer("REJECTED"), rejection=rejection)).splitlines() == [
        "REJECTED INVALID_VALUE", "  requested_delivery: expected an ISO date [date]",
        "  colour: the order has no field colour [known field]",
        "  (proposal): MES:connector may not create orders [create: [CRM]]"]
    change = OrderChange.model_validate({
        "record_id": "e:change", "event_id": "e", "outcome": "APPLIED", "order_number": "ORD-1", "version": 2,
        "previous_version": 1, "base_version": 1, "order_id": "O-1", "source_system": "ERP",
        "actor": {"id": "x", "role": "connector"}, "occurred_at": NOW, "accepted_at": NOW, "diffs": [],
        "external_refs_added": [{"system": "ERP", "object_type": "A_SalesOrder", "external_id": "4711"}]})
    text = decision_text(Decided(answer("APPLIED", version=2, made_version=2), change=change))
    assert text.splitlines()[1] == "  + cross-reference ERP/A_SalesOrder/4711"
