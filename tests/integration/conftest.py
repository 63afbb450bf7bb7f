"""Fixtures for tests against the real broker.

The broker is ``ORDERHUB_BOOTSTRAP_SERVERS`` when set (any cluster), otherwise the local one,
started here if it is not running. Each test gets its own topic namespace, so tests never
see each other's records, and the namespace's topics are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from hub import localkafka, topics
from hub.settings import Settings, get_settings
from tests.integration.kafka_helpers import WorkerProcess, delete_namespace_topics


@pytest.fixture(scope="session")
def kafka_settings() -> Settings:
    """Settings for the broker under test (the local broker is started if needed)."""
    settings = get_settings()
    if "ORDERHUB_BOOTSTRAP_SERVERS" not in os.environ:
        localkafka.up(settings)
    return settings


def namespaced_settings(kafka_settings: Settings, folder: Path) -> Settings:
    """Settings with a fresh topic namespace (topics applied) and all local state under ``folder``."""
    namespace = f"t{uuid.uuid4().hex[:10]}."
    settings = kafka_settings.model_copy(update={
        "topic_namespace": namespace,
        "state_dir": folder / "state",
        "database_url": f"sqlite:///{folder / 'readmodel.db'}",
        # a killed worker's partitions move after this long: short, so crash tests finish
        "session_timeout_s": 6.0,
        "heartbeat_interval_s": 1.0,
        "commit_interval_s": 1.0,
    })
    declared = topics.load_declarations(settings.topics_file, settings.schemas_dir, namespace)
    asyncio.run(topics.apply(settings, declared))
    return settings


@pytest.fixture
def hub_settings(kafka_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A fresh namespace for one test; its topics are deleted afterwards."""
    settings = namespaced_settings(kafka_settings, tmp_path)
    yield settings
    asyncio.run(delete_namespace_topics(settings, settings.topic_namespace))


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    """Start ``orderhub worker`` processes for a test; every one is stopped by PID afterwards."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "worker-0", **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(settings.model_copy(update={"worker_name": name}),
                               tmp_path / f"{name}.log", extra_env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
