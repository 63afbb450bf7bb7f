"""Every version of every Avro schema in the repository, loaded once and looked up by name,
version or fingerprint.

Layout: ``schemas/<name>/v<N>.avsc``, one folder per event type, versions numbered from 1
without gaps, every version a self-contained record schema with the same full name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
from fastavro.schema import to_parsing_canonical_form

from hub.errors import SchemaError

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


def fingerprint(canonical_form: str) -> bytes:
    """The CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, 8 bytes
    little-endian, as single-object encoding writes it (fastavro computes it)."""
    return bytes.fromhex(fastavro.schema.fingerprint(canonical_form, "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one event type's schema. Treat ``parsed`` and ``raw`` as read-only."""

    name: str
    """The event type: the schema's folder name, e.g. ``order_snapshot``."""
    version: int
    """The N of ``v<N>.avsc``; 0 for a writer schema fetched from a registry that matches no file."""
    full_name: str
    """The record's namespace-qualified name, e.g. ``orderhub.OrderSnapshot``."""
    path: Path | None
    """The ``.avsc`` file; None when the schema came from a registry."""
    parsed: dict[str, Any] = field(repr=False, compare=False)
    """The schema as ``fastavro.parse_schema`` returns it, ready for the reader and writer."""
    canonical_form: str = field(repr=False)
    """The Avro Parsing Canonical Form: what the fingerprint is taken of."""
    fingerprint: bytes
    """CRC-64-AVRO of the canonical form, 8 bytes little-endian, as single-object encoding writes it."""
    raw: dict[str, Any] = field(repr=False, compare=False)
    """The schema JSON as written in the file (or sent by the registry)."""

    @property
    def fingerprint_int(self) -> int:
        """The fingerprint as an unsigned int (Java's ``parsingFingerprint64`` is the same bits, signed)."""
        return int.from_bytes(self.fingerprint, "little")

    @property
    def label(self) -> str:
        """``name vN``, for messages."""
        return f"{self.name} v{self.version}"

    @classmethod
    def from_json(cls, raw: Any, *, name: str, version: int, path: Path | None = None) -> SchemaVersion:
        """Parse one record schema; SchemaError names ``path`` (or the name) when it is not one."""
        where = str(path) if path else f"{name} v{version}"
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise SchemaError(f"{where}: not an Avro record schema (top level must be a record)")
        try:
            parsed = fastavro.parse_schema(raw, {})  # a fresh name table: every version redefines the names
            canonical = to_parsing_canonical_form(raw)
        except Exception as exc:  # fastavro raises several unrelated types for a bad schema
            raise SchemaError(f"{where}: invalid Avro schema: {exc}") from exc
        return cls(
            name=name,
            version=version,
            full_name=parsed["name"],
            path=path,
            parsed=parsed,
            canonical_form=canonical,
            fingerprint=fingerprint(canonical),
            raw=raw,
        )


def schema_folders(root: str | Path) -> list[Path]:
    """The event-type folders under a schemas folder, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise SchemaError(f"schemas folder {root} does not exist")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def load_schema_folder(folder: Path) -> tuple[SchemaVersion, ...]:
    """Every version in one event-type folder, checked: numbered 1..N and one full name throughout."""
    numbered: dict[int, Path] = {}
    for file in folder.glob("*.avsc"):
        match = _VERSION_FILE.fullmatch(file.name)
        if not match:
            raise SchemaError(f"{file}: schema files must be named v<N>.avsc")
        numbered[int(match.group(1))] = file
    if not numbered:
        raise SchemaError(f"{folder}: no v<N>.avsc files")
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise SchemaError(f"{folder}: versions {sorted(numbered)} have a gap; they must run 1..N")
    versions = []
    for number in sorted(numbered):
        path = numbered[number]
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"{path}: not readable JSON: {exc}") from exc
        versions.append(SchemaVersion.from_json(raw, name=folder.name, version=number, path=path))
    full_names = {v.full_name for v in versions}
    if len(full_names) > 1:
        names = sorted(full_names)
        raise SchemaError(f"{folder}: versions name different records {names}; keep one full name")
    return tuple(versions)


class SchemaStore:
    """All schema versions of a schemas folder; immutable once loaded."""

    def __init__(self, versions: dict[str, tuple[SchemaVersion, ...]]) -> None:
        self._versions = dict(versions)
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._by_full_name: dict[str, str] = {}
        for name, history in self._versions.items():
            for version in history:
                # equal canonical forms read identically, so the first version is as good as any
                self._by_fingerprint.setdefault(version.fingerprint, version)
            owner = self._by_full_name.setdefault(history[0].full_name, name)
            if owner != name:
                raise SchemaError(f"schema folders {owner} and {name} both define {history[0].full_name}")

    @classmethod
    def load(cls, path: str | Path) -> SchemaStore:
        """Load and check every folder under ``path``; SchemaError lists every broken folder."""
        versions, problems = {}, []
        for folder in schema_folders(path):
            try:
                versions[folder.name] = load_schema_folder(folder)
            except SchemaError as exc:
                problems.append(str(exc))
        if problems:
            raise SchemaError("\n".join(problems))
        return cls(versions)

    def names(self) -> tuple[str, ...]:
        """The event types, sorted."""
        return tuple(sorted(self._versions))

    def versions(self, name: str) -> tuple[SchemaVersion, ...]:
        """Every version of ``name``, oldest first."""
        try:
            return self._versions[name]
        except KeyError:
            raise SchemaError(f"no schema named {name!r}; known: {', '.join(self.names())}") from None

    def latest(self, name: str) -> SchemaVersion:
        """The newest version of ``name``."""
        return self.versions(name)[-1]

    def get(self, name: str, version: int) -> SchemaVersion:
        """Version ``version`` of ``name``."""
        history = self.versions(name)
        if not 1 <= version <= len(history):
            raise SchemaError(f"{name} has versions 1..{len(history)}, not {version}")
        return history[version - 1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version whose 8-byte little-endian CRC-64-AVRO fingerprint this is, if any."""
        return self._by_fingerprint.get(bytes(fingerprint))

    def name_of(self, full_name: str) -> str | None:
        """The event type whose record has this full name, if any."""
        return self._by_full_name.get(full_name)
