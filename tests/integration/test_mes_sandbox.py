"""The sandbox MES (a real asyncua server with the ISA-95 Job Control model) and a real Mosquitto,
driven through the MES client and the shop floor, each started on free ports under tmp_path and
stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import aiomqtt
import pytest
from asyncua import ua

from connectors.mes.mapping import JobOrder, JobState, JobStateChange, job_orders_for
from connectors.mes.mqtt import SUBSCRIPTION, ProgressReport, QualityReport, parse_message
from connectors.mes.opcua import (
    ISA95_NAMESPACE, JobOrderReceiverClient, JobOrderRefused, MesUnavailable, ReturnStatus, call_with_return_status,
    comment_variant, job_order_to_ua,
)
from hub.errors import DeadLetterError, OutsideSystemUnavailable, RetriableError
from hub.events import Instruction, OrderRelease, ReleaseLine
from localdev import mosquitto, process
from localdev.sandboxes import mes
from localdev.sandboxes.mes import ShopFloor
from tests.integration.kafka_helpers import eventually as polled

pytestmark = pytest.mark.integration

T = TypeVar("T")
DEADLINE = 10.0


@dataclass(frozen=True)
class Sandbox:
    """A running sandbox MES and the broker it publishes to."""

    state_dir: Path
    url: str
    mqtt_port: int


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A real Mosquitto on a free port; stopped by PID afterwards."""
    port = process.free_port()
    mosquitto.up(tmp_path / "broker", port)
    yield port
    mosquitto.down(tmp_path / "broker")


@pytest.fixture
def sandbox(tmp_path: Path, broker: int) -> Iterator[Sandbox]:
    """The sandbox MES on a free port, publishing to the broker; stopped by PID afterwards."""
    state_dir = tmp_path / "mes-state"
    url = mes.up(state_dir, process.free_port(), mqtt_port=broker)
    yield Sandbox(state_dir, url, broker)
    mes.down(state_dir)


@pytest.fixture
def auto_sandbox(tmp_path: Path, broker: int) -> Iterator[Sandbox]:
    """The sandbox MES in auto mode (0.2 s per step); stopped by PID afterwards."""
    state_dir = tmp_path / "mes-auto"
    url = mes.up(state_dir, process.free_port(), mqtt_port=broker, auto_seconds=0.2)
    yield Sandbox(state_dir, url, broker)
    mes.down(state_dir)


def release(order_number: str = "ORD-2026-03-000123", lines: tuple[int, ...] = (10,)) -> OrderRelease:
    """A released order with one line per line number."""
    now = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
    return OrderRelease(
        record_id=f"rel-{order_number}", event_id="evt-1", order_id=f"id-{order_number}", order_number=order_number,
        version=5, priority=7, requested_delivery=dt.date(2026, 4, 30), plant="P100",
        instructions=[Instruction(key="coating", text="RAL 5010"), Instruction(text="deburr all edges")],
        lines=[ReleaseLine(line_no=n, material_id=f"MAT-{n}", material_revision="C", quantity=Decimal("40"),
                           unit="C62") for n in lines],
        released_at=now)


def job(order_number: str = "ORD-2026-03-000123", line_no: int = 10) -> JobOrder:
    """The job order the hub makes for one line."""
    return job_orders_for(release(order_number, (line_no,)))[0]


async def eventually(read: Callable[[], Awaitable[T]], holds: Callable[[T], bool], what: str) -> T:
    """Poll ``read`` until ``holds`` is true of its value, failing after DEADLINE seconds."""
    last: list[T] = []

    async def check() -> T | None:
        last[:] = [await read()]
        return last[0] if holds(last[0]) else None
    return await polled(check, DEADLINE, lambda: f"{what}; last value {last[0] if last else None!r}", 0.05)


async def state_of(client: JobOrderReceiverClient, job_order_id: str) -> JobState | None:
    """The job's state as the receiver lists it (None: not listed)."""
    found = await client.find(job_order_id)
    return found.state if found else None


@contextlib.asynccontextmanager
async def subscribed(port: int) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT client subscribed to every shop-floor message (the SUBACK has arrived)."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(SUBSCRIPTION, qos=1)
        yield client


async def receive(client: aiomqtt.Client, count: int) -> list[ProgressReport | QualityReport]:
    """The next ``count`` shop-floor messages, parsed; fails after DEADLINE seconds."""
    reports = []
    async with asyncio.timeout(DEADLINE):
        async for message in client.messages:
            reports.append(parse_message(str(message.topic), bytes(message.payload)))
            if len(reports) == count:
                return reports
    return reports


async def test_a_stored_job_order_is_listed_not_allowed_to_start_with_everything_the_hub_sent(sandbox: Sandbox) -> None:
    """A job order stored with Store is listed in NotAllowedToStart and reads back exactly as sent."""
    sent = job()
    async with JobOrderReceiverClient(sandbox.url) as client:
        stored = await client.store(sent)
        listed = await client.list_jobs()
        of_order = await client.jobs_for_order(sent.order_id or "")
    assert stored.state is JobState.NOT_ALLOWED_TO_START
    assert [j.job for j in listed] == [sent]
    assert of_order == listed
    assert (sent.order_id, sent.order_version, sent.line_no, sent.priority, sent.due) == (
        "id-ORD-2026-03-000123", 5, 10, 7, dt.date(2026, 4, 30))
    assert stored.started_at is None and stored.ended_at is None


async def test_storing_an_existing_job_order_id_changes_nothing(sandbox: Sandbox) -> None:
    """Storing a job order id again returns the stored job unchanged, and the raw Store call is refused."""
    sent = job()
    async with JobOrderReceiverClient(sandbox.url) as client:
        await client.store(sent)
        await client.command("Start", sent.job_order_id)
        again = await client.store(sent, start=False)
        listed = await client.list_jobs()
        isa95 = await client.asyncua.get_namespace_index(ISA95_NAMESPACE)
        store = await client.receiver.get_child(f"{isa95}:Store")
        raw = await call_with_return_status(
            client.receiver, store, ua.Variant(job_order_to_ua(sent), ua.VariantType.ExtensionObject),
            comment_variant(None))
    assert again.state is JobState.ALLOWED_TO_START
    assert len(listed) == 1
    assert raw == ReturnStatus.UNABLE_TO_ACCEPT_JOB_ORDER | ReturnStatus.JOB_ORDER_ID_EXISTS


async def test_a_job_order_runs_through_the_standard_state_machine(sandbox: Sandbox) -> None:
    """StoreAndStart, begin, Pause, Resume, Stop and Clear move a job through the ISA-95 states."""
    sent = job()
    job_id = sent.job_order_id
    async with JobOrderReceiverClient(sandbox.url) as client, \
            ShopFloor(sandbox.url, "127.0.0.1", sandbox.mqtt_port) as floor:
        seen = [(await client.store(sent, start=True)).state]
        for step in (floor.start, floor.pause, floor.resume, floor.finish):
            await step(job_id)
            seen.append(await state_of(client, job_id))
        ended = await client.find(job_id)
        await client.command("Clear", job_id)
        cleared = await client.find(job_id)
    assert seen == [JobState.ALLOWED_TO_START, JobState.RUNNING, JobState.INTERRUPTED, JobState.RUNNING,
                    JobState.ENDED]
    assert ended is not None and ended.started_at is not None and ended.ended_at is not None
    assert ended.started_at <= ended.ended_at
    assert cleared is None


async def test_illegal_transitions_and_unknown_job_orders_are_refused_with_their_return_status(
        sandbox: Sandbox) -> None:
    """Commands a job's state does not allow, and unknown job ids, are refused with the standard's bits."""
    waiting, running = job(line_no=10), job(line_no=20)
    async with JobOrderReceiverClient(sandbox.url) as client, \
            ShopFloor(sandbox.url, "127.0.0.1", sandbox.mqtt_port) as floor:
        await client.store(waiting)
        await client.store(running, start=True)
        await floor.start(running.job_order_id)
        refusals = {}
        for name, call in {
            "begin NotAllowedToStart": lambda: floor.start(waiting.job_order_id),
            "Pause NotAllowedToStart": lambda: client.command("Pause", waiting.job_order_id),
            "Clear NotAllowedToStart": lambda: client.command("Clear", waiting.job_order_id),
            "Start Running": lambda: client.command("Start", running.job_order_id),
            "Cancel Running": lambda: client.cancel(running.job_order_id),
            "Stop unknown": lambda: client.command("Stop", "ORD-0-L1"),
        }.items():
            with pytest.raises(JobOrderRefused) as refused:
                await call()
            refusals[name] = refused.value.status
        unknown_cancelled = await client.cancel("ORD-0-L1")
        waiting_cancelled = await client.cancel(waiting.job_order_id)
        await client.command("Abort", running.job_order_id)
        left = {j.job_order_id: j.state for j in await client.list_jobs()}
    assert refusals == {
        "begin NotAllowedToStart": ReturnStatus.INVALID_JOB_ORDER_STATUS,
        "Pause NotAllowedToStart": ReturnStatus.INVALID_JOB_ORDER_STATUS,
        "Clear NotAllowedToStart": ReturnStatus.INVALID_JOB_ORDER_STATUS,
        "Start Running": ReturnStatus.INVALID_JOB_ORDER_STATUS,
        "Cancel Running": ReturnStatus.INVALID_JOB_ORDER_STATUS,
        "Stop unknown": ReturnStatus.UNKNOWN_JOB_ORDER_ID,
    }
    assert isinstance(JobOrderRefused("Start", "x", ReturnStatus.INVALID_REQUEST), DeadLetterError)
    assert (unknown_cancelled, waiting_cancelled) == (False, True)
    assert left == {running.job_order_id: JobState.ABORTED}


async def test_stored_job_orders_survive_a_restart_of_the_sandbox(sandbox: Sandbox) -> None:
    """After the sandbox is stopped and started again, it lists the same job orders in the same states."""
    first, second = job(line_no=10), job(line_no=20)
    async with JobOrderReceiverClient(sandbox.url) as client, \
            ShopFloor(sandbox.url, "127.0.0.1", sandbox.mqtt_port) as floor:
        await client.store(first)
        await client.store(second, start=True)
        await floor.start(second.job_order_id)
        before = await client.list_jobs()
    assert mes.down(sandbox.state_dir)
    assert not mes.status(sandbox.state_dir).running
    url = mes.up(sandbox.state_dir, process.free_port(), mqtt_port=sandbox.mqtt_port)
    async with JobOrderReceiverClient(url) as client:
        after = await client.list_jobs()
    assert after == before
    assert [j.state for j in after] == [JobState.NOT_ALLOWED_TO_START, JobState.RUNNING]


async def test_the_shop_floors_mqtt_messages_arrive_through_mosquitto_and_parse(sandbox: Sandbox) -> None:
    """Progress, hold and release published by the shop floor arrive through Mosquitto and parse to what was sent."""
    sent = job()
    async with JobOrderReceiverClient(sandbox.url) as client:
        await client.store(sent, start=True)
    async with subscribed(sandbox.mqtt_port) as listener, \
            ShopFloor(sandbox.url, "127.0.0.1", sandbox.mqtt_port) as floor:
        published = [await floor.report(sent.job_order_id, Decimal("12"), Decimal("1.5"), "C62"),
                     await floor.hold(sent.job_order_id, "surface cracks"),
                     await floor.release_hold(sent.job_order_id)]
        received = await receive(listener, 3)
    assert received == published
    assert [r.topic for r in received] == [f"mes/P100/jobs/{sent.job_order_id}/{kind}"
                                           for kind in ("progress", "quality", "quality")]
    assert [r.seq for r in received] == sorted({r.seq for r in received})


async def test_a_watcher_sees_every_state_change_of_a_job_order(sandbox: Sandbox) -> None:
    """The JobOrderList subscription reports a job appearing, each state change and its removal."""
    sent = job()
    job_id = sent.job_order_id
    changes: list[JobStateChange] = []
    async with JobOrderReceiverClient(sandbox.url) as client, JobOrderReceiverClient(sandbox.url) as watcher, \
            ShopFloor(sandbox.url, "127.0.0.1", sandbox.mqtt_port) as floor:

        async def collect() -> None:
            async for change in watcher.watch():
                changes.append(change)

        task = asyncio.create_task(collect())
        steps = [lambda: client.store(sent), lambda: client.command("Start", job_id), lambda: floor.start(job_id),
                 lambda: floor.finish(job_id), lambda: client.command("Clear", job_id)]
        try:
            for count, step in enumerate(steps, start=1):
                await step()
                await eventually(lambda: snapshot(changes), lambda seen: len(seen) >= count, f"change {count} seen")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert [(c.previous, c.current.state if c.current else None) for c in changes] == [
        (None, JobState.NOT_ALLOWED_TO_START), (JobState.NOT_ALLOWED_TO_START, JobState.ALLOWED_TO_START),
        (JobState.ALLOWED_TO_START, JobState.RUNNING), (JobState.RUNNING, JobState.ENDED), (JobState.ENDED, None)]
    assert changes[3].current is not None and changes[3].current.ended_at is not None


async def test_a_watch_ends_with_a_retriable_error_when_the_mes_goes_away(sandbox: Sandbox) -> None:
    """Stopping the sandbox makes a running watch raise MesUnavailable, a RetriableError."""
    async with JobOrderReceiverClient(sandbox.url) as client:
        await client.store(job())
    async with JobOrderReceiverClient(sandbox.url) as watcher:
        changes = watcher.watch()
        async with asyncio.timeout(DEADLINE):
            first = await anext(changes)  # the subscription is live
        mes.down(sandbox.state_dir)
        with pytest.raises(MesUnavailable) as lost:
            async with asyncio.timeout(DEADLINE):
                await anext(changes)
    assert first.previous is None and first.current is not None
    assert isinstance(lost.value, OutsideSystemUnavailable) and isinstance(lost.value, RetriableError)


async def test_an_unreachable_mes_is_a_retriable_error() -> None:
    """Connecting to a port where no MES listens raises MesUnavailable, a RetriableError."""
    with pytest.raises(MesUnavailable) as unreachable:
        async with JobOrderReceiverClient(f"opc.tcp://127.0.0.1:{process.free_port()}", timeout=2.0):
            pass
    assert isinstance(unreachable.value, RetriableError)


async def test_auto_mode_runs_a_stored_job_to_the_end_and_reports_progress_twice(auto_sandbox: Sandbox) -> None:
    """In auto mode the sandbox starts a stored job, reports half then all of it over MQTT, and ends it."""
    sent = job()
    async with subscribed(auto_sandbox.mqtt_port) as listener:
        async with JobOrderReceiverClient(auto_sandbox.url) as client:
            await client.store(sent)
            ended = await eventually(lambda: client.find(sent.job_order_id),
                                     lambda found: found is not None and found.state is JobState.ENDED, "job ended")
        reports = await receive(listener, 2)
    assert [(r.good_quantity, r.scrap_quantity, r.unit) for r in reports] == [
        (Decimal("20"), Decimal(0), "C62"), (Decimal("40"), Decimal(0), "C62")]
    assert reports[0].seq < reports[1].seq
    assert ended.started_at is not None and ended.ended_at is not None


def test_mosquitto_up_is_idempotent_and_down_stops_it(tmp_path: Path) -> None:
    """A second up returns the running broker's URL, and down stops exactly its PID."""
    port = process.free_port()
    first = mosquitto.up(tmp_path, port)
    again = mosquitto.up(tmp_path, process.free_port())
    running = mosquitto.status(tmp_path)
    stopped = mosquitto.down(tmp_path)
    assert first == again == f"mqtt://127.0.0.1:{port}"
    assert running.running and running.address == first and stopped == [running.pid]
    assert not mosquitto.status(tmp_path).running and not process.alive(running.pid)


async def snapshot(changes: list[JobStateChange]) -> list[JobStateChange]:
    """A copy of the changes collected so far."""
    return list(changes)
