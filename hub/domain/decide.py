"""Deciding one proposal against one order's state: the hub's core rule, as a pure function.

``decide(state, proposal, ...)`` returns a ``Decision``: the kind (created, applied, merged,
resolved, unchanged, parked, kept, rejected, duplicate), the new state, the output records,
each with a deterministic ``record_id`` so a replay re-creates the same records and consumers
dedup by id, and the one answer the proposal's sender waits for. Nothing here knows about Kafka.

The rules (../shared/DOMAIN.md):

1. A proposal whose event id this order has already decided is a duplicate: no change; its
   answer says how it was first decided and which version it made.
2. The proposal as a whole (a known system, a permitted creator for a CREATE, something to
   change, a base version >= 0, only the writer's own external references), then field
   paths, values and permissions are checked first; any error rejects the proposal whole,
   with every error named. Nothing is ever half-applied.
3. No order yet: only a CREATE by a permitted creator makes one (version 1, a new order
   number), and only with the mandatory fields; its status starts at DRAFT, and the external
   reference it names the order by is the order's first cross-reference. An UPDATE to an
   unknown order is rejected.
4. An existing order: ``base_version`` newer than the current version is rejected.
   Fields the proposal changes that were also changed since ``base_version``, by another
   writer, to another value, are conflicts; the same value on both sides converges; a field its
   own writer (same system and actor) changed since is superseded; the rest merges cleanly.
   A CREATE for an order that exists (a race, or a retry with a new id) is merged as an
   update from version 0, so it converges or conflicts but never makes a second order.
5. Conflicts go by each field's policy: ``owner_wins`` (the owning system's value wins,
   whichever side it is on; neither side the owner falls back to manual) or ``manual``.
   One manual field parks the whole proposal for a person; nothing of it is applied.
6. The lifecycle status is a state machine, not a value: a step is checked against the
   current status and the writer's permitted steps, and never conflicts.
7. Every accepted change makes version N+1. A proposal that changes nothing (every value it
   sets is already current, every reference it attaches already known) is UNCHANGED: no
   version, no change or state record, so a connector echoing the hub's own write moves
   nobody's base version; its answer names the version it confirmed.
8. Every proposal gets exactly one answer (``ProposalAnswer``), whatever became of it.
9. The plant's workflow rules (workflow.yaml, ``hub.domain.workflow``) hold on every path: an
   update whose status the approvals do not allow is rejected (ILLEGAL_TRANSITION, naming the
   levels still missing), and what the rules change themselves (APPROVED when the last level
   approves, back to CONFIRMED when one goes missing, a refusal's hold) joins the proposal's
   own version, written by ``HUB:workflow``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from enum import Enum
from functools import cached_property
from typing import Callable

from hub.domain import lifecycle, workflow
from hub.domain.fields import (
    DELETE_PATH, LINE_REQUIRED, STATUS_PATH, canonical_json, format_timestamp, kind_of, line_of, load_json,
)
from hub.domain.order import FieldState, OrderState, merge_refs
from hub.domain.rules import MANUAL, Rules
from hub.domain.workflow import APPROVALS_PREFIX, WORKFLOW_WRITER
from hub.events import (
    ChangeOutcome, ChangeProposal, ConflictOutcome, ConflictPolicy, ExternalRef, FieldConflict, FieldDiff,
    FieldError, Instruction, OrderChange, OrderConflict, OrderRejection, OrderRelease, OrderSnapshot,
    ProposalAnswer, ProposalIntent, ProposalOutcome, RejectionReason, ReleaseLine, Writer,
)

#: The flag that pauses an order's lifecycle where it is.
HOLD_PATH = "on_hold"
#: Fields an order may never lose once created (besides complete lines).
MANDATORY = ("customer.id", "requested_delivery", "instructions")


class DecisionKind(str, Enum):
    """What became of one proposal."""

    CREATED = "created"
    APPLIED = "applied"
    MERGED = "merged"
    RESOLVED = "resolved"          # conflicts decided by owner_wins, the rest applied
    CONFLICT_PARKED = "parked"     # a manual conflict: waits for a person, nothing applied
    CONFLICT_KEPT = "kept"         # every conflict kept the current value; nothing else to apply
    UNCHANGED = "unchanged"        # every value already current: no version
    REJECTED = "rejected"
    DUPLICATE = "duplicate"

    @property
    def outcome(self) -> ProposalOutcome:
        """The same, as the answer's outcome."""
        return ProposalOutcome(self.value.upper())


@dataclass(frozen=True)
class Decision:
    """The outcome of one proposal: the new state and the records to publish."""

    kind: DecisionKind
    state: OrderState
    change: OrderChange | None = None
    conflict: OrderConflict | None = None
    rejection: OrderRejection | None = None
    release: OrderRelease | None = None
    #: The one answer to the proposal's sender (set by ``decide`` for every decision).
    answer: ProposalAnswer | None = None

    @property
    def accepted(self) -> bool:
        """True when the decision made a new version."""
        return self.change is not None

    @cached_property
    def snapshot(self) -> OrderSnapshot | None:
        """The new version's snapshot, when the decision made one (built when first asked for: the
        engine publishes ``state.snapshot_record()`` instead, without the model)."""
        return self.state.to_snapshot() if self.accepted else None


@dataclass(frozen=True)
class _Error:
    reason: RejectionReason
    field: str | None
    rule: str
    message: str


def decide(
    state: OrderState | None,
    proposal: ChangeProposal,
    *,
    order_id: str,
    rules: Rules,
    at: dt.datetime,
    next_order_number: Callable[[], str],
) -> Decision:
    """Decide one proposal for the order ``order_id`` (see the module docstring for the rules)."""
    state = state or OrderState(order_id=order_id)
    if (first := state.decided.get(proposal.event_id)) is not None:
        duplicate = Decision(DecisionKind.DUPLICATE, state)
        first_kind = DecisionKind(first.kind) if first.kind else None
        message = (f"event id {proposal.event_id} was already decided"
                   + (f" as {first_kind.outcome.value}" if first_kind else "")
                   + (f", making version {first.made_version}" if first.made_version else ""))
        answer = _answer(duplicate, proposal, order_id, at, message, first.made_version,
                         first_kind.outcome if first_kind else None)
        # a duplicate's answer must read the same however often a crash makes the hub decide it again,
        # and the order may have moved on by then: it names the version it made, not the current one
        return replace(duplicate, answer=answer.model_copy(update={"version": None}))
    decision = _decide(state, proposal, order_id, rules, at, next_order_number)
    made = decision.state.version if decision.accepted else None
    # remembering the id changes nothing the answer says, so it is written from the decision as it is
    return replace(decision, state=decision.state.remember(proposal.event_id, decision.kind.value, made),
                   answer=_answer(decision, proposal, order_id, at, _message(decision), made, None))


def _decide(state: OrderState, proposal: ChangeProposal, order_id: str, rules: Rules, at: dt.datetime,
            next_order_number: Callable[[], str]) -> Decision:
    changes, errors = _parse_changes(proposal)
    errors = _proposal_errors(rules, proposal) + errors
    system, role = proposal.source_system, proposal.actor.role
    if not state.exists:
        if proposal.intent != ProposalIntent.CREATE:
            named = proposal.order_ref.external.key if proposal.order_ref.external else order_id
            errors.insert(0, _Error(RejectionReason.UNKNOWN_ORDER, None, "order must exist",
                                    f"no order {named}; only a CREATE proposal makes one"))
        errors += _permission_errors(rules, changes, "DRAFT", system, role) + _hold_errors(state, changes)
        errors += [_Error(RejectionReason.ILLEGAL_TRANSITION, path, "workflow.approvals: an order exists first",
                          "approvals are decided on an existing order, not in its creation")
                   for path in changes if path.startswith(APPROVALS_PREFIX)]
        # every field-level error at once: a missing field is not reported twice when it was invalid
        invalid = {e.field for e in errors}
        if proposal.intent == ProposalIntent.CREATE:
            touched = {n for n in (line_of(c.field) for c in proposal.changes) if n is not None}
            errors += [e for e in _completeness_errors(OrderState(order_id), changes, creating=True, lines=touched)
                       if e.field not in invalid]
        if errors:
            return _reject(state, proposal, order_id, errors, at)
        return _create(state, proposal, changes, at, next_order_number())

    base = 0 if proposal.intent == ProposalIntent.CREATE else proposal.base_version
    if base > state.version:
        errors.insert(0, _Error(RejectionReason.BASE_VERSION_AHEAD, None, "base_version <= current version",
                                f"base version {base} is newer than the order's version {state.version}"))
    if state.status in lifecycle.FINAL:
        errors.insert(0, _Error(RejectionReason.ORDER_CLOSED, None, "final status",
                                f"order is {state.status}; it no longer changes"))
    errors += _permission_errors(rules, changes, state.status, system, role) + _hold_errors(state, changes)
    if errors:
        return _reject(state, proposal, order_id, errors, at)
    return _update(state, proposal, changes, base, rules, at)


# --- checks ---------------------------------------------------------------------------


def _proposal_errors(rules: Rules, proposal: ChangeProposal) -> list[_Error]:
    """What is wrong with the proposal as a whole, whatever the order's state."""
    system, role = proposal.source_system, proposal.actor.role
    errors = []
    if not rules.knows(system):
        errors.append(_Error(RejectionReason.PERMISSION_DENIED, None, f"systems: [{', '.join(rules.systems)}]",
                             f"proposals from {system!r} are not accepted"))
    if proposal.intent == ProposalIntent.CREATE and not rules.may_create(system, role):
        errors.append(_Error(RejectionReason.PERMISSION_DENIED, None, f"create: [{', '.join(rules.create)}]",
                             f"{system}:{role} may not create orders"))
    if not proposal.changes and not proposal.external_refs:
        errors.append(_Error(RejectionReason.INVALID_VALUE, None, "a proposal changes something",
                             "the proposal has no changes and no external references"))
    if proposal.base_version < 0:
        errors.append(_Error(RejectionReason.INVALID_VALUE, None, "base_version >= 0",
                             f"base version {proposal.base_version} is negative"))
    named = proposal.order_ref.external
    if proposal.intent == ProposalIntent.CREATE and named is not None and system != "HUB" and named.system != system:
        errors.append(_Error(RejectionReason.PERMISSION_DENIED, "order_ref", "own references only",
                             f"{system} may not create an order under a reference of {named.system} ({named.key})"))
    for ref in proposal.external_refs:
        if system != "HUB" and ref.system != system:
            errors.append(_Error(RejectionReason.PERMISSION_DENIED, "external_refs", "own references only",
                                 f"{system} may not attach a reference of {ref.system} ({ref.key})"))
    return errors


def _parse_changes(proposal: ChangeProposal) -> tuple[dict[str, str | None], list[_Error]]:
    changes: dict[str, str | None] = {}
    errors: list[_Error] = []
    for change in proposal.changes:
        path = change.field
        if path == DELETE_PATH:
            errors.append(_Error(RejectionReason.PERMISSION_DENIED, path, "no hard delete",
                                 "orders are never deleted; cancel the order instead"))
            continue
        kind = kind_of(path)
        if kind is None:
            errors.append(_Error(RejectionReason.UNKNOWN_FIELD, path, "known field", f"the order has no field {path}"))
        elif path in changes:
            errors.append(_Error(RejectionReason.INVALID_VALUE, path, "one value per field", f"{path} is set twice"))
        else:
            try:
                changes[path] = kind.canonical(change.value)
            except ValueError as exc:
                errors.append(_Error(RejectionReason.INVALID_VALUE, path, kind.name, f"{path}: {exc}"))
    return changes, errors


def _permission_errors(rules: Rules, changes: dict[str, str | None], status: str, system: str, role: str) -> list[_Error]:
    errors = []
    for path, value in changes.items():
        if path == STATUS_PATH:
            proposed = load_json(value)
            if proposed is None:
                errors.append(_Error(RejectionReason.INVALID_VALUE, path, "status is never empty", "status cannot be cleared"))
            elif proposed != status and not lifecycle.is_step(status, proposed):
                errors.append(_Error(RejectionReason.ILLEGAL_TRANSITION, path,
                                     f"lifecycle: {status} -> {proposed} is not a lifecycle step",
                                     f"an order cannot go from {status} to {proposed}"))
            elif proposed != status and (why := rules.may_take_step(status, proposed, system, role)):
                errors.append(_Error(RejectionReason.PERMISSION_DENIED, path, why,
                                     f"{system}:{role} may not move the order from {status} to {proposed}"))
        elif why := rules.may_write(path, system, role):
            errors.append(_Error(RejectionReason.PERMISSION_DENIED, path, why, f"{system}:{role} may not write {path}"))
    return errors


def _hold_errors(state: OrderState, changes: dict[str, str | None]) -> list[_Error]:
    """A held order does not move on in its lifecycle (it may still be cancelled); lifting the
    hold in the same proposal lets the step through."""
    proposed = load_json(changes.get(STATUS_PATH))
    held = (load_json(changes[HOLD_PATH]) if HOLD_PATH in changes else state.parsed(HOLD_PATH)) is True
    if not held or proposed in (None, state.status, lifecycle.CANCELLED):
        return []
    return [_Error(RejectionReason.ILLEGAL_TRANSITION, STATUS_PATH, "no lifecycle step while on_hold",
                   f"the order is on hold; it stays {state.status} until on_hold is false")]


def _completeness_errors(state: OrderState, changes: dict[str, str | None], *, creating: bool,
                         lines: set[int] | None = None) -> list[_Error]:
    """Mandatory fields present and every touched line complete, as they would be after applying.

    ``lines``: line numbers the proposal touched, valid values or not, so a line whose other
    fields were invalid still has its missing ones named.
    """
    def after(path: str) -> str | None:
        return changes[path] if path in changes else state.value(path)

    errors = []
    for path in MANDATORY:
        if (creating or path in changes) and after(path) in (None, "[]"):
            errors.append(_Error(RejectionReason.MISSING_FIELD, path, "mandatory", f"{path} is mandatory"))
    lines = {n for n in map(line_of, changes) if n is not None} | (lines or set())
    if creating and not lines:
        errors.append(_Error(RejectionReason.MISSING_FIELD, "lines", "mandatory",
                             "an order needs at least one line with material.id, quantity and unit"))
    for n in sorted(lines):
        for attr in LINE_REQUIRED:
            if after(f"lines.{n}.{attr}") is None:
                errors.append(_Error(RejectionReason.MISSING_FIELD, f"lines.{n}.{attr}", "mandatory",
                                     f"line {n} needs {attr}"))
    return errors


# --- outcomes -------------------------------------------------------------------------


def _create(state: OrderState, proposal: ChangeProposal, changes: dict[str, str | None],
            at: dt.datetime, order_number: str) -> Decision:
    when = format_timestamp(at)
    system, actor = proposal.source_system, proposal.actor.id
    if changes.get(STATUS_PATH) is None:  # the lifecycle starts at DRAFT, in the state and the audit alike
        changes = {**changes, STATUS_PATH: canonical_json("DRAFT")}
    fields = {p: FieldState(v, 1, system, actor) for p, v in changes.items() if v is not None}
    created = replace(state, version=1, order_number=order_number, created_at=when, updated_at=when, fields=fields,
                      external_refs=tuple(merge_refs((), _named_by(proposal))))
    diffs = [FieldDiff(field=p, before=None, after=v) for p, v in sorted(changes.items()) if v is not None]
    return _accepted(DecisionKind.CREATED, ChangeOutcome.CREATED, state, created, proposal, diffs,
                     list(created.external_refs), at)


def _named_by(proposal: ChangeProposal) -> list[ExternalRef]:
    """The references a creation makes known: the one it names the order by, then those it attaches."""
    named = proposal.order_ref.external
    return [named, *proposal.external_refs] if named is not None else list(proposal.external_refs)


def _update(state: OrderState, proposal: ChangeProposal, changes: dict[str, str | None], base: int,
            rules: Rules, at: dt.datetime) -> Decision:
    clean: dict[str, str | None] = {}
    conflicts: list[FieldConflict] = []
    for path, value in changes.items():
        current = state.fields.get(path)
        if value == (current.value if current else None):
            continue  # converges: both sides want the same value
        if path == STATUS_PATH or current is None or current.version <= base or _own(current, proposal):
            clean[path] = value
            continue
        conflict = _field_conflict(path, current, value, base, proposal, rules)
        conflicts.append(conflict)
        if conflict.outcome == ConflictOutcome.PROPOSED_WON:
            clean[path] = value
    if any(c.outcome == ConflictOutcome.PARKED for c in conflicts):
        return _conflicted(DecisionKind.CONFLICT_PARKED, state, proposal, base, conflicts, None, at)

    errors = _completeness_errors(state, clean, creating=False)
    derived: dict[str, str | None] = {}
    if clean and rules.workflow is not None and rules.workflow.approvals is not None:
        errors += _workflow(rules.workflow.approvals, state, clean, derived)
    if errors:
        return _reject(state, proposal, state.order_id, errors, at)
    refs_added = merge_refs(state.external_refs, proposal.external_refs)
    if conflicts and not clean and not refs_added:
        return _conflicted(DecisionKind.CONFLICT_KEPT, state, proposal, base, conflicts, None, at)
    if not clean and not refs_added:  # every value already current: confirms, makes no version
        return Decision(DecisionKind.UNCHANGED, state)

    version = state.version + 1
    changed: dict[str, FieldState] = {}
    diffs = []
    for path, value in sorted({**clean, **derived}.items()):
        previous = state.fields.get(path)
        if value == (previous.value if previous else None):
            continue  # a rule's change that only undid the proposal's
        system, actor = WORKFLOW_WRITER if path in derived else (proposal.source_system, proposal.actor.id)
        diffs.append(FieldDiff(field=path, before=previous.value if previous else None, after=value))
        changed[path] = previous.changed(value, version, system, actor) if previous \
            else FieldState(value, version, system, actor)
    updated = replace(state, version=version, updated_at=format_timestamp(at), fields=state.fields | changed,
                      external_refs=(*state.external_refs, *refs_added))
    if conflicts:
        kind, outcome = DecisionKind.RESOLVED, ChangeOutcome.RESOLVED
    elif base == state.version:
        kind, outcome = DecisionKind.APPLIED, ChangeOutcome.APPLIED
    else:
        kind, outcome = DecisionKind.MERGED, ChangeOutcome.MERGED
    decision = _accepted(kind, outcome, state, updated, proposal, diffs, refs_added, at)
    if conflicts:
        conflict = _conflicted(kind, state, proposal, base, conflicts, version, at).conflict
        decision = replace(decision, conflict=conflict)
    return decision


def _workflow(approvals: workflow.Approvals, state: OrderState, clean: dict[str, str | None],
              derived: dict[str, str | None]) -> list[_Error]:
    """Rule 9: what the approval rules refuse in ``clean``; what they change themselves goes into ``derived``."""
    before, after = _values(approvals, state, {}), _values(approvals, state, clean)
    errors = [_Error(RejectionReason.ILLEGAL_TRANSITION, path, rule, message)
              for path, rule, message in workflow.errors(approvals, before, after, clean)]
    changes = workflow.consequences(approvals, before, after, clean)
    if STATUS_PATH in clean and STATUS_PATH in changes and not any(e.field == STATUS_PATH for e in errors):
        # asked for one status, the rules give another (and no rule above said why already)
        errors.append(_Error(RejectionReason.ILLEGAL_TRANSITION, STATUS_PATH, "workflow.approvals",
                             f"the approvals leave the order {changes[STATUS_PATH]}, not {load_json(clean[STATUS_PATH])}"))
    derived.update({path: canonical_json(value) for path, value in changes.items()})
    return errors


def _values(approvals: workflow.Approvals, state: OrderState, clean: dict[str, str | None]) -> dict[str, object]:
    """The fields the approval rules read, as parsed values: the state's, with ``clean`` applied, and
    who last wrote ``on_hold`` (``workflow.HOLD_WRITER``; None when ``clean`` sets it)."""
    paths = (STATUS_PATH, HOLD_PATH, "hold_reasons", "currency", *approvals.amount, *approvals.paths)
    values: dict[str, object] = {path: load_json(clean[path]) if path in clean else state.parsed(path)
                                 for path in paths}
    hold = state.fields.get(HOLD_PATH)
    values[workflow.HOLD_WRITER] = f"{hold.system}:{hold.actor}" if hold and HOLD_PATH not in clean else None
    return values


def _own(current: FieldState, proposal: ChangeProposal) -> bool:
    """Whether the field's current value is the proposal's own writer's (same system, same actor): a
    writer's later proposal supersedes its own earlier value, it does not conflict with it (an offline
    client's queued edits all carry the base version it last saw)."""
    return current.system == proposal.source_system and current.actor == proposal.actor.id


def _field_conflict(path: str, current: FieldState, value: str | None, base: int,
                    proposal: ChangeProposal, rules: Rules) -> FieldConflict:
    owner = rules.owner(path)
    reason = None
    if rules.policy(path) == MANUAL:
        policy, outcome = ConflictPolicy.MANUAL, ConflictOutcome.PARKED
    elif proposal.source_system == owner:
        policy, outcome = ConflictPolicy.OWNER_WINS, ConflictOutcome.PROPOSED_WON
    elif current.system == owner:
        policy, outcome = ConflictPolicy.OWNER_WINS, ConflictOutcome.CURRENT_KEPT
    else:  # neither side owns the field: a person decides, and the record says why
        policy, outcome = ConflictPolicy.OWNER_WINS, ConflictOutcome.PARKED
        reason = (f"owner_wins: neither {current.system} (current) nor {proposal.source_system} (proposed) "
                  f"owns {path} (owner {owner}); parked for a person")
    return FieldConflict(
        field=path, base_value=current.value_at(base), base_value_known=current.knows(base),
        current_value=current.value, proposed_value=value,
        current_writer=Writer(source_system=current.system, actor_id=current.actor, version=current.version),
        proposed_writer=Writer(source_system=proposal.source_system, actor_id=proposal.actor.id, version=base),
        owner=owner, policy=policy, outcome=outcome, reason=reason,
    )


def _accepted(kind: DecisionKind, outcome: ChangeOutcome, before: OrderState, after: OrderState,
              proposal: ChangeProposal, diffs: list[FieldDiff], refs_added: list, at: dt.datetime) -> Decision:
    change = OrderChange(
        record_id=f"{proposal.event_id}:change", event_id=proposal.event_id, order_id=after.order_id,
        order_number=after.order_number, version=after.version, previous_version=before.version,
        base_version=proposal.base_version, outcome=outcome, source_system=proposal.source_system,
        actor=proposal.actor, occurred_at=proposal.occurred_at, accepted_at=at, diffs=diffs,
        external_refs_added=refs_added,
    )
    release = None
    if before.status != "RELEASED" and after.status == "RELEASED":
        release = _release(after.to_snapshot(), proposal.event_id, at)
    return Decision(kind, after, change=change, release=release)


def _conflicted(kind: DecisionKind, state: OrderState, proposal: ChangeProposal, base: int,
                conflicts: list[FieldConflict], resulting_version: int | None, at: dt.datetime) -> Decision:
    conflict = OrderConflict(
        record_id=f"{proposal.event_id}:conflict", event_id=proposal.event_id, order_id=state.order_id,
        order_number=state.order_number, base_version=base, current_version=state.version, fields=conflicts,
        parked=kind == DecisionKind.CONFLICT_PARKED, resulting_version=resulting_version, decided_at=at,
        proposal=proposal,
    )
    return Decision(kind, state, conflict=conflict)


def _reject(state: OrderState, proposal: ChangeProposal, order_id: str, errors: list[_Error],
            at: dt.datetime) -> Decision:
    rejection = OrderRejection(
        record_id=f"{proposal.event_id}:rejection", event_id=proposal.event_id, order_id=order_id,
        reason=errors[0].reason,
        errors=[FieldError(field=e.field, rule=e.rule, message=e.message) for e in errors],
        current_version=state.version if state.exists else None, decided_at=at, proposal=proposal,
    )
    # ``decide`` remembers the id even for an order that does not exist: a replay must decide the same.
    return Decision(DecisionKind.REJECTED, state, rejection=rejection)


def _answer(decision: Decision, proposal: ChangeProposal, order_id: str, at: dt.datetime, message: str | None,
            made_version: int | None, first_outcome: ProposalOutcome | None) -> ProposalAnswer:
    state = decision.state
    return ProposalAnswer(
        record_id=f"{proposal.event_id}:answer", event_id=proposal.event_id, order_id=order_id,
        order_number=state.order_number, source_system=proposal.source_system, outcome=decision.kind.outcome,
        version=state.version if state.exists else None, made_version=made_version, first_outcome=first_outcome,
        message=message, decided_at=at,
    )


def _message(decision: Decision) -> str | None:
    """One line for a person about a decision that did not simply apply."""
    if decision.rejection is not None:
        first = decision.rejection.errors[0]
        return first.message + (f" (and {len(decision.rejection.errors) - 1} more)"
                                if len(decision.rejection.errors) > 1 else "")
    if decision.conflict is not None:
        return "; ".join(f"{f.field}: {f.outcome.value.lower()} by {f.policy.value.lower()}"
                         for f in decision.conflict.fields)
    if decision.kind == DecisionKind.UNCHANGED:
        return f"every value was already current at version {decision.state.version}"
    return None


def _release(snapshot: OrderSnapshot, event_id: str, at: dt.datetime) -> OrderRelease:
    return OrderRelease(
        record_id=f"{event_id}:release", event_id=event_id, order_id=snapshot.order_id,
        order_number=snapshot.order_number, version=snapshot.version, priority=snapshot.priority,
        requested_delivery=snapshot.requested_delivery, plant=snapshot.plant,
        instructions=[Instruction(key=i.key, text=i.text) for i in snapshot.instructions],
        lines=[ReleaseLine(line_no=line.line_no, material_id=line.material.id, material_revision=line.material.revision,
                           quantity=line.quantity, unit=line.unit) for line in snapshot.lines],
        released_at=at,
    )
