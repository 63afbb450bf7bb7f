"""A real Apache Kafka (KRaft, no ZooKeeper) on 127.0.0.1, from Maven Central jars.

No Docker and no tarball download: ``deploy/local/pom.xml`` names the broker artefacts
and Maven copies them into the cache, so the only outside source is Maven Central, which
developers and CI reach anyway. Every node is one JVM that is both broker and controller.

Layout::

    <cache_dir>/kafka/<version>/libs/*.jar      the classpath, shared by every cluster
    <cache_dir>/kafka/<version>/libs/.complete  written only after Maven succeeded
    <state_dir>/kafka-1node/node-0/             one folder per node
        server.properties                       rewritten by up() before each start
        data/                                   log.dirs; data/meta.properties = formatted
        kafka.log                               the JVM's stdout+stderr (log4j to console)
        kafka.pid                               removed by down()
    <state_dir>/kafka-3node/node-{0,1,2}/

Ports: the single node serves clients on ``local_kafka_port`` and its controller on
port+1; a 3-node cluster uses port+10000+10*i (and +1), so both can run side by side.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.errors import BrokerUnavailable, ConfigError
from hub.settings import PROJECT_DIR, Settings
from localdev import process

log = logging.getLogger(__name__)

DEPLOY_DIR = PROJECT_DIR / "deploy" / "local"
START_TIMEOUT = 90.0  # a cold 3-node start takes ~10 s here; leave room for a busy CI box
STOP_TIMEOUT = 30.0  # controlled shutdown; then SIGKILL
RESOLVE_TIMEOUT = 900.0  # the first download is ~45 MB of jars
_UNREACHABLE = ("transfer failed", "Could not transfer", "Unknown host", "UnknownHost",
                "Connection refused", "connect timed out", "Network is unreachable")


def resolve_jars(settings: Settings) -> Path:
    """Return the folder of the broker's jars, running Maven into the cache the first time."""
    version = settings.kafka_version
    libs = settings.cache_dir / "kafka" / version / "libs"
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError("mvn not found on PATH: the local Kafka is resolved from Maven Central "
                          "with Maven 3 (e.g. apt-get install maven)")
    shutil.rmtree(libs, ignore_errors=True)  # never mix with jars of an interrupted run
    libs.mkdir(parents=True)
    # -U: re-check artefacts that an earlier offline run recorded as missing.
    cmd = [mvn, "-B", "-q", "-U", "-f", str(DEPLOY_DIR / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}", f"-Dkafka.version={version}",
           "-Pkafka3" if version.startswith("3.") else "-Pkafka4"]
    log.info("resolving Apache Kafka %s from Maven Central into %s", version, libs)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"mvn did not resolve Kafka {version} within {RESOLVE_TIMEOUT:.0f} s: "
                          "is Maven Central reachable?") from None
    if done.returncode != 0:
        # Keep Maven's own error, minus colour codes and its generic "re-run with -e" footer.
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", x) for x in (done.stdout + done.stderr).splitlines()]
        out = "\n".join([x for x in lines if x.strip() not in ("", "[ERROR]")
                         and not re.search(r"[Rr]e-run Maven|\[Help 1\]|For more information", x)][-20:])
        if any(s in out for s in _UNREACHABLE):
            why = "Maven Central cannot be reached (offline, proxy or DNS?)"
        elif "Could not find artifact org.apache.kafka" in out:
            why = f"Kafka {version} is not on Maven Central (check ORDERHUB_KAFKA_VERSION)"
        else:
            why = f"mvn failed (exit {done.returncode})"
        raise ConfigError(f"cannot resolve Apache Kafka {version}: {why}\n$ {' '.join(cmd)}\n{out}")
    (libs / ".complete").write_text(f"{version}\n")
    return libs


def bootstrap_address(settings: Settings, nodes: int) -> str:
    """The bootstrap servers of the local cluster of ``nodes`` nodes (1 or 3)."""
    return ",".join(f"127.0.0.1:{port}" for port, _ in _ports(settings, nodes))


def up(settings: Settings, nodes: int = 1) -> str:
    """Start the local cluster of ``nodes`` nodes unless it already runs; return its bootstrap."""
    bootstrap = bootstrap_address(settings, nodes)
    dirs = [settings.state_dir / f"kafka-{nodes}node" / f"node-{i}" for i in range(nodes)]
    if all(map(_node_pid, dirs)) and len(_run_sync(lambda: _broker_ids(bootstrap, 5.0))) >= nodes:
        return bootstrap
    libs = resolve_jars(settings)
    ports = _ports(settings, nodes)
    start = [i for i, d in enumerate(dirs) if not _node_pid(d)]  # a live node is left alone
    for port in (p for i in start for p in ports[i]):  # check all before starting any
        if _answers(port):
            raise ConfigError(f"port {port} on 127.0.0.1 is taken by a process that is not this "
                              "local Kafka: stop it or set ORDERHUB_LOCAL_KAFKA_PORT")
    for i in start:
        dirs[i].mkdir(parents=True, exist_ok=True)
        (dirs[i] / "server.properties").write_text(_server_properties(settings, nodes, i, dirs[i]))
    _format(settings, libs, [dirs[i] for i in start], _cluster_id(dirs))
    try:
        for i in start:
            _start_node(settings, libs, dirs[i])
        _wait_started(bootstrap, nodes, dirs)
    except BaseException:  # a half-started cluster is no use to anyone: leave no JVM behind
        _stop([dirs[i] for i in start])
        raise
    return bootstrap


def _wait_started(bootstrap: str, nodes: int, dirs: list[Path]) -> None:
    def check_alive() -> None:  # a node that died will never join: fail now, with its log
        for d in dirs:
            if not _node_pid(d):
                raise ConfigError(f"local Kafka node {d.name} exited during startup; end of "
                                  f"{d / 'kafka.log'}:\n{_tail(d / 'kafka.log', 30)}")

    try:
        _run_sync(lambda: wait_for_cluster(bootstrap, nodes, START_TIMEOUT, check=check_alive))
    except BrokerUnavailable as exc:
        tails = "\n".join(f"--- {d / 'kafka.log'}\n{_tail(d / 'kafka.log', 15)}" for d in dirs)
        raise ConfigError(f"{exc}\n{tails}") from None


def down(settings: Settings) -> list[int]:
    """Stop every local cluster under ``state_dir`` (SIGTERM, then SIGKILL); return the PIDs."""
    return _stop(sorted(settings.state_dir.glob("kafka-*node/node-*")))


def _stop(dirs: list[Path]) -> list[int]:
    # SIGTERM first: a controlled shutdown flushes and leaves the quorum
    pids = process.stop([pid for pid in map(_node_pid, dirs) if pid], timeout=STOP_TIMEOUT)
    for d in dirs:
        (d / "kafka.pid").unlink(missing_ok=True)
    return pids


@dataclass(frozen=True)
class NodeStatus:
    """One node as seen from outside: its PID, whether it runs, whether its port answers."""

    name: str
    pid: int | None
    port: int
    answering: bool


@dataclass(frozen=True)
class StatusReport:
    """What ``orderhub kafka status`` prints; ``running`` if some cluster is fully up."""

    nodes: tuple[NodeStatus, ...]
    running: bool

    def text(self) -> str:
        """One line per node, or a hint when no local cluster was ever started."""
        if not self.nodes:
            return "no local Kafka here: start one with `orderhub kafka up`"
        return "\n".join(f"{n.name}: pid {n.pid or '-'} {'alive' if n.pid else 'not running'}, "
                         f"port {n.port} {'answering' if n.answering else 'not answering'}"
                         for n in self.nodes)


def status(settings: Settings) -> StatusReport:
    """Report PID, liveness and client port of every node of every local cluster."""
    found: list[NodeStatus] = []
    running = False
    for nodes in (1, 3):
        cluster = settings.state_dir / f"kafka-{nodes}node"
        if cluster.is_dir():
            rows = [NodeStatus(f"{cluster.name}/node-{i}", _node_pid(cluster / f"node-{i}"), port, _answers(port))
                    for i, (port, _) in enumerate(_ports(settings, nodes))]
            running = running or all(n.pid and n.answering for n in rows)
            found += rows
    return StatusReport(tuple(found), running)


async def wait_for_cluster(
    bootstrap: str, nodes: int, timeout: float, *, check: Callable[[], None] | None = None
) -> None:
    """Wait until ``bootstrap`` answers metadata naming ``nodes`` brokers, else BrokerUnavailable.

    ``check`` runs before every attempt and may raise to give up early (say, a dead process).
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        seen = await _broker_ids(bootstrap, min(5.0, max(0.5, deadline - time.monotonic())))
        if len(seen) >= nodes:
            return
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(f"Kafka at {bootstrap} did not report {nodes} broker(s) within "
                                    f"{timeout:.0f} s (saw {sorted(seen) or 'none'})")
        await asyncio.sleep(0.5)


# --- internals -------------------------------------------------------------------------


def _ports(settings: Settings, nodes: int) -> list[tuple[int, int]]:
    """(client port, controller port) of each node."""
    base = settings.local_kafka_port
    if nodes == 1:
        return [(base, base + 1)]
    if nodes == 3:
        return [(base + 10000 + 10 * i, base + 10001 + 10 * i) for i in range(nodes)]
    raise ConfigError(f"a local Kafka cluster has 1 or 3 nodes, not {nodes}")


def _server_properties(settings: Settings, nodes: int, i: int, node_dir: Path) -> str:
    ports = _ports(settings, nodes)
    rf, isr = (1, 1) if nodes == 1 else (3, 2)
    voters = ",".join(f"{n}@127.0.0.1:{c}" for n, (_, c) in enumerate(ports))
    return f"""# written by hub/localkafka.py before every start: edits here are lost
process.roles=broker,controller
node.id={i}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{ports[i][0]},CONTROLLER://127.0.0.1:{ports[i][1]}
advertised.listeners=PLAINTEXT://127.0.0.1:{ports[i][0]}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={node_dir / "data"}
default.replication.factor={rf}
min.insync.replicas={isr}
offsets.topic.replication.factor={rf}
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={isr}
num.partitions=3
# topics come from topics.yaml: a typo in a topic name must fail, not create a topic
auto.create.topics.enable=false
# a consumer group (test, worker) starts at once instead of waiting 3 s for more members
group.initial.rebalance.delay.ms=0
# light on a laptop or a 2-core CI box: few threads, few internal partitions, small
# preallocated index files and a small log-cleaner buffer (the default takes 128 MB of heap)
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
offsets.topic.num.partitions=6
transaction.state.log.num.partitions=6
log.segment.bytes=67108864
log.index.size.max.bytes=1048576
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
log.retention.hours=72
"""


def _cluster_id(dirs: list[Path]) -> str:
    # All nodes share one id: reuse the one of a node formatted before.
    for d in dirs:
        if found := re.search(r"^cluster\.id=(\S+)", _read(d / "data" / "meta.properties"), re.M):
            return found[1]
    # What `kafka-storage random-uuid` prints: a UUID4 in 22 chars of unpadded base64url;
    # like Kafka, never one starting with "-", which the tool's parser would take for a flag.
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cid


def _java(settings: Settings, libs: Path, heap: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise ConfigError("java not found on PATH: the local Kafka needs a Java 17+ runtime")
    logging_flag = (f"-Dlog4j.configuration=file:{DEPLOY_DIR / 'log4j.properties'}"
                    if settings.kafka_version.startswith("3.")
                    else f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}")
    # Serial GC and two JIT threads keep three JVMs cheap on a 2-core box.
    return [java, f"-Xmx{heap}", "-Xms64m", "-XX:+UseSerialGC", "-XX:CICompilerCount=2",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", logging_flag, "-cp", f"{libs}/*"]


def _format(settings: Settings, libs: Path, dirs: list[Path], cluster_id: str) -> None:
    todo = [d for d in dirs if not (d / "data" / "meta.properties").exists()]  # never reformat data
    procs = [(d, subprocess.Popen([*_java(settings, libs, "256m"), "kafka.tools.StorageTool", "format",
                                   "-t", cluster_id, "-c", str(d / "server.properties")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for d in todo]  # in parallel: each JVM spends seconds just loading Scala
    for d, proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise ConfigError(f"formatting the storage of {d} failed:\n{out[-3000:]}")


def _start_node(settings: Settings, libs: Path, node_dir: Path) -> None:
    process.spawn([*_java(settings, libs, settings.kafka_heap), "kafka.Kafka", str(node_dir / "server.properties")],
                  log=node_dir / "kafka.log", pidfile=node_dir / "kafka.pid", cwd=node_dir)


def _node_pid(node_dir: Path) -> int | None:
    """The PID of this node's running broker; a stale or foreign PID file counts as none."""
    props = str(node_dir / "server.properties")
    if pid := process.recorded_pid(node_dir / "kafka.pid", marker=props):
        return pid
    # A lost PID file must not orphan a JVM: then look for it by its command line.
    found = process.find("kafka.Kafka", also=props)
    return found[0] if found else None


def _alive(pid: int) -> bool:
    return process.alive(pid)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True
    return False


async def _broker_ids(bootstrap: str, timeout: float) -> set[int]:
    """Node ids in a metadata answer from ``bootstrap``; empty if nobody answers in time."""
    from aiokafka import AIOKafkaClient  # late: `orderhub kafka down/status` need none of it

    # A plain connect first, since aiokafka logs an ERROR for every refused bootstrap.
    if not any(_answers(int(hp.rsplit(":", 1)[1])) for hp in bootstrap.split(",")):
        return set()
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return {broker.nodeId for broker in client.cluster.brokers()}
    except Exception:  # noqa: BLE001 - whatever failed, the cluster is not ready yet
        return set()
    finally:
        await client.close()


def _run_sync(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    # up() is synchronous for the CLI but may be called from async code (tests, tools);
    # asyncio.run() refuses to nest, so then the coroutine runs on a thread of its own.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int) -> str:
    return "\n".join(_read(path).rstrip().splitlines()[-lines:])
