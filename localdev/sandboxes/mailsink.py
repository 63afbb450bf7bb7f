"""The local mail sink: a real SMTP server (aiosmtpd) that keeps every message it accepts in a
Maildir, so `orderhub up` has somewhere to send notification e-mails and a person (or a test)
can read them: ``<state_dir>/mailsink/Maildir`` (any mail client reads a Maildir; so does
``python -m mailbox``), or ``messages(state_dir)``.

It accepts every sender and recipient on 127.0.0.1 only, and relays nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import logging
import mailbox
import os
import signal
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from hub.errors import ConfigError
from hub.settings import PROJECT_DIR
from localdev import process

START_TIMEOUT = 30.0

log = logging.getLogger(__name__)


def folder(state_dir: Path) -> Path:
    return Path(state_dir) / "mailsink"


def maildir(state_dir: Path) -> Path:
    """Where the accepted messages are."""
    return folder(state_dir) / "Maildir"


class _Keep:
    """aiosmtpd's handler: every message into the Maildir, as it was received."""

    def __init__(self, box: mailbox.Maildir) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        received = envelope.original_content or envelope.content
        # the bytes as received (parsing and writing the message again would fold its headers anew)
        self.box.add(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode() + received)
        log.info("kept a message to %s: %s", envelope.rcpt_tos,
                 email.message_from_bytes(received, policy=email.policy.default).get("Subject"))
        return "250 Message accepted for delivery"


async def serve(state_dir: Path, port: int) -> None:
    """Run the sink in the foreground until SIGTERM or SIGINT."""
    from aiosmtpd.controller import Controller

    box = mailbox.Maildir(maildir(state_dir), create=True)
    controller = Controller(_Keep(box), hostname="127.0.0.1", port=port)
    controller.start()  # aiosmtpd serves from its own thread
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("mail sink on 127.0.0.1:%d, keeping messages in %s", port, maildir(state_dir))
    try:
        await stop.wait()
    finally:
        controller.stop()


def messages(state_dir: Path) -> list[EmailMessage]:
    """Every message the sink kept, oldest first."""
    path = maildir(state_dir)
    if not path.is_dir():
        return []
    box = mailbox.Maildir(path, create=False)
    found = []
    for key in box.keys():
        message = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        found.append((box.get_message(key).get_date(), key, message))
    return [message for _, _, message in sorted(found, key=lambda item: (item[0], item[1]))]


# --- process management -----------------------------------------------------------------------


def up(state_dir: Path, port: int) -> str:
    """Start the mail sink unless it runs on ``state_dir`` already; return ``host:port``."""
    home = folder(state_dir)
    home.mkdir(parents=True, exist_ok=True)
    marker = str(Path(state_dir).resolve())
    if (pid := process.recorded_pid(home / "mailsink.pid", marker=marker)) is not None:
        port = json.loads((home / "mailsink.json").read_text()).get("port", port)
        process.wait_answering(pid, port, home / "mailsink.log", "mail sink", START_TIMEOUT)
        return f"127.0.0.1:{port}"
    if process.answers(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is taken by a process that is not this mail sink")
    (home / "mailsink.json").write_text(json.dumps({"port": port}))
    cmd = [sys.executable, "-m", "localdev.sandboxes.mailsink", "--state-dir", marker, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))}
    pid = process.spawn(cmd, log=home / "mailsink.log", pidfile=home / "mailsink.pid", cwd=PROJECT_DIR, env=env)
    process.wait_answering(pid, port, home / "mailsink.log", "mail sink", START_TIMEOUT)
    return f"127.0.0.1:{port}"


def down(state_dir: Path) -> list[int]:
    """Stop the mail sink running on ``state_dir``; the PIDs stopped."""
    return process.stop_recorded(folder(state_dir) / "mailsink.pid", marker=str(Path(state_dir).resolve()))


def main(argv: list[str] | None = None) -> None:
    """``python -m localdev.sandboxes.mailsink --state-dir D --port P``."""
    parser = argparse.ArgumentParser(prog="python -m localdev.sandboxes.mailsink",
                                     description="A local SMTP server keeping every message in a Maildir.")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.state_dir, args.port))


if __name__ == "__main__":
    main()
