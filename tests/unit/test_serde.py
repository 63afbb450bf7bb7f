"""The schema store, the two wire formats and the codec."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
from datetime import date, datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fastavro
import pytest

from hub.errors import RetriableError, SchemaError, UndecodableRecord
from hub.serde.store import SchemaStore, fingerprint
from hub.serde.wire import AvroCodec, HttpSchemaRegistry, registry_from_settings
from hub.settings import Settings

LINE = {
    "type": "record",
    "name": "Line",
    "fields": [
        {"name": "sku", "type": "string"},
        {"name": "quantity", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 3}},
    ],
}
V1 = {
    "type": "record",
    "name": "OrderSnapshot",
    "namespace": "orderhub",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "CONFIRMED"], "default": "NEW"}},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "due", "type": {"type": "int", "logicalType": "date"}},
        {"name": "lines", "type": {"type": "array", "items": LINE}},
    ],
}
V2 = {
    **V1,
    "fields": [
        V1["fields"][0],
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "CONFIRMED", "SHIPPED"], "default": "NEW"}},
        *V1["fields"][2:],
        {"name": "channel", "type": "string", "default": "web"},
    ],
}
CUSTOMER = {"type": "record", "name": "Customer", "namespace": "orderhub", "fields": [{"name": "id", "type": "string"}]}
PLACED_AT = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)


def write_schemas(root: Path, folders: dict[str, list[dict]]) -> Path:
    """Write ``folders`` as ``root/<name>/v<N>.avsc`` and return root."""
    for name, versions in folders.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for number, schema in enumerate(versions, start=1):
            (root / name / f"v{number}.avsc").write_text(json.dumps(schema))
    return root


def order(**overrides) -> dict:
    """A valid v1 order snapshot, with ``overrides``."""
    return {
        "order_id": "O-1",
        "status": "CONFIRMED",
        "total": Decimal("12.50"),
        "placed_at": PLACED_AT,
        "due": date(2024, 5, 3),
        "lines": [{"sku": "A-1", "quantity": Decimal("2.000")}],
        **overrides,
    }


class FakeRegistry:
    """An in-memory SchemaRegistry: ids from 1, one per distinct schema."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}

    def register(self, subject: str, schema_str: str) -> int:
        """Return the schema's id, assigning the next one when it is new."""
        for schema_id, known in self.schemas.items():
            if known == schema_str:
                return schema_id
        self.schemas[len(self.schemas) + 1] = schema_str
        return len(self.schemas)

    def schema_str(self, schema_id: int) -> str:
        """The schema registered under ``schema_id``; KeyError if none."""
        return self.schemas[schema_id]


@pytest.fixture
def store(tmp_path: Path) -> SchemaStore:
    """A store with order_snapshot v1, v2 and customer v1."""
    return SchemaStore.load(write_schemas(tmp_path, {"order_snapshot": [V1, V2], "customer": [CUSTOMER]}))


# --- store and fingerprints -------------------------------------------------------------------


def test_store_loads_every_version(store: SchemaStore) -> None:
    """The store lists event types and versions and looks them up by name, version and fingerprint."""
    assert store.names() == ("customer", "order_snapshot")
    assert [v.version for v in store.versions("order_snapshot")] == [1, 2]
    latest = store.latest("order_snapshot")
    assert (latest.name, latest.version, latest.full_name) == ("order_snapshot", 2, "orderhub.OrderSnapshot")
    assert latest.raw == V2 and latest.path.name == "v2.avsc"
    assert store.get("order_snapshot", 1).raw == V1
    assert store.by_fingerprint(store.get("order_snapshot", 1).fingerprint) is store.get("order_snapshot", 1)
    assert store.by_fingerprint(b"\x00" * 8) is None
    with pytest.raises(SchemaError, match="no schema named 'invoice'"):
        store.latest("invoice")
    with pytest.raises(SchemaError, match="versions 1..2, not 3"):
        store.get("order_snapshot", 3)


def test_crc64_avro_matches_the_spec_test_vectors() -> None:
    """CRC-64-AVRO of "null" and "int" equals the Avro test data (schema-tests.txt, Java signed longs)."""
    assert int.from_bytes(fingerprint('"null"'), "little") == 7195948357588979594
    assert int.from_bytes(fingerprint('"int"'), "little") == 8247732601305521295


def test_fingerprint_is_little_endian_and_agrees_with_fastavro(store: SchemaStore) -> None:
    """A version's fingerprint is the 8 little-endian bytes of the Rabin value fastavro also computes."""
    for version in store.versions("order_snapshot"):
        expected = int.from_bytes(fingerprint(version.canonical_form), "little")
        assert version.fingerprint_int == expected
        assert version.fingerprint == expected.to_bytes(8, "little")
        assert version.fingerprint.hex() == fastavro.schema.fingerprint(version.canonical_form, "CRC-64-AVRO")
    # Apache Avro's own test data gives "int" as hex 8f5c393f1ad57572: the LE bytes of 8247732601305521295
    assert (8247732601305521295).to_bytes(8, "little").hex() == "8f5c393f1ad57572"


def test_canonical_form_drops_what_does_not_change_the_bytes(store: SchemaStore) -> None:
    """The canonical form keeps names and types but not defaults or logical types."""
    form = store.get("order_snapshot", 2).canonical_form
    assert form.startswith('{"name":"orderhub.OrderSnapshot","type":"record"')
    assert "default" not in form and "logicalType" not in form


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"v1.avsc": "{not json"}, "not readable JSON"),
        ({"v1.avsc": json.dumps({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})}, "invalid Avro schema"),
        ({"v1.avsc": json.dumps("string")}, "not an Avro record schema"),
        ({"v1.avsc": json.dumps(V1), "v3.avsc": json.dumps(V2)}, "gap"),
        ({"v1.avsc": json.dumps(V1), "v2.avsc": json.dumps(CUSTOMER)}, "different records"),
        ({"latest.avsc": json.dumps(V1)}, "must be named v<N>.avsc"),
        ({}, "no v<N>.avsc files"),
    ],
)
def test_broken_schema_folder_raises_schema_error(tmp_path: Path, files: dict[str, str], reason: str) -> None:
    """A malformed file, a version gap, a changed full name or a stray file name is a SchemaError saying which."""
    folder = tmp_path / "order_snapshot"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(SchemaError, match=reason) as caught:
        SchemaStore.load(tmp_path)
    assert "order_snapshot" in str(caught.value)


def test_missing_schemas_folder_raises_schema_error(tmp_path: Path) -> None:
    """Loading a folder that does not exist is a SchemaError naming it."""
    with pytest.raises(SchemaError, match="does not exist"):
        SchemaStore.load(tmp_path / "nowhere")


# --- round trips ---------------------------------------------------------------------------------


def test_single_object_round_trip(store: SchemaStore) -> None:
    """Without a registry the codec writes C3 01 + fingerprint + body and reads it back equal."""
    codec = AvroCodec(store)
    record = {**order(), "channel": "shop"}
    data = codec.encode("order_snapshot", record)
    assert data[:2] == b"\xc3\x01" and data[2:10] == store.latest("order_snapshot").fingerprint
    decoded = codec.decode(data)
    assert decoded.value == record
    assert (decoded.writer.version, decoded.reader.version, decoded.schema_id) == (2, 2, None)


def test_confluent_round_trip(store: SchemaStore) -> None:
    """With a registry the codec writes 00 + big-endian id + body under {name}-value and reads it back equal."""
    registry = FakeRegistry()
    codec = AvroCodec(store, registry)
    data = codec.encode("customer", {"id": "C-7"})
    assert data[:5] == b"\x00\x00\x00\x00\x01"
    assert json.loads(registry.schema_str(1)) == CUSTOMER
    decoded = codec.decode(data)
    assert decoded.value == {"id": "C-7"} and decoded.schema_id == 1
    assert (decoded.writer.name, decoded.writer.version) == ("customer", 1)


def test_decode_accepts_both_formats_whatever_is_configured(store: SchemaStore) -> None:
    """A codec with a registry reads single-object bytes, and a second codec reads the registry's bytes."""
    registry = FakeRegistry()
    with_registry, without = AvroCodec(store, registry), AvroCodec(store)
    assert with_registry.decode(without.encode("customer", {"id": "a"})).value == {"id": "a"}
    assert AvroCodec(store, registry).decode(with_registry.encode("customer", {"id": "b"})).value == {"id": "b"}


def test_new_reader_reads_old_writer(store: SchemaStore) -> None:
    """v1 bytes decode into v2 (the default reader) with v2's default for the added field."""
    codec = AvroCodec(store)
    decoded = codec.decode(codec.encode("order_snapshot", order(), version=1))
    assert (decoded.writer.version, decoded.reader.version) == (1, 2)
    assert decoded.value == {**order(), "channel": "web"}


def test_old_reader_reads_new_writer(store: SchemaStore) -> None:
    """v2 bytes decode into v1 when asked, dropping the new field and mapping an unknown symbol to the enum default."""
    codec = AvroCodec(store)
    data = codec.encode("order_snapshot", {**order(status="SHIPPED"), "channel": "shop"})
    decoded = codec.decode(data, "order_snapshot", reader_version=1)
    assert decoded.reader.version == 1
    assert decoded.value == order(status="NEW")


def test_registry_writer_is_named_from_the_store(store: SchemaStore) -> None:
    """A registry schema identical to a stored version is reported as that event type and version."""
    codec = AvroCodec(store, FakeRegistry())
    decoded = codec.decode(codec.encode("order_snapshot", order(), version=1, subject="orders-value"))
    assert (decoded.writer.name, decoded.writer.version, decoded.writer.path) == ("order_snapshot", 1, None)
    assert decoded.reader.version == 2


# --- decimals -------------------------------------------------------------------------------------


def test_decimals_are_quantised_to_the_schema_scale(store: SchemaStore) -> None:
    """Decimal('12.5') for scale 2 and Decimal('2') for scale 3 are written as 12.50 and 2.000."""
    codec = AvroCodec(store)
    record = order(total=Decimal("12.5"), lines=[{"sku": "A", "quantity": Decimal("2")}])
    value = codec.decode(codec.encode("order_snapshot", record, version=1)).value
    assert str(value["total"]) == "12.50" and str(value["lines"][0]["quantity"]) == "2.000"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"total": Decimal("12.345")}, r"OrderSnapshot\.total: 12\.345 needs rounding to fit scale 2"),
        ({"total": Decimal("1E+17")}, r"OrderSnapshot\.total: .* more than 18 digits"),
        ({"total": Decimal("NaN")}, "not a finite decimal"),
        ({"lines": [{"sku": "A", "quantity": Decimal("0.0001")}]}, r"OrderSnapshot\.lines\[\]\.quantity"),
        ({"order_id": 7}, "record does not fit order_snapshot v1"),
    ],
)
def test_record_that_does_not_fit_is_refused(store: SchemaStore, overrides: dict, reason: str) -> None:
    """An amount that would need rounding or too many digits, or a wrong type, is a ValueError naming the field."""
    with pytest.raises(ValueError, match=reason):
        AvroCodec(store).encode("order_snapshot", order(**overrides), version=1)


PARTY = {"type": "record", "name": "Party", "fields": [{"name": "id", "type": "string"},
                                                        {"name": "name", "type": ["null", "string"], "default": None}]}
UNIONS = {
    "type": "record",
    "name": "Unions",
    "namespace": "orderhub",
    "fields": [
        {"name": "party", "type": ["null", PARTY], "default": None},
        {"name": "billed_to", "type": ["null", "Party"], "default": None},
        {"name": "net", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}],
         "default": None},
        {"name": "due", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None},
        {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": None},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "either", "type": ["null", "string", "long"], "default": None},
        {"name": "rows", "type": {"type": "array", "items": {"type": "record", "name": "Row", "fields": [
            {"name": "price", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 18,
                                                "scale": 4}], "default": None},
            {"name": "party", "type": ["Party", "null"]}]}}},
        {"name": "by_key", "type": {"type": "map", "values": ["null", "Party"]}, "default": {}},
    ],
}
UNION_VALUES = [
    {"party": None, "billed_to": None, "net": None, "due": None, "at": None, "note": None, "either": None,
     "rows": [], "by_key": {}},
    {"party": {"id": "P-1", "name": None}, "billed_to": {"id": "P-2", "name": "Ünï"}, "net": Decimal("-12.50"),
     "due": date(1969, 12, 31), "at": datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=timezone.utc), "note": "n",
     "either": 7, "rows": [{"price": Decimal("0.0001"), "party": {"id": "R", "name": "r"}},
                           {"price": None, "party": None}],
     "by_key": {"a": {"id": "M"}, "b": None}},
    {"party": {"id": "P-1"}, "billed_to": None, "net": Decimal("0"), "due": date(2026, 12, 1),
     "at": PLACED_AT, "note": None, "either": "s", "rows": [{"price": Decimal("99999999999999.9999"), "party": None}],
     "by_key": {}},
]


@pytest.mark.parametrize("value", UNION_VALUES)
def test_union_branches_named_by_the_codec_write_the_bytes_fastavro_finds_by_trying(tmp_path: Path,
                                                                                      value: dict) -> None:
    """Nullable unions of a record or a logical type, in records, arrays and maps, are written with their
    branch named: byte for byte what fastavro writes when it tries the branches itself."""
    store = SchemaStore.load(write_schemas(tmp_path, {"unions": [UNIONS]}))
    writer = store.latest("unions")
    plain = io.BytesIO()
    fastavro.schemaless_writer(plain, writer.parsed, value)
    assert AvroCodec(store).encode("unions", value) == b"\xc3\x01" + writer.fingerprint + plain.getvalue()
    assert AvroCodec(store).encode("unions", value, quantised=True) == AvroCodec(store).encode("unions", value)


def test_quantised_records_skip_the_quantiser_and_write_the_same_bytes(store: SchemaStore) -> None:
    """A record whose decimals are at their scale, or have fewer places, encodes alike with ``quantised``."""
    codec = AvroCodec(store)
    for total, quantity in ((Decimal("12.50"), Decimal("2.000")), (Decimal("12.5"), Decimal("2"))):
        record = order(total=total, lines=[{"sku": "A", "quantity": quantity}])
        assert codec.encode("order_snapshot", record, version=1, quantised=True) == \
            codec.encode("order_snapshot", record, version=1)


# --- undecodable bytes ----------------------------------------------------------------------------


def _undecodable_cases(store: SchemaStore) -> dict[str, tuple[bytes, str]]:
    good = AvroCodec(store).encode("customer", {"id": "C-1"})
    confluent = AvroCodec(store, FakeRegistry()).encode("customer", {"id": "C-1"})
    return {
        "empty": (b"", "empty value"),
        "unknown magic byte": (b"\x07abc", "unknown magic byte 0x07"),
        "confluent v1 guid framing": (b"\x01" + bytes(20), "unknown magic byte 0x01"),
        "truncated single-object header": (good[:6], "truncated single-object header"),
        "truncated confluent header": (b"\x00\x00\x01", "truncated Confluent header"),
        "unknown fingerprint": (b"\xc3\x01" + bytes(8) + good[10:], "unknown schema fingerprint 0000000000000000"),
        "unknown schema id": (b"\x00\x00\x00\x00\x63" + confluent[5:], "unknown schema id 99"),
        "truncated body": (good[:-2], "body unreadable as customer v1"),
        "garbage body": (good[:10] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "body unreadable"),
        "trailing bytes": (good + b"\x00\x00", "2 bytes left over after a customer v1 record"),
    }


CASES = ["empty", "unknown magic byte", "confluent v1 guid framing", "truncated single-object header",
         "truncated confluent header", "unknown fingerprint", "unknown schema id", "truncated body",
         "garbage body", "trailing bytes"]


@pytest.mark.parametrize("case", CASES)
def test_undecodable_bytes_raise_undecodable_record_with_where_and_why(store: SchemaStore, case: str) -> None:
    """Every kind of unreadable bytes raises UndecodableRecord naming the problem and topic/partition/offset."""
    data, reason = _undecodable_cases(store)[case]
    with pytest.raises(UndecodableRecord) as caught:
        AvroCodec(store, FakeRegistry()).decode(data, topic="orders", partition=3, offset=42)
    assert reason in caught.value.reason
    assert (caught.value.topic, caught.value.partition, caught.value.offset) == ("orders", 3, 42)
    assert "orders[3]@42" in str(caught.value)


def test_confluent_bytes_without_registry_are_undecodable(store: SchemaStore) -> None:
    """Confluent-framed bytes reaching a codec without a registry raise UndecodableRecord saying so."""
    data = AvroCodec(store, FakeRegistry()).encode("customer", {"id": "C-1"})
    with pytest.raises(UndecodableRecord, match="no registry is configured"):
        AvroCodec(store).decode(data)


def test_resolution_failure_is_undecodable(store: SchemaStore) -> None:
    """Reading an order snapshot as a customer raises UndecodableRecord naming both schemas."""
    codec = AvroCodec(store)
    with pytest.raises(UndecodableRecord, match="order_snapshot v2 into customer v1") as caught:
        codec.decode(codec.encode("order_snapshot", {**order(), "channel": "x"}), "customer")
    assert caught.value.topic is None


def test_unknown_reader_is_undecodable(store: SchemaStore) -> None:
    """Asking for a reader the store does not have raises UndecodableRecord."""
    codec = AvroCodec(store)
    with pytest.raises(UndecodableRecord, match="no reader schema"):
        codec.decode(codec.encode("customer", {"id": "a"}), "customer", reader_version=5)


def test_registry_schema_of_an_unknown_record_is_undecodable(store: SchemaStore) -> None:
    """A registry schema whose record no folder defines raises UndecodableRecord naming the record."""
    registry = FakeRegistry()
    registry.register("x-value", json.dumps({"type": "record", "name": "Other", "fields": []}))
    with pytest.raises(UndecodableRecord, match="Other is no event type"):
        AvroCodec(store, registry).decode(b"\x00\x00\x00\x00\x01")


def test_encode_of_unknown_event_type_is_a_schema_error(store: SchemaStore) -> None:
    """Encoding a name the store does not have raises SchemaError."""
    with pytest.raises(SchemaError, match="no schema named 'invoice'"):
        AvroCodec(store).encode("invoice", {})


# --- the HTTP registry client ---------------------------------------------------------------------


class _RegistryHandler(BaseHTTPRequestHandler):
    """A two-endpoint stand-in for Confluent Schema Registry that records every request."""

    schemas: dict[int, str]
    requests: list[tuple[str, str, dict]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """POST /subjects/{subject}/versions: register and answer the id."""
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, dict(self.headers)))
        schema_id = next((i for i, s in self.schemas.items() if s == body["schema"]), len(self.schemas) + 1)
        self.schemas[schema_id] = body["schema"]
        self._answer(200, {"id": schema_id})

    def do_GET(self) -> None:  # noqa: N802
        """GET /schemas/ids/{id}: the schema, or 404."""
        self.requests.append(("GET", self.path, dict(self.headers)))
        schema_id = int(self.path.rsplit("/", 1)[-1])
        if schema_id in self.schemas:
            self._answer(200, {"schema": self.schemas[schema_id]})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        """Stay quiet."""


@pytest.fixture
def registry_server():
    """A running stand-in registry on a free local port; yields its handler class."""
    handler = type("Handler", (_RegistryHandler,), {"schemas": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_registry_registers_and_fetches_with_auth_and_caches(store: SchemaStore, registry_server) -> None:
    """HttpSchemaRegistry speaks the REST API with basic auth and the registry content type, asking once per key."""
    registry = HttpSchemaRegistry(registry_server.url, "hub", "s3cret")
    codec = AvroCodec(store, registry)
    data = codec.encode("customer", {"id": "a"}, subject="customers-value")
    codec.encode("customer", {"id": "b"}, subject="customers-value")
    fresh = AvroCodec(store, HttpSchemaRegistry(registry_server.url, "hub", "s3cret"))
    assert fresh.decode(data).value == {"id": "a"}
    fresh.decode(data)
    assert [(m, p) for m, p, _ in registry_server.requests] == [
        ("POST", "/subjects/customers-value/versions"),
        ("GET", "/schemas/ids/1"),
    ]
    headers = registry_server.requests[0][2]
    assert headers["Content-Type"] == "application/vnd.schemaregistry.v1+json"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"hub:s3cret").decode()


def test_http_registry_unknown_id_is_undecodable(store: SchemaStore, registry_server) -> None:
    """A 404 for a schema id makes the record undecodable."""
    codec = AvroCodec(store, HttpSchemaRegistry(registry_server.url))
    with pytest.raises(UndecodableRecord, match="unknown schema id 5"):
        codec.decode(b"\x00\x00\x00\x00\x05\x00")


def test_unreachable_registry_is_retriable(store: SchemaStore) -> None:
    """A registry that cannot be reached raises RetriableError, not UndecodableRecord."""
    codec = AvroCodec(store, HttpSchemaRegistry("http://127.0.0.1:1"))
    with pytest.raises(RetriableError, match="schema registry unavailable"):
        codec.decode(b"\x00\x00\x00\x00\x05\x00")


def test_registry_from_settings_follows_the_registry_url() -> None:
    """No ORDERHUB_SCHEMA_REGISTRY_URL means no registry; a URL gives an HTTP registry with its credentials."""
    assert registry_from_settings(Settings(schema_registry_url=None)) is None
    registry = registry_from_settings(
        Settings(schema_registry_url="http://registry:8081/", schema_registry_user="hub", schema_registry_password="pw")
    )
    assert isinstance(registry, HttpSchemaRegistry) and registry.url == "http://registry:8081"


def test_confluent_adapter_without_confluent_kafka_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without confluent-kafka installed, ConfluentClientRegistry raises ImportError naming the pip extra."""
    from hub.serde.wire import ConfluentClientRegistry

    monkeypatch.setitem(sys.modules, "confluent_kafka.schema_registry", None)
    with pytest.raises(ImportError, match=r"pip install 'orderhub\[test\]'"):
        ConfluentClientRegistry(object())
