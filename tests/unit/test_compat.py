"""The schema compatibility gate and ``orderhub schemas check``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hub.cli import main
from hub.serde.compat import check_pair, check_repository, lint
from hub.settings import PROJECT_DIR

DECIMAL_18_3 = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 3}
BASE = {
    "type": "record",
    "name": "OrderSnapshot",
    "namespace": "orderhub",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "revision", "type": "int"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "CONFIRMED", "CANCELLED"]}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [{"name": "address", "type": {"type": "record", "name": "Address", "fields": [
                    {"name": "city", "type": "string"}]}}],
            },
        },
        {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line", "fields": [
            {"name": "sku", "type": "string"}, {"name": "quantity", "type": DECIMAL_18_3}]}}},
    ],
}


def changed(edit) -> dict:
    """A deep copy of BASE with ``edit(fields_by_name)`` applied."""
    schema = copy.deepcopy(BASE)
    edit({f["name"]: f for f in schema["fields"]}, schema)
    return schema


def housed(edit) -> dict:
    """Like ``changed``, from HOUSE (BASE keeping the house rules: its enum has a default)."""
    schema = changed(lambda f, s: f["status"]["type"].update(default="NEW"))
    edit({f["name"]: f for f in schema["fields"]}, schema)
    return schema


HOUSE = housed(lambda f, s: None)


def test_compatible_change_passes() -> None:
    """Adding a defaulted field, an enum symbol (with an enum default) and a union branch is compatible."""
    def edit(fields, schema):
        fields["status"]["type"]["default"] = "NEW"
        fields["status"]["type"]["symbols"].append("SHIPPED")
        fields["note"]["type"].append("bytes")  # old readers take new bytes values as string (a promotion)
        schema["fields"].append({"name": "channel", "type": "string", "default": "web"})

    def add_default(fields, schema):
        fields["status"]["type"]["default"] = "NEW"

    assert check_pair(changed(add_default), changed(edit)) == []


def test_unchanged_schema_is_compatible_with_itself() -> None:
    """A schema is backward and forward compatible with itself."""
    assert check_pair(BASE, copy.deepcopy(BASE)) == []


def test_field_added_without_default_fails_naming_the_field() -> None:
    """A new field without a default breaks backward compatibility, and the message names it."""
    new = changed(lambda f, s: s["fields"].append({"name": "channel", "type": "string"}))
    assert check_pair(BASE, new, old_label="v1", new_label="v2") == [
        "v1 -> v2 (backward): field OrderSnapshot.channel: added without a default"
    ]


def test_field_removed_without_old_default_fails_forward() -> None:
    """Removing a field the old version has no default for breaks forward compatibility."""
    new = changed(lambda f, s: s["fields"].remove(f["revision"]))
    assert check_pair(BASE, new) == [
        "new -> old (forward): field OrderSnapshot.revision: removed, and the older version has no default for it"
    ]


def test_enum_symbol_removed_without_default_fails() -> None:
    """Dropping an enum symbol when the enum has no default means old data cannot be read."""
    new = changed(lambda f, s: f["status"]["type"]["symbols"].remove("CANCELLED"))
    assert check_pair(BASE, new) == [
        "old -> new (backward): field OrderSnapshot.status: enum orderhub.Status symbols ['CANCELLED'] "
        "removed, and the reading version has no enum default"
    ]


def test_type_change_fails_naming_the_field() -> None:
    """Changing int to string fails both ways and names the field and both types."""
    new = changed(lambda f, s: f["revision"].update(type="string"))
    problems = check_pair(BASE, new)
    assert problems == [
        "old -> new (backward): field OrderSnapshot.revision: type changed from int to string, no promotion",
        "new -> old (forward): field OrderSnapshot.revision: type changed from int to string, no promotion",
    ]


def test_promotion_is_only_backward() -> None:
    """Widening int to long reads old data, but old readers cannot read long."""
    new = changed(lambda f, s: f["revision"].update(type="long"))
    assert check_pair(BASE, new) == [
        "new -> old (forward): field OrderSnapshot.revision: type changed from int to long, no promotion"
    ]


def test_nested_record_and_array_paths_appear() -> None:
    """A change deep inside a nested record or an array item names the dotted path through them."""
    def edit(fields, schema):
        fields["customer"]["type"]["fields"][0]["type"]["fields"][0]["type"] = "int"
        fields["lines"]["type"]["items"]["fields"][1]["type"] = "string"

    problems = check_pair(BASE, changed(edit), old_label="v1", new_label="v2")
    assert "v2 -> v1 (forward): field OrderSnapshot.customer.address.city: type changed from string to int, no promotion" in problems
    assert (
        "v2 -> v1 (forward): field OrderSnapshot.lines[].quantity: type changed from bytes(decimal 18,3) "
        "to string, logical types differ" in problems
    )


def test_decimal_scale_change_fails() -> None:
    """Changing a decimal's scale is incompatible even though both are bytes."""
    new = changed(lambda f, s: f["lines"]["type"]["items"]["fields"][1]["type"].update(scale=2))
    assert len(problems := check_pair(BASE, new)) == 2
    assert all("bytes(decimal 18,3) to bytes(decimal 18,2), logical types differ" in p for p in problems)


def test_union_branch_removed_fails() -> None:
    """Narrowing ["null", "string"] to ["null"] means old string values cannot be read."""
    new = changed(lambda f, s: f["note"].update(type=["null"]))
    assert check_pair(BASE, new) == [
        "old -> new (backward): field OrderSnapshot.note: type changed from string to union[null], "
        "no union branch can read it"
    ]


def test_renamed_field_with_alias_is_compatible_backward() -> None:
    """A field renamed with the old name as an alias still reads old data."""
    new = changed(lambda f, s: f["order_id"].update(name="order_number", aliases=["order_id"]))
    assert check_pair(BASE, new) == [
        "new -> old (forward): field OrderSnapshot.order_id: removed, and the older version has no default for it"
    ]


def _write(root: Path, versions: list[dict | str]) -> Path:
    folder = root / "order_snapshot"
    folder.mkdir(parents=True)
    for number, schema in enumerate(versions, start=1):
        (folder / f"v{number}.avsc").write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return root


def test_check_repository_reports_pairs_and_broken_files(tmp_path: Path) -> None:
    """check_repository prefixes each problem with the event type and reports malformed files."""
    _write(tmp_path / "a", [HOUSE, housed(lambda f, s: s["fields"].append({"name": "x", "type": "int"}))])
    assert check_repository(tmp_path / "a") == [
        "order_snapshot v1 -> v2 (backward): field OrderSnapshot.x: added without a default"
    ]
    _write(tmp_path / "b", [HOUSE, "{oops"])
    [problem] = check_repository(tmp_path / "b")
    assert "v2.avsc: not readable JSON" in problem
    assert check_repository(tmp_path / "missing") == [f"schemas folder {tmp_path / 'missing'} does not exist"]


def test_cli_schemas_check_passes_a_good_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``orderhub schemas check --dir`` exits 0 when every version is compatible."""
    root = _write(tmp_path, [HOUSE, housed(lambda f, s: s["fields"].append({"name": "x", "type": "int", "default": 0}))])
    assert main(["schemas", "check", "--dir", str(root)]) == 0
    assert "compatible" in capsys.readouterr().out


def test_cli_schemas_check_fails_a_bad_folder_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``orderhub schemas check --dir`` exits 1 and prints the broken field."""
    root = _write(tmp_path, [HOUSE, housed(lambda f, s: f["revision"].update(type="string"))])
    assert main(["schemas", "check", "--dir", str(root)]) == 1
    assert "field OrderSnapshot.revision: type changed from int to string" in capsys.readouterr().out


def test_the_repository_keeps_the_house_rules_and_a_breach_is_named(tmp_path: Path) -> None:
    """Enum defaults, decimals with precision and scale, no floats, *_at timestamps: the repo passes, breaches fail."""
    assert check_repository(PROJECT_DIR / "schemas") == []
    assert lint(HOUSE) == []
    breaches = housed(lambda f, s: (
        f["status"]["type"].pop("default"),
        s["fields"].append({"name": "weight", "type": ["null", "double"], "default": None}),
        s["fields"].append({"name": "decided_at", "type": "string"}),
        s["fields"].append({"name": "ship_date", "type": {"type": "int", "logicalType": "date"}}),
        f["lines"]["type"]["items"]["fields"][1]["type"].pop("scale")))
    assert lint(breaches) == [
        "enum Status at field status has no default among its symbols: a reader would fail on a symbol added later",
        "field lines[].quantity is a decimal without an explicit precision and scale",
        "field weight is double: amounts and quantities are decimals with a fixed scale",
        "field decided_at is named like a timestamp but is not a timestamp-millis/-micros",
    ]
    _write(tmp_path, [breaches])
    assert check_repository(tmp_path)[0].startswith("order_snapshot v1: enum Status")
