"""What the agents do when the world outside fails: wait it out, park the record, or stop hard.

Four rules, one per kind of failure:

- **An outage** (the schema registry or the database is down): retry with backoff, holding the
  partition. Nothing behind the record moves, so nothing is reordered or lost.
- **A record that can never succeed** (bytes no schema reads, a row the database refuses):
  the record goes to the dead-letter topic with why, and the partition goes on.
- **A fatal error** (configuration or declarations are wrong): the worker stops at once, before
  the record's offset is committed, and says why; every later record would fail the same way.
- **An output Kafka did not take** (the broker refused or timed out a send after its retries):
  the process exits at once, before faust can commit the input offset behind it. This is the
  SIGKILL the crash test proves safe: the restart replays the input, and the engine re-emits
  the lost outputs from the order's outbox. A graceful stop would commit first, and lose them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from hub.streams.core import Inbound, Outbound, TopicNames, dead_letter

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Exit status of a worker that stopped because Kafka did not take one of its outputs (EX_SOFTWARE).
EXIT_OUTPUT_LOST = 70
#: Exit status of a worker that stopped on a fatal error: configuration or declarations are wrong (EX_CONFIG).
EXIT_FATAL = 78
#: How long a stopping worker's changelog buffer may take to hand on its last records.
STOP_FLUSH_S = 30.0


def backoff_s(attempt: int) -> float:
    """0.5 s, 1 s, 2 s, ... at most 30 s: an outage outside is waited out, not hammered."""
    return min(30.0, 0.5 * 2 ** attempt)


async def retrying(call: Callable[[], T], retriable: tuple[type[BaseException], ...], what: str, *,
                   in_thread: bool = False, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> T:
    """``call()`` until it does not raise one of ``retriable``; any other error propagates.

    ``in_thread`` runs a blocking call (SQL) off the event loop, so the other agents keep going.
    """
    for attempt in itertools.count():
        try:
            return await asyncio.to_thread(call) if in_thread else call()
        except retriable as exc:
            log.warning("%s: %s: %s; retrying in %.1fs", what, type(exc).__name__, exc, backoff_s(attempt))
            await sleep(backoff_s(attempt))
    raise AssertionError("unreachable")


async def write_batch(write: Callable[[list[Any]], None], items: Sequence[tuple[Inbound, Any]], stage: str,
                      topics: TopicNames, retriable: tuple[type[BaseException], ...], *,
                      sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> list[Outbound]:
    """Write a projector batch, waiting out outages; return dead letters for items that can never be written.

    The batch is written whole when it can be; when it cannot (and it is not an outage), each
    item is written alone, so one bad row parks only itself.
    """
    try:
        await retrying(lambda: write([item for _, item in items]), retriable, stage, in_thread=True, sleep=sleep)
        return []
    except Exception:  # noqa: BLE001 - some item in the batch can never be written: find it
        log.warning("%s: a batch of %d could not be written; writing one by one", stage, len(items))
    dead = []
    for record, item in items:
        try:
            await retrying(lambda: write([item]), retriable, stage, in_thread=True, sleep=sleep)
        except Exception as exc:  # noqa: BLE001 - this row can never be written: park it with why
            log.error("%s: %s[%s]@%s cannot be written: %s", stage, record.topic, record.partition, record.offset, exc)
            dead.append(dead_letter(topics, record, stage, exc))
    return dead


def make_flush_complete(buffer: Any) -> None:
    """Make faust's changelog buffer flush all of itself before faust commits input offsets.

    faust writes table changelog records through a ``ProducerBuffer`` that a background task
    hands to the Kafka client, and flushes it before every commit. But its ``flush`` returns
    as soon as 0.1 s pass without a send, and does not count the record the task has taken
    off the queue but not yet handed on; either way the commit can overtake a table write.
    After a crash the table is then restored without that write while its input stays
    committed: the order's state rolls back (the crash test caught it: later proposals were
    decided against an older version). This replaces ``flush`` (on this one buffer, before
    it starts) with one that returns only when every record put in is in the client's hands;
    the client's own flush, which faust calls next, then waits for their delivery.
    """
    in_flight = 0
    send = buffer._send_pending

    async def send_counted(fut: Any) -> None:
        nonlocal in_flight
        in_flight += 1  # before the first await: the task took it off the queue just now
        try:
            await send(fut)
        finally:
            in_flight -= 1

    async def flush() -> None:
        stopping_since = None
        while buffer.size or in_flight:
            if buffer.state != "running":  # stopping: its sender still runs for a while; give it time
                stopping_since = stopping_since or time.monotonic()
                if time.monotonic() - stopping_since > STOP_FLUSH_S:
                    raise RuntimeError(f"the changelog buffer stopped with {buffer.size + in_flight} records unsent")
            buffer.message_sent.clear()
            try:
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=0.1)
            except asyncio.TimeoutError:
                continue  # look again; never give up with records still unsent

    buffer._send_pending = send_counted
    buffer.flush = flush


async def settled(work: Awaitable[T], what: str, *, exit: Callable[[int], Any] = os._exit) -> T:
    """Run ``work`` to its end even if the agent is cancelled meanwhile (the worker is stopping).

    faust acknowledges an agent's records on its way out, and a stopping worker commits what
    was acknowledged, so whatever a record caused (its outputs, its rows) must be done by
    then. A cancelled agent therefore waits for the work it started; if that does not finish
    within ``STOP_FLUSH_S``, the process ends hard, before the commit.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_FLUSH_S)
        except BaseException as exc:  # noqa: BLE001 - unfinished or failed: nothing may be committed
            _stop_hard(f"stopping with {what} unfinished ({type(exc).__name__}: {exc}); ending now so it is read again",
                       exit)
        raise


def stop_hard_if_lost(future: "asyncio.Future[Any]", what: str, exit: Callable[[int], Any] = os._exit) -> None:
    """Watch one send: if Kafka does not take it, end the process before any later commit.

    The callback is registered on the send's own future, so it runs before whatever waits for
    the producer's flush (faust's commit) is resumed.
    """
    def check(done: "asyncio.Future[Any]") -> None:
        if done.cancelled():
            return
        if (error := done.exception()) is not None:
            _stop_hard(f"output lost: {what}: {type(error).__name__}: {error}; stopping now so its input is read again",
                       exit)
    future.add_done_callback(check)


def _stop_hard(why: str, exit: Callable[[int], Any], status: int = EXIT_OUTPUT_LOST) -> None:
    """End the process now, before faust can commit anything more: the restart reads it again."""
    log.critical(why)
    logging.shutdown()
    exit(status)


def stop_on_fatal(error: BaseException, what: str, exit: Callable[[int], Any] = os._exit) -> None:
    """A fatal error (wrong configuration or declarations) ends the worker before its record is
    committed: dead-lettering it would lose every record after it to the same cause."""
    _stop_hard(f"{what}: fatal {type(error).__name__}: {error}; stopping (fix the configuration and restart: "
               "the record is read again)", exit, EXIT_FATAL)
