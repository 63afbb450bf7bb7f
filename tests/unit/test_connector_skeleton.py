"""`orderhub connectors new NAME` writes a connector that passes the contract kit as generated,
and the kit catches a connector that breaks its contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hub.cli import main
from hub.settings import PROJECT_DIR


def run_kit(folder: Path, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The generated connector's tests (the contract kit), with ``path`` (default: the folder) importable."""
    env = {**os.environ, "PYTHONPATH": f"{path or folder}{os.pathsep}{PROJECT_DIR}"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=300)


def test_a_new_connector_installs_registers_and_passes_the_contract_kit(tmp_path: Path, capsys) -> None:
    """The generated skeleton is a package that pip installs, whose entry point `orderhub connectors list`
    finds, and whose six contract tests pass as generated."""
    target = tmp_path / "orderhub-acme"
    assert main(["connectors", "new", "acme", "--dir", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert {p.name for p in (target / "orderhub_acme").iterdir()} >= {
        "__init__.py", "config.py", "mapping.py", "source.py", "sink.py", "connector.py"}
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(target)],
                   check=True, capture_output=True, timeout=300)
    listed = subprocess.run([sys.executable, "-m", "hub.cli", "connectors", "list"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{PROJECT_DIR}"}, timeout=120)
    assert "acme  system EDI  orderhub_acme.connector.AcmeConnector" in listed.stdout, listed.stdout + listed.stderr
    done = run_kit(target, site)
    assert done.returncode == 0 and "6 passed" in done.stdout, done.stdout + done.stderr


def test_the_kit_fails_a_sink_that_writes_twice(tmp_path: Path) -> None:
    """A sink that does not look the order up first makes a second outside order on redelivery: the kit says so."""
    target = tmp_path / "orderhub-acme"
    assert main(["connectors", "new", "acme", "--dir", str(target)]) == 0
    sink = target / "orderhub_acme" / "sink.py"
    written = sink.read_text().replace("    if target.exists():", "    if False:  # no look-up first\n        pass\n    if target.exists():\n        target = outbox / f\"{release.order_id}-again.json\"\n    if False:")
    assert written != sink.read_text()
    sink.write_text(written)
    done = run_kit(target)
    assert done.returncode == 1 and "1 failed, 5 passed" in done.stdout, done.stdout
    assert "FAILED tests/test_contract.py::TestAcmeContract::test_a_redelivered_record_makes_one_outside_object" in done.stdout


def test_a_bad_connector_name_is_refused(tmp_path: Path) -> None:
    """Names that cannot be a Python package or an entry point are refused before anything is written."""
    assert main(["connectors", "new", "Bad-Name", "--dir", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
