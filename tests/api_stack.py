"""The engine and ``orderhub api`` as processes on a namespace of their own, with local users: what the
API and browser tests start, each stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from hub.api.app import READY
from hub.api.users import Users
from hub.settings import Settings
from localdev import process
from tests.integration.kafka_helpers import WorkerProcess, delete_namespace_topics
from tests.services import namespaced_settings

PASSWORD = "correct horse battery"
T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = 60) -> T:
    """``check()`` until it returns something truthy, and that (the read model follows the engine by a
    checkpoint); AssertionError naming ``what`` after ``timeout`` seconds."""
    found: list[T] = []

    def holds() -> bool:
        value = check()
        if value:
            found.append(value)
        return bool(value)
    if not process.wait_until(holds, timeout, interval=0.2):
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
    return found[-1]


@contextlib.contextmanager
def running_api(kafka_settings: Settings, folder: Path, users: dict[str, list[str]]) -> Iterator[tuple[Settings, str]]:
    """(settings, the API's base URL) while the engine and the API run."""
    port = process.free_port()
    settings = namespaced_settings(kafka_settings, folder).model_copy(update={"api_port": port})
    store = Users(settings.read_model_url)
    for name, roles in users.items():
        store.add(name, PASSWORD, roles)
    store.close()
    env = {"ORDERHUB_API_PORT": str(port), "ORDERHUB_API_ANSWER_TIMEOUT_S": "30"}
    engine = WorkerProcess(settings, folder / "engine.log").start()
    api = WorkerProcess(settings, folder / "api.log", env, command=("api",), ready_mark=READY)
    try:
        engine.wait_ready()
        api.start().wait_ready()
        yield settings, f"http://127.0.0.1:{port}"
    finally:
        api.stop()
        engine.stop()
        asyncio.run(delete_namespace_topics(settings, settings.topic_namespace))
