"""The pydantic event models and the Avro schemas describe the same types, field by field."""

from __future__ import annotations

import datetime as dt
import json
import types
import typing
from decimal import Decimal
from enum import Enum

import pytest
from pydantic import BaseModel

from hub.events import EVENT_MODELS
from hub.settings import PROJECT_DIR

SCHEMAS = PROJECT_DIR / "schemas"


def latest_schema(name: str) -> dict:
    """The newest version of one schema folder, as JSON."""
    files = sorted(SCHEMAS.joinpath(name).glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    return json.loads(files[-1].read_text())


def named_types(avro_type, found: dict | None = None) -> dict:
    """Every named record and enum defined anywhere in a schema, by name."""
    found = {} if found is None else found
    if isinstance(avro_type, list):
        for branch in avro_type:
            named_types(branch, found)
    elif isinstance(avro_type, dict):
        if avro_type["type"] in ("record", "enum"):
            found[avro_type["name"]] = avro_type
        for field in avro_type.get("fields", []):
            named_types(field["type"], found)
        if avro_type["type"] == "array":
            named_types(avro_type["items"], found)
    return found


def _split_optional(annotation):
    """(inner type, True) for ``X | None``; (annotation, False) otherwise."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1, f"only X | None unions are mirrored, got {annotation}"
        return rest[0], True
    return annotation, False


def compare(avro_type, annotation, path: str, named: dict) -> list[str]:
    """Every mismatch between one Avro type and one Python annotation, by dotted path."""
    if isinstance(avro_type, str) and avro_type in named:
        avro_type = named[avro_type]
    if isinstance(avro_type, list):
        non_null = [t for t in avro_type if t != "null"]
        inner, optional = _split_optional(annotation)
        if "null" not in avro_type or len(non_null) != 1:
            return [f"{path}: union {avro_type} has no Python mirror"]
        if not optional:
            return [f"{path}: Avro allows null, the model does not"]
        return compare(non_null[0], inner, path, named)
    inner, optional = _split_optional(annotation)
    if optional:
        return [f"{path}: the model allows None, Avro does not"]
    if isinstance(avro_type, str):
        expected = {"string": str, "long": int, "int": int, "boolean": bool}[avro_type]
        return [] if annotation is expected else [f"{path}: Avro {avro_type}, model {annotation}"]
    kind, logical = avro_type["type"], avro_type.get("logicalType")
    if logical:
        expected = {"decimal": Decimal, "date": dt.date, "timestamp-millis": dt.datetime}[logical]
        return [] if annotation is expected else [f"{path}: Avro {logical}, model {annotation}"]
    if kind == "array":
        if typing.get_origin(annotation) is not list:
            return [f"{path}: Avro array, model {annotation}"]
        return compare(avro_type["items"], typing.get_args(annotation)[0], f"{path}[]", named)
    if kind == "enum":
        if not (isinstance(annotation, type) and issubclass(annotation, Enum)):
            return [f"{path}: Avro enum, model {annotation}"]
        ours = [m.value for m in annotation]
        return [] if ours == avro_type["symbols"] else [f"{path}: enum symbols {ours} != {avro_type['symbols']}"]
    if kind == "record":
        return compare_record(avro_type, annotation, path, named)
    return [f"{path}: Avro type {kind} has no Python mirror"]


def compare_record(record: dict, model, path: str, named: dict) -> list[str]:
    """Field names, order-independent, then each field's type and whether it has a default."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return [f"{path}: Avro record {record['name']}, model {model}"]
    problems = []
    avro_fields = {f["name"]: f for f in record["fields"]}
    model_fields = model.model_fields
    for missing in sorted(set(avro_fields) - set(model_fields)):
        problems.append(f"{path}.{missing}: in Avro, not in {model.__name__}")
    for extra in sorted(set(model_fields) - set(avro_fields)):
        problems.append(f"{path}.{extra}: in {model.__name__}, not in Avro")
    for name in sorted(set(avro_fields) & set(model_fields)):
        field, info = avro_fields[name], model_fields[name]
        problems += compare(field["type"], info.annotation, f"{path}.{name}", named)
        if ("default" in field) == info.is_required():
            problems.append(f"{path}.{name}: Avro default {'default' in field}, model required {info.is_required()}")
    return problems


@pytest.mark.parametrize("name", sorted(EVENT_MODELS))
def test_model_mirrors_latest_schema(name: str) -> None:
    """Each event model has exactly the latest schema's fields, types, optionality and enum symbols."""
    schema = latest_schema(name)
    assert compare_record(schema, EVENT_MODELS[name], schema["name"], named_types(schema)) == []


def test_every_schema_folder_has_a_model() -> None:
    """No schema folder lacks its Python model."""
    folders = {p.name for p in SCHEMAS.iterdir() if p.is_dir()}
    assert folders == set(EVENT_MODELS)


def test_drift_is_detected() -> None:
    """A schema with a renamed field and a changed type is reported against the model."""
    schema = latest_schema("order_release")
    schema["fields"][0] = {"name": "record_key", "type": "string"}
    schema["fields"][4]["type"] = "string"  # version: long -> string
    problems = compare_record(schema, EVENT_MODELS["order_release"], "OrderRelease", named_types(schema))
    assert "OrderRelease.record_key: in Avro, not in OrderRelease" in problems
    assert "OrderRelease.record_id: in OrderRelease, not in Avro" in problems
    assert any(p.startswith("OrderRelease.version: Avro string") for p in problems)
