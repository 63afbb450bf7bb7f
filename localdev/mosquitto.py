"""A real local Mosquitto MQTT broker on 127.0.0.1, from Debian's ``mosquitto`` package.

The shop floor's progress and quality messages reach the MES connector through it. It listens
on 127.0.0.1 only, lets anyone in (nothing but this machine can connect), keeps no persistence
file and logs to its output, so it writes no files of its own. Started as root, Debian's broker
drops its privileges to the ``mosquitto`` user after reading the configuration; that user
needs nothing of ours, and where the user does not exist it stays root (``user root``).

Layout::

    <state_dir>/mosquitto/mosquitto.conf   rewritten by up() before each start
    <state_dir>/mosquitto/mosquitto.pid    the broker's PID (removed by down())
    <state_dir>/mosquitto/mosquitto.log    its output
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
from pathlib import Path

from hub.errors import ConfigError
from localdev import process

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")  # Debian puts it in sbin, often off PATH
_LISTENER = re.compile(r"^listener (\d+) 127\.0\.0\.1$", re.MULTILINE)


def binary() -> Path:
    """The mosquitto broker binary, or ConfigError saying how to install it."""
    found = shutil.which("mosquitto") or next((p for p in _SEARCH if os.access(p, os.X_OK)), None)
    if found is None:
        raise ConfigError("the Mosquitto MQTT broker is not installed: `apt-get install mosquitto`")
    return Path(found)


def url(port: int) -> str:
    """The MQTT URL of a local broker on ``port``."""
    return f"mqtt://127.0.0.1:{port}"


def folder(state_dir: Path) -> Path:
    """The broker's folder under ``state_dir`` (absolute: its config path identifies the process)."""
    return Path(state_dir).resolve() / "mosquitto"


def up(state_dir: Path, port: int) -> str:
    """Start the broker unless it already runs on ``state_dir``; return its URL.

    A broker already running there is kept, on the port it was started with.
    """
    home, mosquitto = folder(state_dir), binary()
    config = home / "mosquitto.conf"
    if (pid := process.recorded_pid(home / "mosquitto.pid", marker=str(config))) is not None:
        running_port = _configured_port(config) or port
        process.wait_answering(pid, running_port, home / "mosquitto.log", "Mosquitto", START_TIMEOUT)
        return url(running_port)
    if process.answers(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is taken by a process that is not this local Mosquitto")
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(_config(port))
    pid = process.spawn([mosquitto, "-c", config], log=home / "mosquitto.log", pidfile=home / "mosquitto.pid")
    process.wait_answering(pid, port, home / "mosquitto.log", "Mosquitto", START_TIMEOUT)
    return url(port)


def down(state_dir: Path) -> list[int]:
    """Stop the broker running on ``state_dir``; the PIDs stopped."""
    home = folder(state_dir)
    return process.stop_recorded(home / "mosquitto.pid", marker=str(home / "mosquitto.conf"), timeout=STOP_TIMEOUT)


def status(state_dir: Path) -> process.ServerStatus:
    """Whether the broker runs on ``state_dir``, and where."""
    home = folder(state_dir)
    config = home / "mosquitto.conf"
    pid = process.recorded_pid(home / "mosquitto.pid", marker=str(config))
    return process.ServerStatus("local Mosquitto", home, pid, url(_configured_port(config)) if pid else None)


def _config(port: int) -> str:
    lines = [
        "# written by orderhub's localdev.mosquitto; rewritten on every start",
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if os.geteuid() == 0 and not _user_exists("mosquitto"):
        lines.append("user root")  # nobody to drop privileges to; it writes no files anyway
    return "\n".join(lines) + "\n"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _configured_port(config: Path) -> int | None:
    try:
        match = _LISTENER.search(config.read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


