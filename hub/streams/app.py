"""The faust app: topics, tables and agents wired over ``hub.streams.core``.

Three agents, all at least once (faust's default processing guarantee):

- ``resolve``: proposals in -> the hub order id they are about -> re-keyed by it.
- ``link``: reference links the engine emits -> the ``references`` table the resolver reads.
- ``decide``: proposals by order -> the ``orders`` table -> changes, state, conflicts,
  rejections, releases, reference links.

And, unless ``ORDERHUB_PROJECT_READ_MODEL=false``, three projector agents that upsert
snapshots, changes and conflicts into the SQL read model in batches.

Nothing happens at import time: ``create_app`` builds everything from settings.
"""

from __future__ import annotations

import sys
from typing import Any, Awaitable, Callable

import faust
from faust.types import EventT

from hub.domain.rules import Rules
from hub.errors import FatalError, RetriableError, UndecodableRecord
from hub.events import OrderChange, OrderConflict, OrderSnapshot
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, registry_from_settings
from hub.settings import Settings
from hub.topics import co_partitions, load_declarations
from hub.streams.core import Engine, Inbound, Outbound, TopicNames, dead_letter
from hub.streams.delivery import make_flush_complete, retrying, settled, stop_hard_if_lost, stop_on_fatal, write_batch

APP_ID = "orderhub-engine"
#: Projector batches: at most this many records, or what arrived within this many seconds.
PROJECT_BATCH, PROJECT_WITHIN_S = 500, 1.0

_RAW = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def _inbound(event: EventT) -> Inbound:
    message = event.message
    return Inbound(message.topic, message.partition, message.offset, int(message.timestamp * 1000),
                   message.key, message.value)


def create_app(settings: Settings) -> faust.App:
    """Build the engine's faust app from settings."""
    topics = TopicNames.of(settings)
    # the tables have as many partitions as the topics whose keys they hold (topics.yaml)
    partitions = co_partitions(load_declarations(settings.topics_file, settings.schemas_dir), "engine")
    # faust names table files after the table, not the changelog topic: keep namespaces apart.
    datadir = settings.state_dir / "faust" / f"{settings.topic_namespace}{settings.worker_name}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.topic_namespace + APP_ID,  # the consumer group, and the prefix of its changelog topics
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        producer_acks=-1,
        producer_linger=settings.producer_linger_s,
        web_enabled=False,
        web_bind="127.0.0.1",  # should anyone enable it: loopback only
        table_standby_replicas=0,
    )
    make_flush_complete(app.producer.buffer)  # faust's own can let a commit overtake a table write
    codec = AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
    engine = Engine(codec, Rules.load(settings.ownership_file), topics)
    # bytes keys and values: faust picks its raw codec; the engine owns the encoding.
    orders = app.Table("orders", default=None, partitions=partitions, key_type=bytes, value_type=bytes)
    references = app.Table("references", default=None, partitions=partitions, key_type=bytes, value_type=bytes)

    async def publish(records: list[Outbound], timestamp: float | None) -> None:
        # straight to the producer (faust's topic.send adds nothing we use), each send watched:
        # an output Kafka does not take stops the worker before its input offset is committed
        for record in records:
            sent = await app.producer.send(record.topic, record.key, record.value, partition=None,
                                           timestamp=timestamp, headers=list(record.headers))
            stop_hard_if_lost(sent, f"{record.topic} key {record.key!r}")

    def guarded(stage: str, work: Callable[[Inbound], list[Outbound]]):
        """Run one record's work. A retriable failure (the registry is down) is retried, holding the
        partition; a fatal one (wrong configuration) stops the worker before the record is committed;
        any other failure sends the record to the dead-letter topic and goes on."""
        async def handle(record: Inbound, timestamp: float, where: str) -> None:
            try:
                results = await retrying(lambda: work(record), (RetriableError,), where)
            except FatalError as exc:
                stop_on_fatal(exc, where)
                raise
            except Exception as exc:  # a bug must not stop the partition: park the record
                app.log.exception("%s failed", where)
                results = [dead_letter(topics, record, stage, exc)]
            await publish(results, timestamp)

        async def agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                record = _inbound(event)
                where = f"{stage} {record.topic}[{record.partition}]@{record.offset}"
                # faust acknowledges the record when this loop moves on or stops: decided and published first
                await settled(handle(record, event.message.timestamp, where), where)
        agent.__name__ = agent.__qualname__ = stage
        return agent

    def committed(record: Inbound) -> int | None:
        # faust keeps the last committed offset per partition; a replay starts there.
        for tp, offset in app.consumer._committed_offset.items():
            if tp.topic == record.topic and tp.partition == record.partition:
                return offset
        return None

    app.agent(app.topic(topics.proposals, **_RAW), name="resolve")(
        guarded("resolve", lambda r: engine.resolve(r, references)))
    app.agent(app.topic(topics.ref_links, **_RAW), name="link")(
        guarded("link", lambda r: engine.link_reference(r, references)))
    app.agent(app.topic(topics.by_order, **_RAW), name="decide")(
        guarded("decide", lambda r: engine.decide(r, orders, committed(r))))

    if settings.project_read_model:
        _add_projector(app, settings, codec, topics, publish)
    return app


def _add_projector(app: faust.App, settings: Settings, codec: AvroCodec, topics: TopicNames,
                   publish: Callable[[list[Outbound], float | None], Awaitable[None]]) -> None:
    """Agents that upsert snapshots, changes and conflicts into the SQL read model, in batches.

    A database outage holds the batch and retries; a row the database refuses goes to the
    dead-letter topic; nothing is acknowledged before it is written or parked.
    """
    from sqlalchemy.exc import InterfaceError, OperationalError

    from hub.readmodel import ReadModel

    model = ReadModel(settings.read_model_url)
    model.create_schema()
    outage = (OperationalError, InterfaceError, RetriableError)

    def projector(topic: str, schema: str, event_type: Any, write: Callable[[list[Any]], None]):
        stage = f"project:{schema}"

        async def project_batch(records: list[Inbound]) -> None:
            items, dead = [], []
            for record in records:
                try:
                    decoded = await retrying(lambda: codec.decode(
                        record.value, schema, topic=record.topic, partition=record.partition,
                        offset=record.offset), (RetriableError,), stage)
                    items.append((record, event_type.from_avro(decoded.value)))
                except (UndecodableRecord, ValueError) as exc:
                    dead.append(dead_letter(topics, record, stage, exc))
            await publish(dead + await write_batch(write, items, stage, topics, outage), None)

        async def project(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(PROJECT_BATCH, within=PROJECT_WITHIN_S):
                records = [_inbound(event) for event in batch]
                # faust acknowledges the batch when this loop moves on or stops: written (or parked) first
                await settled(project_batch(records), f"{stage} batch of {len(records)}")
        project.__name__ = project.__qualname__ = f"project_{schema}"
        app.agent(app.topic(topic, **_RAW), name=f"project_{schema}")(project)

    projector(topics.state, "order_snapshot", OrderSnapshot, model.project_snapshots)
    projector(topics.changes, "order_change", OrderChange, model.project_changes)
    projector(topics.conflicts, "order_conflict", OrderConflict, model.project_conflicts)


def faust_log_level(level: str) -> str:
    """faust's spelling of a logging level: it takes only crit, error, warn, info and debug."""
    return {"warning": "warn", "critical": "crit", "fatal": "crit"}.get(level.lower(), level.lower())


def run_worker(settings: Settings, extra_argv: list[str] | None = None) -> int:
    """Run the engine as a faust worker in this process until it is stopped."""
    app = create_app(settings)
    # faust's worker command turns its web server on unless told otherwise (--with-web is its default)
    sys.argv = ["orderhub", "worker", "--without-web", "--loglevel", faust_log_level(settings.log_level),
                *(extra_argv or [])]
    app.main()
    return 0
