"""Lead times from the audit trail: per order from the read model, per ISO week in ``hub.leadtimes``.

``LeadTimesContract`` is the read model's part, the behaviour every backend must show:
``TestSqliteLeadTimes`` runs it on a SQLite file and ``tests/integration/test_readmodel_postgres.py``
on PostgreSQL. The weekly figures (``hub.leadtimes``) are pure and tested here with values; the
command (``orderhub report lead-times``) is tested on a SQLite read model.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import leadtimes
from hub.cli import build_parser, main
from hub.events import FieldDiff, OrderAlert, RejectionReason
from hub.leadtimes import LeadTime, WeekRow, nearest_rank, report_text, week_start, weekly, window
from hub.readmodel import ReadModel
from hub.settings import get_settings
from tests.factories import T0, make_change, make_conflict, make_diff, make_rejection, make_snapshot

#: 2024-05-01 08:00 UTC is a Wednesday of ISO week 2024-W18 (Monday 2024-04-29 to Sunday 2024-05-05).
W18, W19 = dt.date(2024, 4, 29), dt.date(2024, 5, 6)


def at(hours: float) -> dt.datetime:
    """``hours`` after T0."""
    return T0 + dt.timedelta(hours=hours)


def hours(n: float) -> dt.timedelta:
    return dt.timedelta(hours=n)


def status(before: str | None, after: str) -> FieldDiff:
    """A status diff, values as canonical JSON."""
    return make_diff("status", None if before is None else f'"{before}"', f'"{after}"')


def alert(kind: str, stage: str, occurrence: int, decided_at: dt.datetime, order_id: str = "O-1") -> OrderAlert:
    """A due-date alert of ``order_id`` about 2024-06-01."""
    return OrderAlert(record_id=f"{order_id}:alert:{stage}:2024-06-01:{occurrence}:{kind.lower()}", order_id=order_id,
                      order_number=f"SO-{order_id}", version=3, kind=kind, stage=stage, notify="production_lead",
                      due_date=dt.date(2024, 6, 1), occurrence=occurrence, days_left=5, status="APPROVED",
                      on_hold=False, reason=f"{stage} {kind}", decided_at=decided_at)


class LeadTimesContract:
    """What the read model finds; subclasses provide the ``readmodel`` fixture."""

    def test_release_runs_from_creation_to_the_first_release(self, readmodel: ReadModel) -> None:
        """Version 1 accepted -> the first change whose status goes to RELEASED; unreleased orders are open,
        cancelled ones and ones without their version 1 have none."""
        readmodel.project_changes([
            make_change("O-1", 1, accepted_at=at(0)),
            make_change("O-1", 2, diffs=[status("DRAFT", "CONFIRMED")], accepted_at=at(1)),
            make_change("O-1", 3, diffs=[status("CONFIRMED", "APPROVED")], accepted_at=at(2)),
            make_change("O-1", 4, diffs=[make_diff("priority", "3", "4"), status("APPROVED", "RELEASED")],
                        accepted_at=at(30)),
            make_change("O-1", 5, diffs=[status("RELEASED", "IN_PRODUCTION")], accepted_at=at(40)),
            make_change("O-2", 1, accepted_at=at(2)),  # never released: open
            make_change("O-2", 2, diffs=[make_diff("credit_status", None, '"RELEASED"')], accepted_at=at(3)),
            make_change("O-3", 1, accepted_at=at(3)),  # cancelled before its release: none
            make_change("O-3", 2, diffs=[status("DRAFT", "CANCELLED")], accepted_at=at(4)),
            make_change("O-3", 3, diffs=[status("CANCELLED", "RELEASED")], accepted_at=at(5)),
            make_change("O-4", 1, diffs=[status(None, "DRAFT")], accepted_at=at(5)),
            make_change("O-4", 2, diffs=[status("DRAFT", "RELEASED")], accepted_at=at(6.5)),
            make_change("O-5", 2, diffs=[status("APPROVED", "RELEASED")], accepted_at=at(7)),  # its v1 not held
        ])
        assert readmodel.lead_times(["release"]) == [
            LeadTime("release", "O-1", "SO-O-1", "chg-O-1-v1", at(0), at(30)),
            LeadTime("release", "O-2", "SO-O-2", "chg-O-2-v1", at(2), None),
            LeadTime("release", "O-4", "SO-O-4", "chg-O-4-v1", at(5), at(6.5)),
        ]
        assert [t.order_id for t in readmodel.lead_times(["release"], since=at(2))] == ["O-2", "O-4"]

    def test_a_parked_conflict_ends_with_the_first_later_change_of_one_of_its_fields(
            self, readmodel: ReadModel) -> None:
        """A parked conflict ends at the first change above its current version writing one of its fields;
        changes of other fields or at lower versions do not end it, and unparked conflicts have none."""
        readmodel.project_changes([
            make_change("O-1", 1, accepted_at=at(0)),
            make_change("O-1", 2, diffs=[make_diff("customer.name", '"A"', '"B"'), make_diff("priority", "1", "2")],
                        accepted_at=at(1)),
            make_change("O-1", 3, diffs=[make_diff("customer.name", '"B"', '"C"')], accepted_at=at(5)),
            make_change("O-1", 4, diffs=[make_diff("priority", "2", "7")], accepted_at=at(50)),
            make_change("O-1", 5, diffs=[make_diff("priority", "7", "8")], accepted_at=at(60)),
        ])
        priority = make_conflict("O-1", 2, record_id="c-priority", event_id="e-1", decided_at=at(2))
        name = make_conflict("O-1", 2, field="customer.name", current_value='"B"', proposed_value='"X"',
                             record_id="c-name", event_id="e-2", decided_at=at(3))
        both = make_conflict("O-1", 4, field="instructions", record_id="c-both", event_id="e-3", decided_at=at(55))
        both = both.model_copy(update={"fields": [*both.fields, priority.fields[0]]})  # instructions and priority
        waiting = make_conflict("O-1", 5, field="instructions", record_id="c-waiting", event_id="e-4",
                                decided_at=at(61))
        decided = make_conflict("O-1", 2, parked=False, resulting_version=3, record_id="c-merged", event_id="e-5",
                                decided_at=at(4))
        readmodel.project_conflicts([priority, name, both, waiting, decided])
        assert readmodel.lead_times(["conflict"]) == [
            LeadTime("conflict", "O-1", "SO-O-1", "c-priority", at(2), at(50)),
            LeadTime("conflict", "O-1", "SO-O-1", "c-name", at(3), at(5)),
            LeadTime("conflict", "O-1", "SO-O-1", "c-both", at(55), at(60)),
            LeadTime("conflict", "O-1", "SO-O-1", "c-waiting", at(61), None),
        ]
        assert [t.subject for t in readmodel.lead_times(["conflict"], since=at(3))] == [
            "c-name", "c-both", "c-waiting"]

    def test_an_alert_ends_when_its_occurrence_is_cleared(self, readmodel: ReadModel) -> None:
        """Raised and cleared pair by stage, due date and occurrence, whatever their clocks say; a clearing
        without its raising starts nothing."""
        readmodel.project_alerts([
            alert("RAISED", "due_soon", 1, at(0)), alert("CLEARED", "due_soon", 1, at(26)),
            alert("RAISED", "escalated", 1, at(10)),
            alert("RAISED", "due_soon", 2, at(30)), alert("CLEARED", "due_soon", 2, at(29)),  # an earlier clock
            alert("CLEARED", "escalated", 7, at(31)),
            alert("RAISED", "due_soon", 1, at(1), order_id="O-2"),
        ])
        found = readmodel.lead_times(["alert"])
        assert found == [
            LeadTime("alert", "O-1", "SO-O-1", "O-1:alert:due_soon:2024-06-01:1:raised", at(0), at(26)),
            LeadTime("alert", "O-2", "SO-O-2", "O-2:alert:due_soon:2024-06-01:1:raised", at(1), None),
            LeadTime("alert", "O-1", "SO-O-1", "O-1:alert:escalated:2024-06-01:1:raised", at(10), None),
            LeadTime("alert", "O-1", "SO-O-1", "O-1:alert:due_soon:2024-06-01:2:raised", at(30), at(29)),
        ]
        assert [t.duration for t in found] == [hours(26), None, None, dt.timedelta(0)]

    def test_a_rejection_ends_with_the_next_change_from_the_same_system(self, readmodel: ReadModel) -> None:
        """A refused proposal ends at the first change of its order from its system above the version it was
        refused at; a refused creation when the creation gets through; one naming no order has none."""
        readmodel.project_snapshots([make_snapshot("O-1", 4)])
        readmodel.project_changes([
            make_change("O-1", 1, accepted_at=at(0)),
            make_change("O-1", 2, source_system="ERP", accepted_at=at(1)),
            make_change("O-1", 3, accepted_at=at(3)),
            make_change("O-1", 4, source_system="ERP", accepted_at=at(20)),
            make_change("O-9", 1, accepted_at=at(4)),  # created by the CRM after its first creation was refused
        ])
        erp = make_rejection("O-1", 2, source_system="ERP", decided_at=at(2))
        crm = make_rejection("O-1", 4, decided_at=at(21))
        creation = make_rejection("O-9", None, reason=RejectionReason.MISSING_FIELD, decided_at=at(1))
        nameless = make_rejection(None, None, reason=RejectionReason.UNKNOWN_ORDER, decided_at=at(1))
        readmodel.project_rejections([erp, crm, creation, nameless])
        assert readmodel.lead_times(["rejection"]) == [
            LeadTime("rejection", "O-9", "SO-O-9", creation.record_id, at(1), at(4)),
            LeadTime("rejection", "O-1", "SO-O-1", erp.record_id, at(2), at(20)),
            LeadTime("rejection", "O-1", "SO-O-1", crm.record_id, at(21), None),
        ]

    def test_rejections_are_kept_once_and_read_back_whole(self, readmodel: ReadModel) -> None:
        """Rejections by record id: a record read again is the same row, and each reads back as it was sent, however
        long its writer's ids."""
        erp = make_rejection("O-1", 2, source_system="ERP", decided_at=at(2))
        crm = make_rejection("O-1", 4, decided_at=at(1))
        nameless = make_rejection(None, None, reason=RejectionReason.UNKNOWN_ORDER)
        readmodel.project_rejections([erp, nameless])
        readmodel.project_rejections([erp, crm, erp])
        readmodel.project_rejections([])
        assert readmodel.rejections("O-1") == [crm, erp]
        assert readmodel.rejections("O-9") == []
        # what is refused is often malformed: ids and system of any length are kept as sent
        odd = make_rejection("O-" + "x" * 300, None, source_system="S" * 40, reason=RejectionReason.INVALID_VALUE)
        readmodel.project_rejections([odd])
        assert readmodel.rejections(odd.order_id or "") == [odd]

    def test_every_kind_at_once_by_kind_then_start(self, readmodel: ReadModel) -> None:
        """Without kinds, every kind, listed by kind first; an unknown kind is refused."""
        readmodel.project_changes([make_change("O-1", 1, accepted_at=at(5))])
        readmodel.project_alerts([alert("RAISED", "due_soon", 1, at(0))])
        readmodel.project_conflicts([make_conflict("O-1", 1, decided_at=at(1))])
        readmodel.project_rejections([make_rejection("O-1", 1, decided_at=at(2))])
        assert [t.kind for t in readmodel.lead_times()] == ["release", "conflict", "alert", "rejection"]
        assert readmodel.lead_times([]) == []
        with pytest.raises(ValueError, match="unknown lead-time kind"):
            readmodel.lead_times(["approval"])

    def test_weekly_percentiles_of_what_the_read_model_holds(self, readmodel: ReadModel) -> None:
        """Ten releases of 1 to 10 hours and an open one in one week, one in the next, one before the window."""
        changes = []
        for n in range(1, 11):
            changes += [make_change(f"O-{n}", 1, accepted_at=at(n)),
                        make_change(f"O-{n}", 2, diffs=[status("APPROVED", "RELEASED")], accepted_at=at(2 * n))]
        changes += [make_change("O-open", 1, accepted_at=at(12)),
                    make_change("O-next", 1, accepted_at=at(6 * 24)),  # Tuesday of W19
                    make_change("O-next", 2, diffs=[status("APPROVED", "RELEASED")], accepted_at=at(6 * 24 + 2)),
                    make_change("O-old", 1, accepted_at=at(-7 * 24))]  # W17: before the window
        readmodel.project_changes(changes)
        since, _ = window(dt.date(2024, 5, 12), 2)
        found = readmodel.lead_times(["release"], since=since)
        assert "O-old" not in {t.order_id for t in found}
        assert weekly(found, until=dt.date(2024, 5, 12), weeks=2) == [
            WeekRow("release", "2024-W18", W18, 11, 1, hours(5), hours(9), hours(10), hours(10)),
            WeekRow("release", "2024-W19", W19, 1, 0, hours(2), hours(2), hours(2), hours(2)),
        ]


class TestSqliteLeadTimes(LeadTimesContract):
    """The contract on a SQLite file."""

    @pytest.fixture
    def readmodel(self, tmp_path: Path) -> Iterator[ReadModel]:
        model = ReadModel(f"sqlite:///{tmp_path / 'state' / 'orderhub.db'}")
        model.create_schema()
        yield model
        model.close()


# --- the weekly figures, pure ---------------------------------------------------------------


def lead(started_at: dt.datetime, took: dt.timedelta | None, kind: str = "release", subject: str = "x") -> LeadTime:
    return LeadTime(kind, "O-1", "SO-O-1", subject, started_at, None if took is None else started_at + took)


def test_nearest_rank_is_always_one_of_the_values() -> None:
    """The p-th percentile of n sorted values is the ceil(p/100*n)-th, counting from 1."""
    ten = [hours(n) for n in (7, 3, 10, 1, 9, 2, 8, 4, 6, 5)]  # unsorted on purpose
    assert [nearest_rank(ten, p) for p in (10, 11, 50, 90, 95, 100)] == [
        hours(1), hours(2), hours(5), hours(9), hours(10), hours(10)]
    twenty = [hours(n) for n in range(1, 21)]
    assert nearest_rank(twenty, 95) == hours(19)
    assert nearest_rank(twenty, 50) == hours(10) and nearest_rank(twenty, 50.5) == hours(11)
    hundred = [hours(n) for n in range(1, 101)]
    assert nearest_rank(hundred, 7) == hours(7)  # 7 / 100 * 100 is 7.000000000000001 in floats: the 8th


def test_one_value_is_every_percentile_of_itself_and_none_has_none() -> None:
    """One duration is each of its percentiles; no durations have no percentile; p outside (0, 100] is refused."""
    assert {nearest_rank([hours(3)], p) for p in (1, 50, 90, 95, 100)} == {hours(3)}
    assert nearest_rank([], 50) is None
    for p in (0, -5, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            nearest_rank([hours(1)], p)


def test_open_lead_times_count_but_have_no_percentiles() -> None:
    """Open lead times are in count and open, not in the percentiles; a week with only open ones has none."""
    rows = weekly([lead(at(0), hours(4)), lead(at(1), None), lead(at(2), hours(1)), lead(at(6 * 24), None)],
                  until=dt.date(2024, 5, 12), weeks=2)
    assert rows == [WeekRow("release", "2024-W18", W18, 3, 1, hours(1), hours(4), hours(4), hours(4)),
                    WeekRow("release", "2024-W19", W19, 1, 1, None, None, None, None)]


def test_a_lead_time_belongs_to_the_utc_week_of_its_start() -> None:
    """Sunday 23:59:59 UTC is the old week, Monday 00:00 UTC the new one, however long it took; a start
    written in another zone counts by its UTC instant."""
    sunday = dt.datetime(2024, 5, 5, 23, 59, 59, tzinfo=dt.UTC)
    monday = dt.datetime(2024, 5, 6, tzinfo=dt.UTC)
    berlin_monday = dt.datetime(2024, 5, 6, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # Sunday 23:30 UTC
    assert week_start(sunday) == week_start(berlin_monday) == W18 and week_start(monday) == W19
    rows = weekly([lead(sunday, hours(30)), lead(monday, hours(1)), lead(berlin_monday, hours(2))],
                  until=dt.date(2024, 5, 12), weeks=2)
    assert [(r.week, r.count, r.max) for r in rows] == [("2024-W18", 2, hours(30)), ("2024-W19", 1, hours(1))]


def test_iso_weeks_cross_the_year_as_iso_numbers_them() -> None:
    """Monday 2024-12-30 starts ISO week 2025-W01; Sunday 2024-12-29 is in 2024-W52."""
    rows = weekly([lead(dt.datetime(2024, 12, 29, 12, tzinfo=dt.UTC), hours(1)),
                   lead(dt.datetime(2024, 12, 31, 12, tzinfo=dt.UTC), hours(1)),
                   lead(dt.datetime(2025, 1, 6, tzinfo=dt.UTC), hours(1))], until=dt.date(2025, 1, 1), weeks=2)
    assert [(r.week, r.week_start) for r in rows] == [("2024-W52", dt.date(2024, 12, 23)),
                                                      ("2025-W01", dt.date(2024, 12, 30))]


def test_a_report_is_as_of_the_end_of_its_last_day() -> None:
    """Starts before the window's Monday or after ``until`` are out; an end after ``until`` counts as open."""
    until = dt.date(2024, 5, 8)  # a Wednesday of W19: the window is W18 and W19, to 2024-05-08 24:00
    end_of_until = dt.datetime(2024, 5, 9, tzinfo=dt.UTC)
    items = [lead(dt.datetime(2024, 4, 28, 23, tzinfo=dt.UTC), hours(1), subject="W17"),
             lead(dt.datetime(2024, 4, 29, tzinfo=dt.UTC), hours(1), subject="first instant"),
             lead(end_of_until - hours(1), hours(1) - dt.timedelta(microseconds=1), subject="ends in time"),
             lead(end_of_until - hours(2), hours(2), subject="ends at the end: open"),
             lead(end_of_until, hours(1), subject="starts after")]
    rows = weekly(items, until=until, weeks=2)
    assert [(r.week, r.count, r.open) for r in rows] == [("2024-W18", 1, 0), ("2024-W19", 2, 1)]
    assert window(until, 2) == (dt.datetime(2024, 4, 29, tzinfo=dt.UTC), end_of_until)
    with pytest.raises(ValueError, match="at least one week"):
        window(until, 0)


def test_an_end_before_its_start_counts_as_zero() -> None:
    """Two clocks: a clearing stamped before its raising is a lead time of zero, not a negative one."""
    [row] = weekly([lead(at(5), -hours(1), kind="alert"), lead(at(6), hours(2), kind="alert")],
                   until=dt.date(2024, 5, 5), weeks=1)
    assert (row.p50, row.max) == (dt.timedelta(0), hours(2))


def test_rows_come_by_kind_then_week() -> None:
    """Kinds in ``KINDS`` order, each oldest week first; a week without a kind has no row for it."""
    items = [lead(at(6 * 24), hours(1), kind="rejection"), lead(at(0), hours(1), kind="alert"),
             lead(at(6 * 24), hours(1), kind="release"), lead(at(0), hours(1), kind="rejection")]
    rows = weekly(items, until=dt.date(2024, 5, 12), weeks=2)
    assert [(r.kind, r.week) for r in rows] == [("release", "2024-W19"), ("alert", "2024-W18"),
                                                ("rejection", "2024-W18"), ("rejection", "2024-W19")]
    with pytest.raises(ValueError, match="unknown lead-time kind"):
        weekly([lead(at(0), None, kind="approval")], until=dt.date(2024, 5, 12))


def test_report_text_is_hours_with_one_decimal() -> None:
    """The table: names left, numbers right, hours with one decimal, ``-`` where no lead time has ended."""
    rows = [WeekRow("release", "2024-W18", W18, 11, 1, hours(5), dt.timedelta(hours=9, minutes=3), hours(10),
                    hours(100)),
            WeekRow("conflict", "2024-W19", W19, 1, 1, None, None, None, None)]
    assert report_text(rows, until=dt.date(2024, 5, 12), weeks=2).splitlines() == [
        "lead times in hours by ISO week of their start (UTC), 2024-04-29 to 2024-05-12; "
        "percentiles (nearest rank) of the ended ones",
        "kind      week      from        count  open  p50 h  p90 h  p95 h  max h",
        "release   2024-W18  2024-04-29     11     1    5.0    9.1   10.0  100.0",
        "conflict  2024-W19  2024-05-06      1     1      -      -      -      -",
    ]
    assert report_text([], until=dt.date(2024, 5, 12), weeks=2).splitlines()[1] == \
        "no lead time started in these dates"


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def cli_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadModel]:
    """A SQLite read model the ``orderhub`` command reads (ORDERHUB_DATABASE_URL)."""
    url = f"sqlite:///{tmp_path / 'orderhub.db'}"
    monkeypatch.setenv("ORDERHUB_DATABASE_URL", url)
    get_settings.cache_clear()
    model = ReadModel(url)
    model.create_schema()
    yield model
    model.close()
    monkeypatch.undo()
    get_settings.cache_clear()  # the next caller builds settings from the restored environment


def fill_for_the_command(model: ReadModel) -> None:
    """Two releases (2 h and 6 h) and an open one in W18, a conflict resolved after 1.5 h in W19, an open alert."""
    model.project_changes([
        make_change("O-1", 1, accepted_at=at(0)),
        make_change("O-1", 2, diffs=[status("APPROVED", "RELEASED")], accepted_at=at(2)),
        make_change("O-2", 1, accepted_at=at(1)),
        make_change("O-2", 2, diffs=[status("APPROVED", "RELEASED")], accepted_at=at(7)),
        make_change("O-2", 3, diffs=[make_diff("priority", "2", "9")], accepted_at=at(6 * 24 + 1.5)),
        make_change("O-3", 1, accepted_at=at(3)),
    ])
    model.project_conflicts([make_conflict("O-2", 2, decided_at=at(6 * 24))])
    model.project_alerts([alert("RAISED", "due_soon", 1, at(4))])


def test_report_lead_times_prints_the_weekly_table(cli_model: ReadModel, capsys: pytest.CaptureFixture[str]) -> None:
    """``orderhub report lead-times`` prints one row per kind and week, in hours."""
    fill_for_the_command(cli_model)
    assert main(["report", "lead-times", "--until", "2024-05-12", "--weeks", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "lead times in hours by ISO week of their start (UTC), 2024-04-29 to 2024-05-12; "
        "percentiles (nearest rank) of the ended ones",
        "kind      week      from        count  open  p50 h  p90 h  p95 h  max h",
        "release   2024-W18  2024-04-29      3     1    2.0    6.0    6.0    6.0",
        "conflict  2024-W19  2024-05-06      1     0    1.5    1.5    1.5    1.5",
        "alert     2024-W18  2024-04-29      1     1      -      -      -      -",
    ]
    assert main(["report", "lead-times", "--until", "2024-05-12", "--weeks", "1", "--kind", "release"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["no lead time started in these dates"]


def test_report_lead_times_json_is_for_dashboards(cli_model: ReadModel, capsys: pytest.CaptureFixture[str]) -> None:
    """``--json``: the window and one object per row, durations in seconds, null where none has ended."""
    fill_for_the_command(cli_model)
    assert main(["report", "lead-times", "--until", "2024-05-12", "--weeks", "2", "--kind", "release",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "since": "2024-04-29", "until": "2024-05-12", "weeks": 2,
        "percentiles": "nearest-rank, of the ended lead times",
        "rows": [{"kind": "release", "week": "2024-W18", "week_start": "2024-04-29", "count": 3, "open": 1,
                  "p50_s": 7200.0, "p90_s": 21600.0, "p95_s": 21600.0, "max_s": 21600.0}]}
    assert main(["report", "lead-times", "--until", "2024-05-12", "--weeks", "2", "--kind", "alert", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["rows"]
    assert (row["count"], row["open"], row["p50_s"], row["max_s"]) == (1, 1, None, None)


def test_report_refuses_what_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    """Weeks must be 1 or more, --until a date and --kind a kind; every kind there is is offered."""
    for argv in (["--weeks", "0"], ["--weeks", "x"], ["--until", "2024-13-01"], ["--kind", "approval"]):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["report", "lead-times", *argv])
        assert exited.value.code == 2, argv
    assert "--weeks: a whole number of weeks, at least 1, not '0'" in capsys.readouterr().err
    for kind in leadtimes.KINDS:
        assert build_parser().parse_args(["report", "lead-times", "--kind", kind]).kind == kind
