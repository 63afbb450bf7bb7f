"""The engine's own work per proposal, in process: no broker, no framework.

::

    python bench/core.py [--proposals N] [--orders M] [--repeat R] [--profile FILE]

Builds the engine benchmark's workload (``workload.build_workload``: realistic encoded
proposals for M orders, creations first), then times exactly what ``BareEngineLoop`` in
``contestants.py`` does per proposal, minus Kafka: ``Engine.resolve`` on the proposals
topic, then ``Engine.decide`` of what it forwarded on dict tables, applying the reference
links decide emits as the bare loop does. Each repetition starts from empty tables; the best
repetition counts (the least disturbed by the rest of the machine).

Prints one JSON line: proposals per second, the mix of decisions (it must equal the
workload's folded mix, or the figure measures other work), and the table value's size:
mean and max over the orders, and for the orders that took about 40 decisions.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import statistics
import sys
import time
import zlib
from collections import Counter
from itertools import count
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workload import Workload, build_workload  # noqa: E402

from hub.domain.rules import Rules  # noqa: E402
from hub.serde.store import SchemaStore  # noqa: E402
from hub.serde.wire import AvroCodec  # noqa: E402
from hub.settings import PROJECT_DIR  # noqa: E402
from hub.streams.core import Engine, Inbound  # noqa: E402
from hub.topics import TopicNames  # noqa: E402

#: Partitions of the by-order topic the bench pretends to write to (offsets count per partition).
PARTITIONS = 6
#: Orders whose decision count is within this many of 40 count as "about 40 decisions".
NEAR = 3


def run_once(engine: Engine, workload: Workload, answers: Counter | None = None
             ) -> tuple[float, dict[bytes, bytes], Counter]:
    """One pass over the workload on fresh tables: seconds, the orders table, proposals decided per
    order. ``answers``: count the answers' outcomes into it (decoding them: not a timed pass)."""
    topics = engine.topics
    references: dict[bytes, bytes] = {}
    orders: dict[bytes, bytes] = {}
    offsets = {p: count() for p in range(PARTITIONS)}
    per_order: Counter = Counter()
    # the code before the engine-speed work (run from its own checkout) takes the committed offset too
    decide = (engine.decide if "committed_offset" not in inspect.signature(engine.decide).parameters
              else lambda record, table: engine.decide(record, table, None))
    began = time.perf_counter()
    for index, proposal in enumerate(workload.proposals):
        inbound = Inbound(topics.proposals, index % PARTITIONS, index, proposal.timestamp_ms, proposal.key,
                          proposal.value)
        for out in engine.resolve(inbound, references):
            if out.topic != topics.by_order:
                continue
            partition = zlib.crc32(out.key) % PARTITIONS
            record = Inbound(topics.by_order, partition, next(offsets[partition]), proposal.timestamp_ms,
                             out.key, out.value)
            for result in decide(record, orders):
                if result.topic == topics.ref_links:
                    engine.link_reference(Inbound(result.topic, 0, 0, proposal.timestamp_ms, result.key,
                                                  result.value), references)
                elif answers is not None and result.topic == topics.answers:
                    answers[engine.codec.decode(result.value).value["outcome"].lower()] += 1
            per_order[out.key] += 1
    return time.perf_counter() - began, orders, per_order


def main(argv: list[str] | None = None) -> int:
    """Build the workload, time the bare loop's work, print one JSON line."""
    parser = argparse.ArgumentParser(prog="bench/core.py", description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", "-n", type=int, default=20000)
    parser.add_argument("--orders", "-m", type=int, default=500)
    parser.add_argument("--repeat", "-r", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of one more pass here")
    args = parser.parse_args(argv)

    codec = AvroCodec(SchemaStore.load(PROJECT_DIR / "schemas"))
    rules = Rules.load(PROJECT_DIR / "ownership.yaml")
    engine = Engine(codec, rules, TopicNames.load())
    workload = build_workload(args.proposals, args.orders, codec, rules, start_ms=1_780_000_000_000)

    mix: Counter = Counter()
    run_once(engine, workload, mix)
    runs = [run_once(engine, workload) for _ in range(args.repeat)]
    best, orders, per_order = min(runs, key=lambda run: run[0])
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_once(engine, workload)
        profiler.disable()
        profiler.dump_stats(str(args.profile))

    sizes = [len(v) for v in orders.values()]
    near = [k for k, n in per_order.items() if abs(n - 40) <= NEAR and k in orders]
    figures: dict[str, Any] = {
        "bench": "core", "proposals": len(workload.proposals), "orders": args.orders,
        "proposals_per_s": round(len(workload.proposals) / best),
        "runs_per_s": [round(len(workload.proposals) / run[0]) for run in runs],
        "mix_matches": mix == workload.expected, "mix": dict(sorted(mix.items())),
        "table_bytes_mean": round(statistics.mean(sizes)), "table_bytes_max": max(sizes),
        "orders_near_40": len(near),
        "table_bytes_40": round(statistics.mean(len(orders[k]) for k in near)) if near else None,
        "table_bytes_40_max": max(len(orders[k]) for k in near) if near else None,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
