"""What the engine does when the world outside fails: wait it out, park the record, or stop hard.

Three rules, one per kind of failure:

- **An outage** (the schema registry or the database is down): retry with backoff, holding the
  partition. Nothing behind the record moves, so nothing is reordered or lost.
- **A record that can never succeed** (bytes no schema reads, a row the database refuses):
  the record goes to the dead-letter topic with why, and the partition goes on.
- **A fatal error** (configuration or declarations are wrong): the worker stops at once, before
  the record's offset is committed, and says why; every later record would fail the same way.

An output Kafka does not take is the runtime's to handle: Quix raises it at the next flush,
before the checkpoint that would commit the input behind it, and the worker stops; the
restart decides the input again against the state as of the last commit.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any, Callable, Sequence, TypeVar

from hub.streams.core import Inbound, Outbound, TopicNames, dead_letter

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Exit status of a worker that stopped on a fatal error: configuration or declarations are wrong (EX_CONFIG).
EXIT_FATAL = 78


def backoff_s(attempt: int) -> float:
    """0.5 s, 1 s, 2 s, ... at most 30 s: an outage outside is waited out, not hammered."""
    return min(30.0, 0.5 * 2 ** attempt)


def retrying(call: Callable[[], T], retriable: tuple[type[BaseException], ...], what: str, *,
             attempts: int | None = None, sleep: Callable[[float], Any] = time.sleep) -> T:
    """``call()`` until it does not raise one of ``retriable``; any other error propagates, and so does
    the outage itself after ``attempts`` tries (None: for as long as it lasts)."""
    for attempt in itertools.count():
        try:
            return call()
        except retriable as exc:
            if attempts is not None and attempt + 1 >= attempts:
                raise
            log.warning("%s: %s: %s; retrying in %.1fs", what, type(exc).__name__, exc, backoff_s(attempt))
            sleep(backoff_s(attempt))
    raise AssertionError("unreachable")


def write_batch(write: Callable[[list[Any]], None], items: Sequence[tuple[Inbound, Any]], stage: str,
                topics: TopicNames, retriable: tuple[type[BaseException], ...], *, attempts: int | None = None,
                sleep: Callable[[float], Any] = time.sleep) -> list[Outbound]:
    """Write a projector batch, waiting out outages; return dead letters for items that can never be written.

    The batch is written whole when it can be; when it cannot (and it is not an outage), each
    item is written alone, so one bad row parks only itself. An outage outlasting ``attempts``
    propagates: the caller reads the batch again later.
    """
    try:
        retrying(lambda: write([item for _, item in items]), retriable, stage, attempts=attempts, sleep=sleep)
        return []
    except retriable:
        raise
    except Exception:  # noqa: BLE001 - some item in the batch can never be written: find it
        log.warning("%s: a batch of %d could not be written; writing one by one", stage, len(items))
    dead = []
    for record, item in items:
        try:
            retrying(lambda: write([item]), retriable, stage, attempts=attempts, sleep=sleep)
        except retriable:
            raise
        except Exception as exc:  # noqa: BLE001 - this row can never be written: park it with why
            log.error("%s: %s[%s]@%s cannot be written: %s", stage, record.topic, record.partition, record.offset, exc)
            dead.append(dead_letter(topics, record, stage, exc))
    return dead


def stop_on_fatal(error: BaseException, what: str, exit: Callable[[int], Any] = os._exit) -> None:
    """A fatal error (wrong configuration or declarations) ends the worker before its record is
    committed: dead-lettering it would lose every record after it to the same cause."""
    log.critical("%s: fatal %s: %s; stopping (fix the configuration and restart: the record is read again)",
                 what, type(error).__name__, error)
    logging.shutdown()
    exit(EXIT_FATAL)
