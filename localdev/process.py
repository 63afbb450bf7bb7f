"""Starting, finding and stopping the local servers' processes, by PID (psutil underneath).

Every local server (Kafka, PostgreSQL, Mosquitto, the sandboxes) is one detached process
whose PID is written to a file; ``stop`` ends exactly that PID (SIGTERM, then SIGKILL). A
PID file whose process is gone, a zombie, or a reused PID running something else counts as
nothing running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import psutil

#: Processes this Python process started: holding the Popen lets ``alive`` reap them, so a
#: stopped child does not linger as our zombie.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(cmd: Sequence[str | Path], *, log: Path, pidfile: Path, cwd: Path | None = None,
          env: Mapping[str, str] | None = None) -> int:
    """Start ``cmd`` detached (its own session: it outlives the CLI and its Ctrl-C), output to
    ``log`` (truncated: its tail tells this start's story), its PID written to ``pidfile``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, env=dict(env) if env is not None else None,
                                start_new_session=True)
    _children[proc.pid] = proc
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited; it only waits to be collected)."""
    child = _children.get(pid)
    if child is not None:  # our own child: poll() also reaps it
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it is gone or not readable)."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def recorded_pid(pidfile: Path, *, marker: str | None = None) -> int | None:
    """The live PID recorded in ``pidfile``; with ``marker``, only if its command line has that
    argument (a reused PID running something else is not ours)."""
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    if not alive(pid):
        return None
    if marker is not None and pid not in _children and marker not in cmdline(pid):
        return None
    return pid


def find(marker: str, *, also: str | None = None) -> list[int]:
    """Live PIDs whose command line has the argument ``marker`` (and ``also``, when given): finds a
    server whose PID file was lost, so it is never orphaned."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        args = proc.info.get("cmdline") or []
        if marker in args and (also is None or also in args) and alive(proc.info["pid"]):
            found.append(proc.info["pid"])
    return found


def stop(pids: Sequence[int], *, timeout: float = 30.0) -> list[int]:
    """End ``pids``: SIGTERM (a controlled shutdown), then SIGKILL after ``timeout``; the PIDs."""
    pids = [pid for pid in pids if alive(pid)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if wait_until(lambda: not any(map(alive, pids)), wait):
            break
    return list(pids)


def stop_recorded(pidfile: Path, *, marker: str | None = None, timeout: float = 30.0) -> list[int]:
    """Stop the process recorded in ``pidfile`` and remove the file; the PIDs stopped."""
    pid = recorded_pid(pidfile, marker=marker)
    stopped = stop([pid], timeout=timeout) if pid else []
    pidfile.unlink(missing_ok=True)
    return stopped


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def wait_answering(pid: int, port: int, log: Path, what: str, timeout: float) -> None:
    """Until the server ``pid`` started answers on 127.0.0.1:``port``; ConfigError with the end of its
    log when it exits first (or is stopped here after ``timeout`` seconds without an answer)."""
    from hub.errors import ConfigError

    if not wait_until(lambda: answers(port) or not alive(pid), timeout):
        stop([pid])
        raise ConfigError(f"{what} did not answer on 127.0.0.1:{port} within {timeout:.0f} s; "
                          f"end of {log}:\n{tail(log)}")
    if not alive(pid):
        raise ConfigError(f"{what} exited during startup; end of {log}:\n{tail(log)}")


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("(no log)" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class ServerStatus:
    """A local server as seen from outside: what it is, its folder, its PID and where it answers."""

    #: What it is, for a person: "local Mosquitto", "sandbox MES", ...
    what: str
    #: The folder it keeps its files in.
    folder: Path
    #: Its PID, while it runs.
    pid: int | None
    #: Where it answers (a URL), while it runs.
    address: str | None = None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.pid is not None

    def text(self) -> str:
        """One line for a person."""
        if not self.running:
            return f"{self.what} in {self.folder}: not running"
        return f"{self.what} in {self.folder}: pid {self.pid}" + (f", {self.address}" if self.address else "")
