"""The due-date alert worker (``orderhub alerts``): ``hub.domain.alerts`` over the engine's snapshots.

It reads the state topic (the engine's own data: every order's latest snapshot) and the alerts
topic, both keyed by order id and assigned partition by partition to one member of the group
(range assignment: state partition p and alerts partition p go together), and decides:

1. When an order changes (a snapshot arrives), that order; every ``interval_s`` of the clock,
   every order it holds. The clock is passed in (``system_clock``, or ``file_clock`` for tests
   and drills that move time), and so is today: the clock's UTC date.
2. Only once it has read both topics to where they ended when its partitions were assigned, and
   every alert it wrote since: what the alerts topic holds is what the order has. So an alert is
   raised once, and a restart (a crash included) reads what was raised instead of raising it
   again; an alert decided but not written before a crash is decided again, not lost.
3. Each alert is written (acks=all) before the next decision, and only while the member still owns
   the order's partitions: a revocation waits for the decision in hand to be written. Its record id
   is the order, the stage, the due date, the occurrence and raised/cleared, the same however often
   it is decided.
4. Kafka or the schema registry going away stops the member without losing anything (what it had not
   written it decides again); ``run_alerts`` starts it again with back-off.

A record that is not a snapshot or an alert goes to the dead-letter topic with why; a deleted
order's tombstone on the (compacted) state topic forgets the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hub import correlation
from hub.domain import alerts
from hub.domain.alerts import CLEARED, RAISED, DueDateAlert, OrderFacts, Raised
from hub.errors import ConfigError, UndecodableRecord
from hub.events import OrderAlert, OrderSnapshot
from hub.observability import metrics
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, registry_from_settings
from hub.settings import Settings
from hub.streams.core import Inbound, TopicNames, dead_letter, range_group_consumer

#: The alert worker's consumer group (namespaced).
GROUP = "orderhub-alerts"
#: How often the group's position is committed (read by nothing but ``orderhub lag``).
COMMIT_EVERY_S = 5.0
#: The line it logs once it has read what it was assigned and is deciding (tests wait for it).
READY = "orderhub alerts: watching due dates"

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    """Now, from the system clock, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def file_clock(path: Path) -> Clock:
    """Now, as the ISO timestamp in ``path`` says (read at every call): time moves when the file does.
    A file caught empty while being rewritten reads as the time it said before."""
    said: list[dt.datetime] = []

    def now() -> dt.datetime:
        text = path.read_text().strip()
        if not text and said:
            return said[-1]
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"{path}: {text!r} is not an ISO timestamp (ORDERHUB_CLOCK_FILE)") from None
        said[:] = [value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)]
        return said[-1]
    return now


@dataclass
class AlertBook:
    """What the worker knows: each order's facts and partition, the alerts the alerts topic says it has
    open, and how often each (stage, due date) was raised."""

    config: DueDateAlert
    facts: dict[str, OrderFacts] = field(default_factory=dict)
    partition: dict[str, int] = field(default_factory=dict)
    open: dict[str, dict[tuple[str, dt.date], int]] = field(default_factory=dict)
    raised_count: dict[str, dict[tuple[str, dt.date], int]] = field(default_factory=dict)
    #: Each order's correlation id (hub.correlation), from its snapshot's header: its alerts carry it.
    flow: dict[str, str] = field(default_factory=dict)

    def snapshot(self, snapshot: OrderSnapshot, partition: int, flow: str | None = None) -> None:
        """An order's latest snapshot (an older version than the one held changes nothing)."""
        held = self.facts.get(snapshot.order_id)
        if held is None or held.version <= snapshot.version:
            self.facts[snapshot.order_id] = OrderFacts.of(snapshot)
            self.partition[snapshot.order_id] = partition
            if flow:
                self.flow[snapshot.order_id] = flow

    def forget(self, order_id: str) -> None:
        """A tombstone: the order is gone from the state topic."""
        self.facts.pop(order_id, None)
        self.flow.pop(order_id, None)

    def alert(self, alert: OrderAlert) -> None:
        """An alert read from the alerts topic: the order has it open, or no longer has it."""
        key = (alert.stage, alert.due_date)
        have = self.open.setdefault(alert.order_id, {})
        if alert.kind == RAISED:
            have[key] = alert.occurrence
            counts = self.raised_count.setdefault(alert.order_id, {})
            counts[key] = max(counts.get(key, 0), alert.occurrence)
        elif have.get(key) == alert.occurrence:
            del have[key]

    def decide(self, order_ids: set[str] | None, now: dt.datetime) -> list[OrderAlert]:
        """The alerts to write for these orders (all held, when None), today being ``now``'s UTC date."""
        found = []
        today = now.astimezone(dt.timezone.utc).date()
        for order_id in sorted(self.facts if order_ids is None else order_ids & self.facts.keys()):
            facts = self.facts[order_id]
            raised = [Raised(stage, due, n) for (stage, due), n in self.open.get(order_id, {}).items()]
            for action in alerts.actions(self.config, facts, today, raised, self.raised_count.get(order_id)):
                found.append(OrderAlert(
                    record_id=f"{order_id}:alert:{action.record_id}", order_id=order_id,
                    order_number=facts.order_number, version=facts.version, kind=action.kind,
                    stage=action.stage.name, notify=action.stage.notify, due_date=action.due,
                    occurrence=action.occurrence, days_left=action.days_left, status=facts.status,
                    on_hold=facts.on_hold, reason=action.reason, decided_at=now))
        return found


class AlertWorker:
    """One member of the alert group: reads, decides, writes (rules 1-3 of the module)."""

    def __init__(self, settings: Settings, config: DueDateAlert, clock: Clock = system_clock) -> None:
        self.settings, self.config, self.clock = settings, config, clock
        self.topics = TopicNames.of(settings)
        self.codec = AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
        self.book = AlertBook(config)
        #: Offsets (per topic-partition) to read past before deciding: the ends at assignment, and
        #: every alert written since.
        self._targets: dict[tuple[str, int], int] = {}
        self._assigned = asyncio.Event()
        #: Held while deciding and writing; a revocation takes it, so nothing is written after it.
        self._writing = asyncio.Lock()
        #: What went wrong in a rebalance callback (aiokafka only logs those): raised by the loop.
        self._failed: BaseException | None = None
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set."""
        from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener
        from aiokafka.errors import KafkaTimeoutError

        worker = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: object) -> None:
                async with worker._writing:  # the decision in hand is written first; none after this
                    worker._assigned.clear()

            async def on_partitions_assigned(self, assigned: set) -> None:
                # read both topics again from the start: the book is what they hold, nothing else
                try:
                    worker.book = AlertBook(worker.config)
                    worker._targets = {}
                    if assigned:
                        if not await consumer.seek_to_beginning(*assigned):
                            raise KafkaTimeoutError("seeking to the beginning of the assigned partitions timed out")
                        ends = await consumer.end_offsets(list(assigned))
                        worker._targets = {(tp.topic, tp.partition): end for tp, end in ends.items()}
                    worker._assigned.set()
                except Exception as exc:  # noqa: BLE001 - aiokafka would only log it; the loop raises it
                    worker._failed = exc

        consumer = range_group_consumer(self.settings, GROUP)
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                                    enable_idempotence=True)
        consumer.subscribe([self.topics.state, self.topics.alerts], listener=Listener())
        await consumer.start()
        await producer.start()
        try:
            await self._loop(consumer, producer, stop)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _loop(self, consumer: object, producer: object, stop: asyncio.Event) -> None:
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        changed: set[str] = set()
        last_sweep: dt.datetime | None = None
        read: dict[Any, int] = {}
        committed_at = time.monotonic()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)  # type: ignore[attr-defined]
            if self._failed is not None:
                raise self._failed
            for tp, records in batch.items():
                for record in records:
                    order_id = await self._read(tp.topic, record, producer)
                    if order_id is not None and tp.topic == self.topics.state:
                        changed.add(order_id)
                read[tp] = records[-1].offset + 1
            if read and time.monotonic() - committed_at >= COMMIT_EVERY_S:
                # only so operations see the group's lag (orderhub lag): a member starts from the beginning
                owned = consumer.assignment()  # type: ignore[attr-defined]
                if mine := {tp: at for tp, at in read.items() if tp in owned}:
                    with contextlib.suppress(KafkaError):  # a rebalance or a blip: the next commit says it
                        await consumer.commit(mine)  # type: ignore[attr-defined]
                read, committed_at = {}, time.monotonic()
            async with self._writing:
                if not self._assigned.is_set() or not await self._caught_up(consumer):
                    continue
                if not self.ready.is_set():
                    self.ready.set()
                    log.info(READY)
                now = self.clock()
                sweep = last_sweep is None or (now - last_sweep).total_seconds() >= self.config.interval_s
                decided = self.book.decide(None if sweep else changed, now)
                last_sweep = now if sweep else last_sweep
                changed.clear()
                owned = consumer.assignment()  # type: ignore[attr-defined]
                for alert in decided:  # each acknowledged before the next; read back before deciding again
                    partition = self.book.partition[alert.order_id]
                    if TopicPartition(self.topics.state, partition) not in owned:
                        continue  # a record of a partition revoked since it was read: its new owner decides
                    sent = await producer.send_and_wait(  # type: ignore[attr-defined]
                        self.topics.alerts, self.codec.encode("order_alert", alert.to_avro()),
                        key=alert.order_id.encode(), headers=list(correlation.header(self.book.flow.get(alert.order_id))))
                    if TopicPartition(sent.topic, sent.partition) not in owned:
                        raise ConfigError(f"{self.topics.alerts} and {self.topics.state} are not co-partitioned: "
                                          f"{alert.order_id} is in state partition {partition}, its alert went to "
                                          f"{sent.partition}; give both topics the same partitions")
                    target = (sent.topic, sent.partition)
                    self._targets[target] = max(self._targets.get(target, 0), sent.offset + 1)
                    log.info("alert %s %s for %s (%s): %s", alert.kind.lower(), alert.stage, alert.order_number,
                             alert.notify, alert.reason)
                    metrics.ALERTS.labels(alert.kind.lower(), alert.stage).inc()

    async def _caught_up(self, consumer: object) -> bool:
        from aiokafka import TopicPartition

        for (topic, partition), target in self._targets.items():
            if await consumer.position(TopicPartition(topic, partition)) < target:  # type: ignore[attr-defined]
                return False
        return True

    async def _read(self, topic: str, record: object, producer: object) -> str | None:
        """Take one record into the book; the order it was about, or None when it went to the dead letters."""
        inbound = Inbound(topic, record.partition, record.offset, record.timestamp,  # type: ignore[attr-defined]
                          record.key, record.value)  # type: ignore[attr-defined]
        if topic == self.topics.state and not inbound.value and inbound.key:  # a tombstone: the order is gone
            self.book.forget(inbound.key.decode())
            return None
        schema, model = ("order_snapshot", OrderSnapshot) if topic == self.topics.state else ("order_alert", OrderAlert)
        try:
            decoded = self.codec.decode(inbound.value or b"", schema, topic=topic, partition=inbound.partition,
                                        offset=inbound.offset)
            event = model.from_avro(decoded.value)
        except (UndecodableRecord, ValueError) as exc:
            log.warning("%s[%d]@%d is not an %s (%s): to the dead letters", topic, inbound.partition,
                        inbound.offset, schema, exc)
            out = dead_letter(self.topics, inbound, "alerts", exc)
            await producer.send_and_wait(out.topic, out.value, key=out.key,  # type: ignore[attr-defined]
                                         headers=list(out.headers))
            return None
        if isinstance(event, OrderSnapshot):
            self.book.snapshot(event, inbound.partition, correlation.of(record.headers))  # type: ignore[attr-defined]
        else:
            self.book.alert(event)
        return event.order_id


async def run_alerts(settings: Settings, clock: Clock | None = None, *,
                     sleep: Callable[[float], Any] = asyncio.sleep) -> int:
    """``orderhub alerts``: until SIGTERM or SIGINT. Without a ``due_date_alert`` section it says so and
    waits (``orderhub up`` runs it whatever the workflow file holds)."""
    import signal

    from aiokafka.errors import KafkaError

    from hub.errors import RetriableError
    from hub.logs import configure
    from hub.streams.delivery import backoff_s

    configure(settings)
    metrics.serve(settings, "alerts")
    rules = settings.rules()
    config = rules.workflow.due_date_alert if rules.workflow else None
    if clock is None:
        clock = file_clock(settings.clock_file) if settings.clock_file else system_clock
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for stage in config.stages if config is not None else ():
        for kind in ("raised", "cleared"):
            metrics.ALERTS.labels(kind, stage.name)
    if config is None:
        log.warning("%s has no due_date_alert section: no alerts to raise; waiting to be stopped",
                    settings.workflow_file)
        await stop.wait()
        return 0
    attempt = 0
    while not stop.is_set():
        worker = AlertWorker(settings, config, clock)
        try:
            await worker.run(stop)
        except (KafkaError, RetriableError, OSError) as exc:
            attempt = 0 if worker.ready.is_set() else attempt + 1
            log.warning("Kafka or the schema registry is unavailable (%s: %s); nothing unwritten is lost; "
                        "starting again in %.1fs", type(exc).__name__, exc, backoff_s(attempt))
            await sleep(backoff_s(attempt))
    return 0
