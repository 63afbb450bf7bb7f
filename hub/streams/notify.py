"""The notifier (``orderhub notify``): ``hub.domain.notify`` over the hub's topics, delivered by
e-mail, signed webhooks and MQTT.

1. It reads the state topic (what each order is: customer, due date, amounts) and the records
   people are told about: accepted changes, conflicts, rejections and due-date alerts. It goes on
   where its outbox says it stopped (or the group committed, when that is further); a partition
   it never read starts at the end (it tells what happens from now on), the state topic at its
   beginning. The events wait until the state topic is read to where it ended at assignment.
   An order's values follow its changes (exact: rule 5 of ``hub.domain.notify``); a snapshot only
   introduces an order not known yet. Run one notifier per hub: a second member would split the partitions, each keeping
   its own outbox.
2. Each batch's notifications go into the outbox (``hub.notify.outbox``) with the offsets after
   them, in one transaction: a crash between reading and storing reads the records again and
   makes the same notification ids, which the outbox keeps once. So every notification is made
   once, and none is lost.
3. Each subscriber has its own delivery task, which sends its notifications in the order they
   were made, each until it is acknowledged (SMTP accepted, HTTP 2xx, MQTT PUBACK): at least once,
   with the notification id receivers dedup by. A failed attempt is retried with back-off (0.5 s
   doubling to 30 s); a receiver that fails only delays its own notifications, never another's.
   A notification that cannot be delivered (a 4xx, a refused address or message, any error that
   is not the receiver being away, or still failing ``give_up_after_s`` after its first failed
   attempt) is kept as undeliverable with the reason (``orderhub notifications``) and the next
   one goes.
4. Delivery does not need Kafka: when Kafka goes away the reader restarts with back-off while the
   outbox keeps being delivered.

A record no schema reads goes to the dead-letter topic with why.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from hub import correlation
from hub.domain import notify
from hub.domain.fields import field_values
from hub.domain.notify import Notice, Notifications, Subscriber
from hub.errors import ConfigError, UndecodableRecord
from hub.events import OrderAlert, OrderChange, OrderConflict, OrderRejection, OrderSnapshot
from hub.notify.channels import Channels, DeliveryFailed, Renderer
from hub.logs import bound
from hub.notify.outbox import PENDING, Known, Outbox, Stored
from hub.observability import metrics
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, registry_from_settings
from hub.settings import Settings
from hub.streams.core import Inbound, TopicNames, dead_letter, range_group_consumer
from hub.streams.delivery import backoff_s

#: The notifier's consumer group (namespaced).
GROUP = "orderhub-notify"
#: The line it logs once it has read the state topic and is telling (tests wait for it).
READY = "orderhub notify: telling subscribers"

log = logging.getLogger(__name__)


def outbox_path(settings: Settings) -> Path:
    """Where the notifier keeps its outbox."""
    return settings.state_dir / "notify" / f"{settings.worker_name}.db"


def known_of(snapshot: OrderSnapshot) -> Known:
    """What a notification needs of an order, from its snapshot: its canonical values by path."""
    return Known(snapshot.version, snapshot.order_number, field_values(snapshot.model_dump(mode="json")))


class Reader:
    """One member of the notifier group: reads records, stores the notifications they make (rules 1-2)."""

    def __init__(self, settings: Settings, config: Notifications, approvals: Any, outbox: Outbox,
                 renderer: Renderer, wake: Callable[[], None]) -> None:
        self.settings, self.config, self.approvals, self.outbox = settings, config, approvals, outbox
        self.renderer, self.wake = renderer, wake
        self.topics = TopicNames.of(settings)
        self.codec = AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
        self.sources = {self.topics.state: ("order_snapshot", OrderSnapshot),
                        self.topics.changes: ("order_change", OrderChange),
                        self.topics.conflicts: ("order_conflict", OrderConflict),
                        self.topics.rejections: ("order_rejection", OrderRejection),
                        self.topics.alerts: ("order_alert", OrderAlert)}
        #: The state topic's ends at assignment: the events wait (paused) until it is read to there.
        self._targets: dict[Any, int] = {}
        self._paused: list[Any] = []
        #: True while the state topic is read to where it ended at assignment (the events wait).
        self._seeding = True
        #: Orders known from a snapshot and none of their changes yet: a newer snapshot replaces it.
        self._introduced: set[str] = set()
        self._assigned = False
        #: Held while a batch is stored; a revocation takes it, so nothing is stored after it.
        self._taking = asyncio.Lock()
        self._failed: BaseException | None = None
        self.ready = asyncio.Event()

    async def _start_at(self, consumer: Any, assigned: set) -> None:
        """Rule 1: each partition where the outbox says (or the group committed, when further: another
        member stored up to there); one never read: the state topic from its start, the rest from now.
        The events wait until the state topic is read to its end; where they start is stored at once."""
        stored = await asyncio.to_thread(self.outbox.offsets)
        state = [tp for tp in assigned if tp.topic == self.topics.state]
        events = [tp for tp in assigned if tp.topic != self.topics.state]
        ends = await consumer.end_offsets(list(assigned)) if assigned else {}
        beginnings = await consumer.beginning_offsets(list(assigned)) if assigned else {}
        fresh_state, fresh_events = [], []
        for tp in assigned:
            at = stored.get((tp.topic, tp.partition))
            if tp.topic != self.topics.state and (committed := await consumer.committed(tp)) is not None:
                at = committed if at is None else max(at, committed)
            if at is not None and not beginnings[tp] <= at <= ends[tp]:
                log.warning("%s[%d]: the outbox says offset %d, the topic holds %d to %d (recreated?): reading it "
                            "from its %s", tp.topic, tp.partition, at, beginnings[tp], ends[tp],
                            "beginning" if tp.topic == self.topics.state else "end")
                at = None
            if at is not None:
                consumer.seek(tp, at)
            elif tp.topic == self.topics.state:
                fresh_state.append(tp)
            else:
                fresh_events.append(tp)
        if fresh_state:
            await consumer.seek_to_beginning(*fresh_state)
        if fresh_events:
            await consumer.seek_to_end(*fresh_events)
        positions = {(tp.topic, tp.partition): await consumer.position(tp) for tp in events}
        await asyncio.to_thread(self.outbox.store, [], {}, positions)  # a quiet partition is not read from now again
        self._targets = {tp: ends[tp] for tp in state}
        self._seeding = True
        if events:
            consumer.pause(*events)
        self._paused = events
        self._assigned = True

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener

        reader = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: object) -> None:
                async with reader._taking:  # the batch in hand is stored first; none after this
                    reader._assigned = False

            async def on_partitions_assigned(self, assigned: set) -> None:
                try:
                    await reader._start_at(consumer, assigned)
                except Exception as exc:  # noqa: BLE001 - aiokafka would only log it; the loop raises it
                    reader._failed = exc

        consumer = range_group_consumer(self.settings, GROUP)
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all")
        consumer.subscribe(list(self.sources), listener=Listener())
        await consumer.start()
        await producer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if self._failed is not None:
                    raise self._failed
                async with self._taking:
                    if not self._assigned:
                        continue  # revoked since it was fetched: its next owner reads it
                    if batch:
                        await self._take(batch, producer)
                        # the offsets are the outbox's; committed too, so operations see the group's lag
                        with contextlib.suppress(Exception):
                            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
                    if self._seeding and await self._caught_up(consumer):
                        if self._paused:
                            consumer.resume(*self._paused)  # the orders are known: now what happened to them
                        self._paused = []
                        self._seeding = False
                        if not self.ready.is_set():
                            self.ready.set()
                            log.info(READY)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _caught_up(self, consumer: Any) -> bool:
        for tp, end in self._targets.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def _take(self, batch: dict[Any, list[Any]], producer: Any) -> None:
        """Rule 2: a batch's notifications and the offsets after it, stored in one transaction."""
        orders: dict[str, Known | None] = {}
        made: list[dict[str, Any]] = []
        offsets = {}
        # snapshots first: a change and the snapshot of its version are written together
        for tp in sorted(batch, key=lambda tp: tp.topic != self.topics.state):
            for record in batch[tp]:
                offsets[(tp.topic, tp.partition)] = record.offset + 1
                event = await self._decoded(tp.topic, record, producer)
                if event is None:
                    if tp.topic == self.topics.state and not record.value and record.key:
                        orders[record.key.decode()] = None  # a tombstone: the order is gone
                    continue
                flow = correlation.of(record.headers)  # hub.correlation: every notification of the flow says it
                for notice in self._notices(event, orders):
                    for notification in notify.recipients(self.config, notice):
                        message = self.renderer.message(notification)
                        if flow:
                            message["correlation_id"] = flow
                        made.append({"id": notification.id, "subscriber": notification.subscriber.name,
                                     "channel": notification.subscriber.channel,
                                     "target": notification.subscriber.target, "kind": notice.kind,
                                     "order_id": notice.order_id, "order_number": notice.order_number,
                                     "message": message})
        added = await asyncio.to_thread(self.outbox.store, made, orders, offsets)
        if added:
            log.info("%d notification(s) to deliver", added)
            self.wake()

    def _known(self, order_id: str | None, orders: dict[str, Known | None]) -> Known | None:
        if order_id is None:
            return None
        return orders[order_id] if order_id in orders else self.outbox.known(order_id)

    def _notices(self, event: Any, orders: dict[str, Known | None]) -> list[Notice]:
        """Rule 1, with what is known of the event's order (brought up to date by it)."""
        known = self._known(getattr(event, "order_id", None), orders)
        values = known.values if known else {}
        if isinstance(event, OrderSnapshot):
            # an order's values follow its changes; a snapshot only introduces an order not known yet
            # (or a newer snapshot of one introduced so, before any of its changes was read)
            if known is None or (event.order_id in self._introduced and known.version < event.version):
                orders[event.order_id] = known_of(event)
                self._introduced.add(event.order_id)
            return []
        if isinstance(event, OrderChange):
            before, after = notify.around(values, known.version if known else None, event)
            self._introduced.discard(event.order_id)
            if known is None or known.version < event.version:
                orders[event.order_id] = Known(event.version, event.order_number, after)
            return notify.of_change(event, before, after, self.approvals)
        if isinstance(event, OrderAlert):
            return [notify.of_alert(event, values)]
        if isinstance(event, OrderConflict):
            parked = notify.of_conflict(event, values)
            return [parked] if parked else []
        return [notify.of_rejection(event, values, known.number if known else None)]

    async def _decoded(self, topic: str, record: Any, producer: Any) -> Any | None:
        """The record's event; None for a tombstone, or (sent to the dead letters) for bytes no schema reads."""
        if not record.value:
            return None
        schema, model = self.sources[topic]
        try:
            decoded = self.codec.decode(record.value, schema, topic=topic, partition=record.partition,
                                        offset=record.offset)
            return model.from_avro(decoded.value)
        except (UndecodableRecord, ValueError) as exc:
            log.warning("%s[%d]@%d is not an %s (%s): to the dead letters", topic, record.partition, record.offset,
                        schema, exc)
            inbound = Inbound(topic, record.partition, record.offset, record.timestamp, record.key, record.value)
            out = dead_letter(self.topics, inbound, "notify", exc)
            await producer.send_and_wait(out.topic, out.value, key=out.key, headers=list(out.headers))
            return None


class Deliverer:
    """Rule 3: one subscriber's notifications, in order, each until acknowledged or given up. Sent to the
    subscriber's address as the configuration says now (an address changed since is the one used)."""

    def __init__(self, subscriber: Subscriber, outbox: Outbox, channels: Channels, give_up_after_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.subscriber, self.name, self.outbox, self.channels = subscriber, subscriber.name, outbox, channels
        self.give_up_after_s, self.clock = give_up_after_s, clock
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            item = await asyncio.to_thread(self.outbox.next_due, self.name)
            wait = 1.0 if item is None else item.next_at - self.clock()
            if wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), min(wait, 1.0))
                continue
            await self._attempt(item)

    async def _attempt(self, item: Stored) -> None:
        with bound(order_id=item.order_id, order_number=item.order_number,
                   correlation_id=item.message.get("correlation_id"), notification_id=item.id):
            await self._deliver(item)

    async def _deliver(self, item: Stored) -> None:
        try:
            await self.channels.send(self.subscriber.channel, self.subscriber.target, item.id, item.message)
        except Exception as exc:  # noqa: BLE001 - whatever fails, it fails for this notification only
            failure = exc if isinstance(exc, DeliveryFailed) else DeliveryFailed(
                f"{type(exc).__name__}: {exc}", permanent=True)
            if not isinstance(exc, DeliveryFailed):
                log.exception("notification %s to %s failed unexpectedly", item.id, self.name)
            now = self.clock()
            since = item.failing_since if item.failing_since is not None else now
            if failure.permanent or now - since >= self.give_up_after_s:
                why = str(failure) if failure.permanent else f"still failing after {now - since:.0f} s: {failure}"
                log.error("notification %s (%s to %s) is undeliverable: %s", item.id, item.kind, self.name, why)
                metrics.NOTIFICATIONS.labels(self.subscriber.channel, "undeliverable").inc()
                await asyncio.to_thread(self.outbox.failed, item.id, why, None, now)
            else:
                delay = backoff_s(item.attempts)
                log.warning("notification %s to %s: %s; again in %.1fs", item.id, self.name, failure, delay)
                metrics.NOTIFICATIONS.labels(self.subscriber.channel, "failed").inc()
                await asyncio.to_thread(self.outbox.failed, item.id, str(failure), now + delay, now)
        else:
            await asyncio.to_thread(self.outbox.delivered, item.id)
            metrics.NOTIFICATIONS.labels(self.subscriber.channel, "sent").inc()
            log.info("notified %s: %s", self.name, item.message.get("subject"))


def channels_of(settings: Settings, config: Notifications) -> Channels:
    """The channels the subscribers need, from the settings (a webhook without a secret stops the start)."""
    import binascii

    import httpx

    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    webhooks = [s for s in config.subscribers if s.channel == "webhook"]
    if not secret and webhooks:
        raise ConfigError("notifications: a subscriber has a webhook, but ORDERHUB_WEBHOOK_SECRET is not set "
                          "(webhooks are signed with it)")
    if secret and secret.startswith("whsec_"):
        try:
            base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ConfigError("ORDERHUB_WEBHOOK_SECRET starts with whsec_ but what follows is not base64") from None
    for subscriber in webhooks:
        try:
            httpx.URL(subscriber.target).port  # noqa: B018 - parsing it is the check
        except (httpx.InvalidURL, ValueError) as exc:
            raise ConfigError(f"notifications: subscriber {subscriber.name}: {subscriber.target!r} is not a URL "
                              f"({exc})") from None
    return Channels(smtp_host=settings.smtp_host, smtp_port=settings.smtp_port, smtp_from=settings.smtp_from,
                    mqtt_host=settings.mqtt_host, mqtt_port=settings.mqtt_port, webhook_secret=secret)


async def run_notify(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """``orderhub notify``: until SIGTERM or SIGINT (or ``stop``). Without a ``notifications`` section it
    says so and waits (``orderhub up`` runs it whatever the workflow file holds)."""
    import signal

    from aiokafka.errors import KafkaError

    from hub.errors import RetriableError
    from hub.logs import configure

    configure(settings)
    metrics.serve(settings, "notify")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO is every request; ours say what was told
    rules = settings.rules()
    config = rules.workflow.notifications if rules.workflow else None
    approvals = rules.workflow.approvals if rules.workflow else None
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if config is None:
        log.warning("%s has no notifications section: nobody to tell; waiting to be stopped", settings.workflow_file)
        await stop.wait()
        return 0
    renderer = Renderer(config)
    channels = channels_of(settings, config)
    outbox = Outbox(outbox_path(settings))
    for channel in {s.channel for s in config.subscribers}:
        for result in ("sent", "failed", "undeliverable"):
            metrics.NOTIFICATIONS.labels(channel, result)
    metrics.NOTIFICATIONS_PENDING.set_function(lambda: outbox.counts()[PENDING])
    deliverers = [Deliverer(s, outbox, channels, config.give_up_after_s) for s in config.subscribers]
    if dropped := outbox.give_up_unknown(s.name for s in config.subscribers):
        log.warning("%d pending notification(s) of subscribers no longer configured kept as undeliverable", dropped)

    def wake() -> None:
        for deliverer in deliverers:
            deliverer.wake.set()

    failed: list[BaseException] = []

    def check(task: asyncio.Task[None]) -> None:  # a delivery task that dies of a bug stops the notifier, loudly
        if not task.cancelled() and task.exception() is not None:
            log.critical("%s failed: %r", task.get_name(), task.exception())
            failed.append(task.exception())
            stop.set()

    tasks = [asyncio.create_task(d.run(stop), name=f"deliver to {d.name}") for d in deliverers]
    for task in tasks:
        task.add_done_callback(check)
    try:
        attempt = 0
        while not stop.is_set():
            reader = Reader(settings, config, approvals, outbox, renderer, wake)
            try:
                await reader.run(stop)
            except (KafkaError, RetriableError, OSError) as exc:
                attempt = 0 if reader.ready.is_set() else attempt + 1
                log.warning("Kafka or the schema registry is unavailable (%s: %s); delivering what is stored, "
                            "reading again in %.1fs", type(exc).__name__, exc, backoff_s(attempt))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff_s(attempt))
        if failed:
            raise failed[0]
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channels.close()
        metrics.NOTIFICATIONS_PENDING.set_function(lambda: 0)  # a scrape no longer reads the outbox
        outbox.close()
    return 0
