"""The bytes on the topics: Avro single-object encoding or the Confluent wire format.

::

    single-object  C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint | Avro binary body
    Confluent      00    | 4-byte big-endian schema registry id         | Avro binary body

Writers use the Confluent format when a schema registry is configured and single-object
encoding otherwise; readers accept both, whatever is configured, so topics can move from one
to the other without a flag day.
"""

from __future__ import annotations

import base64
import decimal
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

import fastavro

from hub.errors import IncompatibleSchema, RetriableError, SchemaError, UndecodableRecord
from hub.serde.store import SchemaStore, SchemaVersion

if TYPE_CHECKING:
    from hub.settings import Settings

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistry(Protocol):
    """What the codec needs from a schema registry.

    ``schema_str`` raises KeyError for an id the registry does not know (the record is then
    undecodable) and RetriableError when the registry cannot be reached (try again later).
    """

    def register(self, subject: str, schema_str: str) -> int:
        """Register ``schema_str`` under ``subject`` (idempotent) and return its global id."""

    def schema_str(self, schema_id: int) -> str:
        """The schema JSON registered under ``schema_id``."""


def _registry_failure(status: int | None, what: str, detail: str) -> Exception:
    """The orderhub error for a registry answer: unknown, incompatible, transient or wrong."""
    if status == 404:
        return KeyError(f"{what}: not found")
    if status == 409:
        return IncompatibleSchema(f"{what}: the registry rejects it as incompatible: {detail}")
    if status is None or status >= 500:
        return RetriableError(f"{what}: schema registry unavailable: {detail}")
    return SchemaError(f"{what}: schema registry answered {status}: {detail}")


class HttpSchemaRegistry:
    """A Confluent-compatible schema registry spoken to over its REST API (urllib only)."""

    def __init__(
        self, url: str, user: str | None = None, password: str | None = None, *, timeout: float = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._headers = {"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        # ids are immutable in a registry, so both directions can be cached for the process's life
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}

    def register(self, subject: str, schema_str: str) -> int:
        """POST /subjects/{subject}/versions, once per subject and schema."""
        key = (subject, schema_str)
        if key not in self._ids:
            path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
            schema_id = int(self._call("POST", path, {"schema": schema_str})["id"])
            self._ids[key] = schema_id
            self._schemas[schema_id] = schema_str
        return self._ids[key]

    def schema_str(self, schema_id: int) -> str:
        """GET /schemas/ids/{id}, once per id."""
        if schema_id not in self._schemas:
            self._schemas[schema_id] = self._call("GET", f"/schemas/ids/{schema_id}", None)["schema"]
        return self._schemas[schema_id]

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise _registry_failure(exc.code, f"{method} {path}", detail) from exc
        except OSError as exc:  # URLError, refused, timed out
            raise _registry_failure(None, f"{method} {self.url}{path}", str(exc)) from exc


class ConfluentClientRegistry:
    """Adapts a ``confluent_kafka.schema_registry`` client (or its mock) to SchemaRegistry."""

    def __init__(self, client: Any) -> None:
        try:
            from confluent_kafka.schema_registry import Schema, SchemaRegistryError
        except ImportError as exc:
            raise ImportError(
                "ConfluentClientRegistry needs confluent-kafka: pip install 'orderhub[test]' "
                "(or pip install confluent-kafka)"
            ) from exc
        self._client, self._schema_type, self._error_type = client, Schema, SchemaRegistryError

    def register(self, subject: str, schema_str: str) -> int:
        """Register through the client's ``register_schema``."""
        schema = self._schema_type(schema_str, "AVRO")
        return self._ask(f"register {subject}", self._client.register_schema, subject, schema)

    def schema_str(self, schema_id: int) -> str:
        """Fetch through the client's ``get_schema``."""
        return self._ask(f"schema id {schema_id}", self._client.get_schema, schema_id).schema_str

    def _ask(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except self._error_type as exc:
            raise _registry_failure(getattr(exc, "http_status_code", None), what, str(exc)) from exc


def registry_from_settings(settings: Settings) -> SchemaRegistry | None:
    """The registry ``ORDERHUB_SCHEMA_REGISTRY_*`` points at, or None for single-object encoding."""
    if not settings.schema_registry_url:
        return None
    password = settings.schema_registry_password
    return HttpSchemaRegistry(
        settings.schema_registry_url,
        settings.schema_registry_user,
        password.get_secret_value() if password is not None else None,
    )


@dataclass(frozen=True)
class DecodedRecord:
    """A record read off a topic, with the schemas it was written and read with."""

    writer: SchemaVersion
    """The schema the producer wrote with (version 0 if only the registry knows it)."""
    reader: SchemaVersion
    """The schema the value was resolved into."""
    value: dict[str, Any]
    """The record, shaped by the reader schema."""
    schema_id: int | None = None
    """The registry id for Confluent-framed bytes; None for single-object encoding."""


class _WritePlan(NamedTuple):
    label: str
    header: bytes
    schema: dict[str, Any]
    quantise: Callable[[Any], Any] | None
    name_branches: Callable[[Any], Any] | None


class AvroCodec:
    """Encodes records with the store's schemas and decodes either wire format.

    Decimal fields may be given as any Decimal that fits the schema's precision and scale
    exactly: the codec quantises ``Decimal('12.5')`` to ``12.50`` for scale 2, and refuses
    (ValueError) a value that would need rounding, because amounts are money. Nullable unions
    of a record or a logical type are written with their branch named (``_branch_namer``).
    """

    def __init__(self, store: SchemaStore, registry: SchemaRegistry | None = None) -> None:
        self.store = store
        self.registry = registry
        self._plans: dict[tuple[str, int | None, str | None], _WritePlan] = {}
        self._registry_writers: dict[int, SchemaVersion] = {}

    def encode(
        self, name: str, record: dict[str, Any], *, subject: str | None = None, version: int | None = None,
        quantised: bool = False,
    ) -> bytes:
        """``record`` as ``name`` (latest or ``version``), framed for the registry if there is one.

        ``subject`` defaults to ``{name}-value``; pass ``f"{topic}-value"`` for Confluent's
        TopicNameStrategy. ``quantised``: the caller knows every decimal in ``record`` has exactly
        its schema's scale and fits its precision (as canonical field values do), so the
        quantiser's walk over the record is skipped. Raises ValueError when the record does
        not fit the schema.
        """
        key = (name, version, subject)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(name, version, subject)
        out = io.BytesIO()
        out.write(plan.header)
        try:
            if plan.quantise is not None and not quantised:
                record = plan.quantise(record)
            if plan.name_branches is not None:
                record = plan.name_branches(record)
            fastavro.schemaless_writer(out, plan.schema, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise ValueError(f"record does not fit {plan.label}: {exc}") from exc
        return out.getvalue()

    def _plan(self, name: str, version: int | None, subject: str | None) -> _WritePlan:
        writer = self.store.latest(name) if version is None else self.store.get(name, version)
        if self.registry is None:
            header = SINGLE_OBJECT_MAGIC + writer.fingerprint
        else:
            # the full JSON, not the canonical form, which would drop logical types and defaults
            schema_id = self.registry.register(subject or f"{name}-value", json.dumps(writer.raw))
            header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
        named = writer.parsed.get("__named_schemas", {})
        root = writer.full_name.rsplit(".", 1)[-1]
        return _WritePlan(writer.label, header, writer.parsed, _decimal_preparer(writer.parsed, named, root),
                          _branch_namer(writer.parsed, named))

    def decode(
        self,
        data: bytes,
        reader: str | None = None,
        *,
        reader_version: int | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> DecodedRecord:
        """Read bytes of either format into ``reader`` (default: the writer's event type, latest).

        Raises UndecodableRecord, naming ``topic``/``partition``/``offset`` when given, for any
        bytes that cannot become a record; RetriableError when the registry is unreachable.
        """
        try:
            return self._decode(bytes(data), reader, reader_version)
        except UndecodableRecord as exc:
            raise (exc.at(topic, partition, offset) if topic is not None else exc) from exc.__cause__

    def _decode(self, data: bytes, reader_name: str | None, reader_version: int | None) -> DecodedRecord:
        schema_id = None
        if not data:
            raise UndecodableRecord("empty value: no magic byte")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise UndecodableRecord(f"truncated single-object header: {len(data)} of 10 bytes")
            writer = self.store.by_fingerprint(data[2:10])
            if writer is None:
                fingerprint = data[2:10].hex()
                raise UndecodableRecord(f"unknown schema fingerprint {fingerprint} (single-object encoding)")
            body_start = 10
        elif data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise UndecodableRecord(f"truncated Confluent header: {len(data)} of 5 bytes")
            schema_id = int.from_bytes(data[1:5], "big")
            writer = self._registry_writer(schema_id)
            body_start = 5
        else:
            raise UndecodableRecord(
                f"unknown magic byte 0x{data[0]:02x}: neither single-object (c3 01) nor Confluent (00)"
            )
        reader = self._reader(writer, reader_name, reader_version)
        body = io.BytesIO(data)
        body.seek(body_start)
        try:
            value = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro signals garbage with many types: EOFError, ValueError, ...
            detail = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "..."  # some embed whole schemas
            why = f"{type(exc).__name__}: {detail}"
            raise UndecodableRecord(f"body unreadable as {writer.label} into {reader.label}: {why}") from exc
        if body.tell() != len(data):
            left = len(data) - body.tell()
            raise UndecodableRecord(f"{left} bytes left over after a {writer.label} record")
        return DecodedRecord(writer, reader, value, schema_id)

    def _registry_writer(self, schema_id: int) -> SchemaVersion:
        if schema_id in self._registry_writers:
            return self._registry_writers[schema_id]
        if self.registry is None:
            raise UndecodableRecord(f"Confluent framing (schema id {schema_id}) but no registry is configured")
        try:
            raw = json.loads(self.registry.schema_str(schema_id))
        except KeyError:
            raise UndecodableRecord(f"unknown schema id {schema_id}: not in the schema registry") from None
        except ValueError as exc:
            raise UndecodableRecord(f"schema id {schema_id}: registry schema is not JSON: {exc}") from exc
        try:
            # parse what the registry says (it is what the producer used), then name it from the store
            found = SchemaVersion.from_json(raw, name=f"registry id {schema_id}", version=0)
        except SchemaError as exc:
            raise UndecodableRecord(f"schema id {schema_id}: {exc}") from exc
        known = self.store.by_fingerprint(found.fingerprint)
        name = self.store.name_of(found.full_name) or found.full_name
        writer = replace(found, name=name, version=known.version if known else 0)
        self._registry_writers[schema_id] = writer
        return writer

    def _reader(self, writer: SchemaVersion, name: str | None, version: int | None) -> SchemaVersion:
        name = name or self.store.name_of(writer.full_name)
        if name is None:
            raise UndecodableRecord(f"writer record {writer.full_name} is no event type in the schema store")
        try:
            return self.store.latest(name) if version is None else self.store.get(name, version)
        except SchemaError as exc:
            raise UndecodableRecord(f"no reader schema: {exc}") from exc


_EXACT = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation])
_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "decimal": decimal.Decimal, "record": dict, "map": dict, "array": (list, tuple)
}

Preparer = Callable[[Any], Any]


def _quantiser(scale: int, precision: int, where: str) -> Preparer:
    """A function giving a Decimal exactly ``scale`` places; ValueError rather than rounding money."""
    exponent, limit = decimal.Decimal(1).scaleb(-scale), decimal.Decimal(10) ** (precision - scale)

    def quantise(value: Any) -> Any:
        if not isinstance(value, decimal.Decimal):
            return value  # fastavro rejects it with its own message
        if not value.is_finite():
            raise ValueError(f"{where}: {value} is not a finite decimal")
        try:
            exact = value.quantize(exponent, context=_EXACT)
        except decimal.DecimalException:
            raise ValueError(f"{where}: {value} needs rounding to fit scale {scale}") from None
        # fastavro counts digits before scaling, so 1E+17 at scale 2 would slip past its check
        if abs(exact) >= limit:
            raise ValueError(f"{where}: {value} has more than {precision} digits")
        return exact

    return quantise


Special = Callable[[Any, str, Callable[[Any, str], "Preparer | None"]], "tuple[bool, Preparer | None]"]


def _schema_preparer(schema: Any, named: dict[str, Any], where: str, special: Special,
                     visiting: frozenset[str] = frozenset()) -> Preparer | None:
    """A function preparing a value of ``schema`` for fastavro, or None when nothing in it needs it.

    Built once per schema, so encoding walks only the paths that need it. This walks named-type
    references (stopping at recursion), records, arrays and maps; ``special(schema, where, walk)``
    decides the rest (unions, logical types): ``(True, preparer or None)`` when it handles the
    node, ``(False, None)`` to let the walk go on. ``walk(schema, where)`` prepares a nested schema.
    """
    if isinstance(schema, str):  # a named-type reference; stop at recursion
        if schema not in named or schema in visiting:
            return None
        return _schema_preparer(named[schema], named, where, special, visiting | {schema})
    handled, prepare = special(schema, where, lambda inner, at: _schema_preparer(inner, named, at, special, visiting))
    if handled:
        return prepare
    kind = schema["type"]
    if kind == "record":
        inside = visiting | {schema["name"]}
        fields = [(f["name"], prepare) for f in schema["fields"]
                  if (prepare := _schema_preparer(f["type"], named, f"{where}.{f['name']}", special, inside))]
        if fields:
            return lambda record: {**record, **{n: p(record[n]) for n, p in fields if n in record}}
    if kind == "array" and (item := _schema_preparer(schema["items"], named, f"{where}[]", special, visiting)):
        return lambda items: [item(x) for x in items]
    if kind == "map" and (value := _schema_preparer(schema["values"], named, f"{where}{{}}", special, visiting)):
        return lambda entries: {k: value(v) for k, v in entries.items()}
    return None


def _decimal_preparer(schema: Any, named: dict[str, Any], where: str) -> Preparer | None:
    """A function quantising every decimal in a value of ``schema``, or None if it has none."""
    def special(node: Any, at: str, walk: Callable[[Any, str], Preparer | None]) -> tuple[bool, Preparer | None]:
        if isinstance(node, list):  # a union: the first branch that takes the value's Python type
            branches = [(_PYTHON_TYPES[_kind(branch, named)], prepare) for branch in node
                        if (prepare := walk(branch, at))]
            if not branches:
                return True, None
            return True, lambda value: next((p(value) for types, p in branches if isinstance(value, types)), value)
        if node.get("logicalType") == "decimal" and node["type"] in ("bytes", "fixed"):
            return True, _quantiser(node.get("scale", 0), node["precision"], at)
        return False, None
    return _schema_preparer(schema, named, where, special)


def _branch_namer(schema: Any, named: dict[str, Any]) -> Preparer | None:
    """A function naming the branch of every costly nullable union in a value of ``schema``, or None.

    fastavro writes a union value by validating it against each branch in turn, unless the value
    comes as ``(branch name, value)``. For a union of null and a record or a logical type (a
    decimal, a date, a timestamp) that trial is most of the cost of writing the value, while
    the branch is plain from the value: None is null, anything else the other branch. The bytes
    are the same either way. Unions of null and a primitive type cost fastavro little, less than
    naming them here would, so they are left alone, as are unions of more than two branches.
    """
    def special(node: Any, at: str, walk: Callable[[Any, str], Preparer | None]) -> tuple[bool, Preparer | None]:
        if not isinstance(node, list):
            return False, None
        others = [branch for branch in node if branch != "null"]
        if len(node) != 2 or len(others) != 1:
            return True, None
        other = named.get(others[0], others[0]) if isinstance(others[0], str) else others[0]
        if not isinstance(other, dict) or (other["type"] != "record" and "logicalType" not in other):
            return True, None
        # the name fastavro's tuple notation matches: a named type's full name, else its type
        branch = other["name"] if other["type"] in ("record", "enum", "fixed") else other["type"]
        inner = walk(other, at)
        if inner is None:
            return True, lambda value: value if value is None else (branch, value)
        return True, lambda value: value if value is None else (branch, inner(value))
    return _schema_preparer(schema, named, "", special)


def _kind(schema: Any, named: dict[str, Any]) -> str:
    schema = named.get(schema, schema) if isinstance(schema, str) else schema
    if isinstance(schema, dict):
        return "decimal" if schema.get("logicalType") == "decimal" else schema["type"]
    return str(schema)
