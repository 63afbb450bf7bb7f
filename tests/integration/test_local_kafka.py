"""The local Apache Kafka of ``hub.localkafka``, really started: one node and three.

Each test gets its own state folder under tmp_path and ports from 19500 upwards, so it
neither touches nor clashes with the broker others run on 9092; the jars come from the
real cache, so Maven resolves them once per machine, not once per test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from localdev import kafka as localkafka, process
from hub.settings import Settings

pytestmark = pytest.mark.integration

PORT_BASE = 19500  # single node 19500/19501; three nodes 29500.. 29521


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings with a private state folder, the shared jar cache and test-only ports."""
    config = Settings(state_dir=tmp_path / "state", cache_dir=Settings().cache_dir, local_kafka_port=PORT_BASE)
    try:
        yield config
    finally:
        localkafka.down(config)  # even when the test failed half-way: no JVM left behind


def _pids(settings: Settings) -> list[int | None]:
    return [node.pid for node in localkafka.status(settings).nodes]


def test_up_is_idempotent(settings: Settings) -> None:
    """A second up() finds the running broker and returns the same address without starting another."""
    first = localkafka.up(settings)
    pids = _pids(settings)
    second = localkafka.up(settings)

    assert first == second == f"127.0.0.1:{PORT_BASE}"
    assert pids == _pids(settings) and all(pids)
    assert localkafka.status(settings).running


async def test_three_node_cluster_replicates_and_stops(settings: Settings) -> None:
    """A 3-node cluster keeps a replication-factor-3 topic fully in sync, round-trips acks=all records and down() ends every node."""
    bootstrap = await asyncio.to_thread(localkafka.up, settings, 3)
    assert bootstrap == ",".join(f"127.0.0.1:{PORT_BASE + 10000 + 10 * i}" for i in range(3))
    pids = [pid for pid in _pids(settings) if pid]
    assert len(pids) == 3
    await localkafka.wait_for_cluster(bootstrap, 3, timeout=30)

    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # min.insync.replicas=3: an acks=all write is acknowledged only once all three
        # replicas are in sync, so the producer's own retries wait for the ISR to fill.
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3,
                                            topic_configs={"min.insync.replicas": "3"})])
    finally:
        await admin.close()

    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(30)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, (key, value) in enumerate(sent.items()):
            await producer.send_and_wait(topic, value, key=key, partition=i % 3)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = (await admin.describe_topics([topic]))[0]["partitions"]
    finally:
        await admin.close()
    assert len(partitions) == 3 and all(sorted(p["isr"]) == [0, 1, 2] for p in partitions), partitions

    received: dict[bytes, bytes] = {}
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                received.update((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    assert received == sent

    stopped = await asyncio.to_thread(localkafka.down, settings)
    assert sorted(stopped) == sorted(pids)
    assert not [pid for pid in pids if process.alive(pid)]
    assert not localkafka.status(settings).running
