"""``ORDERHUB_LOG_JSON=true`` (the container image's default): every line the hub's long-running
processes write is one JSON object, the stream runtime's, the web server's and Python's own warnings
included (hub.logs rule 1): the engine, the API, the alert worker, the notifier, the lag exporter and
the connectors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml

from hub.api.app import READY as API_READY
from hub.sdk.runtime import READY as CONNECTORS_READY
from hub.settings import Settings
from hub.streams.alerts import READY as ALERTS_READY
from hub.streams.notify import READY as NOTIFY_READY
from localdev import process
from localdev.sandboxes import sap
from tests.integration.kafka_helpers import WorkerProcess, delete_namespace_topics
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration


def test_every_process_writes_nothing_but_json_lines(kafka_settings: Settings, tmp_path: Path) -> None:
    port = process.free_port()
    settings = namespaced_settings(kafka_settings, tmp_path)
    env = {"ORDERHUB_LOG_JSON": "true", "ORDERHUB_API_PORT": str(port)}
    # the ERP connector against mock-sap: the connectors process with a real peer to poll
    erp_url = sap.up(tmp_path / "erp", process.free_port())
    declared = tmp_path / "connectors.yaml"
    declared.write_text(yaml.safe_dump({"connectors": [{"name": "erp-json", "kind": "erp", "config": {
        "service_url": erp_url, "user": sap.USER, "password": sap.PASSWORD, "poll_interval_s": 1}}]}))
    engine = WorkerProcess(settings, tmp_path / "engine.log", env).start()
    others = {name: WorkerProcess(settings, tmp_path / f"{name}.log", env, command=command, ready_mark=mark)
              for name, command, mark in (
                  ("api", ("api",), API_READY), ("alerts", ("alerts",), ALERTS_READY),
                  ("notify", ("notify",), NOTIFY_READY), ("lag", ("lag",), "metrics on http://"),
                  ("connectors", ("connectors", "run", "--file", str(declared)), f"{CONNECTORS_READY}: erp-json"))}
    try:
        engine.wait_ready()
        for started in others.values():
            started.start()
        for started in others.values():
            started.wait_ready()
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/orders", timeout=30).status_code == 401
    finally:
        for started in others.values():
            started.stop()
        engine.stop()
        sap.down(tmp_path / "erp")
        asyncio.run(delete_namespace_topics(settings, settings.topic_namespace))
    loggers: set[str] = set()
    for name in ("engine", *others):
        lines = [line for line in (tmp_path / f"{name}.log").read_text().splitlines() if line.strip()]
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"{name}.log: not a JSON line: {line!r}") from None
            assert {"timestamp", "level", "logger", "event"} <= record.keys(), (name, record)
            loggers.add(record["logger"])
        assert lines, f"{name} logged nothing"
    assert any(name.startswith("quixstreams") for name in loggers), loggers
