"""Connectors are found by entry point and declared in one file: the built-ins register like any
other, a declared file is validated whole, secrets come from the environment and are never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import main
from hub.errors import ConfigError
from hub.sdk import registry
from hub.settings import PROJECT_DIR

EXAMPLE = PROJECT_DIR / "deploy" / "local" / "connectors.example.yaml"


def test_the_built_in_connectors_are_registered_by_entry_point() -> None:
    """crm, erp and mes are found through the orderhub.connectors entry point group, each naming its system."""
    found = registry.installed()
    assert {kind: cls.system for kind, cls in found.items() if kind in ("crm", "erp", "mes")} == {
        "crm": "CRM", "erp": "ERP", "mes": "MES"}


def test_the_example_file_validates_with_its_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each declared instance gets its connector's typed config; a ${VAR} is read from the environment."""
    for name in ("ORDERHUB_CRM_SESSION_ID", "ORDERHUB_CRM_WEBHOOK_SECRET", "ORDERHUB_ERP_PASSWORD"):
        monkeypatch.setenv(name, f"value-of-{name}")
    instances = registry.load_instances(EXAMPLE)
    assert [(i.name, i.connector.kind) for i in instances] == [("crm-main", "crm"), ("erp-main", "erp"),
                                                                ("mes-plant-1", "mes")]
    assert instances[1].config.password.get_secret_value() == "value-of-ORDERHUB_ERP_PASSWORD"
    assert "value-of" not in repr(instances[1].config)


def test_a_missing_variable_and_every_bad_entry_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file is refused whole, naming the unset variable, or every unknown kind, bad key and repeated name."""
    monkeypatch.delenv("ORDERHUB_ERP_PASSWORD", raising=False)
    monkeypatch.setenv("ORDERHUB_CRM_SESSION_ID", "s")
    monkeypatch.setenv("ORDERHUB_CRM_WEBHOOK_SECRET", "w")
    with pytest.raises(ConfigError, match="ORDERHUB_ERP_PASSWORD is not set"):
        registry.load_instances(EXAMPLE)
    bad = tmp_path / "connectors.yaml"
    bad.write_text("connectors:\n"
                   "  - {name: one, kind: nope}\n"
                   "  - {name: two, kind: erp, config: {service_url: x, user: u, password: p, colour: red}}\n"
                   "  - {name: Bad Name, kind: erp}\n"
                   "  - {name: four, kind: mes, config: {opc_url: opc.tcp://x:4840}}\n"
                   "  - {name: four, kind: mes, config: {opc_url: opc.tcp://x:4840}}\n")
    with pytest.raises(ConfigError) as refused:
        registry.load_instances(bad)
    text = str(refused.value)
    assert "one: kind 'nope' is not installed" in text and "two: config.colour: Extra inputs are not permitted" in text
    assert "name 'Bad Name'" in text and "instance name four is declared twice" in text


def test_connectors_list_shows_config_keys_but_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """`orderhub connectors list` names each connector's keys; a secret key shows no default value."""
    assert main(["connectors", "list"]) == 0
    out = capsys.readouterr().out
    assert "crm  system CRM" in out and "session_id: SecretStr" in out and "webhook_secret:" in out
    assert "password: SecretStr" in out
