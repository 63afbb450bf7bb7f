"""What the order pages' event streams watch: the engine's state topic, followed from its end.

The read model is written by the projector at each checkpoint (``ORDERHUB_COMMIT_INTERVAL_S``,
2.8 s by default); the state topic has an order's new snapshot as soon as the engine decided it.
So the API process follows the state topic itself, and an open order page learns of a new version
(with the order as it is now) within moments of the decision:

1. One consumer (no group: every API process reads every partition) starts at the topic's end
   when the API starts; it keeps the newest snapshot of each order it has seen (the most recent
   ``KEEP`` orders) and wakes every stream waiting for one of them.
2. When Kafka is away it tries again with back-off; the streams then fall back on the read model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from hub.events import OrderSnapshot
from hub.settings import Settings

log = logging.getLogger(__name__)

#: How many orders' newest snapshots are kept.
KEEP = 10_000


class Live:
    """The newest snapshot of each order the state topic carried since the API started."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._latest: OrderedDict[str, OrderSnapshot] = OrderedDict()
        #: Set (and replaced by a fresh one) whenever a snapshot arrives: what the streams wait on. An
        #: event, not a condition: a condition's wait cancelled by a timeout may end without its lock.
        self._changed = asyncio.Event()
        #: True while the state topic is followed (the streams then need not look at the read model).
        self.following = False

    def latest(self, order_id: str) -> OrderSnapshot | None:
        return self._latest.get(order_id)

    async def newer(self, order_id: str, than: int | None, timeout_s: float) -> OrderSnapshot | None:
        """The order's snapshot once it is newer than version ``than``; None after ``timeout_s``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            snapshot = self._latest.get(order_id)
            if snapshot is not None and (than is None or snapshot.version > than):
                return snapshot
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def run(self) -> None:
        """Rule 1 and 2, until cancelled."""
        from hub.streams.delivery import backoff_s

        attempt = 0
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka away, a topic missing: the streams use the read model
                attempt += 1
                log.warning("live order updates paused (%s: %s); again in %.1fs", type(exc).__name__, exc,
                            backoff_s(attempt))
                await asyncio.sleep(backoff_s(attempt))

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from hub.errors import UndecodableRecord
        from hub.serde.store import SchemaStore
        from hub.serde.wire import AvroCodec, registry_from_settings
        from hub.topics import TopicNames, topic_partitions

        topic = TopicNames.of(self.settings).state
        codec = AvroCodec(SchemaStore.load(self.settings.schemas_dir), registry_from_settings(self.settings))
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(await topic_partitions(self.settings, topic))]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:  # the end is where it is now, not where it is at the first fetch
                await consumer.position(tp)
            self.following = True
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                changed = False
                for records in batch.values():
                    for record in records:
                        if not record.value:
                            continue
                        try:
                            snapshot = OrderSnapshot.from_avro(codec.decode(record.value, "order_snapshot").value)
                        except (UndecodableRecord, ValueError):
                            continue  # the engine's dead letters say why; a page has nothing to show of it
                        held = self._latest.get(snapshot.order_id)
                        if held is None or held.version < snapshot.version:
                            self._latest[snapshot.order_id] = snapshot
                            self._latest.move_to_end(snapshot.order_id)
                            changed = True
                while len(self._latest) > KEEP:
                    self._latest.popitem(last=False)
                if changed:
                    self._changed.set()
                    self._changed = asyncio.Event()
        finally:
            self.following = False
            await consumer.stop()
