"""Workers killed with SIGKILL at random moments lose no proposal and apply none twice.

Two ``orderhub worker`` processes share the partitions while 20,000 proposals for 500
orders stream in; one of them is killed (no flush, no commit, no goodbye) fifty times, at
random points spread over the stream, and restarted at once (so a later kill may also hit
a worker that is still restoring its table or rejoining the group). After the stream drains,
every proposal must be accounted for exactly once in the output topics (after dedup by
record id), every order's versions must be gapless in the audit topic and in the PostgreSQL
read model, the table must equal what the pure reference model computes from the same
proposals in the same order, and every release and reference link the reference emits must
be on its topic, with its own key.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from hub.domain.decide import Decision
from hub.domain.order import OrderState
from hub.readmodel import ReadModel, metadata
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec
from hub.settings import Settings
from hub.streams.app import APP_ID
from hub.streams.core import TopicNames, stored_state
from tests.e2e.workload import Workload, build
from tests.integration.kafka_helpers import TopicReader, WorkerProcess, delete_namespace_topics, poll_until, produce
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration

PROPOSALS = int(os.environ.get("ORDERHUB_CRASH_PROPOSALS", "20000"))
ORDERS = int(os.environ.get("ORDERHUB_CRASH_ORDERS", "500"))
KILLS = int(os.environ.get("ORDERHUB_CRASH_KILLS", "50"))
GARBAGE = 10
#: How far the producer may run ahead of the decisions: proposals keep streaming in during the kills.
AHEAD = 3000
SEED = 20261125
CODEC = AvroCodec(SchemaStore.load(Settings().schemas_dir))


class Decided:
    """Reads the decision topics as they grow; wakes up whoever waits for progress."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        names = TopicNames.of(settings)
        self.topics = [names.changes, names.conflicts, names.rejections, names.answers]
        self.settings, self.codec = settings, codec
        self.records: dict[str, list[bytes]] = {t: [] for t in self.topics}
        self.event_ids: set[str] = set()
        #: (event id, record kind) pairs seen: a resolved conflict writes a change and a conflict
        self.outputs: set[tuple[str, str]] = set()
        self.changed = asyncio.Condition()
        self.last_progress = time.monotonic()

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.settings.bootstrap_servers,
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                    max_poll_records=5000)
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                if batch:
                    self.last_progress = time.monotonic()
                for tp, records in batch.items():
                    for record in records:
                        self.records[tp.topic].append(record.value)
                        value = self.codec.decode(record.value).value
                        self.event_ids.add(value["event_id"])
                        self.outputs.add((value["event_id"], record_kind(value["record_id"])))
                async with self.changed:
                    self.changed.notify_all()
        finally:
            await consumer.stop()

    async def until(self, predicate, timeout: float, what: str, stall: float = 90) -> None:
        """Wait until ``predicate()``; fail after ``timeout``, or once no decision came for ``stall`` seconds."""
        deadline = time.monotonic() + timeout

        def done_or_stuck() -> bool:
            now = time.monotonic()
            return predicate() or now > deadline or now - self.last_progress > stall

        async with self.changed:
            await self.changed.wait_for(done_or_stuck)
        if not predicate():
            stuck = time.monotonic() - self.last_progress > stall
            what = what() if callable(what) else what
            raise AssertionError(f"{'no new decision for ' + str(stall) + 's' if stuck else f'timed out after {timeout}s'}"
                                 f" waiting for {what}; {len(self.event_ids)} proposals decided")


async def stream_with_kills(settings: Settings, work: Workload, workers: list[WorkerProcess],
                            decided: Decided, rng: random.Random) -> list[tuple[str, int]]:
    """Produce the workload while killing a random worker at random points of progress."""
    names = TopicNames.of(settings)
    expected = {(event_id, kind) for event_id, decision in work.decisions.items() for kind in expected_outcome(decision)}
    event_ids = {event_id for event_id, _ in expected}

    async def feed() -> None:
        chunk = 500
        for start in range(0, len(work.records), chunk):
            await decided.until(lambda: start - len(decided.event_ids) < AHEAD, 600, "the engine to catch up")
            await produce(settings, names.proposals,
                          [(r.key, r.value, r.timestamp_ms) for r in work.records[start:start + chunk]])
            if start == 0:  # poison pills in the middle of the stream
                await produce(settings, names.proposals,
                              [(f"garbage-{i}".encode(), b"\xc3\x01not a fingerprint", None) for i in range(GARBAGE)])

    follower = asyncio.create_task(decided.follow())
    feeder = asyncio.create_task(feed())
    kills = []
    targets = sorted(rng.sample(range(1, max(KILLS + 1, int(len(event_ids) * 0.95))), KILLS))
    try:
        for target in targets:
            await decided.until(lambda: len(decided.event_ids) >= target, 600, f"{target} decisions")
            victim = rng.choice(workers)
            status = victim.kill()
            kills.append((victim.settings.worker_name, len(decided.event_ids), status))
            victim.start()
        await feeder
        await decided.until(lambda: event_ids <= decided.event_ids, 900, "every proposal to be decided")
        # a decision's second record (a resolved conflict's) follows its first within moments
        await decided.until(lambda: expected <= decided.outputs, 60,
                            lambda: f"every output the reference expects (missing e.g. {sorted(expected - decided.outputs)[:5]})")
    finally:
        feeder.cancel()
        follower.cancel()
    return kills


def accounted(codec: AvroCodec, decided: Decided) -> dict[str, dict[str, dict]]:
    """Decision records by event id and kind, deduplicated by record id (copies must be identical)."""
    by_record: dict[str, bytes] = {}
    for topic, values in decided.records.items():
        for value in values:
            record_id = codec.decode(value).value["record_id"]
            assert by_record.setdefault(record_id, value) == value, f"{record_id} was re-emitted with other bytes"
    outcomes: dict[str, dict[str, dict]] = defaultdict(dict)
    for record_id, value in by_record.items():
        record = codec.decode(value).value
        kind = record_kind(record_id)
        if kind.startswith("duplicate@"):  # a redelivery's own answer: it says so and changes nothing
            assert record["outcome"] == "DUPLICATE", record
            continue
        assert kind not in outcomes[record["event_id"]], f"two {kind} records for {record['event_id']}"
        outcomes[record["event_id"]][kind] = record
    return outcomes


def decoded_as_read(event) -> dict:
    """An event through the codec and back, so values compare as they arrive (timestamps in ms, decimals at scale)."""
    return CODEC.decode(CODEC.encode(event.schema_name, event.to_avro())).value


def record_kind(record_id: str) -> str:
    """What a decision record is, from its id: change, conflict, rejection, answer, or duplicate@p:o (the
    answer to one redelivery)."""
    return record_id.split(":", 1)[1]


def expected_outcome(decision: Decision) -> dict[str, dict]:
    """What the reference model says must be published for one proposal, as a reader decodes it."""
    kinds = {"change": decision.change, "conflict": decision.conflict, "rejection": decision.rejection,
             "answer": decision.answer}
    return {kind: decoded_as_read(event) for kind, event in kinds.items() if event is not None}


def state_diff(got: OrderState, want: OrderState) -> str:
    """What differs between two states of one order, briefly."""
    a, b = got.to_dict(), want.to_dict()
    parts = [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in ("v", "u", "x", "k") if a.get(k) != b.get(k)]
    parts += [f"field {f}: {a['f'].get(f)} != {b['f'].get(f)}" for f in sorted(set(a["f"]) | set(b["f"]))
              if a["f"].get(f) != b["f"].get(f)][:5]
    if a["d"] != b["d"]:
        parts.append(f"decided ids differ: {a['d'][:60]!r}... != {b['d'][:60]!r}...")
    return "; ".join(parts)


def without_numbers(record: dict) -> dict:
    """A record with its order number blanked: numbers depend on partition placement, not on the rules."""
    return {k: v for k, v in record.items() if k != "order_number"}


async def order_changelog(settings: Settings) -> str:
    """The changelog topic of the engine's order state (its stream runtime names and creates it)."""
    from aiokafka.admin import AIOKafkaAdminClient

    by_order = TopicNames.of(settings).by_order
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics()
                 if t.startswith(f"changelog__{settings.topic_namespace}{APP_ID}--") and f"--{by_order}--" in t]
    finally:
        await admin.close()
    assert len(names) == 1, f"one changelog of the order state, found {names}"
    return names[0]


async def explain(settings: Settings, event_ids: list[str]) -> str:
    """Where some proposals are: their input records, their order's state in the changelog, the group's commits."""
    from aiokafka.admin import AIOKafkaAdminClient

    names = TopicNames.of(settings)
    changelog = await order_changelog(settings)
    topics = [names.proposals, names.by_order, changelog]
    records = await read_all(settings, topics)
    lines = []
    for event_id in event_ids:
        lines.append(f"-- {event_id}")
        keys = set()
        for topic in (names.proposals, names.by_order):
            for r in records[topic]:
                try:
                    value = CODEC.decode(r.value).value
                except Exception:  # noqa: BLE001 - the poison pills
                    continue
                if value["event_id"] == event_id:
                    lines.append(f"   {topic}[{r.partition}]@{r.offset} key={r.key!r}")
                    keys.add(r.key)
        states = [(r.partition, r.offset, stored_state(r.value)) for r in records[changelog]
                  if r.value and r.key.rsplit(b"|", 1)[0] in keys]
        for partition, offset, state in states[-2:]:
            lines.append(f"   changelog[{partition}]@{offset}: version {state.version}, seen={state.has_seen(event_id)}")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{settings.topic_namespace}{APP_ID}")
    finally:
        await admin.close()
    lines.append("committed: " + ", ".join(f"{tp.topic.rsplit('.', 2)[-2]}[{tp.partition}]={m.offset}"
                                           for tp, m in sorted(offsets.items()) if "proposals" in tp.topic))
    return "\n".join(lines)


async def read_all(settings: Settings, topics: list[str]) -> dict[str, list]:
    """Every record of these topics as they are now."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    probe = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    await probe.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in await producer.partitions_for(t)]
        ends = await probe.end_offsets(partitions)
    finally:
        await probe.stop()
        await producer.stop()
    wanted = {t: sum(o for tp, o in ends.items() if tp.topic == t) for t in topics}
    return await TopicReader(settings, topics).until(lambda r: all(len(r[t]) >= wanted[t] for t in topics), 120)


async def final_table(settings: Settings) -> dict[str, OrderState]:
    """The engine's table as its changelog holds it: the last value per order (keyed ``<order id>|<slot>``)."""
    changelog = await order_changelog(settings)
    records = await read_all(settings, [changelog])
    latest: dict[bytes, bytes | None] = {}
    for record in records[changelog]:
        latest[record.key.rsplit(b"|", 1)[0]] = record.value
    return {key.decode(): stored_state(value) for key, value in latest.items() if value is not None}


def test_sigkill_at_random_moments_loses_nothing_and_applies_nothing_twice(
        kafka_settings: Settings, tmp_path: Path, postgres_url: str) -> None:
    """Every proposal is decided exactly once, versions stay gapless, and the table equals the reference."""
    settings = namespaced_settings(kafka_settings, tmp_path).model_copy(update={"database_url": postgres_url})
    model = ReadModel(postgres_url)
    metadata.drop_all(model.engine)
    model.create_schema()
    codec = CODEC
    rules = settings.rules()
    work = build(codec, rules, orders=ORDERS, proposals=PROPOSALS, seed=SEED, start_ms=int(time.time() * 1000))
    rng = random.Random(SEED)
    workers = [WorkerProcess(settings.model_copy(update={"worker_name": name}), tmp_path / f"{name}.log")
               for name in ("worker-a", "worker-b")]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
        decided = Decided(settings, codec)
        try:
            kills = asyncio.run(stream_with_kills(settings, work, workers, decided, rng))
        except AssertionError as exc:  # say where the missing ones are stuck: that is the bug report
            missing = sorted(set(work.decisions) - decided.event_ids)[:5] or sorted(
                {e for e, decision in work.decisions.items()
                 for k in expected_outcome(decision) if (e, k) not in decided.outputs})[:5]
            raise AssertionError(f"{exc}\n{asyncio.run(explain(settings, missing))}") from None
        # each kill found its worker alive: none had died on its own in between
        assert [status for _, _, status in kills] == [-signal.SIGKILL] * KILLS, kills

        # 1. Every proposal accounted for exactly once, exactly as the reference model decided it.
        outcomes = accounted(codec, decided)
        assert set(outcomes) == set(work.decisions), "decisions for proposals never sent, or proposals never decided"
        mismatches = []
        for event_id, decision in work.decisions.items():
            want = {kind: without_numbers(record) for kind, record in expected_outcome(decision).items()}
            got = {kind: without_numbers(record) for kind, record in outcomes[event_id].items()}
            if got != want:
                mismatches.append((event_id, want, got))
        assert not mismatches, (f"{len(mismatches)} proposals decided unlike the reference; the first: "
                                f"{mismatches[0][0]}\nreference: {mismatches[0][1]}\nengine:    {mismatches[0][2]}")

        # 2. Gapless versions per order in the audit topic, one order number per order.
        versions: dict[str, list[int]] = defaultdict(list)
        numbers: dict[str, set[str]] = defaultdict(set)
        for outcome in outcomes.values():
            if change := outcome.get("change"):
                versions[change["order_id"]].append(change["version"])
                numbers[change["order_id"]].add(change["order_number"])
        reference = {order_id: state.version for order_id, state in work.states.items()}
        assert {o: sorted(v) for o, v in versions.items()} == {o: list(range(1, n + 1)) for o, n in reference.items()}
        assert all(len(n) == 1 for n in numbers.values())
        assert len({next(iter(n)) for n in numbers.values()}) == len(numbers), "an order number was given twice"

        # 3. The table equals the reference model (order numbers aside).
        for worker in workers:
            worker.stop()  # a graceful stop flushes the changelog
        table = asyncio.run(final_table(settings))
        assert set(table) == set(work.states)
        differing = [o for o, state in work.states.items()
                     if table[o].to_dict() | {"no": None} != state.to_dict() | {"no": None}]
        assert not differing, (f"{len(differing)} orders differ from the reference, e.g. {differing[:3]}; the first: "
                               f"{state_diff(table[differing[0]], work.states[differing[0]])}")
        assert {o: {s.order_number} for o, s in table.items()} == dict(numbers)

        # 4. The read model (projected by the killed workers too) has every version, gapless.
        for worker in workers:
            worker.start()
        expected_versions = {o: list(range(1, n + 1)) for o, n in reference.items()}
        def read_model_gap() -> str:
            have = model.all_order_versions()
            gaps = {o: (sorted(set(want) - set(have.get(o, []))), sorted(set(have.get(o, [])) - set(want)))
                    for o, want in expected_versions.items() if have.get(o) != want}
            extra = sorted(set(have) - set(expected_versions))
            return (f"every version of every order in PostgreSQL: {len(gaps)} orders differ (missing, extra): "
                    f"{dict(list(gaps.items())[:5])}; orders not in the reference: {extra[:5]}")
        asyncio.run(poll_until(lambda: model.all_order_versions() == expected_versions, 300, read_model_gap))

        # 5. The poison pills went to the dead-letter topic, the stream went on.
        names = TopicNames.of(settings)
        dead = asyncio.run(TopicReader(settings, [names.dead_letters]).until(
            lambda r: {m.key for m in r[names.dead_letters]} >= {f"garbage-{i}".encode() for i in range(GARBAGE)}, 60))
        assert all(dict(m.headers)["__orderhub.errors.stage"] == b"resolve" for m in dead[names.dead_letters])

        # 6. Releases and reference links, re-emitted after the kills, are the reference's, byte for byte.
        releases = {d.release.record_id: without_numbers(decoded_as_read(d.release))
                    for d in work.decisions.values() if d.release is not None}
        links = {ref.key.encode(): d.change.order_id.encode()
                 for d in work.decisions.values() if d.change is not None for ref in d.change.external_refs_added}
        assert releases and links
        out = asyncio.run(TopicReader(settings, [names.releases, names.ref_links]).until(
            lambda r: {CODEC.decode(m.value).value["record_id"] for m in r[names.releases]} >= set(releases)
            and {m.key for m in r[names.ref_links]} >= set(links), 60))
        got_releases: dict[str, dict] = {}
        for m in out[names.releases]:
            value = without_numbers(CODEC.decode(m.value).value)
            assert got_releases.setdefault(value["record_id"], value) == value, "a release re-emitted differently"
        assert got_releases == releases
        assert {(m.key, m.value) for m in out[names.ref_links]} == set(links.items())
    finally:
        for worker in workers:
            worker.stop()
        model.close()
        asyncio.run(delete_namespace_topics(settings, settings.topic_namespace))
