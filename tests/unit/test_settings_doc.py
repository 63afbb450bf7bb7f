"""README.md's configuration table is generated from hub/settings.py and kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from hub.settings import PROJECT_DIR, README_BEGIN, README_END, Settings, markdown_table, readme_with_settings

REGENERATE = ".venv/bin/python -m hub.settings --readme"


def test_readme_holds_the_generated_table() -> None:
    """The text between README.md's settings markers is exactly what hub/settings.py renders."""
    readme = (PROJECT_DIR / "README.md").read_text()
    assert readme_with_settings(readme) == readme, (
        f"README.md's configuration table differs from hub/settings.py: run `{REGENERATE}` and commit README.md")


def test_every_setting_has_a_description() -> None:
    """A setting without a description would be an empty row in the README, so none may lack one."""
    assert [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()] == []


def test_every_setting_has_a_row_under_its_variable() -> None:
    """Each field appears once, as its ORDERHUB_ environment variable, the local Kafka port and ownership file too."""
    table = markdown_table()
    for name in Settings.model_fields:
        assert table.count(f"| `ORDERHUB_{name.upper()}` |") == 1, name
    assert "| `ORDERHUB_OWNERSHIP_FILE` | `<checkout>/ownership.yaml` |" in table
    assert "| `ORDERHUB_LOCAL_KAFKA_PORT` | `9092` |" in table


def test_topic_namespace_says_it_needs_its_own_separator() -> None:
    """The namespace's row says it is a plain prefix and shows a separator in its example."""
    [row] = [line for line in markdown_table().splitlines() if "ORDERHUB_TOPIC_NAMESPACE" in line]
    assert "plain prefix" in row and "`staging.`" in row


def test_defaults_are_the_declared_ones_on_any_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table shows declared defaults, not the environment's values, and no machine's own paths."""
    before = markdown_table()
    monkeypatch.setenv("ORDERHUB_BOOTSTRAP_SERVERS", "elsewhere:19092")
    assert markdown_table() == before
    assert "elsewhere" not in before and str(PROJECT_DIR) not in before and f"{Path.home()}/" not in before
    assert "| `ORDERHUB_STATE_DIR` | `~/.local/state/orderhub` |" in before


def test_secrets_never_show_a_value() -> None:
    """A secret setting's row says it is secret and never shows its default, even when it has one."""
    class WithToken(Settings):
        """Settings with a secret that has a default."""

        api_token: SecretStr = Field(SecretStr("s3cr3t-default"), description="A token.")

    table = markdown_table(WithToken)
    assert "| `ORDERHUB_API_TOKEN` | (secret) | A token. |" in table and "s3cr3t" not in table
    assert "| `ORDERHUB_SCHEMA_REGISTRY_PASSWORD` | (secret) |" in markdown_table()


def test_descriptions_cannot_break_the_table() -> None:
    """A ``|`` in a description is escaped, so the row keeps three cells."""
    class WithPipe(Settings):
        """Settings with a description holding a pipe."""

        pipe: str = Field("a", description="either | or")

    assert "| `ORDERHUB_PIPE` | `a` | either \\| or |" in markdown_table(WithPipe)


def test_a_readme_without_markers_is_refused() -> None:
    """Regenerating a README that lost its markers fails, naming them, instead of dropping the table."""
    with pytest.raises(ValueError, match=README_BEGIN):
        readme_with_settings("# orderhub\n")
    assert readme_with_settings(f"a\n{README_BEGIN}\nold\n{README_END}\nb\n") == \
        f"a\n{README_BEGIN}\n{markdown_table()}\n{README_END}\nb\n"
