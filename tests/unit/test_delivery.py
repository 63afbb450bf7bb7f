"""Outages are waited out, unwritable rows are parked, lost outputs stop the worker (``hub.streams.delivery``).

Nothing here sleeps: the back-off pauses are recorded by a fake ``sleep``.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.errors import RetriableError
from hub.streams import delivery
from hub.streams.core import Inbound, TopicNames
from hub.streams.delivery import (EXIT_OUTPUT_LOST, make_flush_complete, retrying, settled, stop_hard_if_lost,
                                  write_batch)

TOPICS = TopicNames.load()
OUTAGE = (OperationalError, RetriableError)


class Pauses(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def record(offset: int) -> Inbound:
    return Inbound(TOPICS.changes, 1, offset, 0, b"O-1", f"value-{offset}".encode())


def down(times: int, then=None):
    """A call that fails as an outage ``times`` times, then returns ``then``."""
    calls = []

    def call(*args):
        calls.append(args)
        if len(calls) <= times:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return then
    call.calls = calls
    return call


async def test_an_outage_is_retried_with_growing_pauses_then_succeeds() -> None:
    pauses = Pauses()
    call = down(4, then="ok")
    assert await retrying(call, OUTAGE, "test", sleep=pauses) == "ok"
    assert pauses == [0.5, 1.0, 2.0, 4.0] and len(call.calls) == 5


async def test_anything_else_propagates_at_once() -> None:
    pauses = Pauses()

    def broken():
        raise KeyError("bug")
    with pytest.raises(KeyError):
        await retrying(broken, OUTAGE, "test", sleep=pauses)
    assert pauses == []


async def test_a_database_outage_holds_the_batch_until_it_is_written() -> None:
    pauses, written = Pauses(), []
    flaky = down(3)

    def write(items):
        flaky()
        written.append(list(items))
    dead = await write_batch(write, [(record(1), "a"), (record(2), "b")], "project", TOPICS, OUTAGE, sleep=pauses)
    assert dead == [] and written == [["a", "b"]] and len(pauses) == 3


async def test_a_row_the_database_refuses_is_parked_and_the_rest_written() -> None:
    written = []

    def write(items):
        if "bad" in items:
            raise IntegrityError("INSERT", {}, Exception("value too long"))
        written.extend(items)
    items = [(record(1), "a"), (record(2), "bad"), (record(3), "c")]
    dead = await write_batch(write, items, "project:order_change", TOPICS, OUTAGE, sleep=Pauses())
    assert written == ["a", "c"]
    (parked,) = dead
    headers = dict(parked.headers)
    assert parked.topic == TOPICS.dead_letters and parked.value == b"value-2"
    assert headers["__orderhub.errors.offset"] == b"2" and headers["__orderhub.errors.stage"] == b"project:order_change"
    assert b"value too long" in headers["__orderhub.errors.exception.message"]


async def test_an_output_kafka_did_not_take_ends_the_process_and_a_delivered_one_does_not() -> None:
    exits: list[int] = []
    loop = asyncio.get_running_loop()
    delivered, lost, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    checked = {future: asyncio.Event() for future in (delivered, lost, cancelled)}
    for future, event in checked.items():
        stop_hard_if_lost(future, "orderhub.order.changes.v1 key b'O-1'", exit=exits.append)
        future.add_done_callback(lambda _, event=event: event.set())  # runs after the watcher's
    delivered.set_result("metadata")
    cancelled.cancel()
    await asyncio.wait_for(asyncio.gather(checked[delivered].wait(), checked[cancelled].wait()), timeout=10)
    assert exits == []
    lost.set_exception(TimeoutError("batch expired"))
    await asyncio.wait_for(checked[lost].wait(), timeout=10)
    assert exits == [EXIT_OUTPUT_LOST]


class ChangelogBuffer:
    """faust's ProducerBuffer in miniature: a queue a sender task drains, one record at a time."""

    state = "running"

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.message_sent = asyncio.Event()
        self.gate = asyncio.Event()  # the Kafka client taking the record
        self.taken = asyncio.Event()  # the sender holds a record
        self.sent: list[str] = []

    @property
    def size(self) -> int:
        return self.queue.qsize()

    async def _send_pending(self, record: str) -> None:
        self.taken.set()
        await self.gate.wait()
        self.sent.append(record)

    async def handle_pending(self) -> None:  # as faust's _handle_pending: bound once, at start
        send = self._send_pending
        while True:
            record = await self.queue.get()
            await send(record)
            self.message_sent.set()


async def test_the_changelog_flush_waits_for_the_record_the_sender_already_took() -> None:
    """faust's flush sees an empty queue while its sender holds a record, and lets the commit through;
    the replacement returns only once every record put in has been handed to the client."""
    buffer = ChangelogBuffer()
    make_flush_complete(buffer)
    sender = asyncio.create_task(buffer.handle_pending())
    try:
        buffer.queue.put_nowait("orders:O-1@v24")
        buffer.queue.put_nowait("orders:O-1@v25")
        await asyncio.wait_for(buffer.taken.wait(), timeout=10)  # the sender holds the first one
        flush = asyncio.create_task(buffer.flush())
        finished, _ = await asyncio.wait({flush}, timeout=0.5)  # faust's would return at once here
        assert not finished and buffer.sent == []
        buffer.gate.set()
        await asyncio.wait_for(flush, timeout=10)
        assert buffer.sent == ["orders:O-1@v24", "orders:O-1@v25"]
    finally:
        sender.cancel()


async def test_a_stopping_buffer_still_hands_on_its_records_and_gives_up_only_when_its_sender_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = ChangelogBuffer()
    buffer.state = "stopping"
    buffer.gate.set()
    make_flush_complete(buffer)
    sender = asyncio.create_task(buffer.handle_pending())
    buffer.queue.put_nowait("orders:O-2@v3")
    await asyncio.wait_for(buffer.flush(), timeout=10)
    assert buffer.sent == ["orders:O-2@v3"]
    sender.cancel()
    monkeypatch.setattr(delivery, "STOP_FLUSH_S", 0.3)
    buffer.queue.put_nowait("orders:O-2@v4")
    with pytest.raises(RuntimeError, match="stopped with 1 records unsent"):
        await asyncio.wait_for(buffer.flush(), timeout=10)


async def test_a_cancelled_agent_finishes_the_work_it_started_before_its_record_is_acknowledged() -> None:
    """A stopping worker cancels its agents; faust then acknowledges and commits. The work survives the
    cancellation; work that cannot finish in time ends the process instead of being committed."""
    exits: list[int] = []
    started, gate, done = asyncio.Event(), asyncio.Event(), []

    async def write() -> str:
        started.set()
        await gate.wait()
        done.append("rows")
        return "written"

    async def agent() -> None:
        await settled(write(), "project batch of 2", exit=exits.append)
    running = asyncio.create_task(agent())
    await started.wait()  # the write has started and waits on its database
    running.cancel()
    finished, _ = await asyncio.wait({running}, timeout=0.5)
    assert not finished  # still finishing the write
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert done == ["rows"] and exits == []


async def test_work_that_cannot_finish_while_stopping_ends_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(delivery, "STOP_FLUSH_S", 0.2)

    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()

    async def agent() -> None:
        await settled(stuck(), "decide", exit=exits.append)
    running = asyncio.create_task(agent())
    await asyncio.wait_for(started.wait(), timeout=10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=10)
    assert exits == [EXIT_OUTPUT_LOST]
