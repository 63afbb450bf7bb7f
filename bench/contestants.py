"""The loops the engine is compared with, each run as its own process by ``bench/engine.py``.

::

    python bench/contestants.py raw   --namespace NS   # proposals -> proposals-by-order, bytes untouched
    python bench/contestants.py bare  --namespace NS   # hub.streams.core.Engine in a bare aiokafka loop
    python bench/contestants.py quix  --namespace NS --state-dir DIR   # the same Engine under Quix Streams

Each consumes the namespace's proposals topic from the earliest offset in its own consumer
group and runs until SIGTERM. It prints ``{"bench": "ready", "t": ...}`` once it has its
partitions and ``{"bench": "first", "t": ...}`` when it takes its first record (wall clock),
so the benchmark can start its clock there; outputs are counted by the benchmark's own
consumer, exactly as for the engine's worker. ``--profile FILE`` writes a cProfile of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import signal
import sys
import time
from itertools import count
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from hub.domain.rules import Rules
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, registry_from_settings
from hub.settings import Settings
from hub.streams.core import Engine, Inbound, Outbound, TopicNames, dead_letter

#: Like the engine: input offsets committed every 2.8 s (ORDERHUB_COMMIT_INTERVAL_S default).
COMMIT_INTERVAL_S = 2.8


def say(event: str, **fields: Any) -> None:
    """One JSON line the benchmark reads from this process's log."""
    print(json.dumps({"bench": event, "t": time.time(), **fields}), flush=True)


def engine_for(settings: Settings, topics: TopicNames) -> Engine:
    """The engine exactly as the worker builds it."""
    codec = AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
    return Engine(codec, Rules.load(settings.ownership_file), topics)


class _Loop:
    """A consumer -> work -> producer loop over aiokafka, stopped by SIGTERM."""

    def __init__(self, settings: Settings, group: str, source: str) -> None:
        self.settings, self.group, self.source = settings, group, source
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        consumer = AIOKafkaConsumer(self.source, bootstrap_servers=self.settings.bootstrap_servers,
                                    group_id=self.group, auto_offset_reset="earliest", enable_auto_commit=True,
                                    auto_commit_interval_ms=int(COMMIT_INTERVAL_S * 1000))
        # as the engine's producer: acks=all, no linger, default batch size
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all", linger_ms=0)
        await consumer.start()
        await producer.start()
        try:
            while not consumer.assignment() and not self.stopping.is_set():
                await asyncio.sleep(0.02)
            say("ready")
            first = True
            while not self.stopping.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                if batches and first:
                    say("first")
                    first = False
                for records in batches.values():
                    for record in records:
                        await self.work(record, producer)
        finally:
            await producer.stop()
            await consumer.stop()

    async def work(self, record: Any, producer: AIOKafkaProducer) -> None:
        raise NotImplementedError


class RawLoop(_Loop):
    """Passes every proposal's bytes through to the by-order topic: the transport's own cost."""

    def __init__(self, settings: Settings, group: str, topics: TopicNames) -> None:
        super().__init__(settings, group, topics.proposals)
        self.target = topics.by_order

    async def work(self, record: Any, producer: AIOKafkaProducer) -> None:
        await producer.send(self.target, record.value, key=record.key, timestamp_ms=record.timestamp)


class BareEngineLoop(_Loop):
    """The engine's two stages in one process: resolve, then decide what was forwarded.

    The forwarded proposal is produced to the by-order topic (as the worker's router does) and
    decided at once instead of being read back. The tables are plain dicts; reference links the
    engine emits are applied to the references dict directly (the worker's router reads them back).
    """

    def __init__(self, settings: Settings, group: str, topics: TopicNames) -> None:
        super().__init__(settings, group, topics.proposals)
        self.topics = topics
        self.engine = engine_for(settings, topics)
        self.references: dict[bytes, bytes] = {}
        self.orders: dict[bytes, bytes] = {}
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._offsets: dict[int, count] = {}

    async def work(self, record: Any, producer: AIOKafkaProducer) -> None:
        inbound = Inbound(record.topic, record.partition, record.offset, record.timestamp, record.key, record.value)
        try:
            forwarded = self.engine.resolve(inbound, self.references)
        except Exception as exc:  # as the worker: park the record, go on
            forwarded = [dead_letter(self.topics, inbound, "resolve", exc)]
        for out in forwarded:
            await self._send(producer, out, record.timestamp)
            if out.topic == self.topics.by_order:
                await self._decide(out, record.timestamp, producer)

    async def _decide(self, out: Outbound, timestamp: int, producer: AIOKafkaProducer) -> None:
        if not self._partitions:
            self._partitions = sorted(producer.client.cluster.partitions_for_topic(self.topics.by_order) or {0})
        partition = self._partitioner(out.key, self._partitions, self._partitions)
        offset = next(self._offsets.setdefault(partition, count()))
        record = Inbound(self.topics.by_order, partition, offset, timestamp, out.key, out.value)
        try:
            decided = self.engine.decide(record, self.orders)
        except Exception as exc:
            decided = [dead_letter(self.topics, record, "decide", exc)]
        for result in decided:
            await self._send(producer, result, timestamp)
            if result.topic == self.topics.ref_links:
                self.engine.link_reference(Inbound(result.topic, 0, 0, timestamp, result.key, result.value),
                                           self.references)

    @staticmethod
    async def _send(producer: AIOKafkaProducer, out: Outbound, timestamp: int) -> None:
        await producer.send(out.topic, out.value, key=out.key, headers=list(out.headers) or None,
                            timestamp_ms=timestamp)


def run_quix(settings: Settings, group: str, topics: TopicNames, state_dir: Path) -> None:
    """The same Engine under a minimal Quix Streams application.

    proposals -> resolve -> group_by(order id) (Quix's repartition topic: the by-order hop) ->
    decide, with the order's engine state as bytes in Quix's RocksDB State (changelogged) ->
    each output to its topic through the application's producer.
    """
    from quixstreams import Application, message_context
    from quixstreams.models.serializers import Serializer
    from quixstreams.state.rocksdb import RocksDBOptions

    class OutboundValue(Serializer):
        """Writes an ``Outbound``'s bytes as they are (the engine has encoded them already)."""

        def __call__(self, value: Outbound, ctx: Any) -> bytes:
            return value.value

    engine = engine_for(settings, topics)
    references: dict[bytes, bytes] = {}
    app = Application(broker_address=settings.bootstrap_servers, consumer_group=group,
                      auto_offset_reset="earliest", state_dir=str(state_dir), commit_interval=COMMIT_INTERVAL_S,
                      loglevel="WARNING", processing_guarantee="at-least-once",
                      rocksdb_options=RocksDBOptions(dumps=lambda v: v, loads=lambda v: v))
    raw = dict(key_deserializer="bytes", value_deserializer="bytes", key_serializer="bytes")
    proposals = app.topic(topics.proposals, value_serializer="bytes", **raw)
    outputs = {name: app.topic(name, value_serializer=OutboundValue(), **raw) for name in (
        topics.changes, topics.state, topics.conflicts, topics.rejections, topics.releases, topics.ref_links,
        topics.answers, topics.dead_letters)}
    side = app.get_producer()
    first = [True]

    def resolve(value: bytes, key: bytes, timestamp: int, headers: Any) -> list[Outbound]:
        if first[0]:
            say("first")
            first[0] = False
        ctx = message_context()
        forwarded = []
        for out in engine.resolve(Inbound(ctx.topic, ctx.partition, ctx.offset, timestamp, key, value), references):
            if out.topic == topics.by_order:
                forwarded.append(out)
            else:  # a resolver rejection or dead letter: rare, straight out
                side.produce(out.topic, out.value, out.key, headers=list(out.headers) or None, timestamp=timestamp)
        return forwarded

    class OrderTable(dict):
        """The order's state in Quix State (the record's own key)."""

        def __init__(self, state: Any) -> None:
            super().__init__()
            self.state = state

        def get(self, key: bytes, default: Any = None) -> Any:
            return self.state.get_bytes(b"order", default)

        def __setitem__(self, key: bytes, value: bytes) -> None:
            self.state.set_bytes(b"order", value)

    def decide(value: bytes, key: bytes, timestamp: int, headers: Any, state: Any) -> list[Outbound]:
        ctx = message_context()
        record = Inbound(ctx.topic, ctx.partition, ctx.offset, timestamp, key, value)
        decided = engine.decide(record, OrderTable(state))
        for out in decided:
            if out.topic == topics.ref_links:
                engine.link_reference(Inbound(out.topic, 0, 0, timestamp, out.key, out.value), references)
        return decided

    sdf = app.dataframe(proposals)
    sdf = sdf.apply(resolve, metadata=True, expand=True)
    sdf = sdf.group_by(lambda out: out.key, name="by-order", value_serializer=OutboundValue(), **raw)
    sdf = sdf.apply(decide, stateful=True, metadata=True, expand=True)
    sdf.to_topic(lambda out, key, timestamp, headers: outputs[out.topic], key=lambda out: out.key)
    say("ready")
    try:
        app.run()
    finally:
        side.flush()


def main(argv: list[str] | None = None) -> int:
    """Run one contestant until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["raw", "bare", "quix"])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--state-dir", type=Path, default=None, help="Quix state folder")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the run here")
    args = parser.parse_args(argv)
    settings = Settings().model_copy(update={"topic_namespace": args.namespace})
    topics = TopicNames.load(namespace=args.namespace)
    group = f"{args.namespace}bench-{args.which}"
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    try:
        if args.which == "quix":
            run_quix(settings, group, topics, args.state_dir or Path("/tmp") / group)
        else:
            loop = (RawLoop if args.which == "raw" else BareEngineLoop)(settings, group, topics)
            asyncio.run(loop.run())
    finally:
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
