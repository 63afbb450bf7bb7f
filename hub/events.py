"""The order events as Python types: the pydantic face of the Avro schemas in ``schemas/``.

Each model mirrors the latest version of one schema folder field by field
(``tests/unit/test_events_match_schemas.py`` proves they cannot drift). The models are
immutable. ``to_avro()`` gives the dict the Avro codec writes; ``from_avro()`` builds a
model from what it reads.

Field changes carry their values as canonical JSON text (see ``hub.domain.fields``), so
one proposal shape serves every field while the snapshot stays fully typed.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field


class _Event(BaseModel):
    """Immutable base of every event model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The schema folder in ``schemas/`` this model mirrors.
    schema_name: ClassVar[str] = ""

    def to_avro(self) -> dict[str, Any]:
        """The record as the Avro writer wants it (enums as their symbols)."""
        return self.model_dump(mode="python", exclude_none=False)

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        """Build the model from a record the Avro reader returned."""
        return cls.model_validate(record)


class LifecycleStatus(str, Enum):
    """Lifecycle of an order; ``UNKNOWN`` is what an older reader sees for a newer status."""

    DRAFT = "DRAFT"
    CONFIRMED = "CONFIRMED"
    APPROVED = "APPROVED"
    RELEASED = "RELEASED"
    IN_PRODUCTION = "IN_PRODUCTION"
    COMPLETED = "COMPLETED"
    SHIPPED = "SHIPPED"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"


class ProposalIntent(str, Enum):
    """CREATE makes a new order (mandatory fields apply); UPDATE changes an existing one."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    UNKNOWN = "UNKNOWN"


class ChangeOutcome(str, Enum):
    """How an accepted change got in."""

    CREATED = "CREATED"
    APPLIED = "APPLIED"
    MERGED = "MERGED"
    RESOLVED = "RESOLVED"
    UNKNOWN = "UNKNOWN"


class ConflictPolicy(str, Enum):
    """How a conflicting field is decided."""

    OWNER_WINS = "OWNER_WINS"
    MANUAL = "MANUAL"
    UNKNOWN = "UNKNOWN"


class ConflictOutcome(str, Enum):
    """What happened to one conflicting field."""

    PROPOSED_WON = "PROPOSED_WON"
    CURRENT_KEPT = "CURRENT_KEPT"
    PARKED = "PARKED"
    UNKNOWN = "UNKNOWN"


class ProposalOutcome(str, Enum):
    """What became of a proposal: the answer its sender waits for."""

    CREATED = "CREATED"
    APPLIED = "APPLIED"
    MERGED = "MERGED"
    RESOLVED = "RESOLVED"
    UNCHANGED = "UNCHANGED"    # every value was already current: no new version
    PARKED = "PARKED"          # a conflict waits for a person; nothing applied
    KEPT = "KEPT"              # every conflict kept the current value; nothing else to apply
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"    # this event id was decided before; nothing changed now
    UNKNOWN = "UNKNOWN"

    @property
    def accepted(self) -> bool:
        """Whether the proposal made a new version."""
        return self in (ProposalOutcome.CREATED, ProposalOutcome.APPLIED, ProposalOutcome.MERGED,
                        ProposalOutcome.RESOLVED)


class RejectionReason(str, Enum):
    """Why a proposal was refused."""

    MISSING_FIELD = "MISSING_FIELD"
    INVALID_VALUE = "INVALID_VALUE"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    BASE_VERSION_AHEAD = "BASE_VERSION_AHEAD"
    ORDER_CLOSED = "ORDER_CLOSED"
    OTHER = "OTHER"


# --- shared parts -------------------------------------------------------------------


class ExternalRef(_Event):
    """One outside system's own identifier for the order."""

    system: str = Field(description="Source system that owns the id, e.g. CRM, ERP, MES, EDI.")
    object_type: str = Field(description="That system's object type, e.g. Opportunity, A_SalesOrder.")
    external_id: str = Field(description="The system's own key for the object.")
    external_number: str | None = Field(None, description="Human-readable number, when it differs.")

    @property
    def key(self) -> str:
        """The reference as one string, ``SYSTEM/ObjectType/id``: the resolver's table key."""
        return f"{self.system}/{self.object_type}/{self.external_id}"


class Actor(_Event):
    """Who made a change, and the role the permission rules check."""

    id: str = Field(description="User or service account id.")
    role: str = Field(description="Role, e.g. sales, planner, supervisor, connector.")


class FieldChange(_Event):
    """One field a proposal sets, its value as canonical JSON (null clears it)."""

    field: str = Field(description="Field path, e.g. customer.name, amounts.net, lines.10.quantity.")
    value: str | None = Field(description="New value as canonical JSON; null clears the field.")


class OrderRef(_Event):
    """How a proposal names its order: the hub id, or an external reference."""

    order_id: str | None = Field(None, description="Hub order id, when the writer knows it.")
    external: ExternalRef | None = Field(None, description="External reference to resolve.")

    @property
    def key(self) -> str | None:
        """The proposal's Kafka key: the hub order id, else the external reference (``SYSTEM/Type/id``);
        None when it names neither (a blank order id names nothing)."""
        if self.order_id is not None and self.order_id.strip():
            return self.order_id
        return self.external.key if self.external is not None else None


class FieldDiff(_Event):
    """Before and after of one field in an accepted change."""

    field: str = Field(description="Field path in the canonical order.")
    before: str | None = Field(description="Value before, canonical JSON.")
    after: str | None = Field(description="Value after, canonical JSON.")


# --- the snapshot -------------------------------------------------------------------


class Customer(_Event):
    """The ordering customer."""

    id: str = Field(description="Customer id (CRM account or ERP sold-to party).")
    name: str | None = Field(None, description="Customer name.")


class Amounts(_Event):
    """Order totals, as decimals."""

    net: Decimal | None = Field(None, description="Net amount (ERP).")
    tax: Decimal | None = Field(None, description="Tax amount (ERP).")
    gross: Decimal | None = Field(None, description="Gross amount (ERP).")
    crm_expected: Decimal | None = Field(None, description="Expected amount as sold (CRM).")


class Instruction(_Event):
    """A process requirement: typed text or key/value."""

    key: str | None = Field(None, description="Requirement key; null for free text.")
    text: str = Field(description="Requirement text or value.")


class Approval(_Event):
    """One approval level's decision (workflow.yaml); who and when are in the audit trail."""

    level: str = Field(description="The approval level, as workflow.yaml names it.")
    decision: str = Field(description="approved or refused.")
    comment: str | None = Field(None, description="What the approver said; a refusal's reason.")


class Material(_Event):
    """What to make."""

    id: str = Field(description="Material number.")
    revision: str | None = Field(None, description="Revision or specification.")


class OrderLine(_Event):
    """One order line."""

    line_no: int = Field(description="Line number, stable for the life of the order.")
    material: Material = Field(description="Material.")
    quantity: Decimal = Field(description="Ordered quantity.")
    unit: str = Field(description="UN/ECE Rec 20 unit code, e.g. C62, KGM.")
    raw_unit: str | None = Field(None, description="Unit as the source system wrote it.")
    unit_price: Decimal | None = Field(None, description="Net price per unit (ERP).")
    confirmed_date: dt.date | None = Field(None, description="Confirmed delivery date (ERP).")
    confirmed_quantity: Decimal | None = Field(None, description="Confirmed quantity (ERP).")
    good_quantity: Decimal | None = Field(None, description="Good quantity produced (MES).")
    scrap_quantity: Decimal | None = Field(None, description="Scrap quantity (MES).")


class OrderSnapshot(_Event):
    """The latest state of one canonical order."""

    schema_name: ClassVar[str] = "order_snapshot"

    order_id: str = Field(description="Hub order id; the Kafka message key.")
    order_number: str = Field(description="Human-readable unique order number.")
    version: int = Field(description="1 at creation, +1 per accepted change.")
    status: LifecycleStatus = Field(LifecycleStatus.DRAFT, description="Lifecycle status.")
    on_hold: bool = Field(False, description="Held; the order resumes where it was.")
    hold_reasons: list[str] = Field(default_factory=list, description="Why the order is held.")
    external_refs: list[ExternalRef] = Field(default_factory=list, description="Every outside id seen.")
    customer: Customer | None = Field(None, description="Ordering customer.")
    contact: str | None = Field(None, description="Contact person.")
    sales_owner: str | None = Field(None, description="Sales owner (CRM).")
    customer_po_number: str | None = Field(None, description="Customer's PO number.")
    currency: str | None = Field(None, description="ISO 4217 currency code.")
    amounts: Amounts = Field(default_factory=Amounts, description="Totals.")
    requested_delivery: dt.date | None = Field(None, description="Due date requested by the customer.")
    promised_delivery: dt.date | None = Field(None, description="Delivery date promised by the ERP.")
    planned_start: dt.datetime | None = Field(None, description="Planned production start (MES).")
    planned_end: dt.datetime | None = Field(None, description="Planned production end (MES).")
    actual_start: dt.datetime | None = Field(None, description="Actual production start (MES).")
    actual_end: dt.datetime | None = Field(None, description="Actual production end (MES).")
    priority: int = Field(0, description="Higher is more urgent.")
    terms: str | None = Field(None, description="Commercial terms.")
    plant: str | None = Field(None, description="Producing plant (ERP).")
    credit_status: str | None = Field(None, description="ERP credit check status.")
    instructions: list[Instruction] = Field(default_factory=list, description="Process requirements.")
    lines: list[OrderLine] = Field(default_factory=list, description="Order lines.")
    approvals: list[Approval] = Field(default_factory=list, description="The approval levels that have decided, by level name.")
    created_at: dt.datetime = Field(description="When version 1 was accepted.")
    updated_at: dt.datetime = Field(description="When this version was accepted.")


# --- proposals and decisions --------------------------------------------------------


class ChangeProposal(_Event):
    """A writer's proposed change to one order, against the version it last saw."""

    schema_name: ClassVar[str] = "change_proposal"

    event_id: str = Field(description="Writer-assigned unique id; redelivery is a no-op.")
    order_ref: OrderRef = Field(description="The order this proposal is about.")
    intent: ProposalIntent = Field(ProposalIntent.UPDATE, description="Create or update.")
    base_version: int = Field(description="Version the writer last saw; 0 for a creation.")
    source_system: str = Field(description="CRM, ERP, MES, HUB or EDI.")
    actor: Actor = Field(description="Who made the change.")
    occurred_at: dt.datetime = Field(description="When the writer made the change.")
    changes: list[FieldChange] = Field(description="Fields to set.")
    external_refs: list[ExternalRef] = Field(default_factory=list, description="External ids to attach.")
    comment: str | None = Field(None, description="Free text attached to the change.")


class OrderChange(_Event):
    """An accepted, versioned change: one entry of the audit trail."""

    schema_name: ClassVar[str] = "order_change"

    record_id: str = Field(description="Deterministic id; consumers dedup by it.")
    event_id: str = Field(description="The proposal this record answers.")
    order_id: str = Field(description="Hub order id; the Kafka message key.")
    order_number: str = Field(description="Human-readable order number.")
    version: int = Field(description="Version this change created.")
    previous_version: int = Field(description="Version it was applied on (0 for a creation).")
    base_version: int = Field(description="Version the writer had seen.")
    outcome: ChangeOutcome = Field(ChangeOutcome.APPLIED, description="How it was accepted.")
    source_system: str = Field(description="System the change came from.")
    actor: Actor = Field(description="Who made it.")
    occurred_at: dt.datetime = Field(description="When the writer made it.")
    accepted_at: dt.datetime = Field(description="When the hub accepted it.")
    diffs: list[FieldDiff] = Field(description="Before/after of every changed field.")
    external_refs_added: list[ExternalRef] = Field(default_factory=list, description="Outside ids attached.")


class Writer(_Event):
    """Who wrote a value, at which version."""

    source_system: str = Field(description="System that wrote the value.")
    actor_id: str = Field(description="User or service account.")
    version: int = Field(description="Version at which the value was written.")


class FieldConflict(_Event):
    """One field two writers changed from the same base."""

    field: str = Field(description="Field path.")
    base_value: str | None = Field(description="Value at the base version, when still known.")
    base_value_known: bool = Field(True, description="False when the base version is older than the kept "
                                   "history: base_value is then null because it is not known.")
    current_value: str | None = Field(description="Value now.")
    proposed_value: str | None = Field(description="Value the proposal wants.")
    current_writer: Writer = Field(description="Who wrote the current value.")
    proposed_writer: Writer = Field(description="Who proposes the new value.")
    owner: str | None = Field(description="The field's owning system.")
    policy: ConflictPolicy = Field(ConflictPolicy.MANUAL, description="Policy applied.")
    outcome: ConflictOutcome = Field(ConflictOutcome.PARKED, description="What happened.")
    reason: str | None = Field(None, description="Why the policy led to this outcome, when it is not "
                               "plain: e.g. owner_wins parked because neither side owns the field.")


class OrderConflict(_Event):
    """A recorded conflict, whole: base, current and proposed values and who wrote each."""

    schema_name: ClassVar[str] = "order_conflict"

    record_id: str = Field(description="Deterministic id; consumers dedup by it.")
    event_id: str = Field(description="The proposal this record answers.")
    order_id: str = Field(description="Hub order id; the Kafka message key.")
    order_number: str = Field(description="Human-readable order number.")
    base_version: int = Field(description="Version the proposal was based on.")
    current_version: int = Field(description="Version when the proposal arrived.")
    fields: list[FieldConflict] = Field(description="Every field in conflict.")
    parked: bool = Field(description="True when the proposal waits for a person.")
    resulting_version: int | None = Field(None, description="Version the outcome produced, if any.")
    decided_at: dt.datetime = Field(description="When the hub decided.")
    proposal: ChangeProposal = Field(description="The proposal, whole.")


class FieldError(_Event):
    """One field-level error of a rejected proposal."""

    field: str | None = Field(description="Field path, when the error is about one field.")
    rule: str = Field(description="The rule that refused it.")
    message: str = Field(description="Readable explanation.")


class OrderRejection(_Event):
    """A proposal refused whole, with every reason; nothing of it was applied."""

    schema_name: ClassVar[str] = "order_rejection"

    record_id: str = Field(description="Deterministic id; consumers dedup by it.")
    event_id: str = Field(description="The proposal this record answers.")
    order_id: str | None = Field(None, description="Hub order id, when it could be resolved.")
    reason: RejectionReason = Field(RejectionReason.OTHER, description="Main reason.")
    errors: list[FieldError] = Field(description="Field-level errors.")
    current_version: int | None = Field(None, description="Version when the proposal arrived.")
    decided_at: dt.datetime = Field(description="When the hub decided.")
    proposal: ChangeProposal = Field(description="The refused proposal, whole.")


class ReleaseLine(_Event):
    """A line to produce."""

    line_no: int = Field(description="Line number.")
    material_id: str = Field(description="Material number.")
    material_revision: str | None = Field(None, description="Revision to build.")
    quantity: Decimal = Field(description="Quantity to make.")
    unit: str = Field(description="UN/ECE Rec 20 unit code.")


class OrderRelease(_Event):
    """An order released to production: what the MES needs to make it."""

    schema_name: ClassVar[str] = "order_release"

    record_id: str = Field(description="Deterministic id; consumers dedup by it.")
    event_id: str = Field(description="The proposal this record answers.")
    order_id: str = Field(description="Hub order id; the Kafka message key.")
    order_number: str = Field(description="Order number printed on the work order.")
    version: int = Field(description="Order version that was released.")
    priority: int = Field(description="Higher is more urgent.")
    requested_delivery: dt.date | None = Field(None, description="Due date.")
    plant: str | None = Field(None, description="Producing plant.")
    instructions: list[Instruction] = Field(description="Process requirements.")
    lines: list[ReleaseLine] = Field(description="Lines to produce.")
    released_at: dt.datetime = Field(description="When the release was accepted.")


class OrderAlert(_Event):
    """A due-date alert raised or cleared for one order (workflow.yaml due_date_alert, hub.domain.alerts)."""

    schema_name: ClassVar[str] = "order_alert"

    record_id: str = Field(description="Deterministic id (order, stage, due date, occurrence, kind); consumers dedup "
                           "by it.")
    order_id: str = Field(description="Hub order id; the Kafka message key.")
    order_number: str = Field(description="Human-readable order number.")
    version: int = Field(description="The order version the alert was decided on.")
    kind: str = Field(description="RAISED or CLEARED.")
    stage: str = Field(description="The alert stage, as workflow.yaml names it (due_soon, escalated).")
    notify: str = Field(description="The role the stage alerts (a HUB role).")
    due_date: dt.date = Field(description="The due date the alert is about.")
    occurrence: int = Field(description="1 the first time this stage is raised for this due date; the next number "
                            "when the condition ended and came back.")
    days_left: int = Field(description="Days from the decision's date to the due date (negative: overdue).")
    status: str = Field(description="The order's lifecycle status at that version.")
    on_hold: bool = Field(description="Whether the order was on hold.")
    reason: str = Field(description="Why it was raised or cleared, for a person.")
    decided_at: dt.datetime = Field(description="When it was decided (the evaluating clock).")


class ProposalAnswer(_Event):
    """The hub's one answer to one proposal, which its sender waits for by event id."""

    schema_name: ClassVar[str] = "proposal_answer"

    record_id: str = Field(description="Deterministic id; consumers dedup by it.")
    event_id: str = Field(description="The proposal this record answers.")
    order_id: str | None = Field(None, description="Hub order id, when the proposal could be resolved to one.")
    order_number: str | None = Field(None, description="The order's number, once it exists.")
    source_system: str = Field(description="The proposal's source system.")
    outcome: ProposalOutcome = Field(ProposalOutcome.UNKNOWN, description="What became of the proposal.")
    version: int | None = Field(None, description="The order's version after this decision (the sender's next "
                                "base); null while the order does not exist, and for a duplicate.")
    made_version: int | None = Field(None, description="The version this proposal made, when accepted "
                                     "(for a duplicate: the version its first delivery made).")
    first_outcome: ProposalOutcome | None = Field(None, description="For a duplicate: how the event id was "
                                                  "decided the first time, when still known.")
    message: str | None = Field(None, description="One line for a person: a rejection's first reason, a "
                                "conflict's fields.")
    decided_at: dt.datetime = Field(description="When the hub decided.")


#: Every top-level event model, by schema folder name.
EVENT_MODELS: dict[str, type[_Event]] = {
    model.schema_name: model
    for model in (OrderSnapshot, ChangeProposal, OrderChange, OrderConflict, OrderRejection, OrderRelease,
                  ProposalAnswer, OrderAlert)
}
