"""Helpers for tests that talk to the real broker: produce, read topics to a condition, run workers.

Every wait has a deadline and polls a condition; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterable, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from hub.settings import PROJECT_DIR, Settings
from hub.streams.app import READY

T = TypeVar("T")


async def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes, int | None]]) -> int:
    """Send (key, value, timestamp_ms) records with acks=all; return how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, timestamp_ms=ts) for key, value, ts in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


@dataclass
class TopicReader:
    """Reads whole topics from the beginning, keeping every record, until a condition holds."""

    settings: Settings
    topics: list[str]
    records: dict[str, list[ConsumerRecord]] = field(default_factory=dict)

    async def until(self, condition: Callable[[dict[str, list[ConsumerRecord]]], bool], timeout: float) -> dict:
        """Read until ``condition(records by topic)`` is true; AssertionError after ``timeout`` seconds."""
        consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.settings.bootstrap_servers,
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                    max_poll_records=5000)
        await consumer.start()
        self.records = {t: [] for t in self.topics}
        deadline = time.monotonic() + timeout
        try:
            while not condition(self.records):
                if time.monotonic() > deadline:
                    counts = {t: len(r) for t, r in self.records.items()}
                    raise AssertionError(f"condition not met within {timeout}s; records so far: {counts}")
                for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                    self.records[tp.topic].extend(batch)
            return self.records
        finally:
            await consumer.stop()


async def eventually(check: Callable[[], Awaitable[T]], timeout: float, what: str | Callable[[], str],
                     interval: float = 0.2) -> T:
    """Await ``check()`` every ``interval`` seconds until it returns something truthy, and return that;
    AssertionError after ``timeout`` (``what`` may be a callable, to describe the state it timed out in).

    For state outside Kafka (a SQL read model, an OPC UA server) that offers nothing to block on. The
    pause is the polling interval of a condition with a deadline, never a wait for something to happen.
    """
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        await asyncio.sleep(interval)
    return found


async def poll_until(condition: Callable[[], T], timeout: float, what: str | Callable[[], str],
                     interval: float = 0.2) -> T:
    """``eventually`` for a blocking ``condition`` (run off the event loop); returns what it found."""
    return await eventually(lambda: asyncio.to_thread(condition), timeout, what, interval)


async def delete_namespace_topics(settings: Settings, namespace: str) -> None:
    """Delete every topic of a test namespace (the engine's changelogs carry it inside their names), so
    test runs leave the cluster as they found it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(namespace) or f"__{namespace}" in t]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


class WorkerProcess:
    """``orderhub worker`` (or another long-running ``orderhub`` command) as a real child process,
    ended by its PID; ready once its log shows ``ready_mark``."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None, *,
                 command: tuple[str, ...] = ("worker",), ready_mark: str = READY) -> None:
        self.settings = settings
        self.log_path = log_path
        self.command, self.ready_mark = command, ready_mark
        self.env = {
            **os.environ,
            "ORDERHUB_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "ORDERHUB_TOPIC_NAMESPACE": settings.topic_namespace,
            "ORDERHUB_STATE_DIR": str(settings.state_dir),
            "ORDERHUB_DATABASE_URL": settings.read_model_url,
            "ORDERHUB_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
            "ORDERHUB_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
            "ORDERHUB_COMMIT_INTERVAL_S": str(settings.commit_interval_s),
            "ORDERHUB_WORKER_NAME": settings.worker_name,
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "WorkerProcess":
        """Start the worker, appending to its log."""
        log = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen([sys.executable, "-m", "hub.cli", *self.command], cwd=PROJECT_DIR,
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def ready(self) -> bool:
        """True once this run of the process has said it is ready (and it is still alive)."""
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process and self.process.returncode}; log:\n{self.tail()}")
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return self.ready_mark.encode() in log.read()

    def wait_ready(self, timeout: float = 90) -> "WorkerProcess":
        """Block until the worker says it is ready; fail at once if it exits, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready within {timeout}s; log:\n{self.tail()}")
            try:  # wake up early if the worker dies; ready() then reports its log
                self.process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
        return self

    def kill(self) -> int | None:
        """SIGKILL: no flush, no commit, no goodbye to the group. Returns the exit status:
        ``-SIGKILL`` if the worker was alive, whatever it had ended with otherwise."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        return self.process.returncode if self.process else None

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        """The end of the worker's log, for failure messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
