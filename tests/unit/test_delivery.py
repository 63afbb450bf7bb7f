"""Outages are waited out, unwritable rows are parked, fatal errors stop the worker (``hub.streams.delivery``).

Nothing here sleeps: the back-off pauses are recorded by a fake ``sleep``.
"""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.errors import RetriableError
from hub.errors import FatalError
from hub.streams.core import Inbound, TopicNames
from hub.streams.delivery import EXIT_FATAL, retrying, stop_on_fatal, write_batch

TOPICS = TopicNames.load()
OUTAGE = (OperationalError, RetriableError)


class Pauses(list):
    def __call__(self, seconds: float) -> None:
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


def test_an_outage_is_retried_with_growing_pauses_then_succeeds() -> None:
    pauses = Pauses()
    call = down(4, then="ok")
    assert retrying(call, OUTAGE, "test", sleep=pauses) == "ok"
    assert pauses == [0.5, 1.0, 2.0, 4.0] and len(call.calls) == 5


def test_anything_else_propagates_at_once() -> None:
    pauses = Pauses()

    def broken():
        raise KeyError("bug")
    with pytest.raises(KeyError):
        retrying(broken, OUTAGE, "test", sleep=pauses)
    assert pauses == []


def test_a_database_outage_holds_the_batch_until_it_is_written() -> None:
    pauses, written = Pauses(), []
    flaky = down(3)

    def write(items):
        flaky()
        written.append(list(items))
    dead = write_batch(write, [(record(1), "a"), (record(2), "b")], "project", TOPICS, OUTAGE, sleep=pauses)
    assert dead == [] and written == [["a", "b"]] and len(pauses) == 3


def test_a_row_the_database_refuses_is_parked_and_the_rest_written() -> None:
    written = []

    def write(items):
        if "bad" in items:
            raise IntegrityError("INSERT", {}, Exception("value too long"))
        written.extend(items)
    items = [(record(1), "a"), (record(2), "bad"), (record(3), "c")]
    dead = write_batch(write, items, "project:order_change", TOPICS, OUTAGE, sleep=Pauses())
    assert written == ["a", "c"]
    (parked,) = dead
    headers = dict(parked.headers)
    assert parked.topic == TOPICS.dead_letters and parked.value == b"value-2"
    assert headers["__orderhub.errors.offset"] == b"2" and headers["__orderhub.errors.stage"] == b"project:order_change"
    assert b"value too long" in headers["__orderhub.errors.exception.message"]




def test_an_outage_outlasting_its_attempts_propagates_and_nothing_is_parked() -> None:
    """The projector's sink gives the batch back (Quix reads it again later) instead of blocking its loop."""
    pauses, call = Pauses(), down(10)
    with pytest.raises(OperationalError):
        write_batch(lambda items: call(), [(record(1), "a")], "project", TOPICS, OUTAGE, attempts=3, sleep=pauses)
    assert pauses == [0.5, 1.0] and len(call.calls) == 3


def test_a_fatal_error_ends_the_process_with_the_configuration_status() -> None:
    exits: list[int] = []
    stop_on_fatal(FatalError("no schema change_proposal v9"), "decide t[0]@4", exit=exits.append)
    assert exits == [EXIT_FATAL]


def test_the_worker_starts_again_when_a_topic_quix_just_created_is_not_listed_yet(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Quix creates its changelog topics and reads each back at once; a KRaft broker can list a new one
    a moment later. The worker builds its application again (the topic exists then) instead of dying;
    a topic still missing after ``STARTS`` tries ends it with the error."""
    from quixstreams.models.topics.exceptions import TopicNotFoundError

    from hub.settings import Settings
    from hub.streams import app as worker

    class Ran:
        runs = 0

        def run(self) -> None:
            Ran.runs += 1

    attempts = []

    def created(missing: int):
        def create_app(settings: Settings) -> Ran:
            attempts.append(settings)
            if len(attempts) <= missing:
                raise TopicNotFoundError('Topic "changelog__x" not found on the broker')
            return Ran()
        return create_app

    settings = Settings(state_dir=tmp_path, metrics_port=-1)
    pauses = Pauses()
    monkeypatch.setattr("hub.logs.configure", lambda settings: None)  # the test process keeps its logging
    monkeypatch.setattr(worker, "create_app", created(1))
    assert worker.run_worker(settings, sleep=pauses) == 0
    assert (len(attempts), Ran.runs, pauses) == (2, 1, [0.5])
    attempts.clear()
    monkeypatch.setattr(worker, "create_app", created(worker.STARTS))
    with pytest.raises(TopicNotFoundError):
        worker.run_worker(settings, sleep=pauses)
    assert len(attempts) == worker.STARTS and Ran.runs == 1
