"""Fixtures for tests against real services.

Kafka is ``ORDERHUB_BOOTSTRAP_SERVERS`` when set (any cluster), otherwise the local broker,
started here if it is not running. Each test that asks for ``hub_settings`` gets its own
topic namespace, so tests never see each other's records; its topics are deleted afterwards.
PostgreSQL is ``ORDERHUB_TEST_POSTGRES_URL`` when set, otherwise a local server started for
the session (``hub.localpg``) and stopped after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from localdev import kafka as localkafka, postgres as localpg
from hub.settings import Settings, get_settings
from tests.integration.kafka_helpers import WorkerProcess, delete_namespace_topics
from tests.services import free_port, local_state_dir, namespaced_settings


@pytest.fixture(scope="session")
def kafka_settings() -> Iterator[Settings]:
    """Settings for the broker under test; a local broker this fixture had to start is stopped after."""
    settings = get_settings()
    started_here = "ORDERHUB_BOOTSTRAP_SERVERS" not in os.environ and not localkafka.status(settings).running
    if "ORDERHUB_BOOTSTRAP_SERVERS" not in os.environ:
        localkafka.up(settings)
    yield settings
    if started_here:
        localkafka.down(settings)


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """ORDERHUB_TEST_POSTGRES_URL, or a local server started for this session and stopped after it.

    PostgreSQL is a core backend of the read model: CI installs it, and a missing server
    fails (saying how to install it) rather than skips.
    """
    if url := os.environ.get("ORDERHUB_TEST_POSTGRES_URL"):
        yield url
        return
    localpg.bindir()
    settings = Settings(state_dir=local_state_dir())
    try:
        yield localpg.up(settings, port=free_port())
    finally:
        localpg.down(settings)
        shutil.rmtree(settings.state_dir, ignore_errors=True)
