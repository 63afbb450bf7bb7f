"""``topics apply`` and ``topics check`` against the real broker: create, grow, reconfigure, refuse whole."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hub import topics
from hub.cli import main
from hub.errors import TopicDeclarationError
from hub.settings import Settings, get_settings
from tests.integration.kafka_helpers import delete_namespace_topics, poll_until

pytestmark = pytest.mark.integration

CHANGES = "orderhub.order.changes.v1"
RELEASES = "orderhub.order.releases.v1"
REF_LINKS = "orderhub.order.ref-links.v1"


@dataclass(frozen=True)
class ClusterTopic:
    """A topic as the broker describes it, read without going through hub.topics."""

    partitions: int
    replication_factor: int
    configs: dict[str, str]


async def describe(settings: Settings, names: list[str]) -> dict[str, ClusterTopic]:
    """Partitions, replication factor and every config of these topics, straight from the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        metadata = {t["topic"]: t for t in await admin.describe_topics(names)}
        configs: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
            for resource in response.to_object()["resources"]:
                configs[resource["resource_name"]] = {e["config_names"]: e["config_value"]
                                                      for e in resource["config_entries"]}
    finally:
        await admin.close()
    return {n: ClusterTopic(len(metadata[n]["partitions"]), len(metadata[n]["partitions"][0]["replicas"]), configs[n])
            for n in names}


async def brokers_and_namespace_topics(settings: Settings, namespace: str) -> tuple[int, set[str]]:
    """How many brokers the cluster has, and which topics exist in ``namespace``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        return brokers, {t for t in await admin.list_topics() if t.startswith(namespace)}
    finally:
        await admin.close()


async def alter_out_of_band(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    """Set a topic's whole dynamic config as an operator's admin tool would (not through orderhub)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        for response in await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)]):
            assert not any(r["error_code"] for r in response.to_object()["resources"]), response
    finally:
        await admin.close()
    # the broker applies it through its metadata log: wait until describe shows it
    await poll_until(lambda: all(asyncio.run(describe(settings, [topic]))[topic].configs.get(k) == v
                                 for k, v in configs.items()), 30, f"{configs} on {topic}")


async def add_partitions_out_of_band(settings: Settings, topic: str, total: int) -> None:
    """Grow a topic to ``total`` partitions behind orderhub's back."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total)})
    finally:
        await admin.close()
    await poll_until(lambda: asyncio.run(describe(settings, [topic]))[topic].partitions == total, 30,
                     f"{total} partitions of {topic}")


def raw_document(settings: Settings) -> dict[str, Any]:
    """The repository's topics.yaml as plain data."""
    return yaml.safe_load(settings.topics_file.read_text())


def raw_topic(document: dict[str, Any], name: str) -> dict[str, Any]:
    (topic,) = [t for t in document["topics"] if t["name"] == name]
    return topic


def expected_configs(document: dict[str, Any], raw: dict[str, Any], brokers: int) -> dict[str, str]:
    """What the file asks of a topic, worked out here from the YAML: min ISR never above the replicas."""
    defaults = document.get("defaults", {})
    wanted = {"cleanup.policy": raw["cleanup_policy"], "retention.ms": str(raw["retention_ms"]),
              **{k: str(v) for k, v in {**defaults.get("configs", {}), **raw.get("configs", {})}.items()}}
    replicas = min(int(raw.get("replication_factor", defaults.get("replication_factor", 1))), brokers)
    if "min.insync.replicas" in wanted:
        wanted["min.insync.replicas"] = str(min(int(wanted["min.insync.replicas"]), replicas))
    return wanted


def edited_declarations(settings: Settings, tmp_path: Path, topic: str, **changes: Any) -> list[topics.TopicDeclaration]:
    """The repository's declarations with one topic's entries replaced, loaded from a copy in ``tmp_path``."""
    document = raw_document(settings)
    raw_topic(document, topic).update(changes)
    copy = tmp_path / "topics.yaml"
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return topics.load_declarations(copy, settings.schemas_dir, settings.topic_namespace)


def declarations_of(settings: Settings) -> list[topics.TopicDeclaration]:
    return topics.load_declarations(settings.topics_file, settings.schemas_dir, settings.topic_namespace)


@pytest.fixture
def empty_namespace(kafka_settings: Settings) -> Iterator[Settings]:
    """Settings for a namespace with no topics at all; whatever a test creates in it is deleted afterwards."""
    settings = kafka_settings.model_copy(update={"topic_namespace": f"t{uuid.uuid4().hex[:10]}."})
    yield settings
    asyncio.run(delete_namespace_topics(settings, settings.topic_namespace))


@pytest.fixture
def cli_for(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Point the ``orderhub`` command at a namespace through its environment variable."""

    def point(settings: Settings) -> None:
        monkeypatch.setenv("ORDERHUB_TOPIC_NAMESPACE", settings.topic_namespace)
        monkeypatch.setenv("ORDERHUB_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
        get_settings.cache_clear()

    yield point
    monkeypatch.undo()
    get_settings.cache_clear()  # the next caller builds settings from the restored environment


def test_apply_on_an_empty_namespace_creates_every_topic_as_declared(empty_namespace: Settings) -> None:
    """Apply on an empty namespace creates every declared topic with its partitions and configs, after which check finds no drift and a second apply has nothing to do."""
    settings, namespace = empty_namespace, empty_namespace.topic_namespace
    declared = declarations_of(settings)
    brokers, before = asyncio.run(brokers_and_namespace_topics(settings, namespace))
    assert before == set()

    done = asyncio.run(topics.apply(settings, declared))

    _, after = asyncio.run(brokers_and_namespace_topics(settings, namespace))
    assert after == {d.name for d in declared}
    assert len(after) == len(raw_document(settings)["topics"])
    for d in declared:
        assert any(line.startswith(f"applied: missing topic {d.name} ") for line in done), d.name
    document = raw_document(settings)
    cluster = asyncio.run(describe(settings, sorted(after)))
    for raw in document["topics"]:
        have = cluster[namespace + raw["name"]]
        assert have.partitions == raw["partitions"], raw["name"]
        assert have.replication_factor == min(raw.get("replication_factor", 3), brokers), raw["name"]
        wanted = expected_configs(document, raw, brokers)
        assert {k: have.configs.get(k) for k in wanted} == wanted, raw["name"]
    if brokers == 1:
        assert {t.configs["min.insync.replicas"] for t in cluster.values()} == {"1"}
        assert any("replication factor capped to 1" in line for line in done)
    assert asyncio.run(topics.check(settings, declared)) == []
    assert asyncio.run(topics.apply(settings, declared)) == []


def test_cli_apply_then_check_on_an_empty_namespace(empty_namespace: Settings, cli_for,
                                                    capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """``orderhub topics apply`` creates the namespace's topics and exits 0, without a warning (what it
    records goes to a topic it has just created, once that topic's leader takes it), then ``topics
    check`` exits 0 and a second apply says there is nothing to do."""
    cli_for(empty_namespace)
    declared = declarations_of(empty_namespace)

    caplog.set_level(logging.WARNING)
    assert main(["topics", "apply"]) == 0
    applied = capsys.readouterr().out
    assert all(f"missing topic {d.name} " in applied for d in declared)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    assert main(["topics", "check"]) == 0
    assert capsys.readouterr().out.strip() == f"{len(declared)} topics match topics.yaml"

    assert main(["topics", "apply"]) == 0
    assert capsys.readouterr().out.strip() == "topics are as declared; nothing to do"


def test_drift_is_reported_and_a_refused_apply_changes_nothing(hub_settings: Settings, tmp_path: Path, cli_for,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Config drift and an out-of-band partition increase both show in check; apply refuses whole until the file declares the partitions, then fixes the config."""
    settings, namespace = hub_settings, hub_settings.topic_namespace
    declared = declarations_of(settings)
    changes, releases = namespace + CHANGES, namespace + RELEASES
    brokers, _ = asyncio.run(brokers_and_namespace_topics(settings, namespace))
    document = raw_document(settings)
    drifted = {**expected_configs(document, raw_topic(document, CHANGES), brokers), "retention.ms": "86400000"}
    asyncio.run(alter_out_of_band(settings, changes, drifted))
    asyncio.run(add_partitions_out_of_band(settings, releases, 8))

    drift = asyncio.run(topics.check(settings, declared))
    assert f"{changes}: config retention.ms '86400000' -> '-1'" in drift
    (shrink,) = [line for line in drift if line.startswith("refused: ")]
    assert f"{releases} has 8 partitions, topics.yaml declares 6" in shrink
    assert len(drift) == 2, drift

    cli_for(settings)
    assert main(["topics", "check"]) == 1
    printed = capsys.readouterr().out
    assert f"{changes}: config retention.ms" in printed and f"refused: {releases} has 8 partitions" in printed

    with pytest.raises(TopicDeclarationError) as refused:
        asyncio.run(topics.apply(settings, declared))
    assert "nothing applied" in str(refused.value)
    assert f"{releases} has 8 partitions" in str(refused.value) and "cannot shrink" in str(refused.value)
    assert CHANGES not in str(refused.value)
    assert main(["topics", "apply"]) == 2
    assert f"{releases} has 8 partitions" in capsys.readouterr().err
    # nothing half-applied: the config drift apply could have fixed is still there
    assert asyncio.run(describe(settings, [changes]))[changes].configs["retention.ms"] == "86400000"
    assert asyncio.run(topics.check(settings, declared)) == drift

    grown = edited_declarations(settings, tmp_path, RELEASES, partitions=8)
    done = asyncio.run(topics.apply(settings, grown))

    assert done == [f"applied: {changes}: config retention.ms '86400000' -> '-1'"]
    cluster = asyncio.run(describe(settings, [changes, releases]))
    assert cluster[changes].configs["retention.ms"] == "-1"
    assert {k: cluster[changes].configs.get(k) for k in drifted} == {**drifted, "retention.ms": "-1"}
    assert cluster[releases].partitions == 8
    assert asyncio.run(topics.check(settings, grown)) == []


def test_changing_a_key_schema_is_refused(hub_settings: Settings, tmp_path: Path) -> None:
    """A topic applied with a string key cannot be re-declared with a bytes key: apply refuses naming both schemas and check lists it."""
    settings = hub_settings
    topic = settings.topic_namespace + REF_LINKS
    rekeyed = edited_declarations(settings, tmp_path, REF_LINKS, key={"schema": "bytes", "meaning": "raw reference"})

    with pytest.raises(TopicDeclarationError) as refused:
        asyncio.run(topics.apply(settings, rekeyed))

    message = str(refused.value)
    assert topic in message and "'string'" in message and "'bytes'" in message
    (line,) = asyncio.run(topics.check(settings, rekeyed))
    assert line.startswith(f"refused: {topic} was applied with key schema 'string', topics.yaml says 'bytes'")
    # the refusal recorded nothing: the original file is still in sync, string key and all
    assert asyncio.run(topics.check(settings, declarations_of(settings))) == []


def test_declaring_more_partitions_grows_the_topic(hub_settings: Settings, tmp_path: Path) -> None:
    """A declaration with more partitions than the topic has makes apply add the difference."""
    settings = hub_settings
    topic = settings.topic_namespace + CHANGES
    assert asyncio.run(describe(settings, [topic]))[topic].partitions == 6
    grown = edited_declarations(settings, tmp_path, CHANGES, partitions=9)

    done = asyncio.run(topics.apply(settings, grown))

    assert done == [f"applied: {topic}: partitions 6 -> 9"]
    assert asyncio.run(describe(settings, [topic]))[topic].partitions == 9
    assert asyncio.run(topics.check(settings, grown)) == []
