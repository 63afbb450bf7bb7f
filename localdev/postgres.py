"""A real local PostgreSQL on 127.0.0.1, for tests and for users without a server.

It uses the installed server binaries (``pg_config --bindir``, else /usr/lib/postgresql/*/bin)
and trusts every connection, so it listens on 127.0.0.1 only and has no Unix socket. The
server refuses to run as root: as root, the server commands run as the ``postgres`` user,
who must be able to reach ``state_dir``; otherwise they run as the current user.

Layout::

    <state_dir>/postgres/           the cluster (initdb), owned by the user the server runs as
        postmaster.pid              written by the server: its PID on line 1, its port on line 4
        server.log                  the server's output (pg_ctl -l)
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hub.errors import ConfigError
from hub.settings import Settings
from localdev import process

DEFAULT_PORT = 55432
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
SERVER_USER = "postgres"  # the OS user the server runs as when we are root
ROLE = DATABASE = "orderhub"


def data_dir(settings: Settings) -> Path:
    """The cluster's folder."""
    return settings.state_dir / "postgres"


def url(port: int = DEFAULT_PORT) -> str:
    """The SQLAlchemy URL of the orderhub database on a local server at ``port``."""
    return f"postgresql+psycopg://{ROLE}@127.0.0.1:{port}/{DATABASE}"


def bindir() -> Path:
    """The folder of the PostgreSQL server binaries, or ConfigError if there are none."""
    candidates = []
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    installed = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]  # Debian/Ubuntu: newest first
    candidates += sorted(installed, key=lambda p: int("0" + p.parent.name.split(".")[0]), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ConfigError("PostgreSQL server binaries (initdb, pg_ctl) not found: install them with "
                      "`apt-get install postgresql`, or point ORDERHUB_DATABASE_URL at an existing server")


def up(settings: Settings, port: int = DEFAULT_PORT) -> str:
    """Start the local server unless it already runs, create role and database; return its URL.

    A server already running on ``state_dir`` is kept, on whatever port it was started with.
    """
    bins, data = bindir(), data_dir(settings)
    running = _postmaster(data)
    if running is None:
        if not (data / "PG_VERSION").is_file():
            _initdb(bins, data)
        if process.answers(port):
            raise ConfigError(f"port {port} on 127.0.0.1 is taken by a process that is not this local PostgreSQL")
        done = _run_as_server([bins / "pg_ctl", "start", "-D", data, "-l", data / "server.log", "-w",
                               "-t", str(int(START_TIMEOUT)), "-o", f"-p {port}"], timeout=START_TIMEOUT + 10)
        running = _postmaster(data)
        if done.returncode != 0 or running is None:
            raise ConfigError(f"local PostgreSQL did not start: {done.stdout}{done.stderr}\n"
                              f"end of {data / 'server.log'}:\n{process.tail(data / 'server.log')}")
    port = running[1]
    _wait_ready(bins, port, time.monotonic() + START_TIMEOUT)
    _ensure_database(bins, port)
    return url(port)


def down(settings: Settings) -> list[int]:
    """Stop the local server (fast shutdown: no new work, open sessions end); return its PID."""
    data = data_dir(settings)
    running = _postmaster(data)
    if running is None:
        return []
    pid = running[0]
    pg_ctl = bindir() / "pg_ctl"
    _run_as_server([pg_ctl, "stop", "-D", data, "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT))],
                   timeout=STOP_TIMEOUT + 10)
    if not process.wait_until(lambda: not _alive(pid), 5.0):
        _run_as_server([pg_ctl, "stop", "-D", data, "-m", "immediate", "-w"], timeout=STOP_TIMEOUT)
        if not process.wait_until(lambda: not _alive(pid), STOP_TIMEOUT):
            raise ConfigError(f"local PostgreSQL (pid {pid}) did not stop; see {data / 'server.log'}")
    return [pid]


@dataclass(frozen=True)
class PostgresStatus(process.ServerStatus):
    """The local server as seen from outside; ``initialized`` once a cluster exists in its folder."""

    initialized: bool = False

    def text(self) -> str:
        """One line for a person."""
        return super().text() if self.initialized else f"no local PostgreSQL in {self.folder}"

def status(settings: Settings) -> PostgresStatus:
    """Report whether the local server exists and runs, and where."""
    data = data_dir(settings)
    running = _postmaster(data)
    return PostgresStatus("local PostgreSQL", data, running[0] if running else None,
                          url(running[1]) if running else None, initialized=(data / "PG_VERSION").is_file())


def _initdb(bins: Path, data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(data, SERVER_USER, SERVER_USER)
        if _run_as_server(["test", "-w", data]).returncode != 0:
            raise ConfigError(f"the {SERVER_USER} user cannot write {data}: a parent folder is closed to "
                              f"other users; set ORDERHUB_STATE_DIR to a folder it can reach")
    done = _run_as_server([bins / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                           "--locale=C"], timeout=120)
    if done.returncode != 0:
        raise ConfigError(f"initdb failed in {data}:\n{done.stdout}{done.stderr}")
    (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    with (data / "postgresql.conf").open("a") as conf:
        # No Unix socket: its default folder may be missing or not ours; TCP is enough.
        conf.write("\n# orderhub\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")


def _ensure_database(bins: Path, port: int) -> None:
    def psql(sql: str) -> str:
        done = subprocess.run([bins / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
                               "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ConfigError(f"psql on 127.0.0.1:{port} failed: {sql}\n{done.stderr}")
        return done.stdout.strip()

    if not psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
        psql(f"CREATE ROLE {ROLE} LOGIN")
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
        psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def _wait_ready(bins: Path, port: int, deadline: float) -> None:
    cmd = [bins / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres"]
    if not process.wait_until(lambda: subprocess.run(cmd).returncode == 0, deadline - time.monotonic()):
        raise ConfigError(f"local PostgreSQL on 127.0.0.1:{port} did not accept connections in time")


def _run_as_server(cmd: list[str | Path], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise ConfigError("running as root needs runuser (util-linux) to start PostgreSQL as postgres")
        cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
    # cwd "/": the server user may not be allowed into ours; stdin closed so nothing waits on it.
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd="/",
                          stdin=subprocess.DEVNULL, timeout=timeout)


def _postmaster(data: Path) -> tuple[int, int] | None:
    """(PID, port) of the server running on ``data``, from postmaster.pid, or None."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if _alive(pid) else None


def _alive(pid: int) -> bool:
    return process.alive(pid)
