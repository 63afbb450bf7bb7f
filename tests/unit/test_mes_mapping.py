"""The MES mapping both ways (release -> job orders, job states and shop-floor reports -> field
changes) and the MQTT message format, without any server."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from connectors.mes.mapping import (
    JobOrder, JobOrderState, JobState, job_order_id, job_orders_for, lifecycle_changes, parse_job_order_id,
    progress_changes, quality_changes,
)
from connectors.mes.mqtt import (
    SUBSCRIPTION, ProgressReport, QualityReport, SequenceClock, UnmappableMessage, encode_message, is_newer,
    parse_message,
)
from connectors.mes.opcua import unece_code, unece_unit_id
from hub.domain.fields import canonical_json, kind_of
from hub.domain.rules import Rules
from hub.errors import DeadLetterError, UnmappableRecord
from hub.events import Instruction, OrderRelease, ReleaseLine
from hub.settings import PROJECT_DIR

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
JOB_ID = "ORD-2026-03-000123-L10"
PROGRESS_TOPIC = f"mes/P100/jobs/{JOB_ID}/progress"
QUALITY_TOPIC = f"mes/P100/jobs/{JOB_ID}/quality"


def release(priority: int = 7, lines: tuple[int, ...] = (20, 10)) -> OrderRelease:
    """A released order with lines in the given order."""
    return OrderRelease(
        record_id="rel-1", event_id="evt-1", order_id="0c7e", order_number="ORD-2026-03-000123", version=5,
        priority=priority, requested_delivery=dt.date(2026, 4, 30), plant="P100",
        instructions=[Instruction(key="coating", text="RAL 5010"), Instruction(text="deburr all edges")],
        lines=[ReleaseLine(line_no=n, material_id=f"MAT-{n}", material_revision="C", quantity=Decimal("40.5"),
                           unit="KGM") for n in lines],
        released_at=T0)


def job(line_no: int = 10, unit: str = "C62") -> JobOrder:
    """A hub job order for one line."""
    return JobOrder(job_order_id("ORD-2026-03-000123", line_no), "MAT-1", Decimal("40"), unit, order_id="0c7e",
                    order_number="ORD-2026-03-000123", order_version=5, line_no=line_no)


def state(line_no: int, current: JobState, started: int | None = None, ended: int | None = None) -> JobOrderState:
    """A job's state with actual start and end ``started``/``ended`` hours after T0."""
    at = (lambda hours: None if hours is None else T0 + dt.timedelta(hours=hours))
    return JobOrderState(job(line_no), current, at(started), at(ended))


def progress(good: str = "12", scrap: str = "1.5", unit: str = "C62", seq: int = 1) -> ProgressReport:
    """A progress report on JOB_ID."""
    return ProgressReport("P100", JOB_ID, seq, T0, Decimal(good), Decimal(scrap), unit)


def quality(on_hold: bool, reason: str | None = "surface cracks") -> QualityReport:
    """A quality hold or release on JOB_ID."""
    return QualityReport("P100", JOB_ID, 2, T0, on_hold, reason)


def test_a_release_becomes_one_job_order_per_line_carrying_the_hub_order() -> None:
    """Each release line becomes job order <order_number>-L<line_no> with the order's id, version, line, due date."""
    jobs = job_orders_for(release())
    assert [j.job_order_id for j in jobs] == ["ORD-2026-03-000123-L10", "ORD-2026-03-000123-L20"]
    first = jobs[0]
    assert (first.order_id, first.order_number, first.order_version, first.line_no) == (
        "0c7e", "ORD-2026-03-000123", 5, 10)
    assert (first.material_id, first.material_revision, first.quantity, first.unit) == ("MAT-10", "C", Decimal("40.5"),
                                                                                         "KGM")
    assert (first.priority, first.due, first.plant) == (7, dt.date(2026, 4, 30), "P100")
    assert first.instructions == (Instruction(key="coating", text="RAL 5010"), Instruction(text="deburr all edges"))
    assert all(j.from_hub for j in jobs)


def test_a_release_whose_priority_does_not_fit_int16_is_unmappable() -> None:
    """A priority outside ISA-95's Int16 makes the release a dead letter naming the priority."""
    with pytest.raises(UnmappableRecord, match="priority 40000"):
        job_orders_for(release(priority=40000))


def test_job_order_ids_name_their_order_and_line() -> None:
    """A hub job order id reads back as its order number and line; any other id reads as None."""
    assert parse_job_order_id(job_order_id("ORD-2026-03-000123", 10)) == ("ORD-2026-03-000123", 10)
    assert parse_job_order_id("WO-4711") is None


def test_the_first_job_running_moves_a_released_order_into_production() -> None:
    """One started job moves a RELEASED order to IN_PRODUCTION with the earliest actual start."""
    jobs = [state(10, JobState.RUNNING, started=2), state(20, JobState.INTERRUPTED, started=1),
            state(30, JobState.ALLOWED_TO_START)]
    assert lifecycle_changes(jobs, status="RELEASED", on_hold=False, line_numbers={10, 20, 30}) == [
        {"status": "IN_PRODUCTION", "actual_start": "2026-03-02T07:00:00.000Z"}]


def test_an_order_completes_only_when_every_line_has_an_ended_job() -> None:
    """IN_PRODUCTION moves to COMPLETED with the latest actual end once all lines' jobs have ended, not before."""
    half = [state(10, JobState.ENDED, 1, 3), state(20, JobState.RUNNING, 1)]
    done = [state(10, JobState.ENDED, 1, 3), state(20, JobState.ENDED, 1, 4)]
    assert lifecycle_changes(half, status="IN_PRODUCTION", on_hold=False, line_numbers={10, 20}) == []
    assert lifecycle_changes(done, status="IN_PRODUCTION", on_hold=False, line_numbers={10, 20}) == [
        {"status": "COMPLETED", "actual_end": "2026-03-02T10:00:00.000Z"}]
    assert lifecycle_changes(done[:1], status="IN_PRODUCTION", on_hold=False, line_numbers={10, 20}) == []


def test_a_released_order_whose_jobs_all_ended_takes_both_steps_in_order() -> None:
    """Catching up on a RELEASED order whose jobs all ended proposes IN_PRODUCTION, then COMPLETED."""
    jobs = [state(10, JobState.ENDED, 1, 3)]
    assert lifecycle_changes(jobs, status="RELEASED", on_hold=False, line_numbers={10}) == [
        {"status": "IN_PRODUCTION", "actual_start": "2026-03-02T07:00:00.000Z"},
        {"status": "COMPLETED", "actual_end": "2026-03-02T09:00:00.000Z"}]


@pytest.mark.parametrize(("jobs", "status", "on_hold"), [
    ([state(10, JobState.RUNNING, 1)], "RELEASED", True),
    ([state(10, JobState.NOT_ALLOWED_TO_START), state(20, JobState.ALLOWED_TO_START)], "RELEASED", False),
    ([state(10, JobState.ENDED, 1, 2), state(20, JobState.ABORTED, 1, 2)], "IN_PRODUCTION", False),
    ([state(10, JobState.ENDED, 1, 2), state(20, JobState.ENDED, 1, 2)], "COMPLETED", False),
    ([state(10, JobState.RUNNING, 1)], "IN_PRODUCTION", False),
], ids=["held", "not started", "aborted line", "already completed", "already in production"])
def test_job_states_that_call_for_no_step_propose_nothing(jobs: list[JobOrderState], status: str,
                                                          on_hold: bool) -> None:
    """A held order, unstarted jobs, an aborted line or a step already taken propose no lifecycle change."""
    assert lifecycle_changes(jobs, status=status, on_hold=on_hold, line_numbers={10, 20}) == []


def test_a_start_without_a_known_time_still_moves_the_status() -> None:
    """Without the MES's actual start time the status moves and actual_start is left out."""
    assert lifecycle_changes([state(10, JobState.RUNNING)], status="RELEASED", on_hold=False,
                             line_numbers={10}) == [{"status": "IN_PRODUCTION"}]


def test_progress_sets_the_lines_good_and_scrap_quantities() -> None:
    """A progress report sets lines.<n>.good_quantity and scrap_quantity of its job's line, to three decimals."""
    assert progress_changes(job(10), progress("12", "1.5")) == {
        "lines.10.good_quantity": "12.000", "lines.10.scrap_quantity": "1.500"}


@pytest.mark.parametrize(("report", "target", "reason"), [
    (progress(unit="KGM"), job(10), "is in KGM, the job is in C62"),
    (progress(good="1.2345"), job(10), "more than 3 decimal places"),
    (progress(good="1e30"), job(10), "does not fit"),
    (progress(), JobOrder(JOB_ID, "MAT-1", Decimal(1), "C62"), "carries no hub order line"),
    (progress(), job(20), "was matched to job"),
], ids=["unit", "decimals", "too large", "foreign job", "other job"])
def test_progress_that_cannot_be_a_hub_change_is_unmappable(report: ProgressReport, target: JobOrder,
                                                            reason: str) -> None:
    """Progress in another unit, too precise, too large, or on a job the hub did not send is refused with why."""
    with pytest.raises(UnmappableRecord, match=reason):
        progress_changes(target, report)


def test_a_quality_hold_adds_its_reason_and_a_release_removes_only_its_own() -> None:
    """A hold adds the job's reason beside others; its release removes just that reason and keeps a credit hold."""
    held = quality_changes(quality(True), current_reasons=["credit block"])
    released = quality_changes(quality(False, None), current_reasons=held["hold_reasons"])
    alone = quality_changes(quality(False, None), current_reasons=[f"MES quality hold on {JOB_ID}: surface cracks"])
    assert held == {"on_hold": True, "hold_reasons": ["credit block", f"MES quality hold on {JOB_ID}: surface cracks"]}
    assert released == {"on_hold": True, "hold_reasons": ["credit block"]}
    assert alone == {"on_hold": False, "hold_reasons": []}
    assert quality_changes(quality(True), current_reasons=held["hold_reasons"]) == held


def test_every_change_the_mapping_makes_is_valid_and_writable_by_mes() -> None:
    """Every field change the mapping proposes is a valid value of its field and one ownership.yaml lets MES write."""
    rules = Rules.load(PROJECT_DIR / "ownership.yaml")
    steps = lifecycle_changes([state(10, JobState.ENDED, 1, 3)], status="RELEASED", on_hold=False, line_numbers={10})
    proposals = [*steps, progress_changes(job(10), progress()), quality_changes(quality(True), current_reasons=[]),
                 quality_changes(quality(False, None), current_reasons=[])]
    before = "RELEASED"
    for changes in proposals:
        for path, value in changes.items():
            kind = kind_of(path)
            assert kind is not None, path
            kind.canonical(canonical_json(value))  # raises ValueError for an invalid value
            if path == "status":
                assert rules.may_step(before, value, "MES", "connector") is None
                before = value
            else:
                assert rules.may_write(path, "MES", "connector") is None, path


def test_reports_survive_encoding_and_parsing_unchanged() -> None:
    """A progress report and a quality report parse back equal to what was encoded, on their topics."""
    for report in (progress(), quality(True), quality(False, None)):
        topic, payload = encode_message(report)
        assert parse_message(topic, payload) == report
    assert encode_message(progress())[0] == PROGRESS_TOPIC
    assert SUBSCRIPTION == "mes/+/jobs/+/+"


def _payload(**changes: Any) -> bytes:
    body = {"type": "progress", "version": 1, "job_order_id": JOB_ID, "seq": 5,
            "reported_at": "2026-03-02T06:00:00.000Z", "good_quantity": "12", "scrap_quantity": "0", "unit": "C62"}
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("mes/P100/orders/x/progress", _payload(), "topic is not"),
    (PROGRESS_TOPIC, b"\xff\xfe", "not UTF-8"),
    (PROGRESS_TOPIC, b"{nope", "not JSON"),
    (PROGRESS_TOPIC, b"[1, 2]", "not a JSON object"),
    (PROGRESS_TOPIC, _payload(type="quality"), "does not match the topic"),
    (PROGRESS_TOPIC, _payload(version=2), "version 2"),
    (PROGRESS_TOPIC, _payload(unit=...), "missing field"),
    (PROGRESS_TOPIC, _payload(colour="red"), "unknown field"),
    (PROGRESS_TOPIC, _payload(job_order_id="ORD-9-L1"), "differs from the topic"),
    (PROGRESS_TOPIC, _payload(seq=0), "seq must be a positive integer"),
    (PROGRESS_TOPIC, _payload(seq=True), "seq must be a positive integer"),
    (PROGRESS_TOPIC, _payload(reported_at="yesterday"), "ISO 8601"),
    (PROGRESS_TOPIC, _payload(reported_at="2026-03-02T06:00:00"), "no time zone"),
    (PROGRESS_TOPIC, _payload(good_quantity=12.5), "decimal string"),
    (PROGRESS_TOPIC, _payload(good_quantity="twelve"), "not a decimal number"),
    (PROGRESS_TOPIC, _payload(scrap_quantity="-1"), ">= 0"),
    (PROGRESS_TOPIC, _payload(good_quantity="NaN"), ">= 0"),
    (PROGRESS_TOPIC, _payload(unit="pieces"), "UN/ECE Rec 20"),
    (QUALITY_TOPIC, json.dumps({"type": "quality", "version": 1, "job_order_id": JOB_ID, "seq": 1,
                                "reported_at": "2026-03-02T06:00:00Z", "hold": True}).encode(),
     "a hold needs a reason"),
    (QUALITY_TOPIC, json.dumps({"type": "quality", "version": 1, "job_order_id": JOB_ID, "seq": 1,
                                "reported_at": "2026-03-02T06:00:00Z", "hold": "yes", "reason": "x"}).encode(),
     "hold must be true or false"),
    (PROGRESS_TOPIC, b" " * 70000, "exceeds"),
])
def test_malformed_messages_are_refused_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    """A message with a wrong topic, bytes, shape or value is a dead letter whose reason names the problem."""
    with pytest.raises(UnmappableMessage) as refused:
        parse_message(topic, payload)
    assert reason in refused.value.reason
    assert isinstance(refused.value, UnmappableRecord) and isinstance(refused.value, DeadLetterError)
    assert refused.value.topic == topic


def test_sequence_numbers_increase_per_job_and_mark_stale_messages() -> None:
    """The clock's sequence numbers strictly increase per job, and a report not above the last applied is stale."""
    clock = SequenceClock()
    seqs = [clock.next(JOB_ID) for _ in range(100)]
    assert seqs == sorted(set(seqs))
    assert is_newer(progress(seq=6), 5) and is_newer(progress(seq=1), None)
    assert not is_newer(progress(seq=5), 5) and not is_newer(progress(seq=4), 5)


def test_unece_unit_codes_become_opc_ua_unit_ids_and_back() -> None:
    """UN/ECE Rec 20 codes map to OPC UA UnitIds (OPC 10000-8) and back unchanged."""
    assert unece_unit_id("C62") == 4404786
    assert [unece_code(unece_unit_id(code)) for code in ("C62", "KGM", "MTR", "H87")] == ["C62", "KGM", "MTR", "H87"]
