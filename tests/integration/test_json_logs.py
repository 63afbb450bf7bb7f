"""``ORDERHUB_LOG_JSON=true`` (the container image's default): every line the engine and the API write
is one JSON object, the stream runtime's and the web server's own lines included (hub.logs rule 1)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from hub.api.app import READY as API_READY
from hub.settings import Settings
from localdev import process
from tests.integration.kafka_helpers import WorkerProcess, delete_namespace_topics
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration


def test_the_engine_and_the_api_write_nothing_but_json_lines(kafka_settings: Settings, tmp_path: Path) -> None:
    port = process.free_port()
    settings = namespaced_settings(kafka_settings, tmp_path)
    env = {"ORDERHUB_LOG_JSON": "true", "ORDERHUB_API_PORT": str(port)}
    engine = WorkerProcess(settings, tmp_path / "engine.log", env).start()
    api = WorkerProcess(settings, tmp_path / "api.log", env, command=("api",), ready_mark=API_READY)
    try:
        engine.wait_ready()
        api.start().wait_ready()
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/orders", timeout=30).status_code == 401
    finally:
        api.stop()
        engine.stop()
        asyncio.run(delete_namespace_topics(settings, settings.topic_namespace))
    for log in (tmp_path / "engine.log", tmp_path / "api.log"):
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"{log.name}: not a JSON line: {line!r}") from None
        assert records and all({"timestamp", "level", "logger", "event"} <= r.keys() for r in records), log.name
    loggers = {json.loads(line)["logger"] for line in (tmp_path / "engine.log").read_text().splitlines() if line}
    assert any(name.startswith("quixstreams") for name in loggers), loggers
