"""What the engine benchmark does on the broker: namespaces, producing, counting decisions,
and the processes under test.

Every wait has a deadline. Every process is started here and ended by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from hub import topics as hub_topics
from hub.settings import PROJECT_DIR, Settings

#: What Quix Streams logs around restoring state from a changelog (the bench times the gap).
RECOVERY_BEGINS, RECOVERY_ENDS = b"Beginning recovery check", b"Recovery process complete"


def new_namespace(purpose: str) -> str:
    """A fresh topic namespace (also the prefix of consumer groups) for one measurement."""
    return f"bench-{purpose}-{uuid.uuid4().hex[:8]}."


async def create_namespace(settings: Settings, namespace: str) -> Settings:
    """Apply topics.yaml under ``namespace``; the settings for it."""
    scoped = settings.model_copy(update={"topic_namespace": namespace})
    declared = hub_topics.load_declarations(scoped.topics_file, scoped.schemas_dir, namespace)
    await hub_topics.apply(scoped, declared)
    return scoped


async def delete_namespace(settings: Settings, namespace: str) -> list[str]:
    """Delete every topic whose name contains the namespace (Quix's internal topics embed it
    in the middle), and the consumer groups named after it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=30000)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if namespace in name]
        if names:
            await admin.delete_topics(names)
        groups = [g[0] for g in await admin.list_consumer_groups() if namespace in g[0]]
        if groups:
            await asyncio.to_thread(_delete_groups, settings.bootstrap_servers, groups)
        return names
    finally:
        await admin.close()


def _delete_groups(bootstrap_servers: str, groups: list[str]) -> None:
    """Best effort: aiokafka's admin cannot delete groups; confluent-kafka's can, when installed
    (quixstreams brings it). Left-over groups only cost their offsets until they expire."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})  # keep it: its futures die with it
    for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
        try:
            future.result(timeout=30)
        except Exception:  # a group still winding down after its member left
            pass


async def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes, int]]) -> float:
    """Send (key, value, timestamp_ms) records with acks=all; the seconds it took."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True,
                                linger_ms=10, max_batch_size=262144)
    await producer.start()
    began = time.perf_counter()
    try:
        futures = [await producer.send(topic, value, key=key, timestamp_ms=ts) for key, value, ts in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - began
    finally:
        await producer.stop()


async def read_records(settings: Settings, topic: str, n: int, timeout: float) -> float:
    """Read ``n`` records of ``topic`` from the beginning with a plain consumer; the seconds it took
    from the first fetch request (the transport's read limit for this workload)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        seen, began = 0, time.perf_counter()  # from the assignment: the fetcher starts with it
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = began + timeout
        while seen < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"read {seen} of {n} records of {topic} within {timeout}s")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                seen += len(batch)
        return time.perf_counter() - began
    finally:
        await consumer.stop()


async def changelog_topics(settings: Settings) -> list[str]:
    """The engine's state changelogs in the namespace of ``settings`` (its runtime names them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(f"changelog__{settings.topic_namespace}"))
    finally:
        await admin.close()


@dataclass
class ChangelogRead:
    """One plain read of a changelog from its beginning to its end offsets."""

    records: int
    read_s: float
    mean_value_bytes: int
    #: The size of each key's last value (what a rebuilt table holds), mean and largest.
    last_value_mean_bytes: int
    last_value_max_bytes: int


async def read_changelog(settings: Settings, topics: list[str], table: str, timeout: float = 120) -> ChangelogRead:
    """Read the changelog ``topics`` whole with one fresh plain consumer, timed from its start (connecting,
    assigning, finding the ends, reading): the floor a table rebuild, which does all of that too, is
    compared with. The value sizes are those of ``table`` (one of them)."""
    partitions = {topic: await hub_topics.topic_partitions(settings, topic) for topic in topics}
    began = time.monotonic()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic, numbers in partitions.items() for p in numbers]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = sizes = values = 0
        last: dict[bytes, int] = {}
        deadline = began + timeout
        while time.monotonic() < deadline and [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=10000)).items():
                total += len(records)
                if tp.topic != table:
                    continue
                for record in records:
                    values += 1
                    sizes += len(record.value or b"")
                    last[record.key] = len(record.value or b"")
        read_s = time.monotonic() - began
        kept = [size for size in last.values() if size]
        return ChangelogRead(total, read_s, round(sizes / max(values, 1)), round(sum(kept) / max(len(kept), 1)),
                             max(kept, default=0))
    finally:
        await consumer.stop()


@dataclass
class DecisionWatch:
    """Reads output topics from the beginning and counts distinct ids until a target.

    ``id_of`` reads the id (the proposal's event id) from a record value cheaply; records are
    kept, so the outcome mix can be decoded once the clock has stopped.
    """

    settings: Settings
    topics: list[str]
    id_of: Callable[[bytes], str]
    ids: set[str] = field(default_factory=set)
    values: dict[str, list[bytes]] = field(default_factory=dict)
    first_at: float | None = None
    done_at: float | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> "DecisionWatch":
        """Connect and position at the beginning of every partition of the topics."""
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                          enable_auto_commit=False, fetch_max_wait_ms=50, max_poll_records=None)
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in self.topics for p in (self._consumer.partitions_for_topic(t) or ())]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self.values = {t: [] for t in self.topics}
        return self

    async def until(self, target: int, timeout: float, alive: Callable[[], None] = lambda: None) -> float:
        """Read until ``target`` distinct ids were seen; the wall-clock time it happened."""
        assert self._consumer is not None
        deadline = time.monotonic() + timeout
        while len(self.ids) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.ids)} of {target} decisions within {timeout:.0f}s")
            alive()
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, records in batches.items():
                if records and self.first_at is None:
                    self.first_at = now
                keep = self.values[tp.topic]
                for record in records:
                    keep.append(record.value)
                    self.ids.add(self.id_of(record.value))
        self.done_at = self.done_at or time.time()
        return self.done_at

    async def stop(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


@dataclass
class LatencyProbe:
    """Produces records at a steady rate and times each one to its arrival on an output topic.

    Send time is taken when the record is handed to the producer; arrival when the consumer in
    this process returns it. Both clocks are this process's ``perf_counter``.
    """

    settings: Settings
    source: str
    output: str
    id_of: Callable[[bytes], str]
    sent: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)

    async def run(self, records: list[tuple[str, bytes, bytes]], rate: float, expect: set[str],
                  timeout: float) -> list[tuple[float, float]]:
        """Send (event_id, key, value) at ``rate``/s; (seconds into the run it was sent, latency in ms)
        of each id in ``expect`` that arrived, in send order."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=100)
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all", linger_ms=0)
        await consumer.start()
        await producer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(self.output, p) for p in consumer.partitions_for_topic(self.output) or ()]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            reader = asyncio.create_task(self._read(consumer, expect))
            began = time.perf_counter()
            for index, (event_id, key, value) in enumerate(records):
                due = began + index / rate
                if (pause := due - time.perf_counter()) > 0:
                    await asyncio.sleep(pause)
                self.sent[event_id] = time.perf_counter()
                await producer.send(self.source, value, key=key, timestamp_ms=int(time.time() * 1000))
            try:
                await asyncio.wait_for(reader, timeout)
            except asyncio.TimeoutError:
                pass  # report what arrived; the caller names the missing ones
            return sorted((self.sent[i] - began, (self.arrived[i] - self.sent[i]) * 1000)
                          for i in expect if i in self.arrived)
        finally:
            await producer.stop()
            await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer, expect: set[str]) -> None:
        while not expect <= self.arrived.keys():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for record in records:
                    self.arrived.setdefault(self.id_of(record.value), now)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat; (0, 0) elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(share * len(ordered) + 0.5)) - 1))]


class Process:
    """A process under test (an engine worker, or a loop from ``contestants.py``), ended by its PID.

    Its output goes to a log file; ``mark`` finds lines in it, ``events`` reads the JSON lines
    the contestant loops print (``{"bench": "first", "t": ...}``).
    """

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.argv, self.log_path, self.env = argv, log_path, env
        #: Where it runs (the project; a checked-out earlier commit for the ``before`` measurement).
        self.cwd = PROJECT_DIR
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.killed = False
        self._offset = 0

    @classmethod
    def worker(cls, settings: Settings, state_dir: Path, log_path: Path, log_level: str,
               profile: Path | None = None) -> "Process":
        """``orderhub worker`` for the namespace of ``settings``, without the read model projection;
        under cProfile, writing ``profile`` when it ends, if given."""
        env = {
            **os.environ,
            "ORDERHUB_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "ORDERHUB_TOPIC_NAMESPACE": settings.topic_namespace,
            "ORDERHUB_STATE_DIR": str(state_dir),
            "ORDERHUB_PROJECT_READ_MODEL": "false",
            # the workload is folded without workflow rules, as the code before them decided
            "ORDERHUB_WORKFLOW_FILE": "none",
            "ORDERHUB_LOG_LEVEL": log_level,
        }
        profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
        return cls([sys.executable, *profiler, "-m", "hub.cli", "worker"], log_path, env)

    def start(self) -> "Process":
        """Start it, appending to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._offset = self.log_path.stat().st_size
        self.started_at = time.time()
        self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the process has used so far (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, AttributeError, IndexError):
            return 0.0

    def alive(self) -> None:
        """Raise, with the log's tail, if the process has exited."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self.log_path.stem} exited with {self.process and self.process.returncode}; "
                               f"log {self.log_path}:\n{self.tail()}")

    def text(self) -> bytes:
        """What this run of the process has logged so far."""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            return log.read()

    def events(self) -> list[dict]:
        """The ``{"bench": ...}`` JSON lines the process printed."""
        found = []
        for line in self.text().splitlines():
            start = line.find(b'{"bench"')
            if start >= 0:
                found.append(json.loads(line[start:]))
        return found

    async def wait_for(self, found: Callable[[bytes], bool], timeout: float) -> float:
        """Poll the log every 20 ms until ``found(log)``; the wall-clock time it was seen."""
        deadline = time.monotonic() + timeout
        while not found(self.text()):
            self.alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.log_path.stem}: not seen within {timeout}s; log:\n{self.tail()}")
            await asyncio.sleep(0.02)
        return time.time()

    async def wait_ready(self, timeout: float) -> float:
        """For an engine worker: the time its ready line appeared."""
        from hub.streams.app import READY

        return await self.wait_for(lambda text: READY.encode() in text, timeout)

    def logged_at(self, mark: bytes) -> float | None:
        """When this run first logged a line containing ``mark`` (its ``[YYYY-mm-dd HH:MM:SS,mmm]``
        stamp, local time, as the worker's log format and Quix's print it), None if not yet."""
        import datetime as dt

        for line in self.text().splitlines():
            if mark in line and line.startswith(b"["):
                stamp = line[1:line.index(b"]")].decode()
                return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM, wait; SIGKILL if it does not end in time. The seconds it took to end."""
        began = time.monotonic()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(timeout=30)
        return time.monotonic() - began

    def tail(self, lines: int = 30) -> str:
        """The end of the log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def package_versions(*names: str) -> dict[str, str]:
    """The installed version of each package ("-" when it is not installed): what a figure was measured with."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "-"
    return found
