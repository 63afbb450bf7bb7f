"""How fast the canonical order engine decides proposals, next to what bounds it.

Run ``python bench/engine.py [--proposals N] [--orders M] [--quick] [--profile]`` (or
``orderhub bench engine [args]``) against the local broker. Each measurement runs in its own
fresh topic namespace, whose topics are deleted afterwards. The last line printed is one JSON
object with every figure; bench/README.md says what each one means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also under runpy

from broker import (RECOVERY_BEGINS, RECOVERY_ENDS, DecisionWatch, LatencyProbe, Process,  # noqa: E402
                    changelog_topics, create_namespace, delete_namespace, machine_ticks, new_namespace,
                    package_versions, percentile, produce, read_changelog, read_records)
from workload import Workload, build_workload, check_decision_layout, decision_id, proposal_id  # noqa: E402

from localdev import kafka as localkafka  # noqa: E402
from hub.domain.rules import Rules  # noqa: E402
from hub.serde.store import SchemaStore  # noqa: E402
from hub.serde.wire import AvroCodec, registry_from_settings  # noqa: E402
from hub.settings import Settings, get_settings  # noqa: E402
from hub.streams.core import TopicNames  # noqa: E402

CONTESTANTS = Path(__file__).resolve().parent / "contestants.py"
MEASUREMENTS = ("raw", "bare", "before", "engine", "quix", "latency")
#: The code before the engine-speed work (issue #8): its bare loop is measured in the same run (``before``).
BASELINE_COMMIT = "de9db414a9bc4f6c844008f67f003cdca0fdac11"


@dataclass
class Bench:
    """Everything one run shares: settings, the encoded workload, where logs and state go."""

    settings: Settings
    codec: AvroCodec
    rules: Rules
    workload: Workload
    workdir: Path
    worker_log_level: str
    #: Extra environment of the engine workers (ORDERHUB_* settings).
    worker_env: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        """How many proposals the throughput measurements decide."""
        return len(self.workload.proposals)

    @property
    def timeout(self) -> float:
        """Deadline of one throughput measurement: generous, it only catches a stuck process."""
        return max(180.0, self.n / 50)

    def worker(self, scoped: Settings, state: Path, log: Path, profile: Path | None = None) -> Process:
        """An engine worker process for the namespace of ``scoped``."""
        worker = Process.worker(scoped, state, log, self.worker_log_level, profile)
        worker.env.update(self.worker_env)
        return worker

    def records(self, workload: Workload | None = None) -> list[tuple[bytes, bytes, int]]:
        """(key, value, timestamp_ms) of every proposal, for ``produce``."""
        return [(p.key, p.value, p.timestamp_ms) for p in (workload or self.workload).proposals]


def decision_topics(topics: TopicNames) -> list[str]:
    """Where every decided proposal leaves exactly one record: the hub's answer to it."""
    return [topics.answers]


def observed_mix(bench: Bench, topics: TopicNames, values: dict[str, list[bytes]]) -> Counter:
    """Decision kinds per proposal, from the answers (decoded after the clock stopped)."""
    outcomes = {}
    for value in values.get(topics.answers, []):
        answer = bench.codec.decode(value, "proposal_answer").value
        if answer["outcome"] != "DUPLICATE":
            outcomes[answer["event_id"]] = answer["outcome"].lower()
    return Counter(outcomes.values())


def mix_difference(expected: Counter, observed: Counter) -> int:
    """How many proposals were decided otherwise than the pure fold in produce order decided them."""
    return sum(abs(expected[k] - observed[k]) for k in set(expected) | set(observed)) // 2


async def _in_namespace(bench: Bench, purpose: str, work: Callable[[Settings, TopicNames], Any]) -> Any:
    namespace = new_namespace(purpose)
    began = time.monotonic()
    scoped = await create_namespace(bench.settings, namespace)
    created = time.monotonic()
    try:
        return await work(scoped, TopicNames.load(namespace=namespace))
    finally:
        worked = time.monotonic()
        await delete_namespace(bench.settings, namespace)
        print(f"  ({namespace} created in {created - began:.1f} s, used {worked - created:.1f} s, "
              f"deleted in {time.monotonic() - worked:.1f} s)", file=sys.stderr)


async def _throughput(bench: Bench, label: str, process: Process, topics: TopicNames, scoped: Settings,
                      started: Callable[[], Any], id_of: Callable[[bytes], str] = decision_id,
                      outputs: list[str] | None = None, cpu_figure: str | None = None,
                      from_first_output: bool = False) -> tuple[float, DecisionWatch, float]:
    """Start ``process`` on pre-produced proposals; proposals per second from its start signal
    (or the first output, if earlier; or the first output alone with ``from_first_output``, for a
    process whose start signal comes before it has joined its group) until every proposal's
    decision has been read back.
    Also the watch (its records) and the wall-clock time of the start signal. With
    ``cpu_figure``, the process's and the machine's CPU use in that window become figures."""
    async def start_signal() -> tuple[float, float, float, tuple[int, int]]:
        signalled = await started()
        return signalled, time.time(), process.cpu_seconds(), machine_ticks()

    watch = await DecisionWatch(scoped, outputs or decision_topics(topics), id_of).start()
    try:
        process.start()
        signal = asyncio.create_task(start_signal())
        done = await watch.until(bench.n, bench.timeout, process.alive)
        cpu_done, ticks_done = process.cpu_seconds(), machine_ticks()
        signalled, sampled_at, cpu_began, ticks_began = await asyncio.wait_for(signal, bench.timeout)
        began = watch.first_at if from_first_output and watch.first_at else min(signalled, watch.first_at or math.inf)
        per_s = bench.n / (done - began)
        print(f"  {label}: {bench.n} in {done - began:.2f} s = {per_s:,.0f}/s", file=sys.stderr)
        if cpu_figure and done > sampled_at:
            bench.figures[f"{cpu_figure}_cpu_util"] = round((cpu_done - cpu_began) / (done - sampled_at), 2)
            busy, total = ticks_done[0] - ticks_began[0], ticks_done[1] - ticks_began[1]
            bench.figures[f"{cpu_figure}_machine_cpu_util"] = round(busy / total, 2) if total else 0.0
        return per_s, watch, signalled
    finally:
        await watch.stop()


def _contestant(bench: Bench, which: str, scoped: Settings, *extra: str) -> Process:
    return Process([sys.executable, str(CONTESTANTS), which, "--namespace", scoped.topic_namespace, *extra],
                   bench.workdir / f"{which}-{scoped.topic_namespace.rstrip('.')}.log", dict(os.environ))


async def _first_event(process: Process, event: str, timeout: float) -> float:
    await process.wait_for(lambda text: f'{{"bench": "{event}"'.encode() in text, timeout)
    return next(e["t"] for e in process.events() if e["bench"] == event)


# --- 4. the transport alone ----------------------------------------------------------------


async def measure_raw(bench: Bench) -> None:
    """raw_read_s (a plain consumer reads the N proposals) and raw_loop_per_s (consume -> produce, bytes only)."""
    async def work(scoped: Settings, topics: TopicNames) -> None:
        bench.figures["produce_s"] = round(await produce(scoped, topics.proposals, bench.records()), 3)
        bench.figures["raw_read_s"] = round(await read_records(scoped, topics.proposals, bench.n, bench.timeout), 3)
        loop = _contestant(bench, "raw", scoped)
        try:
            per_s, _, _ = await _throughput(bench, "raw loop", loop, topics, scoped,
                                            lambda: _first_event(loop, "first", bench.timeout),
                                            id_of=proposal_id, outputs=[topics.by_order], cpu_figure="raw_loop")
            bench.figures["raw_loop_per_s"] = round(per_s)
        finally:
            loop.stop()
    await _in_namespace(bench, "raw", work)


# --- 5. the engine's work without a framework ------------------------------------------------


async def _loop_throughput(bench: Bench, scoped: Settings, topics: TopicNames, label: str, process: Process,
                           figure: str, mix_figure: str | None, cpu_figure: str | None = None) -> None:
    """A loop that says when it takes its first record, on the pre-produced proposals: its proposals
    per second as ``figure``, and how many it decided unlike the pure fold as ``mix_figure``."""
    await produce(scoped, topics.proposals, bench.records())
    try:
        per_s, watch, _ = await _throughput(bench, label, process, topics, scoped,
                                            lambda: _first_event(process, "first", bench.timeout), cpu_figure=cpu_figure)
    finally:
        process.stop()
    bench.figures[figure] = round(per_s)
    if mix_figure:
        bench.figures[mix_figure] = mix_difference(bench.workload.expected, observed_mix(bench, topics, watch.values))


async def measure_bare(bench: Bench, profile: Path | None = None) -> None:
    """bare_engine_per_s: hub.streams.core.Engine in one aiokafka consume -> produce loop."""
    async def work(scoped: Settings, topics: TopicNames) -> None:
        loop = _contestant(bench, "bare", scoped, *(("--profile", str(profile)) if profile else ()))
        if profile:
            await _loop_throughput(bench, scoped, topics, "bare engine (profiled)", loop,
                                   "profiled_bare_engine_per_s", None)
        else:
            await _loop_throughput(bench, scoped, topics, "bare engine", loop, "bare_engine_per_s",
                                   "bare_mix_mismatches", cpu_figure="bare")
    await _in_namespace(bench, "bare" if not profile else "profile", work)


async def measure_before(bench: Bench, commit: str) -> None:
    """bare_before_per_s: the bare loop of the code at ``commit`` (before the engine-speed work), checked
    out in a temporary folder and run on the same workload in this run."""
    folder = bench.workdir / f"before-{commit[:10]}"
    if not folder.exists():
        subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "worktree", "add", "--detach",
                        str(folder), commit], check=True, capture_output=True)
    try:
        async def work(scoped: Settings, topics: TopicNames) -> None:
            loop = Process([sys.executable, str(folder / "bench" / "contestants.py"), "bare", "--namespace",
                            scoped.topic_namespace], bench.workdir / f"before-{scoped.topic_namespace.rstrip('.')}.log",
                           {**os.environ, "PYTHONPATH": str(folder)})
            loop.cwd = folder
            await _loop_throughput(bench, scoped, topics, f"bare engine at {commit[:10]}", loop, "bare_before_per_s",
                                   "before_mix_mismatches")
        await _in_namespace(bench, "before", work)
        # the loop's own work without Kafka (bench/core.py), this tree's and the earlier one's, in turn
        shutil.copy(Path(__file__).resolve().parent / "core.py", folder / "bench" / "core.py")
        for name, tree in (("core_per_s", Path(__file__).resolve().parent.parent), ("core_before_per_s", folder)):
            done = await asyncio.to_thread(subprocess.run, [
                sys.executable, str(tree / "bench" / "core.py"), "-n", str(bench.n),
                "-m", str(bench.figures["orders"]), "-r", "3"], capture_output=True, text=True, cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            bench.figures[name] = figures["proposals_per_s"]
            if name == "core_per_s":
                bench.figures["core_table_bytes_40"] = figures["table_bytes_40"]
    finally:
        subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "worktree", "remove", "--force",
                        str(folder)], capture_output=True)


# --- 1 and 3. the real engine: throughput, then rebuilding its table -------------------------


async def measure_engine(bench: Bench) -> None:
    """proposals_per_s from a fresh worker on pre-produced proposals; the changelog it wrote (read
    plainly, timed); then the state rebuilt from that changelog by a worker without local state."""
    async def work(scoped: Settings, topics: TopicNames) -> None:
        await produce(scoped, topics.proposals, bench.records())
        state = bench.workdir / f"state-{scoped.topic_namespace.rstrip('.')}"
        log = bench.workdir / f"worker-{scoped.topic_namespace.rstrip('.')}.log"
        worker = bench.worker(scoped, state, log)
        try:
            per_s, watch, ready = await _throughput(bench, "engine", worker, topics, scoped,
                                                    lambda: worker.wait_ready(bench.timeout), cpu_figure="worker",
                                                    from_first_output=True)
            bench.figures["proposals_per_s"] = round(per_s)
            bench.figures["startup_s"] = round(ready - worker.started_at, 2)
            bench.figures["engine_mix_mismatches"] = mix_difference(bench.workload.expected,
                                                                    observed_mix(bench, topics, watch.values))
            bench.figures["worker_stop_s"] = round(worker.stop(), 2)
            changelogs = await changelog_topics(scoped)
            orders = next(t for t in changelogs if f"--{topics.by_order}--" in t)
            read = await read_changelog(scoped, changelogs, orders)
            bench.figures.update(changelog_records=read.records, changelog_raw_read_s=round(read.read_s, 3),
                                 changelog_bytes_per_record=read.mean_value_bytes,
                                 table_value_bytes=read.last_value_mean_bytes,
                                 table_value_max_bytes=read.last_value_max_bytes)
            # the same worker on none of its local state: every order rebuilt from the changelog
            shutil.rmtree(state)
            worker.start()
            await worker.wait_for(lambda text: RECOVERY_ENDS in text, bench.timeout)
            began, ended = worker.logged_at(RECOVERY_BEGINS), worker.logged_at(RECOVERY_ENDS)
            if began is not None and ended is not None:
                bench.figures["rebuild_s"] = round(ended - began, 3)
        finally:
            worker.stop()
    await _in_namespace(bench, "engine", work)


async def profile_worker(bench: Bench, profile: Path) -> None:
    """The engine worker's throughput run again, under cProfile (slower: only the shares count)."""
    async def work(scoped: Settings, topics: TopicNames) -> None:
        await produce(scoped, topics.proposals, bench.records())
        name = scoped.topic_namespace.rstrip(".")
        worker = bench.worker(scoped, bench.workdir / f"state-{name}", bench.workdir / f"worker-{name}.log",
                              profile=profile)
        try:
            per_s, _, _ = await _throughput(bench, "engine (profiled)", worker, topics, scoped,
                                            lambda: worker.wait_ready(bench.timeout))
            bench.figures["profiled_proposals_per_s"] = round(per_s)
        finally:
            worker.stop(timeout=60)
    await _in_namespace(bench, "profileworker", work)


# --- 6. a peer framework over the same core ------------------------------------------------------


async def measure_quix(bench: Bench) -> None:
    """quix_per_s: the same Engine under Quix Streams (group_by hop, RocksDB State, changelog)."""
    async def work(scoped: Settings, topics: TopicNames) -> None:
        state = bench.workdir / f"state-{scoped.topic_namespace.rstrip('.')}"
        app = _contestant(bench, "quix", scoped, "--state-dir", str(state))
        await _loop_throughput(bench, scoped, topics, "quix peer", app, "quix_per_s", "quix_mix_mismatches",
                               cpu_figure="quix")
    await _in_namespace(bench, "quix", work)


# --- 2. latency, through the engine and through the raw loop ------------------------------------


async def measure_latency(bench: Bench, count: int, rate: float) -> None:
    """p50/p99 produce -> accepted change through a running, caught-up worker; raw_p99 through the raw loop."""
    orders = max(10, min(100, count // 10))
    workload = build_workload(orders + count, orders, bench.codec, bench.rules,
                              start_ms=int(time.time() * 1000) - 60_000, tag="lat")
    creations, updates = workload.proposals[:orders], workload.proposals[orders:]
    accepted = {p.event_id for p in updates if p.expected in ("applied", "merged", "resolved")}
    to_send = [(p.event_id, p.key, p.value) for p in updates]

    async def through_engine(scoped: Settings, topics: TopicNames) -> None:
        name = scoped.topic_namespace.rstrip(".")
        worker = bench.worker(scoped, bench.workdir / f"state-{name}", bench.workdir / f"worker-{name}.log")
        try:
            worker.start()
            await worker.wait_ready(bench.timeout)
            await _warm_up(bench, scoped, topics, creations, worker)
            cpu, ticks, began = worker.cpu_seconds(), machine_ticks(), time.time()
            latencies = await LatencyProbe(scoped, topics.proposals, topics.changes, decision_id).run(
                to_send, rate, accepted, timeout=60)
            # near 1 core, the worker could not keep up with the rate: queueing, not processing, is measured
            bench.figures["latency_worker_cpu_util"] = round((worker.cpu_seconds() - cpu) / (time.time() - began), 2)
            busy, total = (now - then for now, then in zip(machine_ticks(), ticks))
            bench.figures["latency_machine_cpu_util"] = round(busy / total, 2) if total else 0.0
        finally:
            worker.stop()
        _latency_figures(bench, "", latencies, len(accepted))

    async def through_raw(scoped: Settings, topics: TopicNames) -> None:
        loop = _contestant(bench, "raw", scoped)
        try:
            loop.start()
            await _first_event(loop, "ready", bench.timeout)
            latencies = await LatencyProbe(scoped, topics.proposals, topics.by_order, proposal_id).run(
                to_send, rate, {e for e, _, _ in to_send}, timeout=60)
        finally:
            loop.stop()
        _latency_figures(bench, "raw_", latencies, len(to_send))

    await _in_namespace(bench, "latency", through_engine)
    await _in_namespace(bench, "rawlatency", through_raw)
    bench.figures["latency_rate_per_s"] = rate


async def _warm_up(bench: Bench, scoped: Settings, topics: TopicNames, creations: list, worker: Process) -> None:
    """Create the latency workload's orders and wait until the worker has decided them."""
    watch = await DecisionWatch(scoped, decision_topics(topics), decision_id).start()
    try:
        await produce(scoped, topics.proposals, [(p.key, p.value, int(time.time() * 1000)) for p in creations])
        await watch.until(len(creations), bench.timeout, worker.alive)
    finally:
        await watch.stop()


def _latency_figures(bench: Bench, prefix: str, samples: list[tuple[float, float]], expected: int) -> None:
    latencies = [latency for _, latency in samples]
    bench.figures[f"{prefix}p50_ms"] = round(percentile(latencies, 0.50), 1)
    bench.figures[f"{prefix}p99_ms"] = round(percentile(latencies, 0.99), 1)
    bench.figures[f"{prefix}max_ms"] = round(max(latencies, default=float("nan")), 1)
    if len(latencies) < expected:
        bench.notes.append(f"{prefix or 'engine '}latency: {expected - len(latencies)} of {expected} "
                           "expected records did not arrive within 60 s")
    bench.figures[f"{prefix}latency_samples"] = len(latencies)
    # the worst latency per half second of sending: a stall shows as a run of high values
    windows: dict[int, float] = {}
    for sent, latency in samples:
        windows[int(sent * 2)] = max(windows.get(int(sent * 2), 0.0), latency)
    bench.figures[f"{prefix}latency_max_per_half_s_ms"] = [round(windows[w]) for w in sorted(windows)]


# --- where the bare loop's time goes -------------------------------------------------------------

#: Profile buckets, first match wins: (name, substrings of "file:function").
BUCKETS = (
    ("logging (records built, then dropped)", ("logging/",)),
    ("socket syscalls (send/recv)", ("_socket.socket",)),
    ("stream runtime (quixstreams)", ("/quixstreams/",)),
    ("table store (rocksdict)", ("rocksdict", "Rdict")),
    ("avro encode/decode (fastavro, hub.serde)", ("fastavro", "hub/serde/")),
    ("pydantic models (validate, dump)", ("pydantic", "hub/events.py")),
    ("JSON (table state + outbox, canonical field values)", ("json/", "base64", "'dumps'", "'loads'", "b64")),
    ("domain decision (hub.domain)", ("hub/domain/",)),
    ("engine glue (hub.streams.core)", ("hub/streams/",)),
    ("kafka client (aiokafka, confluent-kafka)", ("aiokafka", "kafka/", "confluent_kafka", "cimpl")),
    ("event loop (asyncio)", ("asyncio", "selectors", "select.epoll", "_asyncio")),
)


def profile_summary(path: Path) -> list[tuple[str, float]]:
    """Own time per bucket, as shares of the profiled loop's total (idle waiting excluded)."""
    stats = pstats.Stats(str(path))
    totals: Counter = Counter()
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in stats.stats.items():
        where = f"{filename}:'{function}'"
        if "select.epoll" in where or "'poll'" in where and "epoll" in where:
            totals["idle (waiting for the broker)"] += own
            continue
        bucket = next((name for name, marks in BUCKETS if any(m in where for m in marks)), "other")
        totals[bucket] += own
    busy = sum(v for k, v in totals.items() if not k.startswith("idle"))
    return [(name, seconds / busy) for name, seconds in totals.most_common() if not name.startswith("idle")]


def top_functions(path: Path, count: int = 12) -> list[tuple[str, float]]:
    """The functions with the most own time."""
    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    return [(f"{Path(f).name}:{line}({fn})", own) for (f, line, fn), (_cc, _nc, own, _cum, _c) in rows]


# --- report -------------------------------------------------------------------------------------

UNITS = {"_per_s": "proposals/s", "_ms": "ms", "_s": "s", "_records": "records", "_bytes": "bytes",
         "_machine_cpu_util": "of all cores", "_cpu_util": "cores"}


def table(figures: dict[str, Any]) -> str:
    """name, value, unit, ratio: throughput relative to the bare engine, latency to the raw loop."""
    bare, raw_p50, raw_p99 = figures.get("bare_engine_per_s"), figures.get("raw_p50_ms"), figures.get("raw_p99_ms")
    rows = [("name", "value", "unit", "ratio")]
    for name, value in figures.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        unit = next((u for suffix, u in UNITS.items() if name.endswith(suffix)), "")
        ratio = ""
        if name.endswith("_per_s") and name != "latency_rate_per_s" and bare:
            ratio = f"{value / bare:.2f}x bare"
        elif name in ("p50_ms", "p99_ms") and (raw_p50 if name == "p50_ms" else raw_p99):
            ratio = f"{value / (raw_p50 if name == 'p50_ms' else raw_p99):.1f}x raw"
        rows.append((name, f"{value:,}" if isinstance(value, int) else f"{value:,.3f}".rstrip("0").rstrip("."),
                     unit, ratio))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def environment(settings: Settings) -> dict[str, Any]:
    """What the figures were measured on."""
    packages = package_versions("quixstreams", "confluent-kafka", "aiokafka", "fastavro", "orjson", "ormsgpack", "pydantic")
    return {"kafka_version": settings.kafka_version, "bootstrap_servers": settings.bootstrap_servers,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            **packages}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with --quick's defaults filled in."""
    parser = argparse.ArgumentParser(prog="bench/engine.py", description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", "-n", type=int, default=None, help="proposals (default 20000; --quick 2000)")
    parser.add_argument("--orders", "-m", type=int, default=None, help="orders (default 500; --quick 100)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 proposals, 100 orders, 500 latency samples")
    parser.add_argument("--latency-count", type=int, default=None, help="updates sent for latency (default 2000)")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="updates per second for latency (default: half the engine's rate measured in this run, "
                             "else 500)")
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated subset of {','.join(MEASUREMENTS)} ('none': only --profile)")
    parser.add_argument("--profile", action="store_true",
                        help="also run the bare loop under cProfile and print where its time goes")
    parser.add_argument("--worker-log-level", default="info", help="ORDERHUB_LOG_LEVEL of the engine workers")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the engine workers, e.g. ORDERHUB_PRODUCER_LINGER_S=0; repeatable")
    parser.add_argument("--baseline", default=BASELINE_COMMIT,
                        help="the commit whose bare loop `before` measures (default: the code before the "
                             "engine-speed work)")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs, state and profiles in this folder")
    args = parser.parse_args(argv)
    args.proposals = args.proposals or (2000 if args.quick else 20000)
    args.orders = args.orders or (100 if args.quick else 500)
    args.latency_count = args.latency_count or (500 if args.quick else 2000)
    unknown = set(args.only.split(",")) - set(MEASUREMENTS) - {"", "none"}
    if unknown:
        parser.error(f"unknown measurement(s) {', '.join(sorted(unknown))}")
    return args


async def run(args: argparse.Namespace, settings: Settings, workdir: Path) -> Bench:
    """Build the workload, then take every measurement asked for, each in its own namespace."""
    # what else keeps the machine busy (a test suite next door shows up in every figure)
    before = machine_ticks()
    await asyncio.sleep(2)
    after = machine_ticks()
    background = round((after[0] - before[0]) / max(1, after[1] - before[1]), 2)
    codec = AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
    check_decision_layout(codec)
    rules = Rules.load(settings.ownership_file)
    # every timestamp in the past (a broker refuses records more than an hour ahead) and within retention
    start_ms = int(time.time() * 1000) - args.proposals - 60_000
    workload = build_workload(args.proposals, args.orders, codec, rules, start_ms=start_ms)
    bench = Bench(settings, codec, rules, workload, workdir, args.worker_log_level,
                  dict(item.split("=", 1) for item in args.worker_env))
    bench.figures.update(n=bench.n, orders=args.orders, proposal_bytes=round(workload.mean_bytes),
                         build_s=round(workload.build_s, 2))
    bench.figures["expected_mix"] = dict(workload.expected.most_common())
    bench.figures["worker_log_level"] = args.worker_log_level
    bench.figures["background_machine_cpu_util"] = background
    if background > 0.25:
        bench.notes.append(f"the machine was {background:.0%} busy before the run started: every figure is skewed")
    if bench.worker_env:
        bench.figures["worker_env"] = bench.worker_env
    print(f"workload: {bench.n} proposals, {args.orders} orders, mix {bench.figures['expected_mix']}", file=sys.stderr)
    only = args.only.split(",")
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("raw", lambda: measure_raw(bench)),
        ("bare", lambda: measure_bare(bench)),
        ("before", lambda: measure_before(bench, args.baseline)),
        ("engine", lambda: measure_engine(bench)),
        ("quix", lambda: measure_quix(bench)),
        ("latency", lambda: measure_latency(bench, args.latency_count, args.latency_rate
                                            or (round(bench.figures["proposals_per_s"] / 2)
                                                if bench.figures.get("proposals_per_s") else 500.0))),
    ]
    for name, step in steps:
        if name in only:
            print(f"measuring {name} ...", file=sys.stderr)
            try:
                await step()
            except Exception as exc:  # one failed measurement must not hide the others
                bench.notes.append(f"{name} failed: {type(exc).__name__}: {str(exc)[:800]}")
                print(f"  {name} FAILED: {exc}", file=sys.stderr)
    if args.profile:
        for label, profiled in (("bare", lambda p: measure_bare(bench, p)), ("worker", lambda p: profile_worker(bench, p))):
            print(f"profiling the {label} ...", file=sys.stderr)
            profile = workdir / f"{label}.prof"
            try:
                await profiled(profile)
                bench.figures[f"profile_{label}"] = {name: round(share, 3) for name, share in profile_summary(profile)}
                bench.figures[f"profile_{label}_top"] = [f"{name} {own:.2f}s" for name, own in top_functions(profile)]
            except Exception as exc:
                bench.notes.append(f"profile of the {label} failed: {type(exc).__name__}: {str(exc)[:800]}")
    return bench


def derived(figures: dict[str, Any]) -> None:
    """The ratios the issue's targets are stated in (each within this run)."""
    def ratio(name: str, numerator: str, denominator: str, digits: int = 3) -> None:
        if figures.get(numerator) and figures.get(denominator):
            figures[name] = round(figures[numerator] / figures[denominator], digits)
    ratio("bare_ratio", "bare_engine_per_s", "raw_loop_per_s")            # 1: the core's work against the transport
    ratio("bare_before_ratio", "bare_before_per_s", "raw_loop_per_s")
    ratio("core_speedup", "bare_ratio", "bare_before_ratio", 2)            # 1: target >= 2 (through aiokafka)
    ratio("core_own_speedup", "core_per_s", "core_before_per_s", 2)        # 1: the same work without Kafka
    ratio("engine_vs_quix", "proposals_per_s", "quix_per_s")              # 2: target >= 0.9
    ratio("throughput_ratio", "proposals_per_s", "bare_engine_per_s")     # 2: target >= 0.6
    ratio("p99_vs_raw", "p99_ms", "raw_p99_ms", 2)                        # 2: target <= 3
    ratio("rebuild_vs_raw_read", "rebuild_s", "changelog_raw_read_s", 2)  # 3: target <= 2


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table, then the JSON line."""
    args = parse_args(argv)
    # aiokafka warns about every retried send while new topics elect their leaders: noise here
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    settings = get_settings()
    # one command on a fresh machine: the local broker if none is configured, stopped again after
    started_kafka = "ORDERHUB_BOOTSTRAP_SERVERS" not in os.environ and not localkafka.status(settings).running
    if started_kafka:
        print(f"local Kafka at {localkafka.up(settings)}", file=sys.stderr)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="orderhub-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        bench = asyncio.run(run(args, settings, workdir))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        if started_kafka:
            localkafka.down(settings)
    figures = bench.figures
    derived(figures)
    figures.update(environment(settings))
    figures["notes"] = bench.notes
    print(table(figures))
    for key in ("expected_mix", "profile_bare", "profile_bare_top", "profile_worker", "profile_worker_top"):
        if key in figures:
            print(f"{key}:")
            items = figures[key].items() if isinstance(figures[key], dict) else enumerate(figures[key])
            for name, value in items:
                print(f"  {value:>7.1%}  {name}" if key.startswith("profile") and isinstance(value, float)
                      else f"  {value}" if isinstance(name, int) else f"  {name}: {value}")
    for key in ("latency_max_per_half_s_ms", "raw_latency_max_per_half_s_ms"):
        if key in figures:
            print(f"{key}: {figures[key]}")
    for note in bench.notes:
        print(f"note: {note}")
    print(json.dumps(figures, separators=(",", ":")))
    return 0 if not any("failed" in n for n in bench.notes) else 1


if __name__ == "__main__":
    sys.exit(main())
