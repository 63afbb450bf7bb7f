"""The engine benchmark's workload: N change proposals for M orders, encoded once.

Every order gets one CREATE (keyed by the CRM opportunity that made it, ``order_ref.external``
set, so the resolver derives the order id), then UPDATEs from the CRM, ERP and MES connectors,
keyed by the hub order id (``order_ref.order_id`` set, so the resolver forwards them without a
table lookup). The mix is what integration traffic looks like:

- most updates are written on the order's current version;
- some are written on a stale version (the writer had not seen the latest changes): they
  merge when nothing they touch changed since, or conflict (owner wins, or parked for a
  person when the field's policy is manual or neither side owns it);
- a few are refused (a writer touching a field it may not write, an unknown field, an
  invalid value, a base version from the future).

A creation is keyed by its reference and the updates by the order id, so they would usually
land on different partitions of the proposals topic; with the whole workload produced before
the consumers start, a consumer that drains one partition before another would then see
updates before their order exists, which real traffic (hours apart) never shows. The
references are therefore chosen so that both keys fall on the same partition (the producer's
murmur2 partitioner, ``partitions`` partitions): per partition, creation comes first.

The proposals are generated in the order they are produced, and folded through the pure
``hub.domain.decide`` as they are generated: each writer's base version is what it would
really have seen, and the folded outcomes are the mix the engine is expected to reproduce.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from aiokafka.partitioner import DefaultPartitioner

from hub.domain.decide import decide
from hub.domain.fields import canonical_json, format_timestamp
from hub.domain.order import OrderState
from hub.domain.rules import Rules
from hub.events import Actor, ChangeProposal, ExternalRef, FieldChange, OrderRef, ProposalIntent
from hub.serde.wire import AvroCodec
from hub.streams.core import order_id_for_reference

#: Share of updates written on the current version; the rest are stale or refused.
CURRENT_SHARE = 0.82
#: Share of updates written on an older version (1 to 3 versions behind).
STALE_SHARE = 0.13
#: What is left (about 5 %) is refused by the rules.

Value = Callable[[random.Random, OrderState], Any]


def _money(rng: random.Random, _: OrderState) -> str:
    return f"{rng.randrange(100, 1_000_000)}.{rng.randrange(100):02d}"


def _date(rng: random.Random, _: OrderState) -> str:
    return (dt.date(2026, 12, 1) + dt.timedelta(days=rng.randrange(120))).isoformat()


def _timestamp(rng: random.Random, _: OrderState) -> str:
    return format_timestamp(dt.datetime(2026, 12, 1, 6, tzinfo=dt.timezone.utc)
                            + dt.timedelta(minutes=15 * rng.randrange(2000)))


def _pick(*choices: Any) -> Value:
    return lambda rng, _: rng.choice(choices)


def _text(prefix: str) -> Value:
    return lambda rng, _: f"{prefix} {rng.randrange(1_000_000)}"


#: The fields each connector writes (all permitted by ownership.yaml for role ``connector``).
#: Shared fields (currency, terms, requested_delivery, customer_po_number, on_hold, hold_reasons,
#: lines.10.quantity, instructions) are where stale writes conflict.
WRITER_FIELDS: dict[str, dict[str, Value]] = {
    "CRM": {
        "customer.name": _text("Customer"), "contact": _text("Contact"), "sales_owner": _text("Rep"),
        "customer_po_number": _text("PO"), "amounts.crm_expected": _money, "requested_delivery": _date,
        "currency": _pick("EUR", "USD", "CHF"), "terms": _pick("NET30", "NET60", "NET90"),
        "lines.10.quantity": lambda rng, _: str(rng.randrange(1, 500)),
        "instructions": lambda rng, _: [{"key": "coating", "text": rng.choice(["zinc", "paint", "none"])}],
    },
    "ERP": {
        "amounts.net": _money, "amounts.tax": _money, "amounts.gross": _money,
        "currency": _pick("EUR", "USD", "CHF"), "terms": _pick("NET30", "NET60", "NET90"),
        "plant": _pick("P100", "P200", "P300"), "credit_status": _pick("OK", "CHECK", "BLOCKED"),
        "promised_delivery": _date, "priority": lambda rng, _: rng.randrange(10),
        "requested_delivery": _date, "customer_po_number": _text("PO"),
        "lines.10.unit_price": lambda rng, _: f"{rng.randrange(1, 10_000)}.{rng.randrange(10_000):04d}",
        "lines.10.confirmed_date": _date, "lines.10.confirmed_quantity": lambda rng, _: str(rng.randrange(1, 500)),
        "lines.10.quantity": lambda rng, _: str(rng.randrange(1, 500)),
        "on_hold": lambda rng, state: state.value("on_hold") != "true",
        "hold_reasons": _pick(["credit check"], ["material shortage"], []),
    },
    "MES": {
        "planned_start": _timestamp, "planned_end": _timestamp, "actual_start": _timestamp,
        "lines.10.good_quantity": lambda rng, _: str(rng.randrange(0, 500)),
        "lines.10.scrap_quantity": lambda rng, _: str(rng.randrange(0, 20)),
        "on_hold": lambda rng, state: state.value("on_hold") != "true",
        "hold_reasons": _pick(["machine down"], ["material shortage"], []),
    },
}
#: How often each connector writes.
WRITER_WEIGHTS = {"CRM": 0.35, "ERP": 0.40, "MES": 0.25}
#: Lifecycle steps a connector takes when the order is ready for them (ownership.yaml status.steps).
STEPS = {"CRM": {"DRAFT": "CONFIRMED"}, "ERP": {"CONFIRMED": "APPROVED"}, "MES": {"RELEASED": "IN_PRODUCTION"}}


@dataclass(frozen=True)
class EncodedProposal:
    """One proposal as it goes on the proposals topic."""

    event_id: str
    #: The record key: the creating reference (``CRM/Opportunity/...``) for a CREATE, else the order id.
    key: bytes
    #: Avro single-object bytes (or Confluent-framed, with a registry), encoded once.
    value: bytes
    timestamp_ms: int
    order_id: str
    #: What the pure fold in produce order decided (created, applied, merged, resolved, parked, kept, rejected).
    expected: str


@dataclass(frozen=True)
class Workload:
    """The proposals in produce order, and what the pure domain decides for them in that order."""

    proposals: list[EncodedProposal]
    orders: int
    #: Decision kinds (created, applied, merged, resolved, parked, kept, rejected) in produce order.
    expected: Counter
    #: Seconds it took to build, encode and fold the proposals.
    build_s: float

    @property
    def mean_bytes(self) -> float:
        """Mean encoded proposal size."""
        return sum(len(p.value) for p in self.proposals) / max(1, len(self.proposals))


def _json_text(value: Any) -> str | None:
    return canonical_json(value)


def build_workload(n: int, orders: int, codec: AvroCodec, rules: Rules, *, start_ms: int,
                   step_ms: float = 1.0, seed: int = 20260302, tag: str = "b", partitions: int = 6) -> Workload:
    """N proposals for M orders (M creations, then N-M updates), timestamps ``start_ms + i*step_ms``.

    ``tag`` makes event ids and references unique per workload.
    """
    if n < orders or orders < 1:
        raise ValueError(f"need at least one proposal per order: n={n}, orders={orders}")
    began = time.perf_counter()
    rng = random.Random(seed)
    refs = [_co_partitioned_ref(f"OPP-{tag}-{i:06d}", partitions) for i in range(orders)]
    order_ids = [order_id_for_reference(ref.key) for ref in refs]
    updates = [order for order in range(orders) for _ in range((n - orders) // orders)]
    updates += rng.sample(range(orders), (n - orders) % orders)
    rng.shuffle(updates)
    # every creation first: an update can then never overtake its order's creation across partitions
    sequence = [(order, True) for order in range(orders)] + [(order, False) for order in updates]

    states: dict[int, OrderState] = {}
    numbers = iter(range(1, n + 1))
    expected: Counter = Counter()
    proposals: list[EncodedProposal] = []
    for index, (order, creating) in enumerate(sequence):
        timestamp_ms = int(start_ms + index * step_ms)
        at = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.timezone.utc)
        event_id = f"{tag}-{index:07d}"
        state = states.get(order) or OrderState(order_ids[order])
        if creating:
            proposal = _creation(event_id, refs[order], order, at)
            key = refs[order].key.encode()
        else:
            proposal = _update(rng, event_id, order_ids[order], state, at)
            key = order_ids[order].encode()
        decision = decide(state, proposal, order_id=order_ids[order], rules=rules, at=at,
                          next_order_number=lambda: f"ORD-{next(numbers):06d}")
        states[order] = decision.state
        expected[decision.kind.value] += 1
        proposals.append(EncodedProposal(event_id, key, codec.encode("change_proposal", proposal.to_avro()),
                                         timestamp_ms, order_ids[order], decision.kind.value))
    return Workload(proposals, orders, expected, time.perf_counter() - began)


def _co_partitioned_ref(external_id: str, partitions: int) -> ExternalRef:
    """A CRM reference whose key lands on the same partition as the order id it derives."""
    place = DefaultPartitioner()
    every = list(range(partitions))
    for attempt in range(1000):
        ref = ExternalRef(system="CRM", object_type="Opportunity", external_id=f"{external_id}-{attempt}")
        if place(ref.key.encode(), every, every) == place(order_id_for_reference(ref.key).encode(), every, every):
            return ref
    raise AssertionError("no co-partitioned reference in 1000 attempts")


def _creation(event_id: str, ref: ExternalRef, order: int, at: dt.datetime) -> ChangeProposal:
    """A CRM creation with every mandatory field (customer, due date, requirements, one line)."""
    values = {
        "customer.id": f"C-{order % 97:03d}", "customer.name": f"Customer {order}",
        "requested_delivery": "2026-12-01", "instructions": [{"key": "coating", "text": "zinc"}],
        "lines.10.material.id": f"MAT-{order % 50:03d}", "lines.10.quantity": "5", "lines.10.unit": "C62",
        "currency": "EUR",
    }
    return ChangeProposal(
        event_id=event_id, order_ref=OrderRef(external=ref), intent=ProposalIntent.CREATE, base_version=0,
        source_system="CRM", actor=Actor(id="crm-connector", role="connector"),
        occurred_at=at - dt.timedelta(seconds=5),
        changes=[FieldChange(field=path, value=_json_text(value)) for path, value in values.items()],
        external_refs=[ref],
    )


def _update(rng: random.Random, event_id: str, order_id: str, state: OrderState, at: dt.datetime) -> ChangeProposal:
    """One connector's update: on the current version, a stale one, or one the rules refuse."""
    system = rng.choices(list(WRITER_WEIGHTS), weights=list(WRITER_WEIGHTS.values()))[0]
    pool = WRITER_FIELDS[system]
    paths = rng.sample(sorted(pool), rng.choice((1, 1, 2, 2, 3)))
    changes: list[tuple[str, str | None]] = [(p, _json_text(pool[p](rng, state))) for p in paths]
    step = STEPS[system].get(state.status)
    if step and rng.random() < 0.25:
        changes.append(("status", _json_text(step)))
    roll = rng.random()
    if roll < CURRENT_SHARE:
        base = state.version
    elif roll < CURRENT_SHARE + STALE_SHARE:
        base = max(1, state.version - rng.randint(1, 3))
    else:
        base = state.version
        refusal = rng.randrange(4)
        if refusal == 0:   # MES may not write ERP's money
            changes.append(("amounts.net", _json_text(_money(rng, state))))
            system = "MES"
        elif refusal == 1:
            changes.append(("lines.10.colour", _json_text("red")))
        elif refusal == 2:
            changes = [("lines.10.quantity", _json_text("-1"))] if system != "MES" else [("priority", '"high"')]
            if system == "MES":
                system = "ERP"
        else:
            base = state.version + 3
    return ChangeProposal(
        event_id=event_id, order_ref=OrderRef(order_id=order_id), intent=ProposalIntent.UPDATE, base_version=base,
        source_system=system, actor=Actor(id=f"{system.lower()}-connector", role="connector"),
        occurred_at=at - dt.timedelta(seconds=5), changes=[FieldChange(field=p, value=v) for p, v in changes],
    )


def decision_id(value: bytes) -> str:
    """The event id a decision record (change, conflict, rejection, release) answers, read cheaply.

    The first two fields of every decision schema are ``record_id`` and ``event_id`` (strings;
    ``check_decision_layout`` proves it for the schemas in use), so the event id is read from
    the Avro body without decoding the rest: the counting consumer must stay cheap.
    """
    position = 10 if value[:2] == b"\xc3\x01" else 5
    for field in range(2):
        length, position = _zigzag(value, position)
        if field == 1:
            return value[position:position + length].decode()
        position += length
    raise AssertionError("unreachable")


def proposal_id(value: bytes) -> str:
    """The event id of a change proposal (its first field), read cheaply."""
    position = 10 if value[:2] == b"\xc3\x01" else 5
    length, position = _zigzag(value, position)
    return value[position:position + length].decode()


def _zigzag(data: bytes, position: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7


def check_decision_layout(codec: AvroCodec) -> None:
    """Fail early if a schema no longer starts the way ``decision_id``/``proposal_id`` assume."""
    for name in ("order_change", "order_conflict", "order_rejection", "order_release", "proposal_answer"):
        fields = codec.store.latest(name).raw["fields"]
        if [(f["name"], f["type"]) for f in fields[:2]] != [("record_id", "string"), ("event_id", "string")]:
            raise SystemExit(f"bench: {name} no longer starts with record_id, event_id strings: update decision_id")
    first = codec.store.latest("change_proposal").raw["fields"][0]
    if (first["name"], first["type"]) != ("event_id", "string"):
        raise SystemExit("bench: change_proposal no longer starts with event_id: update proposal_id")

