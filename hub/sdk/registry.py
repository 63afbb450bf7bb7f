"""Finding connectors and their instances: entry points and one declared file.

Every connector, built-in or third-party, is registered the same way: an entry point in the
group ``orderhub.connectors`` naming its class (``crm = "connectors.crm:CrmConnector"``). A
connector that fails to import fails start-up loudly, saying how to install what it lacks.

The instances a hub runs are declared in one file (``connectors.yaml``)::

    connectors:
      - name: crm-main            # instance name: its consumer groups, its state file
        kind: crm                 # an entry point name
        config:                   # validated by the connector's Config; ${VAR} from the environment
          instance_url: https://127.0.0.1:8443
          session_id: ${ORDERHUB_CRM_SESSION_ID}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any


import yaml
from pydantic import SecretStr, ValidationError

from hub.errors import ConfigError
from hub.sdk.connector import Connector, ConnectorConfig
from hub.settings import expand_environment

ENTRY_POINT_GROUP = "orderhub.connectors"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def installed() -> dict[str, type[Connector]]:
    """Every installed connector by kind; ConfigError when one cannot be imported."""
    found: dict[str, type[Connector]] = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            cls = point.load()
        except ImportError as exc:
            raise ConfigError(f"connector {point.name!r} ({point.value}) cannot be imported: {exc}. "
                              f"Install what it needs, e.g. pip install 'orderhub[{point.name}]'") from exc
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise ConfigError(f"entry point {point.name!r} ({point.value}) is not a hub.sdk.Connector")
        found[point.name] = cls
    return found


@dataclass(frozen=True)
class Instance:
    """One declared connector instance, its configuration validated."""

    #: Instance name (consumer groups, the state file).
    name: str
    #: The connector class.
    connector: type[Connector]
    #: Its validated configuration.
    config: ConnectorConfig

    def build(self) -> Connector:
        """A new connector object for this instance."""
        return self.connector(self.config)


def load_instances(path: Path, connectors: dict[str, type[Connector]] | None = None) -> list[Instance]:
    """Read and validate the declared instances; ConfigError names every problem of the file."""
    try:
        document = _expanded(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    connectors = installed() if connectors is None else connectors
    instances, problems = [], []
    for n, raw in enumerate(document.get("connectors") or [], 1):
        name, kind = raw.get("name"), raw.get("kind")
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"entry {n}: name {name!r} must be lower-case letters, digits and dashes")
            continue
        if kind not in connectors:
            problems.append(f"{name}: kind {kind!r} is not installed (installed: {', '.join(connectors) or 'none'})")
            continue
        try:
            config = connectors[kind].Config.model_validate(raw.get("config") or {})
        except ValidationError as exc:
            problems += [f"{name}: config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            continue
        instances.append(Instance(name, connectors[kind], config))
    names = [i.name for i in instances]
    problems += [f"instance name {x} is declared twice" for x in sorted({x for x in names if names.count(x) > 1})]
    if problems:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems))
    return instances


def _expanded(value: Any) -> Any:
    """Every string value with ``${VAR}`` taken from the environment (comments are not values)."""
    if isinstance(value, str):
        return expand_environment(value)
    if isinstance(value, dict):
        return {k: _expanded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expanded(v) for v in value]
    return value


def config_keys(connector: type[Connector]) -> list[str]:
    """``name: type = default`` for each config key; secrets show no default value."""
    lines = []
    for name, field in connector.Config.model_fields.items():
        annotation = getattr(field.annotation, "__name__", str(field.annotation)).replace("typing.", "")
        secret = field.annotation is SecretStr or "SecretStr" in str(field.annotation)
        default = "" if field.is_required() else (" = <secret>" if secret else f" = {field.default!r}")
        lines.append(f"{name}: {annotation}{default}" + (f"  # {field.description}" if field.description else ""))
    return lines


def describe(connectors: dict[str, type[Connector]]) -> str:
    """``orderhub connectors list``: each installed connector, its system, hooks and config keys."""
    out = []
    for kind, cls in connectors.items():
        sides = (["source (polls)"] if cls.has_source() else []) + [f"sink ({', '.join(cls.sink_hooks())})"
                                                                    if cls.sink_hooks() else ""]
        out.append(f"{kind}  system {cls.system}  {cls.__module__}.{cls.__qualname__}  "
                   f"{' + '.join(s for s in sides if s) or 'no source, no sink'}")
        out += [f"    {line}" for line in config_keys(cls)]
    return "\n".join(out) if out else "no connectors installed"


