"""The due-date alert end to end: the real engine worker and ``orderhub alerts`` as processes on real
Kafka, the alert worker's clock a file the test moves (``ORDERHUB_CLOCK_FILE``)."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from hub import correlation
from hub.client import HubClient
from hub.readmodel import ReadModel
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec
from hub.settings import Settings
from hub.streams.alerts import READY
from hub.streams.core import TopicNames
from tests.domain_helpers import creation, proposal
from tests.integration.kafka_helpers import TopicReader, WorkerProcess, delete_namespace_topics, poll_until
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration

CODEC = AvroCodec(SchemaStore.load(Settings().schemas_dir))


def move_clock(path: Path, when: str) -> None:
    """Set the alert workers' clock, whole (renamed into place)."""
    written = path.with_suffix(".tmp")
    written.write_text(when)
    os.replace(written, path)


async def alerts_until(settings: Settings, condition: Any, timeout: float = 60) -> list[tuple[str, dict]]:
    """Every alert record (record id, decoded with its correlation id as "flow"), in topic order per
    partition, once ``condition(alerts)`` holds."""
    topic = TopicNames.of(settings).alerts

    def read(records: dict) -> list[tuple[str, dict]]:
        values = [{**CODEC.decode(r.value, "order_alert").value, "flow": correlation.of(r.headers)}
                  for r in records[topic]]
        return [(v["record_id"], v) for v in values]

    records = await TopicReader(settings, [topic]).until(lambda r: condition(read(r)), timeout)
    return read(records)


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    return namespaced_settings(kafka_settings, tmp_path)


async def test_raised_escalated_not_repeated_across_a_sigkill_and_cleared_when_production_starts(
        settings: Settings, tmp_path: Path) -> None:
    clock = tmp_path / "now"
    move_clock(clock, "2026-12-01T08:00:00+00:00")
    engine = WorkerProcess(settings, tmp_path / "engine.log").start()
    watcher = WorkerProcess(settings, tmp_path / "alerts.log", {"ORDERHUB_CLOCK_FILE": str(clock)},
                            command=("alerts",), ready_mark=READY)
    soon, later = f"O-{uuid.uuid4().hex[:8]}", f"O-{uuid.uuid4().hex[:8]}"
    try:
        engine.wait_ready()
        watcher.start().wait_ready()
        async with HubClient(settings) as client:
            for order, due in ((soon, dt.date(2026, 12, 10)), (later, dt.date(2026, 12, 20))):
                answer = (await client.propose(creation(f"{order}-c", {"requested_delivery": due}, order_id=order),
                                               timeout_s=60)).answer
                assert answer.outcome.value == "CREATED"

            # two days later the first order is 7 days from its due date, the second 17
            move_clock(clock, "2026-12-03T08:00:00+00:00")
            first = await alerts_until(settings, lambda found: len(found) >= 1)
            assert [(v["order_id"], v["kind"], v["stage"], v["notify"], v["days_left"]) for _, v in first] == [
                (soon, "RAISED", "due_soon", "production_lead", 7)]
            assert first[0][1]["reason"] == "due 2026-12-10, in 7 days and production has not started (DRAFT)"
            assert first[0][1]["flow"] == f"{soon}-c"  # the order's correlation id: its notifications carry it

            # killed and started again at the same time: it reads what it raised and raises nothing again
            assert watcher.kill() == -9
            watcher.start().wait_ready()
            move_clock(clock, "2026-12-07T08:00:00+00:00")
            await alerts_until(settings, lambda found: any(v["stage"] == "escalated" for _, v in found))
            # visible with the order: the engine's projector keeps them in the read model
            model = ReadModel(settings.read_model_url)
            try:
                await poll_until(lambda: [a.stage for a in model.open_alerts(soon)] == ["due_soon", "escalated"], 60,
                                 "both alerts open in the read model")
            finally:
                model.close()

            for step, (status, system, role) in enumerate((("CONFIRMED", "CRM", "connector"),
                                                           ("APPROVED", "ERP", "connector"),
                                                           ("RELEASED", "HUB", "planner"),
                                                           ("IN_PRODUCTION", "MES", "connector")), start=1):
                answer = (await client.propose(proposal(f"{soon}-{status}", {"status": status}, base=step,
                                                        system=system, role=role, order_id=soon),
                                               timeout_s=60)).answer
                assert answer.outcome.value == "APPLIED", answer
            found = await alerts_until(settings, lambda found: sum(v["kind"] == "CLEARED" for _, v in found) >= 2)
    finally:
        watcher.stop()
        engine.stop()
        await delete_namespace_topics(settings, settings.topic_namespace)

    ids = [record_id for record_id, _ in found]
    assert len(ids) == len(set(ids)), f"an alert was written twice: {ids}"
    assert [(v["order_id"], v["kind"], v["stage"]) for _, v in found] == [
        (soon, "RAISED", "due_soon"), (soon, "RAISED", "escalated"),
        (soon, "CLEARED", "due_soon"), (soon, "CLEARED", "escalated")]
    assert {v["reason"] for _, v in found if v["kind"] == "CLEARED"} == {"production started (IN_PRODUCTION)"}
    assert {v["flow"] for _, v in found} == {f"{soon}-c"}


async def test_two_workers_share_the_orders_and_the_survivor_of_a_sigkill_takes_them_over(
        settings: Settings, tmp_path: Path) -> None:
    """Range assignment splits the orders between two alert workers; one is killed, the other rebuilds
    its partitions from the topics and escalates every order, raising nothing twice."""
    clock = tmp_path / "now"
    move_clock(clock, "2026-12-01T08:00:00+00:00")
    engine = WorkerProcess(settings, tmp_path / "engine.log").start()
    watchers = [WorkerProcess(settings, tmp_path / f"alerts-{n}.log", {"ORDERHUB_CLOCK_FILE": str(clock)},
                              command=("alerts",), ready_mark=READY) for n in (1, 2)]
    orders = [f"O-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    try:
        engine.wait_ready()
        for watcher in watchers:
            watcher.start().wait_ready()
        async with HubClient(settings) as client:
            for order in orders:  # each due in 7 days: due_soon as soon as it exists
                answer = (await client.propose(creation(f"{order}-c", {"requested_delivery": dt.date(2026, 12, 8)},
                                                        order_id=order), timeout_s=60)).answer
                assert answer.outcome.value == "CREATED"
        await alerts_until(settings, lambda found: {v["order_id"] for _, v in found} == set(orders))
        raised_by = [w.log_path.read_text().count("alert raised due_soon") for w in watchers]
        assert all(raised_by) and sum(raised_by) == len(orders), raised_by  # both worked, on different orders

        assert watchers[1].kill() == -9  # its partitions go to the other once the group notices (6 s)
        move_clock(clock, "2026-12-05T08:00:00+00:00")
        found = await alerts_until(
            settings, lambda found: sum(v["stage"] == "escalated" for _, v in found) == len(orders), timeout=90)
    finally:
        for watcher in watchers:
            watcher.stop()
        engine.stop()
        await delete_namespace_topics(settings, settings.topic_namespace)

    ids = [record_id for record_id, _ in found]
    assert len(ids) == len(set(ids)) == 2 * len(orders), f"an alert was written twice: {sorted(ids)}"
