"""The hub's client API: one long-lived connection that sends proposals and hears their answers.

The command line, the connectors and the REST API all talk to the hub through ``HubClient``:

1. ``send(proposal)`` hands one proposal to Kafka through the client's one idempotent
   producer, keyed by ``OrderRef.key``: to the by-order topic the engine decides from when it
   names its hub order id, else to the proposals topic (its reference is resolved first).
2. Every proposal gets exactly one ``ProposalAnswer`` on the answers topic (created, applied,
   merged, resolved, unchanged, parked, kept, rejected, duplicate). One listener reads that
   topic from where it ended when the client started and hands each answer to whoever waits
   for its event id: ``propose(proposal)`` sends and waits; ``answer(event_id)`` waits for one
   sent earlier (an answer that arrives before anyone waits is kept for a while).
3. With ``details=True`` the listener also reads the decision records (changes, conflicts,
   rejections), and ``propose`` returns them with the answer: what a person wants to see.
4. ``read_model`` gives typed queries over the SQL read model (orders by id, number or
   external reference, lists, history, parked conflicts).

Nothing here decides anything: the engine does. A client that cannot reach Kafka raises
``BrokerUnavailable``; the connector SDK's offline outbox is built on that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from hub.errors import BrokerUnavailable, UndecodableRecord
from hub.events import ChangeProposal, OrderChange, OrderConflict, OrderRejection, ProposalAnswer, ProposalOutcome
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, registry_from_settings
from hub.settings import Settings
from hub.topics import TopicNames

log = logging.getLogger(__name__)

#: Answers kept for a later ``answer(event_id)`` call, newest last.
KEPT_ANSWERS = 10_000
#: How long ``stop`` waits for the producer to hand on what it holds.
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Decided:
    """The hub's answer to one proposal, with the decision records that came with it (``details``)."""

    #: The one answer: outcome, versions, a line for a person.
    answer: ProposalAnswer
    #: The accepted change (created, applied, merged, resolved), when ``details`` was asked for.
    change: OrderChange | None = None
    #: The recorded conflict (resolved, parked, kept), when ``details`` was asked for.
    conflict: OrderConflict | None = None
    #: The rejection with every field error, when ``details`` was asked for.
    rejection: OrderRejection | None = None

    @property
    def outcome(self) -> ProposalOutcome:
        """What became of the proposal."""
        return self.answer.outcome

    @property
    def accepted(self) -> bool:
        """Whether the proposal made a new version."""
        return self.answer.outcome.accepted


def _expected_details(outcome: ProposalOutcome) -> set[str]:
    """The decision records an answer of this outcome comes with."""
    if outcome == ProposalOutcome.RESOLVED:
        return {"change", "conflict"}
    if outcome.accepted:
        return {"change"}
    if outcome in (ProposalOutcome.PARKED, ProposalOutcome.KEPT):
        return {"conflict"}
    if outcome == ProposalOutcome.REJECTED:
        return {"rejection"}
    return set()


class HubClient:
    """One producer and one answer listener, shared by everything in a process that talks to the hub."""

    def __init__(self, settings: Settings, *, details: bool = False, codec: AvroCodec | None = None,
                 topics: TopicNames | None = None, listen: bool = True) -> None:
        self.settings = settings
        self.topics = topics or TopicNames.of(settings)
        self.codec = codec or AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
        self.details = details
        self.listen = listen
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None
        #: Set by ``stop()``: the listener's loop ends by itself too (a cancel can be lost on Python 3.11,
        #: CPython gh-86296, and ``stop()`` awaits the listener).
        self._stopping = False
        self._waiting: dict[str, asyncio.Future[ProposalAnswer]] = {}
        self._answers: OrderedDict[str, ProposalAnswer] = OrderedDict()
        self._records: OrderedDict[tuple[str, str], Any] = OrderedDict()  # (event id, kind) -> record
        self._arrived = asyncio.Condition()
        self._read_model: Any = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, timeout_s: float = 30.0) -> "HubClient":
        """Connect the producer and start listening for answers; ``BrokerUnavailable`` if Kafka does not answer."""
        servers = self.settings.bootstrap_servers
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True,
                                    linger_ms=5, request_timeout_ms=int(timeout_s * 1000))
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="latest", request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
            await asyncio.wait_for(consumer.start(), timeout_s)
            listened = [self.topics.answers] if self.listen else []
            if self.details:
                listened += [self.topics.changes, self.topics.conflicts, self.topics.rejections]
            missing = set(listened) - await consumer.topics()
            if missing:
                raise BrokerUnavailable(f"the topics {sorted(missing)} do not exist: run `orderhub topics apply`")
            # the producer fetches a topic's metadata on demand; a consumer without a subscription does not
            partitions = [TopicPartition(t, p) for t in listened for p in sorted(await producer.partitions_for(t))]
            consumer.assign(partitions)
            # from where the topics end now: older answers are not for this client
            for tp, end in (await consumer.end_offsets(partitions)).items():
                consumer.seek(tp, end)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            await _quietly(producer.stop())
            await _quietly(consumer.stop())
            raise BrokerUnavailable(f"Kafka at {servers} did not answer: {type(exc).__name__}: {exc}") from None
        except BaseException:
            await _quietly(producer.stop())
            await _quietly(consumer.stop())
            raise
        self._producer, self._consumer, self._stopping = producer, consumer, False
        if self.listen:
            self._listener = asyncio.create_task(self._listen(), name="hub-client-answers")
        return self

    async def stop(self) -> None:
        """Stop listening and close the producer (what was sent is flushed first)."""
        self._stopping = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.cancel()
        if self._producer is not None:
            # bounded: with Kafka away, aiokafka waits for an undelivered batch forever (what was not
            # delivered is still in the sender's outbox, if it has one: nothing is lost)
            await _quietly(asyncio.wait_for(self._producer.stop(), STOP_TIMEOUT_S))
        if self._consumer is not None:
            await _quietly(self._consumer.stop())
        if self._read_model is not None:
            self._read_model.close()
        self._producer = self._consumer = self._listener = self._read_model = None

    async def __aenter__(self) -> "HubClient":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- proposals ------------------------------------------------------------------------

    async def send(self, proposal: ChangeProposal) -> None:
        """Hand ``proposal`` to Kafka; returns once Kafka has it (``BrokerUnavailable`` if it did not take it).
        Addressed by hub order id, it goes straight to the engine's by-order topic."""
        role = self.topics.proposal_role(proposal.order_ref.order_id)
        await self.send_record(getattr(self.topics, role), (proposal.order_ref.key or "").encode(),
                               self.encode(proposal))

    def encode(self, proposal: ChangeProposal) -> bytes:
        """The proposal as the proposals topic carries it (what an offline outbox stores)."""
        return self.codec.encode("change_proposal", proposal.to_avro())

    async def send_records(self, records: list[tuple[str, bytes | None, bytes, tuple[tuple[str, bytes], ...]]]
                           ) -> list[BaseException | None]:
        """Send ``(topic, key, value, headers)`` records together (batched by the producer, in order per
        partition) and wait for all; one result per record: None when Kafka took it, else its error
        (``BrokerUnavailable`` when it may pass, the Kafka error itself when it never will)."""
        if self._producer is None:
            raise RuntimeError("HubClient.start() first")
        sent = []
        for topic, key, value, headers in records:
            try:
                sent.append(await self._producer.send(topic, value, key=key, headers=list(headers)))
            except KafkaError as exc:
                sent.append(exc)
        results: list[BaseException | None] = []
        for future in sent:
            if isinstance(future, BaseException):
                error: BaseException | None = future
            else:
                try:
                    await future
                    error = None
                except KafkaError as exc:
                    error = exc
            if isinstance(error, KafkaError) and getattr(error, "retriable", True):
                error = BrokerUnavailable(f"Kafka did not take a record: {type(error).__name__}: {error}")
            results.append(error)
        return results

    async def send_record(self, topic: str, key: bytes | None, value: bytes,
                          headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        """Send one record to one of the hub's topics (the connector outbox's drain: proposals, dead
        letters, cursors); returns once Kafka has it, ``BrokerUnavailable`` when it did not take it."""
        if self._producer is None:
            raise RuntimeError("HubClient.start() first")
        try:
            await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka did not take a record for {topic}: {type(exc).__name__}: {exc}") from None

    async def propose(self, proposal: ChangeProposal, *, timeout_s: float = 30.0) -> Decided:
        """Send ``proposal`` and return the hub's answer (``BrokerUnavailable`` when none comes in time)."""
        self._expect(proposal.event_id)
        await self.send(proposal)
        return await self.answer(proposal.event_id, timeout_s=timeout_s)

    async def answer(self, event_id: str, *, timeout_s: float = 30.0) -> Decided:
        """Wait for the answer to a proposal sent earlier by this client."""
        waiter = self._expect(event_id)
        try:
            answer = await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except asyncio.TimeoutError:
            if self._waiting.get(event_id) is waiter and not waiter.done():
                del self._waiting[event_id]  # forgotten: an answer arriving later is kept in the answers seen
            raise BrokerUnavailable(
                f"no answer for {event_id} within {timeout_s:g}s: is a worker running (`orderhub worker`)?") from None
        if not self.details:
            return Decided(answer)
        wanted = _expected_details(answer.outcome)

        def complete() -> bool:
            return all((event_id, kind) in self._records for kind in wanted)
        async with self._arrived:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait_for(complete), timeout_s)
        found = {kind: self._records.get((event_id, kind)) for kind in ("change", "conflict", "rejection")}
        return Decided(answer, **found)

    def _expect(self, event_id: str) -> asyncio.Future[ProposalAnswer]:
        waiter = self._waiting.get(event_id)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            if event_id in self._answers:
                waiter.set_result(self._answers[event_id])
            self._waiting[event_id] = waiter
            waiter.add_done_callback(lambda _: self._waiting.pop(event_id, None))
        return waiter

    async def _listen(self) -> None:
        assert self._consumer is not None
        kinds = {self.topics.changes: ("change", OrderChange), self.topics.conflicts: ("conflict", OrderConflict),
                 self.topics.rejections: ("rejection", OrderRejection)}
        while not self._stopping:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:  # the broker went away for a moment: the consumer reconnects
                log.warning("answer listener: %s", exc)
                continue
            for tp, messages in batches.items():
                for message in messages:
                    try:
                        value = self.codec.decode(message.value, topic=message.topic, partition=message.partition,
                                                  offset=message.offset).value
                    except UndecodableRecord as exc:
                        log.warning("answer listener skips %s", exc)
                        continue
                    if tp.topic == self.topics.answers:
                        self._arrive(ProposalAnswer.from_avro(value))
                    else:
                        kind, model = kinds[tp.topic]
                        _keep(self._records, (value["event_id"], kind), model.from_avro(value))
            if batches:
                async with self._arrived:
                    self._arrived.notify_all()

    def _arrive(self, answer: ProposalAnswer) -> None:
        if answer.outcome == ProposalOutcome.DUPLICATE and answer.event_id in self._answers:
            return  # the first answer stands; a later redelivery's answer adds nothing
        _keep(self._answers, answer.event_id, answer)
        waiter = self._waiting.get(answer.event_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    # --- the read model -------------------------------------------------------------------

    @property
    def read_model(self) -> Any:
        """Typed queries over the SQL read model (``hub.readmodel.ReadModel``), opened on first use."""
        if self._read_model is None:
            from hub.readmodel import ReadModel

            self._read_model = ReadModel(self.settings.read_model_url)
            self._read_model.create_schema()
        return self._read_model


def _keep(kept: OrderedDict, key: Any, value: Any) -> None:
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > KEPT_ANSWERS:
        kept.popitem(last=False)


async def _quietly(stopping: Any) -> None:
    with contextlib.suppress(Exception):
        await stopping
