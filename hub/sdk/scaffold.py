"""``orderhub connectors new NAME``: a working connector skeleton with its contract tests.

The skeleton is a real connector against a simple outside system (two folders: order
documents in, released orders out), built only on ``hub.sdk``, registered by entry point like
the built-ins, with the contract kit wired to it. ``pip install -e <folder>`` registers it;
``pytest <folder>/tests`` runs the kit.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from hub.errors import InvalidInput

SKELETON = Path(__file__).parent / "skeleton"


def new_connector(name: str, target: Path) -> list[Path]:
    """Write the skeleton of connector ``name`` into ``target`` (which must not exist); the files written."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,30}", name):
        raise InvalidInput(f"connector name {name!r}: lower-case letters, digits and _, starting with a letter")
    if target.exists():
        raise InvalidInput(f"{target} exists; choose a new folder")
    words = {"name": name, "Name": "".join(part.capitalize() for part in name.split("_"))}
    written = []
    for template in sorted(SKELETON.rglob("*.tmpl")):
        relative = template.relative_to(SKELETON).with_suffix("")
        parts = [f"orderhub_{name}" if part == "connector" else part for part in relative.parts]
        path = target.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template.read_text()).substitute(words))
        written.append(path)
    return written
