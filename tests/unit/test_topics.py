"""topics.yaml is valid, and the plan that brings a cluster up to it follows the rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hub.errors import TopicDeclarationError
from hub.settings import PROJECT_DIR, get_settings
from hub.topics import ObservedTopic, co_partitions, load_declarations, markdown_table, plan


@pytest.fixture(scope="module")
def declared():
    return load_declarations(get_settings().topics_file)


def observed_as_declared(declared, brokers: int = 1) -> dict[str, ObservedTopic]:
    """A cluster that has exactly what the file declares."""
    return {
        d.name: ObservedTopic(d.name, d.partitions, d.effective_replication(brokers), d.desired_configs(brokers), d.key_schema)
        for d in declared
    }


def test_repository_file_declares_every_required_topic(declared) -> None:
    """The repository's topics.yaml declares proposals, changes, state, conflicts, rejections, releases and dead letters."""
    by_name = {d.name: d for d in declared}
    assert by_name["orderhub.order.state.v1"].cleanup_policy == "compact"
    assert by_name["orderhub.order.changes.v1"].retention_ms == -1
    for name in ("orderhub.order.proposals.v1", "orderhub.order.conflicts.v1", "orderhub.order.rejections.v1",
                 "orderhub.order.releases.v1", "orderhub.deadletter.v1"):
        assert name in by_name
    assert all(d.dead_letter in (None, "orderhub.deadletter.v1") for d in declared)


def test_empty_cluster_creates_everything(declared) -> None:
    """On an empty cluster the plan creates every declared topic and records every key schema."""
    todo = plan(declared, {}, brokers=1)
    assert [d.name for d in todo.creates] == [d.name for d in declared]
    assert not todo.refusals


def test_cluster_as_declared_has_no_drift(declared) -> None:
    """A cluster that matches the file produces an empty drift report."""
    assert plan(declared, observed_as_declared(declared), brokers=1).describe() == []


def test_replication_is_capped_to_the_brokers(declared) -> None:
    """A declared replication factor of 3 becomes 1 on one broker, and min.insync.replicas follows it."""
    d = declared[0]
    assert d.replication_factor == 3
    assert d.effective_replication(1) == 1
    assert d.desired_configs(1)["min.insync.replicas"] == "1"
    assert d.desired_configs(3)["min.insync.replicas"] == "2"


def test_partition_growth_and_config_drift_are_planned(declared) -> None:
    """Fewer partitions than declared is grown; a differing config is changed; both are reported."""
    cluster = observed_as_declared(declared)
    first = next(d for d in declared if not d.co_partitioned)
    cluster[first.name] = dataclasses.replace(cluster[first.name], partitions=2,
                                              configs={**cluster[first.name].configs, "retention.ms": "1000"})
    todo = plan(declared, cluster, brokers=1)
    assert todo.partition_increases == {first.name: (2, first.partitions)}
    assert todo.config_changes[first.name] == {"retention.ms": ("1000", str(first.retention_ms))}
    assert f"{first.name}: partitions 2 -> {first.partitions}" in todo.describe()
    assert not todo.refusals


def test_shrinking_partitions_is_refused(declared) -> None:
    """More partitions on the cluster than declared is refused with a reason naming the topic."""
    cluster = observed_as_declared(declared)
    first = declared[0]
    cluster[first.name] = dataclasses.replace(cluster[first.name], partitions=first.partitions + 4)
    (refusal,) = plan(declared, cluster, brokers=1).refusals
    assert first.name in refusal and "cannot shrink" in refusal


def test_growing_a_topic_co_partitioned_with_table_state_is_refused(declared) -> None:
    """The engine's input topics map keys to table state by partition (its changelogs have as many): apply
    never grows them."""
    engine = [d for d in declared if d.co_partitioned == "engine"]
    assert {d.name for d in engine} == {"orderhub.order.proposals.v1", "orderhub.order.proposals-by-order.v1",
                                       "orderhub.order.ref-links.v1"}
    assert co_partitions(declared, "engine") == 6
    cluster = observed_as_declared(declared)
    by_order = next(d for d in engine if d.name == "orderhub.order.proposals-by-order.v1")
    cluster[by_order.name] = dataclasses.replace(cluster[by_order.name], partitions=3)
    todo = plan(declared, cluster, brokers=1)
    (refusal,) = todo.refusals
    assert not todo.partition_increases
    assert by_order.name in refusal and "co-partitioned with the engine's table state" in refusal


def test_a_co_partitioned_group_must_agree_on_its_partition_count(tmp_path: Path) -> None:
    text = (PROJECT_DIR / "topics.yaml").read_text()
    at = text.index("  - name: orderhub.order.proposals-by-order.v1")
    text = text[:at] + text[at:].replace("partitions: 6", "partitions: 12", 1)
    (tmp_path / "topics.yaml").write_text(text)
    with pytest.raises(TopicDeclarationError, match=r"co-partitioned as 'engine' declare different partition counts \[6, 12\]"):
        load_declarations(tmp_path / "topics.yaml", PROJECT_DIR / "schemas")


def test_changing_a_key_schema_is_refused(declared) -> None:
    """A topic applied with another key schema is refused, naming both schemas."""
    cluster = observed_as_declared(declared)
    first = declared[0]
    cluster[first.name] = dataclasses.replace(cluster[first.name], key_schema="bytes")
    (refusal,) = plan(declared, cluster, brokers=1).refusals
    assert "'bytes'" in refusal and "'string'" in refusal


def test_bad_declaration_names_the_problem(tmp_path: Path) -> None:
    """A dead_letter that names an undeclared topic fails loading with that topic named."""
    text = (PROJECT_DIR / "topics.yaml").read_text().replace(
        "dead_letter: orderhub.deadletter.v1", "dead_letter: orderhub.nowhere", 1)
    (tmp_path / "topics.yaml").write_text(text)
    with pytest.raises(TopicDeclarationError, match="orderhub.nowhere"):
        load_declarations(tmp_path / "topics.yaml", PROJECT_DIR / "schemas")


def test_readme_topic_table_is_generated_from_the_file(declared) -> None:
    """The README carries the topic table exactly as generated from topics.yaml."""
    assert markdown_table(declared) in (PROJECT_DIR / "README.md").read_text()
