"""The schema compatibility gate: every version must read its predecessor's data and be read by it.

Implements Avro's schema-resolution rules structurally (no data needed), stricter in one way:
logical types must agree, since a reader that resolves ``bytes(decimal 18,3)`` as
``bytes(decimal 18,2)`` reads every amount ten times too large without any error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import fastavro

from hub.errors import SchemaError
from hub.serde.store import SchemaStore, load_schema_folder, schema_folders

_PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"},
               "string": {"bytes"}, "bytes": {"string"}}
_NAMED = {"record", "enum", "fixed"}


@dataclass
class _Direction:
    """One reading direction: which side writes, and the name tables of both sides."""

    writer_is_old: bool
    writer_names: dict[str, Any]
    reader_names: dict[str, Any]
    seen: set[tuple[str, str]] = field(default_factory=set)  # record pairs already checked: stops recursion


def check_pair(old_schema: dict[str, Any], new_schema: dict[str, Any], *, old_label: str = "old",
               new_label: str = "new") -> list[str]:
    """Problems that stop ``new`` reading ``old``'s data (backward) or ``old`` reading ``new``'s (forward).

    Each names the direction, the dotted field path and why, e.g.
    ``v2 -> v1 (forward): field OrderSnapshot.lines[].quantity: type changed from ...``.
    """
    (old, old_names), (new, new_names) = _parse(old_schema, old_label), _parse(new_schema, new_label)
    root = new["name"].rsplit(".", 1)[-1]
    backward = _resolve(old, new, root, _Direction(True, old_names, new_names))
    forward = _resolve(new, old, root, _Direction(False, new_names, old_names))
    return [f"{old_label} -> {new_label} (backward): {p}" for p in backward] + [
        f"{new_label} -> {old_label} (forward): {p}" for p in forward
    ]


def check_repository(path: str | Path) -> list[str]:
    """Every problem in a schemas folder: broken files, and each version against the one before it."""
    try:
        folders = schema_folders(path)
    except SchemaError as exc:
        return [str(exc)]
    problems, loaded = [], {}
    for folder in folders:
        try:
            versions = loaded[folder.name] = load_schema_folder(folder)
        except SchemaError as exc:
            problems.append(str(exc))
            continue
        for version in versions:
            problems += [f"{folder.name} v{version.version}: {p}" for p in lint(version.raw)]
        for old, new in zip(versions, versions[1:]):
            pair = check_pair(old.raw, new.raw, old_label=f"v{old.version}", new_label=f"v{new.version}")
            problems += [f"{folder.name} {p}" for p in pair]
    try:
        SchemaStore(loaded)  # catches one record full name claimed by two folders
    except SchemaError as exc:
        problems.append(str(exc))
    return problems


def lint(schema: Any, path: str = "") -> list[str]:
    """The house rules every schema version keeps, beyond what Avro itself checks.

    Every enum has a default among its symbols (an old reader meets a new symbol); decimals
    state precision and scale; there is no float or double (amounts and quantities are exact);
    fields named ``*_at`` are timestamps and ``*_date`` dates, as logical types.
    """
    problems: list[str] = []
    if isinstance(schema, list):
        for branch in schema:
            problems += lint(branch, path)
    elif isinstance(schema, str):
        if schema in ("float", "double"):
            problems.append(f"{_field(path)} is {schema}: amounts and quantities are decimals with a fixed scale")
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            for f in schema.get("fields", []):
                problems += lint(f["type"], f"{path}.{f['name']}" if path else f["name"])
                name, logical = f["name"], _logical_type(f["type"])
                if name.endswith("_at") and logical not in ("timestamp-millis", "timestamp-micros"):
                    problems.append(f"{_field(f'{path}.{name}' if path else name)} is named like a timestamp "
                                    "but is not a timestamp-millis/-micros")
                if name.endswith("_date") and logical != "date":
                    problems.append(f"{_field(f'{path}.{name}' if path else name)} is named like a date but is not a date")
        elif kind == "enum":
            if schema.get("default") not in schema.get("symbols", []):
                problems.append(f"enum {schema.get('name')} at {_field(path)} has no default among its symbols: "
                                "a reader would fail on a symbol added later")
        elif kind == "array":
            problems += lint(schema.get("items"), f"{path}[]")
        elif kind == "map":
            problems += lint(schema.get("values"), f"{path}{{}}")
        elif schema.get("logicalType") == "decimal" and ("precision" not in schema or "scale" not in schema):
            problems.append(f"{_field(path)} is a decimal without an explicit precision and scale")
        elif isinstance(kind, (dict, list, str)):
            problems += lint(kind, path)
    return problems


def _field(path: str) -> str:
    return f"field {path}"


def _logical_type(schema: Any) -> str | None:
    """The logical type of a field's type, looking through ``["null", X]``."""
    if isinstance(schema, list):
        found = [t for t in map(_logical_type, schema) if t]
        return found[0] if found else None
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _parse(schema: dict[str, Any], label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    names: dict[str, Any] = {}
    try:
        return fastavro.parse_schema(schema, names), names  # full names everywhere, references as strings
    except Exception as exc:  # fastavro raises several unrelated types for a bad schema
        raise SchemaError(f"{label}: invalid Avro schema: {exc}") from exc


def _resolve(writer: Any, reader: Any, path: str, d: _Direction) -> Iterator[str]:
    """Why data of ``writer`` cannot be read as ``reader`` at ``path``; nothing if it can."""
    writer, reader = _deref(writer, d.writer_names), _deref(reader, d.reader_names)
    if isinstance(writer, list):  # every branch the writer may have used must be readable
        for branch in writer:
            yield from _resolve(branch, reader, path, d)
        return
    if isinstance(reader, list):  # the reader takes its first branch that matches the writer
        match = next((b for b in reader if _matches(writer, _deref(b, d.reader_names))), None)
        if match is None:
            yield _changed(path, writer, reader, d, "no union branch can read it")
        else:
            yield from _resolve(writer, match, path, d)
        return
    if not _matches(writer, reader):
        yield _changed(path, writer, reader, d, "no promotion")
        return
    if _logical(writer) != _logical(reader):
        yield _changed(path, writer, reader, d, "logical types differ")
        return
    kind = _type(writer)
    if kind == "record" and (writer["name"], reader["name"]) not in d.seen:
        d.seen.add((writer["name"], reader["name"]))
        written = {f["name"]: f for f in writer["fields"]}
        for wanted in reader["fields"]:
            sub = f"{path}.{wanted['name']}"
            known_as = (wanted["name"], *wanted.get("aliases", ()))
            source = next((written[n] for n in known_as if n in written), None)
            if source is not None:
                yield from _resolve(source["type"], wanted["type"], sub, d)
            elif "default" not in wanted:
                yield f"field {sub}: " + ("added without a default" if d.writer_is_old
                                          else "removed, and the older version has no default for it")
    elif kind == "enum":
        unknown = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if unknown and "default" not in reader:
            change = "removed" if d.writer_is_old else "added"
            yield (f"{_at(path)}: enum {reader['name']} symbols {unknown} {change}, and the reading "
                   f"version has no enum default")
    elif kind == "fixed" and writer["size"] != reader["size"]:
        yield _changed(path, writer, reader, d, "sizes differ")
    elif kind == "array":
        yield from _resolve(writer["items"], reader["items"], f"{path}[]", d)
    elif kind == "map":
        yield from _resolve(writer["values"], reader["values"], f"{path}{{}}", d)


def _deref(schema: Any, names: dict[str, Any]) -> Any:
    if isinstance(schema, dict) and isinstance(schema.get("type"), str) and schema["type"] in names:
        return names[schema["type"]]
    return names.get(schema, schema) if isinstance(schema, str) else schema


def _type(schema: Any) -> str:
    return "union" if isinstance(schema, list) else schema if isinstance(schema, str) else schema["type"]


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _matches(writer: Any, reader: Any) -> bool:
    """Avro's shallow match: same kind and name, or a promotion the reader allows."""
    kind, wanted = _type(writer), _type(reader)
    if kind in _NAMED or wanted in _NAMED:
        aliases = {_short(a) for a in reader.get("aliases", ())} if isinstance(reader, dict) else set()
        return kind == wanted and _short(writer["name"]) in {_short(reader["name"]), *aliases}
    return kind == wanted or wanted in _PROMOTIONS.get(kind, ())


def _logical(schema: Any) -> tuple[Any, ...] | None:
    if not isinstance(schema, dict) or "logicalType" not in schema:
        return None
    if schema["logicalType"] == "decimal":
        return ("decimal", schema.get("precision"), schema.get("scale", 0))
    return (schema["logicalType"],)


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "union[" + ", ".join(map(_describe, schema)) + "]"
    if isinstance(schema, str):
        return schema
    kind, logical = schema["type"], schema.get("logicalType")
    if logical == "decimal":
        return f"{kind}(decimal {schema.get('precision')},{schema.get('scale', 0)})"
    if logical:
        return f"{kind}({logical})"
    if kind in _NAMED:
        return f"{kind} {schema['name']}"
    if kind in ("array", "map"):
        return f"{kind}<{_describe(schema['items' if kind == 'array' else 'values'])}>"
    return kind


def _at(path: str) -> str:
    return f"field {path}" if any(c in path for c in ".[{") else f"record {path}"


def _changed(path: str, writer: Any, reader: Any, d: _Direction, why: str) -> str:
    old, new = (writer, reader) if d.writer_is_old else (reader, writer)
    return f"{_at(path)}: type changed from {_describe(old)} to {_describe(new)}, {why}"
