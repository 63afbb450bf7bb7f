"""Runs one connector instance: source lease and polls, sink consumer group, offline outbox, and
the hub's last word on every order. The guarantees are the numbered list in ``Connector``.

Four tasks share one SQLite store (``hub.sdk.store``) and one ``HubClient``:

- ``known``: reads the whole state topic (no group: every instance needs every order) into
  the store, so mappings see the hub's last snapshot and echoes are dropped; and the answers to
  this instance's own proposals, so an echo is dropped only once the snapshot has caught up with
  them. The source and the sink wait until it has read what the state topic held at start.
- ``source``: joins the instance's source group on the one-partition cursors topic; the member
  that holds the partition is the only one that polls. On taking the lease it adopts the
  cursor last published there when none of its own waits to be published (another instance
  polled last).
- ``sink``: the instance's sink group on the topics its hooks need; offsets are committed only
  after the hooks returned and their output is stored; a stop or a rebalance waits for the batch
  in hand, so a hook is never cut off half-way and repeated by another instance meanwhile.
- ``drain``: sends the outbox to Kafka in order, and waits out an outage with back-off. A
  record is deleted only after Kafka took it; one sent twice (a crash in between) is a
  duplicate event id, answered DUPLICATE by the hub. A record Kafka refuses for good (too
  large, not authorised) is held aside with the reason instead of blocking the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from hub import correlation
from hub.client import HubClient
from hub.domain.fields import canonical_json, field_values, kind_of
from hub.errors import BrokerUnavailable, DeadLetterError, FatalError, RetriableError, UndecodableRecord, UnmappableRecord
from hub.events import (ChangeProposal, ExternalRef, FieldChange, OrderChange, OrderRef, OrderRelease, OrderSnapshot,
                        ProposalAnswer, ProposalIntent, ProposalOutcome)
from hub.logs import bound
from hub.observability.metrics import ConnectorHealth
from hub.sdk.connector import Connector, Context, OutsideChange, Unmappable
from hub.sdk.store import ConnectorStore, Known, Pending
from hub.settings import Settings
from hub.streams.core import error_headers
from hub.topics import topic_partitions

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Back-off between tries of a call to an outside system or to Kafka: 0.5 s doubling to 30 s.
BACKOFF = wait_exponential(multiplier=0.5, max=30)
#: What an outside system's call may raise and pass by itself: retried, never dead-lettered.
TRANSIENT = (RetriableError, OSError, TimeoutError)
#: Answers to this instance's proposals that its log names (the rest took effect or changed nothing).
_REFUSED = (ProposalOutcome.REJECTED, ProposalOutcome.PARKED, ProposalOutcome.KEPT, ProposalOutcome.UNKNOWN)
#: What an instance logs once its connector has started, followed by ``: <instance> (<kind>, system <system>)``.
READY = "orderhub connector running"
#: How often, at most, the drain counts the outbox for its gauges while records wait.
OUTBOX_MEASURE_S = 1.0
#: How long a stopping instance waits for the sink batch in hand.
STOP_WAIT_S = 30.0


async def retried(call: Callable[[], Awaitable[T]], what: str, *, stopping: asyncio.Event | None = None,
                  transient: tuple[type[BaseException], ...] = TRANSIENT, health: ConnectorHealth | None = None) -> T:
    """``await call()`` until it does not raise a transient error (tenacity's back-off between tries);
    ``health``: a call to the outside system, whose successes and failures the metrics count."""
    def say(state: Any) -> None:
        log.warning("%s: %s; retrying", what, state.outcome.exception())
        if health is not None:
            health.failed()
    async for attempt in AsyncRetrying(retry=retry_if_exception_type(transient), wait=BACKOFF,
                                       before_sleep=say, reraise=True):
        with attempt:
            if stopping is not None and stopping.is_set():
                raise asyncio.CancelledError
            value = await call()
            if health is not None:
                health.succeeded()
            return value
    raise AssertionError("unreachable")


class ConnectorRuntime:
    """One running instance of one connector."""

    def __init__(self, connector: Connector, *, instance: str, settings: Settings,
                 store_path: Path | None = None) -> None:
        self.connector = connector
        self.instance = instance
        self.settings = settings
        self.client = HubClient(settings, listen=False)
        self.topics = self.client.topics
        self.codec = self.client.codec
        self.store = ConnectorStore(store_path or settings.state_dir / "connectors" / f"{instance}.db")
        connector.context = Context(known=self.store)
        connector.emit = self.emit
        connector.poll_soon = self.poll_soon
        self.leader = asyncio.Event()
        self._poll_requested = asyncio.Event()
        #: Set once ``known`` has read what the state topic held when the instance started.
        self.caught_up = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stored = asyncio.Event()  # new records in the outbox
        self._online = False
        self._outbox_measured = float("-inf")  # when the outbox gauges were last counted (monotonic)
        self.health = ConnectorHealth(instance, connector.system)
        #: Counters for people and tests: proposals stored, echoes suppressed, dead letters, sent, held.
        self.counts = {"proposed": 0, "suppressed": 0, "dead_letters": 0, "sent": 0, "held": 0}

    @property
    def group(self) -> str:
        """The prefix of this instance's consumer groups (namespaced like the topics)."""
        return f"{self.settings.topic_namespace}orderhub.connector.{self.instance}"

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the connector and every task; return when ``stop()`` was called."""
        tasks: list[asyncio.Task[None]] = []
        failed: list[BaseException] = []

        def check(task: asyncio.Task[None]) -> None:  # a task that dies of a bug stops the instance, loudly
            if not task.cancelled() and task.exception() is not None:
                log.critical("%s: %s failed: %r", self.instance, task.get_name(), task.exception())
                failed.append(task.exception())
                self.stop()
        try:
            await self.connector.start()
            log.info("%s: %s (%s, system %s)", READY, self.instance, self.connector.kind, self.connector.system)
            for name, work in (("drain", self._drain), ("known", self._known), ("source", self._source),
                               ("sink", self._sink)):
                tasks.append(asyncio.create_task(self._forever(work, name), name=f"{self.instance}:{name}"))
                tasks[-1].add_done_callback(check)
            await self._stopping.wait()
            if failed:
                raise failed[0]
        finally:
            # Every task's loop also ends by itself once stopping is set: on Python 3.11 a cancel that
            # lands while an asyncio.wait_for is finishing is lost (CPython gh-86296), and a task left
            # looping would keep this gather, and so run(), from ever returning.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.connector.stop()
            finally:
                await self.client.stop()
                self.store.close()

    def stop(self) -> None:
        """Ask the runtime to stop (what is stored stays stored)."""
        self._stopping.set()
        self._poll_requested.set()

    def poll_soon(self) -> None:
        """Have the source poll now instead of after its interval (it recovers lost push events)."""
        self._poll_requested.set()

    async def _forever(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        """Run one task; when Kafka goes away, wait with back-off and start it again."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                await work()
                return
            except (KafkaError, BrokerUnavailable, OSError) as exc:
                attempt += 1
                delay = min(30.0, 0.5 * 2 ** min(attempt, 6))
                log.warning("%s %s: Kafka unavailable (%s); again in %.1fs", self.instance, name, exc, delay)
                self.health.error("kafka_unavailable")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    # --- the outbox -----------------------------------------------------------------------

    async def emit(self, changes: Sequence[OutsideChange | Unmappable], cursor: dict[str, Any] | None = None,
                   stage: str = "source", correlation_id: str | None = None) -> int:
        """Store changes as proposals (echoes dropped, unmappable ones as dead letters) with the cursor
        behind them; returns once they are durable. Push sources call this from their listener.
        ``correlation_id``: the flow the changes belong to (a sink hook's record's), when the hub's
        snapshot of their order does not say."""
        def store() -> int:
            stored: list[Pending] = []
            proposed: list[tuple[str, str]] = []
            # what the outside system said of each object before these changes, then what it says now
            outside = [c for c in changes if isinstance(c, OutsideChange)]
            said = self.store.seen(c.ref.key for c in outside)
            # the hub's last word on the orders the changes touch, and this instance's proposals for them
            known = self.store.known([c.order_id for c in outside if c.order_id], [c.ref.key for c in outside])
            for change in changes:
                if isinstance(change, Unmappable):
                    stored.append(self._dead_letter(change, stage))
                    continue
                last, now = said.get(change.ref.key), _canonical(change.values)
                try:
                    record = self._record(change, known, correlation_id, last, now)
                except ValueError as exc:  # what no proposal can carry (an actor id with a lone surrogate): parked, not seen
                    stored.append(self._dead_letter(Unmappable(
                        {"ref": change.ref.key, "event_id": change.event_id, "values": change.values},
                        f"no proposal can carry it: {exc}", change.ref.key, exc), stage))
                    continue
                said[change.ref.key] = {**(last or {}), **now}
                if record is not None:
                    stored.append(record)
                    proposed.append((change.ref.key, change.event_id))
            if cursor is not None:  # published after the proposals before it: a successor resumes there
                encoded = json.dumps(cursor, sort_keys=True).encode()
                stored.append(Pending(0, f"cursor:{hashlib.sha256(encoded).hexdigest()}", "connector_cursors",
                                      self.instance, encoded))
            return self.store.put(stored, cursor, proposed, said.items())
        added = await asyncio.to_thread(store)
        self._stored.set()
        return added

    def _record(self, change: OutsideChange, hub: Known, flow: str | None, last: dict[str, str] | None,
                now: dict[str, str]) -> Pending | None:
        """The proposal for one change (None when nothing is left to propose). ``hub``: what the store
        knows of the batch's orders (``ConnectorStore.known``); ``last``: what the outside system said
        of the object before (``ConnectorStore.seen``); ``now``: the change's values as canonical JSON
        (``_canonical``)."""
        known = hub.order(change.order_id, change.ref.key)  # the hub's snapshot, JSON form
        values = dict(change.values)
        refs = list(change.refs)
        if known is not None and last is not None:
            # only what changed outside since it was last read: a value the outside system still holds
            # while the hub moved on (the hub's own edit it never took back) is not a new outside write
            values = {path: value for path, value in values.items() if last.get(path) != now[path]}
        # an echo is dropped only when the hub's snapshot has caught up with this instance's own last
        # proposal for the object; before that the hub decides (UNCHANGED when it is one)
        if known is not None and hub.settled(change.ref.key, known["version"]):
            current = field_values(known, only=values)  # the paths it touches
            values = {path: value for path, value in values.items() if not _same(path, now[path], current)}
            known_refs = {ExternalRef.model_validate(r).key for r in known["external_refs"]}
            refs = [r for r in refs if r.key not in known_refs]
        if known is not None and not values and not refs:
            self.counts["suppressed"] += 1
            self.health.echoes.inc()
            return None
        proposal = ChangeProposal(
            event_id=change.event_id,
            order_ref=OrderRef(order_id=known["order_id"] if known else change.order_id, external=change.ref),
            intent=ProposalIntent.CREATE if change.create and known is None else ProposalIntent.UPDATE,
            base_version=known["version"] if known else 0, source_system=self.connector.system,
            actor=change.actor, occurred_at=change.occurred_at,
            changes=[FieldChange(field=path, value=now[path]) for path in values],
            external_refs=refs, comment=change.comment)
        value = self.codec.encode("change_proposal", proposal.to_avro())
        self.counts["proposed"] += 1
        self.health.proposals.inc()
        flow = (hub.correlation_id(known["order_id"]) if known else None) or flow  # hub.correlation rule 3
        return Pending(0, proposal.event_id, self.topics.proposal_role(proposal.order_ref.order_id),
                       proposal.order_ref.key or "", value, correlation.header(flow))

    def _dead_letter(self, unmappable: Unmappable, stage: str, *, where: Any = None) -> Pending:
        """A record for the dead-letter topic, with why; its id is deterministic (a re-poll stores it once)."""
        record = unmappable.record
        value = record if isinstance(record, bytes) else json.dumps(record, default=str, sort_keys=True).encode()
        error = unmappable.error or UnmappableRecord(unmappable.reason)
        position = {"topic": where.topic, "partition": where.partition, "offset": where.offset} if where else {}
        headers = error_headers(f"connector:{self.instance}:{stage}", error, **position)
        self.counts["dead_letters"] += 1
        self.health.error("dead_letter")
        digest = hashlib.sha256(stage.encode() + b"\0" + value + b"\0" + str(error).encode()).hexdigest()
        return Pending(0, f"dead:{digest}", "dead_letters", unmappable.key or "", value, headers)

    async def _drain(self) -> None:
        while not self._stopping.is_set():
            self._stored.clear()  # before reading: a record stored meanwhile sets it again
            pending = await asyncio.to_thread(self.store.pending)
            await self._measure_outbox(empty=not pending)
            if not pending:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stored.wait(), 1.0)
                continue
            if not self._online:
                await self.client.start()
                self._online = True
            # a cursor is published only after every record before it is on Kafka (another topic: sent
            # with them, it could overtake them), and only the batch's last one (it supersedes the others)
            records = [r for r in pending if r.role != "connector_cursors"]
            cursors = [r for r in pending if r.role == "connector_cursors"]
            done = await self._send(records)
            if cursors and done == len(records):
                if await self._send(cursors[-1:]) == 1:
                    await asyncio.to_thread(self.store.sent_seqs, [c.seq for c in cursors[:-1]])

    async def _measure_outbox(self, empty: bool) -> None:
        """The outbox's gauges: nothing waits when the drain found nothing; else counted at most once
        per OUTBOX_MEASURE_S, since a count reads the whole table and the drain reads a batch at a time."""
        now = time.monotonic()
        if empty:
            self.health.outbox(0, 0.0)
        elif now >= self._outbox_measured + OUTBOX_MEASURE_S:
            self.health.outbox(*await asyncio.to_thread(lambda: (self.store.waiting(), self.store.oldest_age_s())))
            self._outbox_measured = now

    async def _send(self, records: list[Pending]) -> int:
        """Send records; forget those Kafka took (one transaction), hold those it refuses for good; how
        many are settled. Raises BrokerUnavailable (after settling the rest) when Kafka is away."""
        if not records:
            return 0
        results = await self.client.send_records(
            [(getattr(self.topics, r.role), r.key.encode(), r.value, r.headers) for r in records])
        taken = [r.seq for r, error in zip(records, results) if error is None]
        await asyncio.to_thread(self.store.sent_seqs, taken)
        self.counts["sent"] += len(taken)
        outage = None
        for record, error in zip(records, results):
            if isinstance(error, BrokerUnavailable):
                outage = outage or error
            elif error is not None:  # Kafka will never take it: keep it aside with why, and go on
                log.error("%s: Kafka refused %s for good (%s); held in %s", self.instance, record.event_id,
                          error, self.store.path)
                await asyncio.to_thread(self.store.hold, record, f"{type(error).__name__}: {error}")
                self.counts["held"] += 1
                self.health.error("held")
        if outage is not None:
            await self.client.stop()  # a fresh producer after the outage
            self._online = False
            raise outage
        return len(records)

    # --- the hub's last word on every order, and its answers to this instance ----------------

    async def _known(self) -> None:
        state, answers = self.topics.state, self.topics.answers
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions = {topic: [TopicPartition(topic, p) for p in sorted(await topic_partitions(self.settings, topic))]
                          for topic in (state, answers)}
            consumer.assign(partitions[state] + partitions[answers])
            for topic in (state, answers):
                stored = self.store.offsets(topic)
                for tp in partitions[topic]:
                    if tp.partition in stored:
                        consumer.seek(tp, stored[tp.partition])
            ends = await consumer.end_offsets(partitions[state])
            while not self._stopping.is_set():
                if not self.caught_up.is_set() and await _reached(consumer, ends):
                    self.caught_up.set()
                batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
                snapshots, answered, offsets, flows = [], [], {}, {}
                for tp, messages in batches.items():
                    for message in messages:
                        offsets[(tp.topic, tp.partition)] = message.offset + 1
                        if message.value is None:
                            continue
                        value = await self._decoded(message, "order_snapshot" if tp.topic == state else "proposal_answer")
                        if value is None:
                            continue
                        if tp.topic == state:
                            snapshots.append(OrderSnapshot.from_avro(value))
                            if flow := correlation.of(message.headers):
                                flows[snapshots[-1].order_id] = flow
                        elif value["source_system"] == self.connector.system:
                            answer = ProposalAnswer.from_avro(value)
                            if answer.outcome in _REFUSED:  # what a person reading the log wants to know
                                log.info("%s: the hub answered %s to %s%s", self.instance, answer.outcome.value,
                                         answer.event_id, f": {answer.message}" if answer.message else "")
                            answered.append((answer.event_id, answer.version if answer.version is not None
                                             else answer.made_version))
                if answered:
                    await asyncio.to_thread(self.store.answered, answered)
                if offsets:
                    await asyncio.to_thread(self.store.remember, snapshots, offsets, flows)
        finally:
            await consumer.stop()

    async def _decoded(self, message: Any, schema: str) -> dict[str, Any] | None:
        """A record's value; retried while the schema registry is away; None for bytes no schema reads
        (the hub's dead letters have those)."""
        try:
            return await retried(lambda: _async(self.codec.decode(message.value, schema, topic=message.topic,
                                                                   partition=message.partition,
                                                                   offset=message.offset).value),
                                 f"{self.instance} decode", stopping=self._stopping, transient=(RetriableError,))
        except UndecodableRecord as exc:
            log.warning("%s: skipping %s", self.instance, exc)
            return None

    # --- the source -----------------------------------------------------------------------

    async def _source(self) -> None:
        if not self.connector.has_source():
            return
        topic = self.topics.connector_cursors
        runtime = self

        class Lease(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                runtime.leader.clear()

            async def on_partitions_assigned(self, assigned: Any) -> None:
                if not assigned:
                    return
                try:  # aiokafka swallows what a listener raises: say it here, and poll from our own cursor
                    await runtime._adopt_cursor()
                except Exception as exc:  # noqa: BLE001
                    log.warning("%s: could not read the published cursor (%s); polling from this instance's own",
                                runtime.instance, exc)
                runtime.leader.set()

        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=f"{self.group}.source",
                                    enable_auto_commit=False, auto_offset_reset="latest",
                                    session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                                    heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000))
        consumer.subscribe([topic], listener=Lease())
        await consumer.start()
        poller = asyncio.create_task(self._poll_while_leader())
        try:
            while not self._stopping.is_set():  # keeps the membership alive; _adopt_cursor reads the records
                await consumer.getmany(timeout_ms=1000)
                if poller.done():
                    poller.result()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
            self.leader.clear()
            await consumer.stop()

    async def _adopt_cursor(self) -> None:
        """On taking the lease: when no cursor of ours waits to be published, the cursor last published
        (by whichever instance polled last) is where polling resumes."""
        if await asyncio.to_thread(self.store.waiting, "connector_cursors"):
            return
        published = await self._published_cursor()
        if published is not None and published != self.store.cursor():
            log.info("%s: taking over the source at cursor %s", self.instance, published)
            await asyncio.to_thread(self.store.set_cursor, published)

    async def _published_cursor(self) -> dict[str, Any] | None:
        topic = self.topics.connector_cursors
        reader = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                  enable_auto_commit=False, auto_offset_reset="earliest")
        await reader.start()
        try:
            tp = TopicPartition(topic, 0)
            reader.assign([tp])
            end = (await reader.end_offsets([tp]))[tp]
            latest = None
            while end and await reader.position(tp) < end:
                for messages in (await reader.getmany(tp, timeout_ms=1000)).values():
                    for message in messages:
                        if message.key == self.instance.encode() and message.value:
                            latest = json.loads(message.value)
            return latest
        finally:
            await reader.stop()

    async def _poll_while_leader(self) -> None:
        await self.caught_up.wait()  # the echoes and base versions need the hub's last word
        while not self._stopping.is_set():
            await self.leader.wait()
            cursor = await asyncio.to_thread(self.store.cursor)
            polled = await retried(lambda: self.connector.poll(cursor), f"{self.instance} poll", stopping=self._stopping,
                                   health=self.health)
            if polled is None:
                return
            if polled.changes or polled.cursor != cursor:
                await self.emit(polled.changes, polled.cursor)
            if not polled.more:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._poll_requested.wait(), self.connector.config.poll_interval_s)
                self._poll_requested.clear()

    # --- the sink -------------------------------------------------------------------------

    async def _sink(self) -> None:
        hooks = {"on_change": (self.topics.changes, "order_change", OrderChange),
                 "on_state": (self.topics.state, "order_snapshot", OrderSnapshot),
                 "on_release": (self.topics.releases, "order_release", OrderRelease)}
        wanted = {hooks[h][0]: (h, *hooks[h][1:]) for h in self.connector.sink_hooks()}
        if not wanted:
            return
        await self.caught_up.wait()
        in_hand: list[asyncio.Task[None]] = []

        class Handover(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                # the batch in hand is finished and committed before another instance may take it up
                for batch in in_hand:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(batch), STOP_WAIT_S)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                return None

        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers,
                                    group_id=f"{self.group}.sink", enable_auto_commit=False,
                                    auto_offset_reset="earliest",
                                    session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                                    heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000))
        consumer.subscribe(list(wanted), listener=Handover())
        await consumer.start()

        async def deliver_and_commit(batches: dict[Any, list[Any]]) -> None:
            for tp, messages in batches.items():
                hook, schema, model = wanted[tp.topic]
                for message in messages:
                    await self._deliver(hook, schema, model, message)
            await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batches.items()})

        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=1000, max_records=200)
                if not batches:
                    continue
                batch = asyncio.create_task(deliver_and_commit(batches))
                in_hand[:] = [batch]
                try:
                    await asyncio.shield(batch)
                except asyncio.CancelledError:  # stopping: finish what is in hand, then go
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(batch), STOP_WAIT_S)
                    raise
                finally:
                    in_hand.clear()
        finally:
            await consumer.stop()

    async def _deliver(self, hook: str, schema: str, model: Any, message: Any) -> None:
        """One sink record through its hook: retried while the outside system is away; dead-lettered
        when it can never be delivered."""
        stage = f"sink:{hook}"
        value = await self._decoded(message, schema)
        if value is None:
            return
        event = model.from_avro(value)
        flow = correlation.of(message.headers)
        with bound(order_id=event.order_id, order_number=getattr(event, "order_number", None), correlation_id=flow,
                   connector=self.instance):
            await self._handle(hook, stage, event, message, flow)

    async def _handle(self, hook: str, stage: str, event: Any, message: Any, flow: str | None) -> None:
        try:
            out = await retried(lambda: getattr(self.connector, hook)(event), f"{self.instance} {hook}",
                                stopping=self._stopping, health=self.health)
        except (asyncio.CancelledError, RetriableError, FatalError):
            raise  # a fatal error (a refused session, a wrong config) stops the instance, loudly
        except Exception as exc:  # noqa: BLE001 - DeadLetterError, or a bug: park the record with why
            if not isinstance(exc, DeadLetterError):
                log.exception("%s %s failed", self.instance, hook)
            await self._emit_dead_letter(Unmappable(message.value, str(exc), event.order_id, exc), stage, message)
            return
        if out:
            await self.emit(list(out), stage=stage, correlation_id=flow)

    async def _emit_dead_letter(self, unmappable: Unmappable, stage: str, message: Any) -> None:
        record = self._dead_letter(unmappable, stage, where=message)
        await asyncio.to_thread(self.store.put, [record])
        self._stored.set()


def _canonical(values: dict[str, Any]) -> dict[str, str]:
    """A change's values as canonical JSON, path by path (how ``ConnectorStore.seen`` keeps them)."""
    return {path: canonical_json(value) for path, value in values.items()}


def _same(path: str, value: str, current: dict[str, str]) -> bool:
    """Whether a proposed value (its canonical JSON) equals the hub's current value of ``path``."""
    kind = kind_of(path)
    if kind is None:
        return False
    try:
        return kind.canonical(value) == current.get(path)
    except ValueError:  # invalid: let the hub say why
        return False


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether the consumer has read every partition up to the given end offsets."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _async(value: T) -> T:
    return value


def utcnow() -> dt.datetime:
    """Now, in UTC (connectors stamp outside records that carry no time)."""
    return dt.datetime.now(dt.timezone.utc)
