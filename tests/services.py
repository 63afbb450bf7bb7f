"""Helpers that set up the real services tests run against: a Kafka namespace, PostgreSQL.

Plain functions; the fixtures that use them are in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import uuid
from pathlib import Path

from hub import topics
from hub.settings import Settings


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_state_dir() -> Path:
    """A fresh state folder the postgres user can reach when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix="orderhub-pg-"))
    path.chmod(0o755)  # pytest's own tmp folders are closed to other users
    return path
