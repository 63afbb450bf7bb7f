"""All of orderhub's configuration, declared once and typed.

This is the only module that reads environment variables. Every name is prefixed
``ORDERHUB_``: ``ORDERHUB_BOOTSTRAP_SERVERS=broker:9092`` points the hub at any
existing Kafka cluster; without it the hub uses the local broker that
``orderhub kafka up`` starts on 127.0.0.1.

Every field has a description: README.md's configuration table is rendered from them
(``python -m hub.settings --readme`` rewrites it; a test fails when it is stale).
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from hub.domain.rules import Rules

#: The checkout that holds ``schemas/``, ``topics.yaml`` and ``deploy/``.
PROJECT_DIR = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Typed settings, validated when the object is built."""

    model_config = SettingsConfigDict(env_prefix="ORDERHUB_", extra="ignore", frozen=True)

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    schema_registry_url: str | None = Field(
        None,
        description="Confluent Schema Registry URL. Set: writers use the Confluent wire format. "
        "Unset: Avro single-object encoding, which needs no registry.",
    )
    schema_registry_user: str | None = Field(
        None, description="User name for the schema registry's HTTP basic auth. Unset: no auth."
    )
    schema_registry_password: SecretStr | None = Field(
        None, description="Password for the schema registry's HTTP basic auth (a secret: never printed)."
    )

    schemas_dir: Path = Field(PROJECT_DIR / "schemas", description="Folder of versioned .avsc files.")
    topics_file: Path = Field(PROJECT_DIR / "topics.yaml", description="The topic declarations.")
    ownership_file: Path = Field(
        PROJECT_DIR / "ownership.yaml", description="Field owners, permitted writers, lifecycle steps, conflict policy."
    )
    workflow_file: Path | None = Field(
        PROJECT_DIR / "workflow.yaml", description="The plant's workflow rules (approvals over amount thresholds); "
        "`none`: no workflow rules."
    )
    clock_file: Path | None = Field(
        None, description="For tests and drills: `orderhub alerts` reads the current time from this file (an ISO "
        "timestamp) instead of the system clock, so time moves when the file does. Unset: the system clock."
    )
    connectors_file: Path = Field(
        Path("connectors.yaml"), description="The connector instances `orderhub connectors run` runs (kind, name, "
        "config; `${VAR}` is taken from the environment). `orderhub up` writes its own for the sandboxes."
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "orderhub",
        description="Downloaded artefacts (Kafka jars). Outside git, safe to delete.",
    )
    state_dir: Path = Field(
        Path.home() / ".local" / "state" / "orderhub",
        description="Local broker data, PID files, worker state and the default SQLite file.",
    )

    topic_namespace: str = Field(
        "",
        description="Prefix of every topic name and of the engine's consumer group, so several isolated "
        "hubs (or test runs) share one cluster. A plain prefix: nothing is put between it and the name, so "
        "give it its own separator, e.g. `staging.`.",
    )

    kafka_version: str = Field("4.4.0", description="Apache Kafka version of the local broker (3.9.x works too).")
    local_kafka_port: int = Field(
        9092, description="Client port of the single local broker; a 3-node cluster uses port+10000 upwards."
    )
    kafka_heap: str = Field("512m", description="-Xmx of each local broker JVM.")

    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the read model, e.g. `postgresql+psycopg://user@host/db`. "
        "Unset: the SQLite file `orderhub.db` in the state folder."
    )

    worker_name: str = Field(
        "worker-0", description="Names this worker's local state folder; give each worker on one host its own."
    )
    commit_interval_s: float = Field(2.8, description="How often a worker commits input offsets.")
    session_timeout_s: float = Field(
        30.0, description="Consumer group session timeout: how long a dead worker keeps its partitions."
    )
    heartbeat_interval_s: float = Field(3.0, description="Consumer group heartbeat interval.")
    producer_linger_s: float = Field(
        0.005, description="How long the worker's producer waits to batch records (bench/: +4% throughput, "
        "lower p99 than 0)."
    )
    project_read_model: bool = Field(
        True, description="Whether the worker also projects accepted changes into the SQL read model."
    )

    smtp_host: str = Field("127.0.0.1", description="The mail server `orderhub notify` sends e-mail through.")
    smtp_port: int = Field(25, description="Its port (plain SMTP; `orderhub up` runs a local sink on 18025).")
    smtp_from: str = Field("orderhub@localhost", description="The sender of notification e-mails.")
    mqtt_host: str = Field("127.0.0.1", description="The MQTT broker notifications for displays are published to.")
    mqtt_port: int = Field(1883, description="Its port.")
    webhook_secret: SecretStr | None = Field(
        None, description="The key webhook notifications are signed with (HMAC-SHA256; a secret: never printed). "
        "Needed when a subscriber has a webhook."
    )

    api_host: str = Field("127.0.0.1", description="Where `orderhub api` listens.")
    api_port: int = Field(8080, description="Its port (the web app and the REST API under /api/v1).")
    api_secret: SecretStr | None = Field(
        None, description="The key API tokens and session cookies are signed with (a secret: never printed). Unset: "
        "a random key kept in `<state_dir>/api/secret`; give every API process of one hub the same."
    )
    public_url: str | None = Field(
        None, description="The address people reach the web app at (e.g. `https://orders.plant.example`): what "
        "work orders' QR codes and notifications link to. Unset: the address the request came to."
    )
    api_token_ttl_s: float = Field(900.0, description="How long an API bearer token is valid.")
    api_session_ttl_s: float = Field(
        36000.0, description="How long a browser session is valid (a shift: the shop floor is not logged out midway)."
    )
    api_answer_timeout_s: float = Field(
        10.0, description="How long a write through the API waits for the engine's decision before it answers 202 "
        "with where to ask again."
    )

    metrics_host: str = Field(
        "127.0.0.1", description="Where each process serves Prometheus `/metrics` (in a container: `0.0.0.0`)."
    )
    metrics_port: int = Field(
        0, description="Its port; 0: one the system picks, so several processes on one host never collide. Every "
        "process writes where it serves to `<state_dir>/metrics/targets/` (Prometheus `file_sd_configs`); -1: none."
    )
    lag_interval_s: float = Field(
        15.0, description="How often `orderhub lag` measures the consumer groups' lag and the read model's backlogs."
    )

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_json: bool = Field(
        False, description="Log one JSON object per line (for log collectors) instead of readable lines; both carry "
        "order_id, order_number and correlation_id where a record of an order is handled (the engine: event_id too)."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_not_empty(cls, value: str) -> str:
        if not [s for s in value.split(",") if s.strip()]:
            raise ValueError("ORDERHUB_BOOTSTRAP_SERVERS must name at least one host:port")
        return value

    @field_validator("workflow_file", "clock_file", mode="before")
    @classmethod
    def _none_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    def rules(self) -> "Rules":
        """The ownership rules with the workflow's (``Rules.load``): what the engine decides by."""
        from hub.domain.rules import Rules

        return Rules.load(self.ownership_file, self.workflow_file)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "CRIT"):
            raise ValueError(f"ORDERHUB_LOG_LEVEL {value!r} is not a logging level")
        return value.upper()

    @property
    def read_model_url(self) -> str:
        """The read model's database URL, defaulting to a SQLite file in the state folder."""
        return self.database_url or f"sqlite:///{self.state_dir / 'orderhub.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built from the environment on first use."""
    return Settings()


# --- the README's configuration table ------------------------------------------------

#: The comments around the generated table in README.md.
README_BEGIN, README_END = "<!-- settings:begin -->", "<!-- settings:end -->"


def markdown_table(settings: type[BaseSettings] = Settings) -> str:
    """Every setting as a Markdown table row: its variable, its declared default and its description.

    Defaults are the declared ones (never the environment's), written the same on every
    machine (``~`` for the home folder, ``<checkout>`` for this project); secrets show no value.
    """
    prefix = settings.model_config.get("env_prefix", "")
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {_default_text(field)} | {description} |")
    return "\n".join(rows)


def readme_with_settings(readme: str) -> str:
    """``readme`` with the text between the settings markers replaced by ``markdown_table()``."""
    head, begin, rest = readme.partition(README_BEGIN)
    _, end, tail = rest.partition(README_END)
    if not begin or not end:
        raise ValueError(f"README.md has no {README_BEGIN} ... {README_END} section")
    return f"{head}{README_BEGIN}\n{markdown_table()}\n{README_END}{tail}"


def _default_text(field: FieldInfo) -> str:
    if SecretStr in (field.annotation, *get_args(field.annotation)):
        return "(secret)"
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        value = _portable_path(value)
    return f"`{value}`" if value != "" else "empty"


def _portable_path(path: Path) -> str:
    """``path`` as the README can show it on any machine."""
    for root, shown in ((PROJECT_DIR, "<checkout>"), (Path.home(), "~")):
        if path.is_relative_to(root):
            return f"{shown}/{path.relative_to(root).as_posix()}"
    return path.as_posix()


def main(argv: list[str] | None = None) -> int:
    """``python -m hub.settings --markdown | --readme``: print the table, or rewrite it in README.md."""
    parser = argparse.ArgumentParser(prog="python -m hub.settings", description=main.__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the configuration table")
    action.add_argument("--readme", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table())
        return 0
    readme = PROJECT_DIR / "README.md"
    readme.write_text(readme_with_settings(readme.read_text()))
    print(f"rewrote the configuration table in {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def expand_environment(text: str) -> str:
    """``${NAME}`` in a declared file (connectors.yaml) replaced by the environment variable NAME, so
    secrets stay out of files; ConfigError names a variable that is not set."""
    import os
    import re

    from hub.errors import ConfigError

    def value(match: "re.Match[str]") -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"${{{name}}} is used but the environment variable {name} is not set")
        return os.environ[name]
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value, text)
