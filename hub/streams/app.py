"""The engine's stream runtime: Quix Streams wiring over ``hub.streams.core``.

One application, one consumer group, three streams:

- ``route``: proposals addressed by an external reference, and the reference links the
  engine emits, in one stream keyed by the reference (co-partitioned topics, one state
  store): a link is remembered, a proposal is re-keyed by the hub order id it resolves to.
  Proposals the sender already addressed by order id skip this hop (``HubClient`` writes
  them straight to the by-order topic).
- ``decide``: proposals by order -> the order's state (Quix State: RocksDB with a changelog)
  -> changes, state, conflicts, rejections, releases, answers, reference links.
- ``project`` (unless ``ORDERHUB_PROJECT_READ_MODEL=false``): snapshots, changes, conflicts,
  rejections and due-date alerts into the SQL read model, one batch per checkpoint (a Quix sink).

Crash safety is Quix's checkpoint plus the engine's idempotent state. At every checkpoint
Quix flushes the sinks, produces the state changelog, flushes the producer, commits the input
offsets, then writes the local state; a changelog record whose input offset was never
committed is skipped when state is recovered. So the state a worker resumes with is always
the state as of its committed offsets: the records after them are decided again against the
same state, at the same record time and position, and re-emit the same bytes with the same
record ids (consumers dedup by id). A proposal's event id decided before, in another record
(a sender's retry), is answered DUPLICATE from the state's dedup evidence.

Failures: an outage (the schema registry, the database) is waited out, holding the
partition; a record that can never succeed goes to the dead-letter topic with why; a fatal
error (wrong configuration) stops the worker before its record is committed (exit 78).

Nothing happens at import time: ``create_app`` builds everything from settings.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from typing import Any, Callable, Iterator, MutableMapping

from hub import correlation
from hub.errors import FatalError, RetriableError, UndecodableRecord
from hub.events import OrderAlert, OrderChange, OrderConflict, OrderRejection, OrderSnapshot
from hub.observability import metrics
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, registry_from_settings
from hub.settings import Settings
from hub.streams.core import Engine, Inbound, Outbound, TopicNames, dead_letter
from hub.streams.delivery import backoff_s, retrying, stop_on_fatal, write_batch

#: The engine's consumer group (namespaced) and the stem of its changelog topics. "-v2": the
#: state of the faust-based engine (group "orderhub-engine") is not readable by this one.
APP_ID = "orderhub-engine-v2"
#: The line a worker logs once it is subscribed and processing (tests and the bench wait for it).
READY = "orderhub engine: processing"
#: How long one poll of the consumer waits for more. The router reads two topics in timestamp order
#: (Quix's time alignment), which makes Quix read in batches that wait this long to fill: short, or
#: every hop adds it to a proposal's latency (Quix's default of 1 s put p50 at 2.6 s at 500/s).
POLL_TIMEOUT_S = 0.005

#: How many times the worker builds its application when a topic Quix has just created is not listed yet.
STARTS = 6

log = logging.getLogger(__name__)
_BYTES = dict(key_deserializer="bytes", value_deserializer="bytes", key_serializer="bytes", value_serializer="bytes")


class _Table(MutableMapping[bytes, bytes]):
    """One key's slot in Quix State, as the mapping the engine reads and writes.

    Quix scopes State to the key of the record in hand, so only that key can be served; the
    engine asking for another one is a record addressed inconsistently (its key is not the
    reference or order it names), which fails that record (a dead letter), nothing else.
    """

    def __init__(self, state: Any, key: bytes) -> None:
        self._state, self._key = state, key

    def _check(self, key: bytes) -> None:
        if key != self._key:
            raise UndecodableRecord(f"the record is keyed {self._key!r} but addresses {key!r}: "
                                    "a proposal is keyed by the order id or external reference it names")

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: bytes, default: Any = None) -> Any:  # type: ignore[override]
        self._check(key)
        return self._state.get_bytes("value", default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._check(key)
        self._state.set_bytes("value", value)

    def __delitem__(self, key: bytes) -> None:
        self._check(key)
        self._state.delete("value")

    def __iter__(self) -> Iterator[bytes]:
        return iter([self._key] if self._state.exists("value") else [])

    def __len__(self) -> int:
        return int(self._state.exists("value"))


def create_app(settings: Settings) -> Any:
    """Build the engine's Quix application from settings."""
    from quixstreams import Application, message_context
    from quixstreams.models.serializers import Serializer

    topics = TopicNames.of(settings)
    codec = AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
    rules = settings.rules()
    engine = Engine(codec, rules, topics, observe=functools.partial(metrics.observe_decision, known=rules.knows))
    state_dir = settings.state_dir / "engine" / f"{settings.topic_namespace}{settings.worker_name}"
    state_dir.mkdir(parents=True, exist_ok=True)
    app = Application(
        broker_address=settings.bootstrap_servers,
        consumer_group=settings.topic_namespace + APP_ID,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_s,
        state_dir=str(state_dir),
        processing_guarantee="at-least-once",
        consumer_poll_timeout=POLL_TIMEOUT_S,
        consumer_extra_config={"session.timeout.ms": int(settings.session_timeout_s * 1000),
                               "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000)},
        producer_extra_config={"acks": "all", "linger.ms": int(settings.producer_linger_s * 1000)},
        loglevel=None,  # Quix's own handler would bypass hub.logs: its lines go through the root's, JSON or not
    )

    def topic(name: str, **serde: Any) -> Any:
        return app.topic(name, **{**_BYTES, **serde})

    class Encoded(Serializer):
        """An ``Outbound``'s bytes as they are: the engine has encoded them already."""

        def __call__(self, value: Outbound, ctx: Any) -> bytes:
            return value.value

    outputs = {name: topic(name, value_serializer=Encoded()) for name in (
        topics.by_order, topics.changes, topics.state, topics.conflicts, topics.rejections, topics.releases,
        topics.answers, topics.ref_links, topics.dead_letters)}

    def guarded(stage: str, work: Callable[[Inbound, Any], list[Outbound]]):
        """One record's work: an outage is retried holding the partition; a fatal error stops the
        worker before the record is committed; anything else sends the record to the dead letters."""
        def handle(value: bytes, key: bytes, timestamp: int, headers: Any, state: Any) -> list[Outbound]:
            ctx = message_context()
            record = Inbound(ctx.topic, ctx.partition, ctx.offset, timestamp, key, value, tuple(headers or ()))
            where = f"{stage} {record.topic}[{record.partition}]@{record.offset}"
            try:
                return retrying(lambda: work(record, _Table(state, key or b"")), (RetriableError,), where)
            except FatalError as exc:
                stop_on_fatal(exc, where)
                raise
            except Exception as exc:  # noqa: BLE001 - a bug or a bad record must not stop the partition
                log.exception("%s failed", where)
                return [dead_letter(topics, record, stage, exc)]
        return handle

    def route(record: Inbound, table: _Table) -> list[Outbound]:
        if record.topic == topics.ref_links:
            return engine.link_reference(record, table)
        return engine.resolve(record, table)

    def emit(sdf: Any) -> None:
        sdf = sdf.set_headers(lambda out, _key, _ts, _headers: list(out.headers))
        sdf.to_topic(lambda out, _key, _ts, _headers: outputs[out.topic], key=lambda out: out.key)

    routed = app.dataframe(topic(topics.proposals)).concat(app.dataframe(topic(topics.ref_links)))
    emit(routed.apply(guarded("route", route), stateful=True, metadata=True, expand=True))
    decided = app.dataframe(topic(topics.by_order))
    emit(decided.apply(guarded("decide", lambda record, table: engine.decide(record, table)),
                       stateful=True, metadata=True, expand=True))

    if settings.project_read_model:
        _add_projector(app, settings, codec, topics, topic)
    return app


def _add_projector(app: Any, settings: Settings, codec: AvroCodec, topics: TopicNames,
                   topic: Callable[..., Any]) -> None:
    """Sinks that upsert snapshots, changes and conflicts into the SQL read model, one batch per
    checkpoint: Quix commits the input offsets only after the batch is written (or parked).

    A database outage pauses the partitions and reads the batch again (Quix's backpressure); a
    row the database refuses goes to the dead-letter topic with why, before the commit.
    """
    from quixstreams.sinks import BatchingSink, SinkBackpressureError
    from sqlalchemy.exc import InterfaceError, OperationalError

    from hub.readmodel import ReadModel

    model = ReadModel(settings.read_model_url)
    model.create_schema()
    outage = (OperationalError, InterfaceError, RetriableError)
    dead_letters = app.get_producer()

    class ReadModelSink(BatchingSink):
        def __init__(self, schema: str, event_type: Any, write: Callable[[list[Any]], None]) -> None:
            super().__init__()
            self.schema, self.event_type, self.write_rows = schema, event_type, write
            self.stage = f"project:{schema}"

        def write(self, batch: Any) -> None:
            items, dead, flows = [], [], {}
            for item in batch:
                record = Inbound(batch.topic, batch.partition, item.offset, item.timestamp, item.key, item.value,
                                 tuple(item.headers or ()))
                try:
                    decoded = codec.decode(record.value, self.schema, topic=record.topic,
                                           partition=record.partition, offset=record.offset)
                    items.append((record, self.event_type.from_avro(decoded.value)))
                    if self.schema == "order_change" and (flow := correlation.of(record.headers)):
                        flows[items[-1][1].record_id] = flow
                except RetriableError as exc:
                    raise SinkBackpressureError(retry_after=5.0) from exc
                except (UndecodableRecord, ValueError) as exc:
                    dead.append(dead_letter(topics, record, self.stage, exc))
            rows = self.write_rows if self.schema != "order_change" else (  # the history keeps each change's flow
                lambda changes: model.project_changes(changes, flows))
            try:
                refused = write_batch(rows, items, self.stage, topics, outage, attempts=3)
            except outage as exc:
                log.warning("%s: the read model is unavailable (%s); reading the batch again in 5 s", self.stage, exc)
                raise SinkBackpressureError(retry_after=5.0) from exc
            dead += refused
            metrics.PROJECTED.labels(self.schema).inc(len(items) - len(refused))
            for out in dead:  # on Kafka before the commit that moves past them
                dead_letters.produce(out.topic, out.value, out.key, headers=list(out.headers))
            if dead:
                dead_letters.flush()

    for source, schema, event_type, write in (
            (topics.state, "order_snapshot", OrderSnapshot, model.project_snapshots),
            (topics.changes, "order_change", OrderChange, model.project_changes),
            (topics.conflicts, "order_conflict", OrderConflict, model.project_conflicts),
            (topics.alerts, "order_alert", OrderAlert, model.project_alerts),
            (topics.rejections, "order_rejection", OrderRejection, model.project_rejections)):
        app.dataframe(topic(source)).sink(ReadModelSink(schema, event_type, write))


def run_worker(settings: Settings, *, sleep: Callable[[float], Any] = time.sleep) -> int:
    """Run the engine in this process until SIGTERM or SIGINT (Quix then commits what it decided).

    When Kafka goes away long enough for a checkpoint to fail (or Quix gives up waiting for the
    brokers), Quix stops the application without committing: the worker says so and starts it again
    with back-off, as a crash-restart would, so an outage is waited out instead of ending the worker.
    """
    from hub.logs import configure

    configure(settings)  # first: what importing Quix warns is logged like everything else
    from quixstreams.checkpointing.exceptions import CheckpointProducerTimeout
    from quixstreams.kafka.exceptions import BaseKafkaException, KafkaBrokerUnavailableError
    from quixstreams.models.topics.exceptions import TopicNotFoundError

    metrics.serve(settings, "worker")
    unavailable = (BaseKafkaException, KafkaBrokerUnavailableError, CheckpointProducerTimeout)
    for attempt in itertools.count():
        # Quix creates its changelog topics and reads each back at once; a KRaft broker may list a new
        # topic a moment later, so the first start on a new namespace can miss one: it exists next time
        app = retrying(lambda: create_app(settings), (TopicNotFoundError,), "starting the engine",
                       attempts=STARTS, sleep=sleep)
        log.info(READY)
        try:
            app.run()
            return 0
        except unavailable as exc:
            log.warning("Kafka is unavailable (%s: %s); nothing after the last commit was committed; "
                        "starting again in %.1fs", type(exc).__name__, exc, backoff_s(attempt))
            sleep(backoff_s(attempt))
    return 0
