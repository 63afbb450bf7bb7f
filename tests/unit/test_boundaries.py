"""The layout is the architecture: connectors are built on the SDK's public surface alone, and the
product's core does not depend on the local sandboxes or on any connector."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hub.settings import PROJECT_DIR


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted((PROJECT_DIR / "connectors").rglob("*.py")), ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_a_connector_imports_the_hub_only_through_the_sdk(path: Path) -> None:
    """A built-in connector uses nothing of the hub but ``hub.sdk``, exactly as an outside developer's would."""
    hub_imports = {m for m in imported_modules(path) if m == "hub" or m.startswith("hub.")}
    assert hub_imports <= {"hub.sdk"}, f"{path.name} imports {sorted(hub_imports - {'hub.sdk'})}"
    assert not {m for m in imported_modules(path) if m.startswith("localdev")}, "connectors never import the sandboxes"


def test_the_core_does_not_depend_on_sandboxes_or_connectors() -> None:
    """Nothing in hub/ imports localdev/ or connectors/, but the command line, which starts them on request."""
    offenders = {}
    for path in sorted((PROJECT_DIR / "hub").rglob("*.py")):
        if path.name == "cli.py":
            continue
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("localdev", "connectors")}
        if bad:
            offenders[str(path.relative_to(PROJECT_DIR))] = sorted(bad)
    assert offenders == {}
