"""A real local Prometheus server on 127.0.0.1, from Debian's ``prometheus`` package: what the
operations tests scrape the running hub with (and a person can too).

It finds the hub's processes the way ``hub.observability.metrics`` rule 1 says: the ``file_sd`` files
every process writes into ``<state_dir>/metrics/targets/``, with their ``process`` and ``worker``
labels (so several workers on one host, each on a port the system picked, are all scraped). It
scrapes them as job ``orderhub``, evaluates the rules in ``deploy/prometheus/rules/``, and keeps its
data in its folder.

Layout::

    <state_dir>/prometheus/prometheus.yml   rewritten by up() before each start
    <state_dir>/prometheus/data/            its TSDB
    <state_dir>/prometheus/prometheus.pid   the server's PID (removed by down())
    <state_dir>/prometheus/prometheus.log   its output
"""

from __future__ import annotations

import shutil
from pathlib import Path
import yaml

from hub.errors import ConfigError
from hub.settings import PROJECT_DIR
from localdev import process

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
#: The hub's alert rules.
RULES = PROJECT_DIR / "deploy" / "prometheus" / "rules"


def binary() -> Path:
    """The prometheus server binary, or ConfigError saying how to install it."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise ConfigError("Prometheus is not installed: `apt-get install prometheus`")
    return Path(found)


def folder(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "prometheus"


def config(targets: Path, *, interval_s: float) -> dict:
    """The configuration: every process that says where it serves in ``targets`` (a hub's
    ``<state_dir>/metrics/targets``), scraped every ``interval_s``."""
    every = f"{max(1, int(interval_s))}s"
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(RULES / "*.yml")],
        "scrape_configs": [{
            "job_name": "orderhub",
            "file_sd_configs": [{"files": [str(Path(targets).resolve() / "*.json")], "refresh_interval": every}],
        }],
    }


def up(state_dir: Path, port: int, targets: Path, *, interval_s: float = 15.0) -> str:
    """Start Prometheus scraping the hub processes that write where they serve into ``targets``
    (``hub.observability.metrics.targets_dir``); its base URL."""
    home, prometheus = folder(state_dir), binary()
    if process.answers(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is taken")
    home.mkdir(parents=True, exist_ok=True)
    path = home / "prometheus.yml"
    path.write_text(yaml.safe_dump(config(targets, interval_s=interval_s), sort_keys=False))
    pid = process.spawn([prometheus, f"--config.file={path}", f"--storage.tsdb.path={home / 'data'}",
                         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                        log=home / "prometheus.log", pidfile=home / "prometheus.pid")
    process.wait_answering(pid, port, home / "prometheus.log", "Prometheus", START_TIMEOUT)
    return f"http://127.0.0.1:{port}"


def down(state_dir: Path) -> list[int]:
    """Stop the server started on ``state_dir``; the PIDs stopped."""
    home = folder(state_dir)
    return process.stop_recorded(home / "prometheus.pid", marker=str(home / "prometheus.yml"), timeout=STOP_TIMEOUT)
