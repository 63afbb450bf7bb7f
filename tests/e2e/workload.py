"""A seeded stream of proposals for many orders, with the pure reference model's verdicts.

The generator steps the reference model (``hub.domain.decide``, the same rules the engine
runs) while it generates, so base versions, lifecycle steps and conflicts are realistic:
mostly proposals on the current version, some on stale versions (which merge or conflict),
some a writer may not make (rejected), some redelivered byte for byte (duplicates).

Every order is named the same way by all of its proposals (its hub id, or the CRM
reference that created it), so all of them travel one partition in order, as they do
from a real connector; the reference model sees them in that same order.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal

from hub.domain.decide import Decision, decide
from hub.domain.fields import canonical_json
from hub.domain.order import OrderState
from hub.domain.rules import Rules
from hub.events import Actor, ChangeProposal, ExternalRef, FieldChange, OrderRef, ProposalIntent
from hub.serde.wire import AvroCodec
from hub.streams.core import order_id_for_reference

#: (system, role, fields it writes, lifecycle steps it takes)
WRITERS = (
    ("CRM", "connector", ("customer.name", "contact", "requested_delivery", "lines.10.quantity"), {"DRAFT": "CONFIRMED"}),
    ("ERP", "connector", ("amounts.net", "promised_delivery", "lines.10.quantity", "lines.10.unit_price"),
     {"CONFIRMED": "APPROVED", "COMPLETED": "SHIPPED", "SHIPPED": "CLOSED"}),
    ("HUB", "planner", ("plant", "instructions", "planned_start"), {"APPROVED": "RELEASED"}),
    ("MES", "supervisor", ("actual_start", "lines.10.good_quantity", "priority"),
     {"RELEASED": "IN_PRODUCTION", "IN_PRODUCTION": "COMPLETED"}),
)


@dataclass
class Sent:
    """One record the workload produces: the bytes, and the proposal they carry."""

    key: bytes
    value: bytes
    timestamp_ms: int
    order_id: str
    proposal: ChangeProposal
    duplicate: bool


@dataclass
class Workload:
    """The records to send, and what the reference model decided for each distinct proposal."""

    records: list[Sent] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)
    states: dict[str, OrderState] = field(default_factory=dict)


def _value(path: str, rng: random.Random, i: int) -> object:
    """A valid value for a field, varied so that writers disagree now and then."""
    if path in ("amounts.net", "lines.10.unit_price"):
        return str(Decimal(rng.randint(100, 99999)) / 100)
    if path.endswith("quantity"):
        return str(rng.randint(1, 50))
    if path in ("requested_delivery", "promised_delivery"):
        return (dt.date(2026, 12, 1) + dt.timedelta(days=rng.randint(0, 60))).isoformat()
    if path in ("actual_start", "planned_start"):
        return f"2026-12-{rng.randint(1, 28):02d}T{rng.randint(6, 18):02d}:00:00.000Z"
    if path == "instructions":
        return [rng.choice(["anodise", "powder coat", "zinc", "passivate"])]
    if path == "priority":
        return rng.randint(0, 9)
    return f"{path.split('.')[-1]}-{rng.randint(1, 6)}"


def _creation_changes(rng: random.Random, n: int) -> dict[str, object]:
    return {
        "customer.id": f"C-{n % 97}", "customer.name": f"Customer {n % 97}",
        "requested_delivery": (dt.date(2026, 12, 1) + dt.timedelta(days=n % 40)).isoformat(),
        "instructions": ["deburr"], "lines.10.material.id": f"MAT-{n % 13}",
        "lines.10.quantity": str(rng.randint(1, 40)), "lines.10.unit": "C62",
    }


def build(codec: AvroCodec, rules: Rules, *, orders: int, proposals: int, seed: int,
          start_ms: int) -> Workload:
    """Generate ``proposals`` records for ``orders`` orders and decide each with the reference model."""
    rng = random.Random(seed)
    work = Workload()
    naming: dict[str, tuple[bytes, OrderRef]] = {}
    sent: list[Sent] = []
    order_ids = []
    for n in range(orders):
        if n % 2:  # half the orders are named by the CRM reference that creates them
            ref = ExternalRef(system="CRM", object_type="Opportunity", external_id=f"006-{seed}-{n}")
            order_id = order_id_for_reference(ref.key)
            naming[order_id] = (ref.key.encode(), OrderRef(external=ref))
        else:
            order_id = str(uuid.UUID(int=rng.getrandbits(128)))
            naming[order_id] = (order_id.encode(), OrderRef(order_id=order_id))
        order_ids.append(order_id)

    def emit(order_id: str, proposal: ChangeProposal, *, duplicate: bool = False) -> None:
        key, _ = naming[order_id]
        ts = start_ms + len(work.records)
        record = Sent(key, codec.encode("change_proposal", proposal.to_avro()), ts, order_id, proposal, duplicate)
        work.records.append(record)
        if duplicate:
            return
        at = dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc)
        prior = work.states.get(order_id)
        if prior is None or not prior.exists:  # the creation's event id names the order's flow
            prior = replace(prior or OrderState(order_id=order_id), correlation_id=proposal.event_id)
        decision = decide(prior, proposal, order_id=order_id, rules=rules, at=at,
                          next_order_number=lambda: "ORD-REFERENCE")
        work.decisions[proposal.event_id] = decision
        work.states[order_id] = decision.state
        sent.append(record)

    def make(order_id: str, changes: dict[str, object], *, system: str, role: str, base: int,
             intent: ProposalIntent = ProposalIntent.UPDATE, refs: list[ExternalRef] | None = None) -> ChangeProposal:
        _, order_ref = naming[order_id]
        return ChangeProposal(
            event_id=f"p-{seed}-{len(work.records)}", order_ref=order_ref, intent=intent, base_version=base,
            source_system=system, actor=Actor(id=f"{system.lower()}-{role}", role=role),
            occurred_at=dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc),
            changes=[FieldChange(field=p, value=canonical_json(v)) for p, v in changes.items()],
            external_refs=refs or [],
        )

    for n, order_id in enumerate(order_ids):  # every order starts with its creation
        refs = [naming[order_id][1].external] if naming[order_id][1].external else []
        emit(order_id, make(order_id, _creation_changes(rng, n), system="CRM", role="connector", base=0,
                            intent=ProposalIntent.CREATE, refs=refs))

    while len(work.records) < proposals:
        roll = rng.random()
        if roll < 0.03 and sent:  # a redelivery: the same bytes again, later on the same partition
            earlier = rng.choice(sent[-200:])
            emit(earlier.order_id, earlier.proposal, duplicate=True)
            continue
        order_id = rng.choice(order_ids)
        state = work.states[order_id]
        system, role, writable, steps = rng.choice(WRITERS)
        base = state.version if rng.random() < 0.7 else max(0, state.version - rng.randint(1, 3))
        if roll < 0.05:  # a field this writer may not write: rejected whole
            forbidden = "amounts.net" if system != "ERP" else "actual_start"
            changes = {forbidden: _value(forbidden, rng, n)}
        elif roll < 0.15 and state.status in steps:
            changes = {"status": steps[state.status]}
        else:
            paths = rng.sample(writable, rng.randint(1, 2))
            changes = {p: _value(p, rng, len(work.records)) for p in paths}
        emit(order_id, make(order_id, changes, system=system, role=role, base=base))
    return work
