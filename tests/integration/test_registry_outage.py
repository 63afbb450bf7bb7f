"""A schema registry outage holds records and retries; it never turns good records into dead letters."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec
from hub.settings import Settings
from hub.streams.core import TopicNames
from tests.domain_helpers import creation
from tests.integration.kafka_helpers import TopicReader, poll_until, produce
from tests.services import free_port

pytestmark = pytest.mark.integration


class Registry:
    """The two calls of the Confluent Schema Registry REST API that orderhub makes, on loopback."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.schemas: list[str] = []
        self.server: ThreadingHTTPServer | None = None

    def register(self, schema: str) -> int:
        if schema not in self.schemas:
            self.schemas.append(schema)
        return self.schemas.index(schema) + 1

    def start(self) -> None:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # POST /subjects/{subject}/versions
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._reply(200, {"id": registry.register(body["schema"])})

            def do_GET(self) -> None:  # GET /schemas/ids/{id}
                match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
                if match and 0 < int(match.group(1)) <= len(registry.schemas):
                    self._reply(200, {"schema": registry.schemas[int(match.group(1)) - 1]})
                else:
                    self._reply(404, {"error_code": 40403, "message": "Schema not found"})

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


class InProcess:
    """The registry as the test's own codec sees it (same ids as the server will serve)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def register(self, subject: str, schema_str: str) -> int:
        return self.registry.register(schema_str)

    def schema_str(self, schema_id: int) -> str:
        return self.registry.schemas[schema_id - 1]


def test_registry_outage_holds_the_record_until_the_registry_is_back(
        hub_settings: Settings, start_worker, tmp_path: Path) -> None:
    """A Confluent-framed proposal read while the registry is down is retried, then decided, never dead-lettered."""
    port = free_port()
    registry = Registry(port)
    settings = hub_settings.model_copy(update={"schema_registry_url": f"http://127.0.0.1:{port}"})
    codec = AvroCodec(SchemaStore.load(settings.schemas_dir), InProcess(registry))
    event_id = f"during-outage-{uuid.uuid4().hex[:8]}"
    proposal = creation(event_id, order_id=f"O-{uuid.uuid4().hex[:10]}")
    value = codec.encode("change_proposal", proposal.to_avro())
    assert value[0] == 0  # Confluent framing: the worker needs the registry to read it

    worker = start_worker(settings, ORDERHUB_SCHEMA_REGISTRY_URL=settings.schema_registry_url).wait_ready()
    names = TopicNames.of(settings)
    try:
        asyncio.run(produce(settings, names.proposals, [(proposal.order_ref.order_id.encode(), value,
                                                          int(time.time() * 1000))]))
        # the worker says it is retrying: the record is held, not parked
        asyncio.run(poll_until(lambda: "retrying" in worker.log_path.read_text(errors="replace"), 60,
                               "the worker to retry while the registry is down"))
        registry.start()
        records = asyncio.run(TopicReader(settings, [names.changes, names.dead_letters]).until(
            lambda r: bool(r[names.changes]), 90))
    finally:
        registry.stop()
    (change,) = [codec.decode(r.value).value for r in records[names.changes]]
    assert change["event_id"] == event_id and change["version"] == 1
    assert records[names.dead_letters] == []
