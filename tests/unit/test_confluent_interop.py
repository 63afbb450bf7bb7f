"""The hub's Confluent wire format is byte-compatible with confluent-kafka's own Avro serde."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

# A core interop proof: never skipped. Missing? pip install -e '.[test]' brings confluent-kafka's
# avro and schemaregistry extras.
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from hub.errors import UndecodableRecord
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, ConfluentClientRegistry

TOPIC = "orders.snapshot"
SCHEMA = {
    "type": "record",
    "name": "OrderSnapshot",
    "namespace": "orderhub",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "CONFIRMED"], "default": "NEW"}},
    ],
}
SCHEMA_V2 = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "channel", "type": "string", "default": "web"}]}
RECORD = {
    "order_id": "O-42",
    "total": Decimal("1234.50"),
    "placed_at": datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=timezone.utc),
    "status": "CONFIRMED",
}
CONTEXT = SerializationContext(TOPIC, MessageField.VALUE)


@pytest.fixture
def client():
    """confluent-kafka's in-memory registry: ``new_client`` returns MockSchemaRegistryClient for mock:// URLs."""
    return SchemaRegistryClient.new_client({"url": "mock://orderhub"})


@pytest.fixture
def codec(tmp_path: Path, client) -> AvroCodec:
    """A hub codec writing the Confluent format through the same mock registry."""
    (tmp_path / "order_snapshot").mkdir()
    (tmp_path / "order_snapshot" / "v1.avsc").write_text(json.dumps(SCHEMA))
    (tmp_path / "order_snapshot" / "v2.avsc").write_text(json.dumps(SCHEMA_V2))
    return AvroCodec(SchemaStore.load(tmp_path), ConfluentClientRegistry(client))


def test_confluent_deserializer_reads_what_the_hub_writes(codec: AvroCodec, client) -> None:
    """Bytes the hub writes under TopicNameStrategy decode with confluent's AvroDeserializer to an equal dict."""
    data = codec.encode("order_snapshot", {**RECORD, "total": Decimal("1234.5")}, subject=f"{TOPIC}-value", version=1)
    assert data[0] == 0
    assert AvroDeserializer(client)(data, CONTEXT) == RECORD
    assert client.get_latest_version(f"{TOPIC}-value").schema_id == int.from_bytes(data[1:5], "big")


def test_hub_reads_what_the_confluent_serializer_writes(codec: AvroCodec, client) -> None:
    """Bytes confluent's AvroSerializer writes decode in the hub's AvroCodec to an equal dict."""
    data = AvroSerializer(client, json.dumps(SCHEMA))(RECORD, CONTEXT)
    decoded = codec.decode(data, reader_version=1)
    assert decoded.value == RECORD
    assert (decoded.writer.name, decoded.writer.version) == ("order_snapshot", 1)


def test_schema_evolution_works_across_the_two_libraries(codec: AvroCodec, client) -> None:
    """Confluent's v1 bytes read as the hub's v2 with the default filled in, and the hub's v2 bytes read as v1 by confluent."""
    old_bytes = AvroSerializer(client, json.dumps(SCHEMA))(RECORD, CONTEXT)
    assert codec.decode(old_bytes).value == {**RECORD, "channel": "web"}
    new_bytes = codec.encode("order_snapshot", {**RECORD, "channel": "shop"}, subject=f"{TOPIC}-value")
    assert AvroDeserializer(client, json.dumps(SCHEMA))(new_bytes, CONTEXT) == RECORD


def test_unknown_id_in_the_confluent_mock_is_undecodable(codec: AvroCodec) -> None:
    """A schema id the confluent registry does not know raises UndecodableRecord, not SchemaRegistryError."""
    with pytest.raises(UndecodableRecord, match="unknown schema id 77"):
        codec.decode(b"\x00\x00\x00\x00\x4d\x02", topic=TOPIC, partition=0, offset=9)
