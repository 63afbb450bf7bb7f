"""The engine's work per record, independent of the stream runtime.

The worker (``hub.streams.app``, Quix Streams) and the benchmark's bare aiokafka loop both
call these functions, so what is measured is the same work. Each takes the raw record and a
mutable mapping for state (Quix State, or a dict), and returns the records to publish.

Crash safety, at least once, with the runtime's help:

1. The whole engine state of an order, dedup evidence included, is one table value, written
   once per proposal (``state_value``: the state, compact MessagePack).
2. The runtime keeps that state consistent with the committed input offsets: after a crash the
   worker resumes with the state as of its last commit and reads the records after it again.
   Deciding is a pure function of the state and the record (the decision time is the record's
   timestamp, an order number its position), so those records are decided again exactly as
   before, and their outputs come out again byte for byte, with the same deterministic record
   ids that consumers dedup by.
3. The same event id arriving in another record (a sender's retry) is a duplicate: it is
   answered DUPLICATE with the version it made, and nothing else is published.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, MutableMapping

import orjson

from hub import correlation
from hub.domain.decide import Decision, DecisionKind, decide
from hub.domain.order import OrderState
from hub.domain.rules import Rules
from hub.errors import ReferenceTaken, UndecodableRecord
from hub.events import (
    ChangeProposal, ExternalRef, FieldError, OrderRejection, ProposalAnswer, ProposalOutcome, RejectionReason,
)
from hub.logs import bound
from hub.observability import metrics
from hub.serde.wire import AvroCodec
from hub.settings import Settings
from hub.topics import TopicNames

#: Namespace of order ids derived from the external reference that created the order.
ORDER_ID_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4f0e-9a57-0b7c2f4d9e10")


@dataclass(frozen=True)
class Outbound:
    """One record to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Inbound:
    """Where a record was read from: what a dead letter and a decision need to know."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def at(self) -> dt.datetime:
        """The record's timestamp: the decision time, identical on replay."""
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.timezone.utc)


def order_id_for_reference(reference_key: str) -> str:
    """The order id an external reference creates: the same on every redelivery and race."""
    return str(uuid.uuid5(ORDER_ID_NAMESPACE, reference_key))


def order_number(record: Inbound) -> str:
    """The number of the order the creation at ``record`` makes: year, partition and position.

    Derived from where the creation sits in the by-order topic, which no replay changes, so a
    re-decided creation (its table write lost in a crash, its change already out) gets the same
    number, and no counter needs a second table write. Unique while the topic lives (a new
    topic version starts its offsets again: give it another prefix).
    """
    return f"ORD-{record.at.year}-{record.partition:02d}-{record.offset:06d}"


def error_headers(stage: str, error: BaseException, *, topic: str | None = None, partition: int | None = None,
                  offset: int | None = None) -> tuple[tuple[str, bytes], ...]:
    """Why a record is a dead letter, in Kafka-Connect-style headers: where it was read (when it was
    read from Kafka), the stage, the exception's class and message. Every dead letter of the hub (the
    engine's, the alert worker's, the notifier's, a connector's) is made here, so it is counted here
    (``orderhub_dead_letters_total``, at least once like every counter)."""
    metrics.DEAD_LETTERS.labels(metrics.dead_letter_stage(stage)).inc()
    where = () if topic is None else (
        ("__orderhub.errors.topic", topic.encode()),
        ("__orderhub.errors.partition", str(partition).encode()),
        ("__orderhub.errors.offset", str(offset).encode()),
    )
    return (*where,
            ("__orderhub.errors.stage", stage.encode()),
            ("__orderhub.errors.exception.class.name", f"{type(error).__module__}.{type(error).__qualname__}".encode()),
            ("__orderhub.errors.exception.message", str(error)[:4000].encode()))


def dead_letter(topics: TopicNames, record: Inbound, stage: str, error: BaseException) -> Outbound:
    """The record, byte for byte, for the dead-letter topic, with why in Kafka-Connect-style headers."""
    headers = error_headers(stage, error, topic=record.topic, partition=record.partition, offset=record.offset)
    return Outbound(topics.dead_letters, record.key, record.value, headers)


#: What the engine tells about each proposal it answered (the worker counts it: ``hub.observability``):
#: the record, the proposal, its outcome, the decision (None for a proposal naming no order), the rejection.
Observer = Callable[[Inbound, ChangeProposal, ProposalOutcome, "Decision | None", "OrderRejection | None"], None]


class Engine:
    """Resolves references and decides proposals; encodes every output once."""

    def __init__(self, codec: AvroCodec, rules: Rules, topics: TopicNames, observe: Observer | None = None) -> None:
        self.codec = codec
        self.rules = rules
        self.topics = topics
        self.observe = observe

    # --- stage 1: resolve the order a proposal is about and re-key by it -----------------

    def resolve(self, record: Inbound, references: MutableMapping[bytes, bytes]) -> list[Outbound]:
        """Forward a proposal keyed by its hub order id (the bytes unchanged), or explain why not.

        Only the order reference is read, from the decoded record as it is: decide validates the
        whole proposal, and builds the model again anyway. The model is built here only for the
        rare rejection, which carries the proposal whole.
        """
        try:
            ref = self.codec.decode(record.value, "change_proposal", topic=record.topic, partition=record.partition,
                                    offset=record.offset).value["order_ref"]
        except UndecodableRecord as exc:
            return [dead_letter(self.topics, record, "resolve", exc)]
        order_id, external = ref["order_id"], ref["external"]
        if order_id is None or not order_id.strip():  # as OrderRef.key: a blank order id names nothing
            if external is None:
                return self._unknown_order(record)
            reference = ExternalRef.model_validate(external).key
            linked = references.get(reference.encode())
            order_id = linked.decode() if linked else order_id_for_reference(reference)
        return [Outbound(self.topics.by_order, order_id.encode(), record.value, record.headers)]

    def _unknown_order(self, record: Inbound) -> list[Outbound]:
        """The rejection and the answer for a proposal that names no order."""
        try:
            proposal = self._proposal(record)
        except UndecodableRecord as exc:
            return [dead_letter(self.topics, record, "resolve", exc)]
        rejection = OrderRejection(
            record_id=f"{proposal.event_id}:rejection", event_id=proposal.event_id, order_id=None,
            reason=RejectionReason.UNKNOWN_ORDER,
            errors=[FieldError(field="order_ref", rule="order_ref names the order",
                               message="order_ref has neither order_id nor an external reference")],
            decided_at=record.at, proposal=proposal,
        )
        answer = ProposalAnswer(
            record_id=f"{proposal.event_id}:answer", event_id=proposal.event_id,
            source_system=proposal.source_system, outcome=ProposalOutcome.REJECTED,
            message=rejection.errors[0].message, decided_at=record.at)
        if self.observe is not None:
            self.observe(record, proposal, ProposalOutcome.REJECTED, None, rejection)
        return [self._out(self.topics.rejections, record.key, rejection),
                self._out(self.topics.answers, record.key, answer)]

    def link_reference(self, record: Inbound, references: MutableMapping[bytes, bytes]) -> list[Outbound]:
        """Remember which order an external reference belongs to (key: reference, value: order id).

        The first order to claim a reference keeps it: one outside id never routes to two orders.
        A second order's claim is refused to the dead-letter topic, naming both orders.
        """
        if record.key is None or not record.value:
            return []
        linked = references.get(record.key)
        if linked is not None and linked != record.value:
            error = ReferenceTaken(f"{record.key.decode()} belongs to order {linked.decode()}; "
                                   f"not re-linked to order {record.value.decode()}")
            return [dead_letter(self.topics, record, "link", error)]
        references[record.key] = record.value
        return []

    # --- stage 2: decide -----------------------------------------------------------------

    def decide(self, record: Inbound, table: MutableMapping[bytes, bytes]) -> list[Outbound]:
        """Decide one proposal against its order's state; write the state once; return the outputs."""
        try:
            proposal = self._proposal(record)
        except UndecodableRecord as exc:
            return [dead_letter(self.topics, record, "decide", exc)]
        key = record.key or b""
        stored = table.get(key)
        state = stored_state(stored) if stored else None
        if state is None or not state.exists:  # rule 1 of hub.correlation: the creation starts the flow
            state = replace(state or OrderState(order_id=key.decode()),
                            correlation_id=correlation.of(record.headers) or proposal.event_id)
        elif state.correlation_id is None:  # an order from before correlation ids: its id stands in
            state = replace(state, correlation_id=state.order_id)
        with bound(order_id=state.order_id, order_number=state.order_number, event_id=proposal.event_id,
                   correlation_id=state.correlation_id):
            return self._decide(record, key, proposal, state, table)

    def _decide(self, record: Inbound, key: bytes, proposal: ChangeProposal, state: OrderState,
                table: MutableMapping[bytes, bytes]) -> list[Outbound]:
        decision = decide(state, proposal, order_id=key.decode(), rules=self.rules, at=record.at,
                          next_order_number=lambda: order_number(record))
        if self.observe is not None:
            self.observe(record, proposal, decision.kind.outcome, decision, decision.rejection)
        if decision.kind == DecisionKind.DUPLICATE:
            # Another record with a decided event id: a sender's retry. Answer it; change nothing.
            answer = decision.answer.model_copy(
                update={"record_id": f"{proposal.event_id}:duplicate@{record.partition}:{record.offset}"})
            return [self._out(self.topics.answers, key, answer, correlation.header(state.correlation_id))]
        table[key] = state_value(decision.state)
        return self._outputs(decision, key, correlation.header(decision.state.correlation_id))

    def _outputs(self, decision: Decision, key: bytes, flow: tuple[tuple[str, bytes], ...]) -> list[Outbound]:
        """The decision's records; ``flow`` (rule 2 of hub.correlation) on every one about the order."""
        outputs = []
        if decision.change is not None:
            outputs.append(self._out(self.topics.changes, key, decision.change, flow))
            outputs += [Outbound(self.topics.ref_links, ref.key.encode(), key) for ref in decision.change.external_refs_added]
        if decision.conflict is not None:
            outputs.append(self._out(self.topics.conflicts, key, decision.conflict, flow))
        if decision.rejection is not None:
            outputs.append(self._out(self.topics.rejections, key, decision.rejection, flow))
        if decision.release is not None:
            outputs.append(self._out(self.topics.releases, key, decision.release, flow))
        if decision.accepted:
            outputs.append(self._snapshot(key, decision.state, flow))
        if decision.answer is not None:
            outputs.append(self._out(self.topics.answers, key, decision.answer, flow))
        return outputs

    def _proposal(self, record: Inbound) -> ChangeProposal:
        decoded = self.codec.decode(record.value, "change_proposal", topic=record.topic,
                                    partition=record.partition, offset=record.offset)
        try:
            return ChangeProposal.from_avro(decoded.value)
        except ValueError as exc:
            raise UndecodableRecord(f"not a valid change proposal: {exc}").at(
                record.topic, record.partition, record.offset) from exc

    def _out(self, topic: str, key: bytes | None, event: Any, headers: tuple[tuple[str, bytes], ...] = ()) -> Outbound:
        return Outbound(topic, key, self.codec.encode(event.schema_name, event.to_avro()), headers)

    def _snapshot(self, key: bytes, state: OrderState, headers: tuple[tuple[str, bytes], ...] = ()) -> Outbound:
        """The state record: the snapshot built straight from the state (``OrderState.snapshot_record``)."""
        return Outbound(self.topics.state, key,
                        self.codec.encode("order_snapshot", state.snapshot_record(), quantised=True), headers)


def state_value(state: OrderState) -> bytes:
    """One order's table value: its state, compact (``OrderState.to_table``)."""
    return state.to_table()


def stored_state(value: bytes) -> OrderState:
    """The order state in one table value (what the changelog carries). Also reads the JSON the
    engine wrote before (``{"id": ...}``; MessagePack's map never starts with ``{``), and the
    layouts the faust-based engine wrote (``{"state": ..., "replay": [...]}``, or the state then
    replay lines)."""
    if not value.startswith(b"{"):
        return OrderState.from_table(value)
    first = value.find(b"\n")
    entry = orjson.loads(value if first < 0 else value[:first])
    return OrderState.from_dict(entry["state"] if "state" in entry else entry)


def range_group_consumer(settings: Settings, group: str) -> Any:
    """A consumer in the (namespaced) group ``group`` that commits nothing by itself, with range
    assignment: partition p of every topic it subscribes to goes to the same member, so co-partitioned
    topics (an order's state and its alerts) are read together. The workers beside the engine use it."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=settings.topic_namespace + group,
        enable_auto_commit=False, auto_offset_reset="earliest", partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000))
