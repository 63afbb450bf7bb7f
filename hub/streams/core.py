"""The engine's work per record, independent of the stream framework.

The faust agents (``hub.streams.app``) and the benchmark's bare aiokafka loop both call
these functions, so what is measured is the same work. Each takes the raw record and a
mutable mapping for state (a faust Table, or a dict), and returns the records to publish.

Crash safety, at least once:

1. The whole engine state of an order, dedup evidence included, is one table value, written
   once per proposal. faust flushes the changelog before it commits input offsets, so after
   a crash the input is replayed against state that may already contain its effects.
2. A replayed proposal is recognised by its event id in that state and changes nothing.
3. Its outputs may have been lost in flight, so the state also keeps a replay buffer: the
   encoded outputs of the proposals decided since the input offset last committed (the only
   ones a replay can meet again), re-published byte for byte when the same input record (same
   offset) is read again. Every output carries a deterministic record id; consumers dedup by
   it. The table value itself is written again too: a warm restart reads the worker's local
   RocksDB, which can hold a write whose changelog record the crash lost.
4. The same event id arriving in another record (a sender's retry, not a crash replay) is a
   duplicate: it is answered DUPLICATE with the version it made, and nothing is re-published.
5. The decision time is the input record's timestamp, so a replay decides identically.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, MutableMapping

from hub.domain.decide import Decision, DecisionKind, decide
from hub.domain.order import OrderState
from hub.domain.rules import Rules
from hub.errors import ReferenceTaken, UndecodableRecord
from hub.events import ChangeProposal, FieldError, OrderRejection, ProposalAnswer, ProposalOutcome, RejectionReason
from hub.serde.wire import AvroCodec
from hub.topics import TopicNames

#: Namespace of order ids derived from the external reference that created the order.
ORDER_ID_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4f0e-9a57-0b7c2f4d9e10")
#: Hard cap on the re-publishable decisions kept per order (normally far fewer are kept).
REPLAY_LIMIT = 64


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
    read from Kafka), the stage, the exception's class and message."""
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


class Engine:
    """Resolves references and decides proposals; encodes every output once."""

    def __init__(self, codec: AvroCodec, rules: Rules, topics: TopicNames) -> None:
        self.codec = codec
        self.rules = rules
        self.topics = topics

    # --- stage 1: resolve the order a proposal is about and re-key by it -----------------

    def resolve(self, record: Inbound, references: MutableMapping[bytes, bytes]) -> list[Outbound]:
        """Forward a proposal keyed by its hub order id (the bytes unchanged), or explain why not."""
        try:
            proposal = self._proposal(record)
        except UndecodableRecord as exc:
            return [dead_letter(self.topics, record, "resolve", exc)]
        ref = proposal.order_ref
        if ref.key is not None and ref.key == ref.order_id:
            order_id = ref.order_id
        elif ref.external is not None:
            linked = references.get(ref.external.key.encode())
            order_id = linked.decode() if linked else order_id_for_reference(ref.external.key)
        else:
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
            return [self._out(self.topics.rejections, record.key, rejection),
                    self._out(self.topics.answers, record.key, answer)]
        return [Outbound(self.topics.by_order, order_id.encode(), record.value)]

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

    def decide(self, record: Inbound, table: MutableMapping[bytes, bytes], committed_offset: int | None) -> list[Outbound]:
        """Decide one proposal against its order's state; write the state once; return the outputs."""
        try:
            proposal = self._proposal(record)
        except UndecodableRecord as exc:
            return [dead_letter(self.topics, record, "decide", exc)]
        key = record.key or b""
        stored = table.get(key)
        entry = json.loads(stored) if stored else None
        state = OrderState.from_dict(entry["state"]) if entry else None
        decision = decide(state, proposal, order_id=key.decode(), rules=self.rules, at=record.at,
                          next_order_number=lambda: order_number(record))
        replay = (entry or {}).get("replay", [])
        if decision.kind == DecisionKind.DUPLICATE:
            decided = next((item for item in replay if item[0] == proposal.event_id), None)
            if decided is not None and decided[1] == record.offset:
                # The same input record read again after a crash: its outputs may be lost, and its
                # table write may exist only in this worker's local store (RocksDB keeps a write whose
                # changelog record a crash lost). Re-publish them and write the same value again.
                table[key] = stored
                return self._replay(decided, decision.state)
            # Another record with a decided event id: a sender's retry. Answer it; change nothing.
            answer = decision.answer.model_copy(
                update={"record_id": f"{proposal.event_id}:duplicate@{record.partition}:{record.offset}"})
            return [self._out(self.topics.answers, key, answer)]
        outputs = self._outputs(decision, key)
        # Keep what a replay could meet again: decisions at or after the committed offset.
        replay = [item for item in replay
                  if committed_offset is None or item[1] >= committed_offset][-(REPLAY_LIMIT - 1):]
        made_version = decision.state.version if decision.accepted else None
        replay.append([proposal.event_id, record.offset, made_version,
                       [[o.topic, base64.b64encode(o.value).decode()] + ([o.key.decode()] if o.key != key else [])
                        for o in outputs if o.topic != self.topics.state]])
        table[key] = json.dumps({"state": decision.state.to_dict(), "replay": replay}, separators=(",", ":")).encode()
        return outputs

    def _replay(self, decided: list[Any], state: OrderState) -> list[Outbound]:
        """The outputs of one decision in the replay buffer, byte for byte."""
        _event_id, _offset, version, records = decided
        key = state.order_id.encode()
        # [topic, value] keyed by the order; [topic, value, key] otherwise (a reference link)
        outputs = [Outbound(item[0], item[2].encode() if len(item) > 2 else key, base64.b64decode(item[1]))
                   for item in records]
        if version is not None and version == state.version:
            # The state topic keeps only the latest: re-send it only from the proposal that made it.
            outputs.append(self._out(self.topics.state, key, state.to_snapshot()))
        return outputs

    def _outputs(self, decision: Decision, key: bytes) -> list[Outbound]:
        outputs = []
        if decision.change is not None:
            outputs.append(self._out(self.topics.changes, key, decision.change))
            outputs += [Outbound(self.topics.ref_links, ref.key.encode(), key) for ref in decision.change.external_refs_added]
        if decision.conflict is not None:
            outputs.append(self._out(self.topics.conflicts, key, decision.conflict))
        if decision.rejection is not None:
            outputs.append(self._out(self.topics.rejections, key, decision.rejection))
        if decision.release is not None:
            outputs.append(self._out(self.topics.releases, key, decision.release))
        if decision.snapshot is not None:
            outputs.append(self._out(self.topics.state, key, decision.snapshot))
        if decision.answer is not None:
            outputs.append(self._out(self.topics.answers, key, decision.answer))
        return outputs

    def _proposal(self, record: Inbound) -> ChangeProposal:
        decoded = self.codec.decode(record.value, "change_proposal", topic=record.topic,
                                    partition=record.partition, offset=record.offset)
        try:
            return ChangeProposal.from_avro(decoded.value)
        except ValueError as exc:
            raise UndecodableRecord(f"not a valid change proposal: {exc}").at(
                record.topic, record.partition, record.offset) from exc

    def _out(self, topic: str, key: bytes | None, event: Any) -> Outbound:
        return Outbound(topic, key, self.codec.encode(event.schema_name, event.to_avro()))
