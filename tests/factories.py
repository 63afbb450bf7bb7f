"""Small builders of valid order events for tests: every argument has a sensible default.

Ids are deterministic (``record_id`` from order id and version, ``event_id`` likewise), so
building the same change twice gives an equal event, exactly what a replay delivers.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hub.events import (Actor, Amounts, ChangeOutcome, ChangeProposal, Customer, ExternalRef, FieldChange,
                        FieldConflict, FieldDiff, FieldError, LifecycleStatus, Material, OrderChange, OrderConflict,
                        OrderLine, OrderRef, OrderRejection, OrderSnapshot, RejectionReason, Writer)

#: The instant version 1 of every factory order was accepted; version N is N minutes later.
T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def at_version(version: int) -> dt.datetime:
    """The acceptance time the factories give ``version``."""
    return T0 + dt.timedelta(minutes=version - 1)


def order_number_of(order_id: str) -> str:
    """The order number the factories give ``order_id``."""
    return f"SO-{order_id}"


def make_ref(system: str = "CRM", object_type: str = "Opportunity", external_id: str = "OPP-1",
             external_number: str | None = None) -> ExternalRef:
    """An external reference."""
    return ExternalRef(system=system, object_type=object_type, external_id=external_id,
                       external_number=external_number)


def make_line(line_no: int = 10, material_id: str = "MAT-100", quantity: str | Decimal = "5",
              unit: str = "C62", **fields: Any) -> OrderLine:
    """An order line; ``fields`` sets any other OrderLine field."""
    return OrderLine(line_no=line_no, material=Material(id=material_id, revision=fields.pop("revision", None)),
                     quantity=Decimal(quantity), unit=unit, **fields)


def make_diff(field: str, before: Any, after: Any) -> FieldDiff:
    """A field diff; ``before`` and ``after`` are canonical JSON text, or None."""
    return FieldDiff(field=field, before=before, after=after)


def make_change(order_id: str = "O-1", version: int = 1, *, diffs: list[FieldDiff] | None = None,
                source_system: str = "CRM", actor_id: str = "alice", actor_role: str = "sales",
                base_version: int | None = None, outcome: ChangeOutcome | None = None,
                external_refs_added: list[ExternalRef] | None = None, **fields: Any) -> OrderChange:
    """The accepted change that created ``version`` of ``order_id``; ``fields`` overrides anything else."""
    previous = version - 1
    values: dict[str, Any] = {
        "record_id": f"chg-{order_id}-v{version}",
        "event_id": f"evt-{order_id}-v{version}",
        "order_id": order_id,
        "order_number": order_number_of(order_id),
        "version": version,
        "previous_version": previous,
        "base_version": previous if base_version is None else base_version,
        "outcome": outcome or (ChangeOutcome.CREATED if version == 1 else ChangeOutcome.APPLIED),
        "source_system": source_system,
        "actor": Actor(id=actor_id, role=actor_role),
        "occurred_at": at_version(version) - dt.timedelta(seconds=5),
        "accepted_at": at_version(version),
        "diffs": [make_diff("priority", str(previous), str(version))] if diffs is None else diffs,
        "external_refs_added": external_refs_added or [],
    }
    return OrderChange(**{**values, **fields})


def make_snapshot(order_id: str = "O-1", version: int = 1, *, lines: list[OrderLine] | None = None,
                  customer_name: str | None = "ACME GmbH", net: str | None = "100.00",
                  external_refs: list[ExternalRef] | None = None, **fields: Any) -> OrderSnapshot:
    """The snapshot of ``version`` of ``order_id``; ``fields`` sets any other OrderSnapshot field."""
    values: dict[str, Any] = {
        "order_id": order_id,
        "order_number": order_number_of(order_id),
        "version": version,
        "status": LifecycleStatus.CONFIRMED,
        "customer": Customer(id="CUST-1", name=customer_name),
        "currency": "EUR",
        "amounts": Amounts(net=None if net is None else Decimal(net)),
        "priority": version,
        "lines": [make_line()] if lines is None else lines,
        "external_refs": external_refs or [],
        "created_at": T0,
        "updated_at": at_version(version),
    }
    return OrderSnapshot(**{**values, **fields})


def make_proposal(order_id: str = "O-1", base_version: int = 1, *, changes: dict[str, str | None] | None = None,
                  source_system: str = "CRM", actor_id: str = "alice", actor_role: str = "sales",
                  **fields: Any) -> ChangeProposal:
    """A change proposal for ``order_id``; ``changes`` maps field paths to canonical JSON values."""
    values: dict[str, Any] = {
        "event_id": f"prop-{order_id}-b{base_version}-{source_system}",
        "order_ref": OrderRef(order_id=order_id),
        "base_version": base_version,
        "source_system": source_system,
        "actor": Actor(id=actor_id, role=actor_role),
        "occurred_at": at_version(base_version + 1),
        "changes": [FieldChange(field=f, value=v) for f, v in (changes or {"priority": "9"}).items()],
    }
    return ChangeProposal(**{**values, **fields})


def make_conflict(order_id: str = "O-1", current_version: int = 2, *, field: str = "priority",
                  current_value: str | None = "2", proposed_value: str | None = "9", parked: bool = True,
                  **fields: Any) -> OrderConflict:
    """A conflict on one field between the current writer (ERP) and a CRM proposal based on version 1."""
    proposal = make_proposal(order_id, 1, changes={field: proposed_value})
    conflict = FieldConflict(
        field=field, base_value="1", current_value=current_value, proposed_value=proposed_value,
        current_writer=Writer(source_system="ERP", actor_id="erp-bot", version=current_version),
        proposed_writer=Writer(source_system="CRM", actor_id="alice", version=1), owner="ERP")
    values: dict[str, Any] = {
        "record_id": f"cfl-{proposal.event_id}",
        "event_id": proposal.event_id,
        "order_id": order_id,
        "order_number": order_number_of(order_id),
        "base_version": 1,
        "current_version": current_version,
        "fields": [conflict],
        "parked": parked,
        "decided_at": at_version(current_version),
        "proposal": proposal,
    }
    return OrderConflict(**{**values, **fields})


def make_rejection(order_id: str | None = "O-1", current_version: int | None = 2, *, source_system: str = "CRM",
                   reason: RejectionReason = RejectionReason.PERMISSION_DENIED, **fields: Any) -> OrderRejection:
    """The rejection of a ``source_system`` proposal on ``order_id`` at ``current_version`` (None: the order
    did not exist; an order id of None: the proposal named no order)."""
    proposal = make_proposal(order_id or "unnamed", current_version or 0, source_system=source_system)
    if order_id is None:
        proposal = proposal.model_copy(update={"order_ref": OrderRef()})
    values: dict[str, Any] = {
        "record_id": f"{proposal.event_id}:rejection",
        "event_id": proposal.event_id,
        "order_id": order_id,
        "reason": reason,
        "errors": [FieldError(field="priority", rule="ownership", message=f"{source_system} may not write priority")],
        "current_version": current_version,
        "decided_at": at_version(current_version or 1),
        "proposal": proposal,
    }
    return OrderRejection(**{**values, **fields})
