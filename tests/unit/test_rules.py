"""ownership.yaml is read into Rules, and a wrong file stops start-up with a ConfigError naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.domain.fields import HEADER_FIELDS, LINE_FIELDS, STATUS_PATH
from hub.domain.rules import MANUAL, OWNER_WINS, FieldRule, Rules, writer_matches
from hub.errors import ConfigError
from hub.settings import PROJECT_DIR

SOURCE = (PROJECT_DIR / "ownership.yaml").read_text()


def modified(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the repository's ownership.yaml with one exact piece of text replaced."""
    assert SOURCE.count(old) == 1, f"the repository file no longer contains {old!r} exactly once"
    path = tmp_path / "ownership.yaml"
    path.write_text(SOURCE.replace(old, new))
    return path


def load_error(path: Path) -> str:
    """The message of the ConfigError that loading ``path`` raises."""
    with pytest.raises(ConfigError) as caught:
        Rules.load(path)
    return str(caught.value)


def test_repository_file_loads_and_covers_every_field() -> None:
    """The repository's ownership.yaml loads and has a rule for every canonical field except the status."""
    rules = Rules.load(PROJECT_DIR / "ownership.yaml")
    expected = {p for p in HEADER_FIELDS if p != STATUS_PATH} | {f"lines.*.{a}" for a in LINE_FIELDS}
    assert set(rules.fields) == expected
    assert rules.status_owner == "HUB"
    assert rules.default_policy == OWNER_WINS
    assert rules.policy("lines.10.material.revision") == MANUAL
    assert rules.policy("lines.10.quantity") == OWNER_WINS


def test_field_missing_from_the_file_is_named(tmp_path: Path) -> None:
    """A canonical field with no rule in the file is a ConfigError naming that field as without an owner."""
    message = load_error(modified(tmp_path, "  credit_status:          {owner: ERP}\n", ""))
    assert "fields without an owner: credit_status" in message


def test_line_field_missing_from_the_file_is_named(tmp_path: Path) -> None:
    """A line field with no rule is named with its ``lines.*`` path."""
    message = load_error(modified(tmp_path, "  lines.*.scrap_quantity: {owner: MES}\n", ""))
    assert "lines.*.scrap_quantity" in message


@pytest.mark.parametrize("entry", [
    pytest.param("{writers: [\"HUB:sales\", EDI]}", id="no-owner-key"),
    pytest.param("{owner: null, writers: [\"HUB:sales\", EDI]}", id="owner-null"),
    pytest.param("{owner: '', writers: [\"HUB:sales\", EDI]}", id="owner-empty"),
])
def test_field_entry_without_an_owner_is_named(tmp_path: Path, entry: str) -> None:
    """A field listed without an owner is a ConfigError naming that field."""
    path = modified(tmp_path, "  customer.id:            {owner: CRM, writers: [ERP, EDI, \"HUB:sales\"]}   # ERP: the sold-to party",
                    f"  customer.id:            {entry}")
    assert "customer.id" in load_error(path)


@pytest.mark.parametrize("field", ["customer.email", "lines.*.colour", "lines.10.quantity", "status"])
def test_rule_for_an_unknown_field_is_named(tmp_path: Path, field: str) -> None:
    """A rule for a field the canonical order does not have (or for the status) is a ConfigError naming it."""
    path = modified(tmp_path, "  # MES: production progress", f"  {field}: {{owner: CRM}}\n  # MES: production progress")
    message = load_error(path)
    assert "fields the order does not have" in message and field in message


@pytest.mark.parametrize("step", ["DRAFT>APPROVED", "CONFIRMED>DRAFT", "CLOSED>DRAFT", "CONFIRMED>CANCELLED",
                                  "DRAFT", "DRAFT>CONFIRMED>APPROVED", "DRAFT>"])
def test_non_step_in_status_steps_is_named(tmp_path: Path, step: str) -> None:
    """A status.steps entry that is not a single lifecycle step (cancelling included) is a ConfigError naming writer and step."""
    path = modified(tmp_path, 'CRM:            ["DRAFT>CONFIRMED"]', f'CRM:            ["{step}"]')
    message = load_error(path)
    assert f"status.steps.CRM: {step}" in message and "not a lifecycle step" in message


@pytest.mark.parametrize("step", ["DRAFTS>CONFIRMED", "ON_HOLD>RELEASED"])
def test_step_from_an_unknown_status_is_a_config_error(tmp_path: Path, step: str) -> None:
    """A status.steps entry from a status that does not exist is a ConfigError naming it, not a crash."""
    path = modified(tmp_path, 'CRM:            ["DRAFT>CONFIRMED"]', f'CRM:            ["{step}"]')
    assert step in load_error(path)


def test_bad_default_policy_is_named(tmp_path: Path) -> None:
    """A default conflict policy other than owner_wins or manual is a ConfigError naming conflicts.default."""
    message = load_error(modified(tmp_path, "  default: owner_wins", "  default: last_writer_wins"))
    assert "conflicts.default" in message and "last_writer_wins" in message


def test_bad_field_policy_is_named(tmp_path: Path) -> None:
    """A per-field conflict policy other than owner_wins or manual is a ConfigError naming the field."""
    message = load_error(modified(tmp_path, "    instructions: manual", "    instructions: first_wins"))
    assert "conflicts.instructions" in message and "first_wins" in message


def test_policy_for_an_unknown_field_is_named(tmp_path: Path) -> None:
    """A conflict policy for a field the order does not have (a typo) is a ConfigError naming it, not silently ignored."""
    assert "instruction" in load_error(modified(tmp_path, "    instructions: manual", "    instruction: manual"))


@pytest.mark.parametrize("old, new", [
    pytest.param("conflicts:\n  default: owner_wins", "conflict:\n  default: owner_wins", id="section-missing"),
    pytest.param("  cancel: [ERP, \"HUB:sales_manager\"]", "  cancel: [ERP, \"HUB:sales_manager\"", id="bad-yaml"),
])
def test_unreadable_file_is_a_config_error(tmp_path: Path, old: str, new: str) -> None:
    """A file that is not YAML or lacks a section is a ConfigError naming the file."""
    path = modified(tmp_path, old, new)
    assert str(path) in load_error(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A rules path that does not exist is a ConfigError, not an OSError."""
    assert "nowhere.yaml" in load_error(tmp_path / "nowhere.yaml")


def test_writer_spec_matches_system_or_system_and_role() -> None:
    """A writer spec ``SYSTEM`` covers every role of that system; ``SYSTEM:role`` only that role."""
    assert writer_matches("MES", "MES", "supervisor")
    assert writer_matches("MES:supervisor", "MES", "supervisor")
    assert not writer_matches("MES:supervisor", "MES", "operator")
    assert not writer_matches("HUB:sales", "CRM", "sales")
    assert FieldRule("ERP", ("HUB:planner",)).allows("ERP", "anything")


def test_refusals_quote_the_rule_in_the_file_s_words() -> None:
    """may_write and may_step refuse with the text of the rule that refuses, and allow with None."""
    rules = Rules.load(PROJECT_DIR / "ownership.yaml")
    assert rules.may_write("amounts.net", "HUB", "sales") == "fields.amounts.net: owner ERP, writers []"
    assert rules.may_write("lines.30.unit", "MES", "operator") == "fields.lines.*.unit: owner ERP, writers [CRM, EDI, HUB:sales]"
    assert rules.may_write("lines.30.unit", "HUB", "sales") is None
    assert rules.may_step("APPROVED", "RELEASED", "HUB", "planner") is None
    assert rules.may_step("APPROVED", "RELEASED", "MES", "supervisor") == \
        "status.steps: APPROVED>RELEASED is allowed for [HUB:planner] only"
    assert rules.may_step("RELEASED", "CANCELLED", "MES", "supervisor") == \
        "status.cancel: only [ERP, HUB:sales_manager] may cancel"
    assert rules.may_create("HUB", "sales") and not rules.may_create("HUB", "planner")
