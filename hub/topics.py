"""topics.yaml, and bringing a cluster up to it.

The work is split so the rules can be tested without a broker:

1. ``load_declarations`` reads and validates topics.yaml into ``TopicDeclaration`` values.
2. ``observe`` asks the cluster what it has (``ObservedTopic`` values), including the key
   schema each topic was last applied with, kept in the ``_orderhub.topic-declarations``
   topic because Kafka itself has no notion of a key schema.
3. ``plan`` (pure) compares the two: topics to create, partitions to add, configs to set,
   and refusals (shrinking partitions, changing a replication factor or a key schema).
4. ``apply`` executes a plan only when it has no refusals: nothing is half-applied.
   ``check`` prints the plan as drift.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from hub.errors import TopicDeclarationError
from hub.settings import PROJECT_DIR, Settings

#: The topic where ``apply`` records each topic's applied key and value schema (namespace-prefixed).
DECLARATIONS_TOPIC = "_orderhub.topic-declarations"
#: Schemas that are not Avro folders in schemas/.
PRIMITIVE_SCHEMAS = frozenset({"string", "bytes"})


@dataclass(frozen=True)
class TopicDeclaration:
    """One topic as topics.yaml declares it."""

    name: str
    purpose: str
    partitions: int
    #: What production wants; ``effective_replication`` caps it to the cluster's brokers.
    replication_factor: int
    cleanup_policy: str
    retention_ms: int
    #: A schema folder name in schemas/, or ``string`` / ``bytes``.
    key_schema: str
    value_schema: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    #: Where records that cannot be processed go; None for the dead-letter topic itself.
    dead_letter: str | None
    #: Further topic configs, as Kafka strings.
    configs: dict[str, str] = field(default_factory=dict)
    #: The stateful group this topic is co-partitioned with (``engine``): its keys map to table
    #: state by partition, so its partition count is fixed once created.
    co_partitioned: str | None = None
    #: How code names this topic (``TopicNames``); None for topics only a framework names.
    role: str | None = None

    def effective_replication(self, brokers: int) -> int:
        """The replication factor to use on a cluster with this many brokers."""
        return min(self.replication_factor, brokers)

    def desired_configs(self, brokers: int) -> dict[str, str]:
        """Every topic config this declaration pins, for a cluster of this size."""
        wanted = {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            **self.configs,
        }
        if "min.insync.replicas" in wanted:
            # min ISR above the replica count would refuse every acks=all write.
            rf = self.effective_replication(brokers)
            wanted["min.insync.replicas"] = str(min(int(wanted["min.insync.replicas"]), rf))
        return wanted


@dataclass(frozen=True)
class ObservedTopic:
    """One topic as the cluster has it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    #: The key schema ``apply`` last recorded for it; None if never applied by orderhub.
    key_schema: str | None


@dataclass(frozen=True)
class Plan:
    """What it takes to bring the cluster up to the declarations."""

    brokers: int
    creates: tuple[TopicDeclaration, ...] = ()
    partition_increases: dict[str, tuple[int, int]] = field(default_factory=dict)
    config_changes: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    key_records: tuple[TopicDeclaration, ...] = ()
    refusals: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        """One readable line per difference between the cluster and the file."""
        lines = [f"missing topic {d.name} ({d.partitions} partitions, rf {d.effective_replication(self.brokers)})"
                 for d in self.creates]
        lines += [f"{name}: partitions {have} -> {want}"
                  for name, (have, want) in self.partition_increases.items()]
        for name, changes in self.config_changes.items():
            lines += [f"{name}: config {key} {have!r} -> {want!r}" for key, (have, want) in changes.items()]
        lines += [f"{d.name}: key schema not yet recorded (declared {d.key_schema})"
                  for d in self.key_records if d not in self.creates]
        return lines + [f"refused: {r}" for r in self.refusals]


@dataclass(frozen=True)
class TopicNames:
    """The name of every topic orderhub's code reads or writes, by role, as topics.yaml declares them.

    topics.yaml is the only place topic names are written; code asks for ``topics.changes``.
    """

    proposals: str
    by_order: str
    changes: str
    state: str
    conflicts: str
    rejections: str
    releases: str
    ref_links: str
    answers: str
    alerts: str
    dead_letters: str
    connector_cursors: str

    @classmethod
    def from_declarations(cls, declared: list[TopicDeclaration]) -> "TopicNames":
        """The names of the declared topics by their ``role``; every role must be declared."""
        by_role = {d.role: d.name for d in declared if d.role is not None}
        missing = [name for name in cls.__dataclass_fields__ if name not in by_role]
        if missing:
            raise TopicDeclarationError(f"topics.yaml declares no topic with role {', '.join(missing)}")
        return cls(**{name: by_role[name] for name in cls.__dataclass_fields__})

    @classmethod
    def load(cls, topics_file: Path = PROJECT_DIR / "topics.yaml", schemas_dir: Path | None = None,
             namespace: str = "") -> "TopicNames":
        """The names declared in ``topics_file`` (the project's by default), prefixed by ``namespace``."""
        return cls.from_declarations(load_declarations(topics_file, schemas_dir, namespace))

    @classmethod
    def of(cls, settings: Settings) -> "TopicNames":
        """The names the hub configured by ``settings`` uses."""
        return cls.load(settings.topics_file, settings.schemas_dir, settings.topic_namespace)

    #: The roles of the two topics proposals travel on (``proposal_role`` picks one).
    PROPOSAL_ROLES = ("proposals", "by_order")

    @staticmethod
    def proposal_role(order_id: str | None) -> str:
        """Where a proposal goes: one that names its hub order id straight to the engine's by-order
        topic (keyed by that id), one that names only an external reference to the proposals topic,
        whose router resolves the reference first (one hop more)."""
        return "by_order" if order_id is not None and order_id.strip() else "proposals"


async def topic_partitions(settings: Settings, topic: str) -> set[int]:
    """The partitions of ``topic``: a producer fetches a topic's metadata on demand (a consumer without
    a subscription has no public call that does)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        return set(await producer.partitions_for(topic))
    finally:
        await producer.stop()


def co_partitions(declared: list[TopicDeclaration], group: str) -> int:
    """The partition count of a co-partitioned group (its tables have as many partitions)."""
    counts = {d.partitions for d in declared if d.co_partitioned == group}
    if len(counts) != 1:
        raise TopicDeclarationError(f"topics.yaml declares no topics co-partitioned as {group!r}")
    return counts.pop()


def load_declarations(path: Path, schemas_dir: Path | None = None, namespace: str = "") -> list[TopicDeclaration]:
    """Read and validate topics.yaml; raise TopicDeclarationError naming what is wrong.

    ``namespace`` prefixes every topic name (and dead-letter reference).
    """
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopicDeclarationError(f"cannot read {path}: {exc}") from exc
    defaults = document.get("defaults", {})
    schemas_dir = schemas_dir or Path(path).parent / "schemas"
    declarations = []
    for raw in document.get("topics", []):
        try:
            configs = {**defaults.get("configs", {}), **raw.get("configs", {})}
            declarations.append(TopicDeclaration(
                name=namespace + raw["name"],
                purpose=raw["purpose"],
                partitions=int(raw["partitions"]),
                replication_factor=int(raw.get("replication_factor", defaults.get("replication_factor", 1))),
                cleanup_policy=raw["cleanup_policy"],
                retention_ms=int(raw["retention_ms"]),
                key_schema=raw["key"]["schema"],
                value_schema=raw["value"]["schema"],
                producers=tuple(raw["producers"]),
                consumers=tuple(raw["consumers"]),
                dead_letter=raw["dead_letter"] and namespace + raw["dead_letter"],
                configs={str(k): str(v) for k, v in configs.items()},
                co_partitioned=raw.get("co_partitioned"),
                role=raw.get("role"),
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise TopicDeclarationError(f"{path}: topic {raw.get('name', '?')}: bad or missing {exc}") from exc
    names = [d.name for d in declarations]
    groups: dict[str, set[int]] = {}
    for d in declarations:
        if d.co_partitioned:
            groups.setdefault(d.co_partitioned, set()).add(d.partitions)
    for group, counts in groups.items():
        if len(counts) > 1:
            raise TopicDeclarationError(f"{path}: the topics co-partitioned as {group!r} declare different "
                                        f"partition counts {sorted(counts)}; they must all be the same")
    roles = [d.role for d in declarations if d.role is not None]
    if repeated := sorted({r for r in roles if roles.count(r) > 1}):
        raise TopicDeclarationError(f"{path}: role {repeated[0]} is declared by more than one topic")
    for d in declarations:
        if names.count(d.name) > 1:
            raise TopicDeclarationError(f"{path}: topic {d.name} is declared twice")
        if d.dead_letter is not None and d.dead_letter not in names:
            raise TopicDeclarationError(f"{path}: {d.name}: dead_letter {d.dead_letter} is not declared")
        for schema in (d.key_schema, d.value_schema):
            if schema not in PRIMITIVE_SCHEMAS and not (schemas_dir / schema).is_dir():
                raise TopicDeclarationError(f"{path}: {d.name}: schema {schema} is neither a primitive nor a folder in {schemas_dir}")
    return declarations


def plan(declared: list[TopicDeclaration], observed: dict[str, ObservedTopic], brokers: int) -> Plan:
    """Compare declarations with the cluster: what to create, grow, reconfigure or refuse."""
    creates, refusals, key_records = [], [], []
    increases: dict[str, tuple[int, int]] = {}
    config_changes: dict[str, dict[str, tuple[str | None, str]]] = {}
    for d in declared:
        have = observed.get(d.name)
        if have is None:
            creates.append(d)
            key_records.append(d)
            continue
        if have.partitions > d.partitions:
            refusals.append(f"{d.name} has {have.partitions} partitions, topics.yaml declares {d.partitions}: "
                            "Kafka cannot shrink a topic (and key->partition placement would change)")
        elif have.partitions < d.partitions and d.co_partitioned:
            refusals.append(f"{d.name} has {have.partitions} partitions, topics.yaml declares {d.partitions}: it is "
                            f"co-partitioned with the {d.co_partitioned}'s table state, and growing it would move "
                            "keys away from their state; re-partitioning needs new topics and a migration")
        elif have.partitions < d.partitions:
            increases[d.name] = (have.partitions, d.partitions)
        want_rf = d.effective_replication(brokers)
        if have.replication_factor != want_rf:
            refusals.append(f"{d.name} has replication factor {have.replication_factor}, expected {want_rf}: "
                            "changing it needs a partition reassignment, which apply does not do")
        if have.key_schema is None:
            key_records.append(d)
        elif have.key_schema != d.key_schema:
            refusals.append(f"{d.name} was applied with key schema {have.key_schema!r}, topics.yaml says "
                            f"{d.key_schema!r}: re-keying a topic breaks partitioning and compaction; "
                            "declare a new topic (e.g. a .v2 name) instead")
        changes = {k: (have.configs.get(k), v) for k, v in d.desired_configs(brokers).items()
                   if have.configs.get(k) != v}
        if changes:
            config_changes[d.name] = changes
    return Plan(brokers, tuple(creates), increases, config_changes, tuple(key_records), tuple(refusals))


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=30000)
    await admin.start()
    return admin


async def _recorded_key_schemas(settings: Settings) -> dict[str, str]:
    """Read the declarations topic to its end: topic name -> key schema last applied."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic_namespace + DECLARATIONS_TOPIC, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        recorded: dict[str, str] = {}
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.value is not None:
                    recorded[record.key.decode()] = json.loads(record.value)["key_schema"]
        return recorded
    finally:
        await consumer.stop()


async def observe(settings: Settings, names: list[str]) -> tuple[dict[str, ObservedTopic], int]:
    """What the cluster has of these topics, and how many brokers it has."""
    admin = await _admin(settings)
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n in existing]
        if not wanted:
            return {}, brokers
        metadata = {t["topic"]: t for t in await admin.describe_topics(wanted)}
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted])
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.to_object()["resources"]:
                configs[resource["resource_name"]] = {
                    entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
                }
    finally:
        await admin.close()
    keys = await _recorded_key_schemas(settings) if settings.topic_namespace + DECLARATIONS_TOPIC in existing else {}
    observed = {
        name: ObservedTopic(
            name=name,
            partitions=len(metadata[name]["partitions"]),
            replication_factor=len(metadata[name]["partitions"][0]["replicas"]),
            configs=configs.get(name, {}),
            key_schema=keys.get(name),
        )
        for name in wanted
    }
    return observed, brokers


async def apply(settings: Settings, declared: list[TopicDeclaration]) -> list[str]:
    """Bring the cluster up to the declarations; return what was done. Refuses whole."""
    observed, brokers = await observe(settings, [d.name for d in declared])
    todo = plan(declared, observed, brokers)
    if todo.refusals:
        raise TopicDeclarationError("nothing applied:\n  " + "\n  ".join(todo.refusals))
    admin = await _admin(settings)
    try:
        if todo.creates:
            response = await admin.create_topics([
                NewTopic(d.name, num_partitions=d.partitions, replication_factor=d.effective_replication(brokers),
                         topic_configs=d.desired_configs(brokers))
                for d in todo.creates
            ])
            _raise_errors(response.to_object()["topic_errors"], "create")
        if todo.partition_increases:
            await admin.create_partitions({n: NewPartitions(want) for n, (_, want) in todo.partition_increases.items()})
        if todo.config_changes:
            by_name = {d.name: d for d in declared}
            # AlterConfigs replaces a topic's whole dynamic config: send everything declared.
            responses = await admin.alter_configs([
                ConfigResource(ConfigResourceType.TOPIC, n, by_name[n].desired_configs(brokers))
                for n in todo.config_changes
            ])
            for response in responses:
                for res in response.to_object()["resources"]:
                    if res["error_code"]:
                        raise TopicDeclarationError(f"alter configs of {res['resource_name']}: {res['error_message']}")
    finally:
        await admin.close()
    await _record_declarations(settings, todo.key_records)
    await _until_converged(settings, declared)
    capped = [d.name for d in todo.creates if d.replication_factor > brokers]
    notes = [f"replication factor capped to {brokers} for {len(capped)} new topic(s): the cluster has "
             f"{brokers} broker(s)"] if capped else []
    return [f"applied: {line}" for line in todo.describe()] + notes


async def _until_converged(settings: Settings, declared: list[TopicDeclaration], timeout: float = 30.0) -> None:
    """Return once the cluster shows what was applied: KRaft applies metadata asynchronously,
    so ``apply && check`` in a script must not race it."""
    deadline = time.monotonic() + timeout
    while drift := await check(settings, declared):
        if time.monotonic() > deadline:
            raise TopicDeclarationError("applied, but the cluster still differs after "
                                        f"{timeout:.0f}s:\n  " + "\n  ".join(drift))
        await asyncio.sleep(0.2)


async def check(settings: Settings, declared: list[TopicDeclaration]) -> list[str]:
    """Every difference between the cluster and the declarations; empty when in sync."""
    observed, brokers = await observe(settings, [d.name for d in declared])
    return plan(declared, observed, brokers).describe()


async def _record_declarations(settings: Settings, declarations: tuple[TopicDeclaration, ...]) -> None:
    if not declarations:
        return
    await _until_led(settings, TopicPartition(settings.topic_namespace + DECLARATIONS_TOPIC, 0))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for d in declarations:
            record = {"key_schema": d.key_schema, "value_schema": d.value_schema}
            await producer.send_and_wait(settings.topic_namespace + DECLARATIONS_TOPIC, json.dumps(record).encode(),
                                         key=d.name.encode())
    finally:
        await producer.stop()


async def _until_led(settings: Settings, partition: TopicPartition) -> None:
    """Return once the partition's leader takes requests. A topic just created is in the cluster's
    metadata a moment before its leader has the partition, and a record sent in between is refused
    (NotLeaderForPartition: aiokafka retries it, with a warning on the console of ``orderhub up``).
    Its end offset is asked of the leader itself, which aiokafka retries quietly until it answers."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.end_offsets([partition])
    finally:
        await consumer.stop()


def markdown_table(declared: list[TopicDeclaration]) -> str:
    """The README's topic table, generated from the declarations."""
    rows = ["| topic | purpose | partitions | cleanup / retention | key | value | produced by | consumed by |",
            "|---|---|---|---|---|---|---|---|"]
    for d in declared:
        retention = "forever" if d.retention_ms < 0 else f"{d.retention_ms // 86_400_000} d"
        rows.append(f"| `{d.name}` | {d.purpose} | {d.partitions} | {d.cleanup_policy}, {retention} | "
                    f"{d.key_schema} | {d.value_schema} | {', '.join(d.producers)} | {', '.join(d.consumers)} |")
    return "\n".join(rows)


def _raise_errors(topic_errors: list[dict], action: str) -> None:
    for entry in topic_errors:
        if entry["error_code"]:
            raise TopicDeclarationError(f"{action} {entry['topic']}: error {entry['error_code']} {entry.get('error_message')}")
