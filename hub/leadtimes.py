"""Lead times: how long orders waited, from one event of their audit trail to another, per week.

The read model finds each wait (``ReadModel.lead_times``: one ``LeadTime`` per order and kind,
or per conflict, alert or rejection); this module sums them up per ISO week into what
``orderhub report lead-times`` prints and dashboards plot. It is pure: no database, no clock
(the report's last day is an argument), so SQLite and PostgreSQL give the same answer.

The kinds, each a start and an end (the read model's ``lead_times`` says how it finds them):

- ``release``: the order received (version 1 accepted) -> released to production (the first
  accepted change whose status goes to RELEASED).
- ``conflict``: a conflict parked for a person -> resolved (the first accepted change after it
  that writes one of its fields).
- ``alert``: a due-date alert raised -> cleared (the same stage, due date and occurrence).
- ``rejection``: a proposal rejected -> the next change from the same system accepted on that
  order.

The rules:

1. A lead time belongs to the ISO week (Monday 00:00 to Sunday 24:00, UTC) its start falls in,
   whatever week it ends in.
2. Its duration is end - start. An end before its start counts as zero: the two come from
   different clocks (an alert is raised and cleared by whichever worker's clock decided it).
3. A report is as of the end of its last day (``until``, UTC): a lead time that ended later
   counts as open, and one that started later is not in it. So a report on a past day says the
   same tomorrow.
4. It covers ``weeks`` ISO weeks, the last one the week of ``until``; a week in which no lead
   time of a kind started has no row for that kind.
5. Per kind and week: ``count`` is every lead time that started in the week, ``open`` those
   without an end (yet); ``p50``, ``p90``, ``p95`` and ``max`` are over the ended ones only,
   None when none has ended.
6. Percentiles are nearest-rank: the p-th percentile of n durations sorted ascending is the
   ceil(p / 100 * n)-th of them (counting from 1). It is always one of the durations (never
   interpolated), p100 is the largest, and one duration is every percentile of itself.
7. Rows come by kind (in ``KINDS`` order), then week, oldest first.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

#: The kinds of lead time, in the order reports list them.
KINDS = ("release", "conflict", "alert", "rejection")
#: The percentiles every report row has.
PERCENTILES = (50, 90, 95)
#: How many weeks a report covers unless told.
DEFAULT_WEEKS = 12


@dataclass(frozen=True)
class LeadTime:
    """One wait of one order: what started it, when, and when it ended (None while it is open)."""

    kind: str
    """One of ``KINDS``."""
    order_id: str
    """Hub order id."""
    order_number: str | None
    """Human-readable order number, when the read model knows it."""
    subject: str
    """What waited: the record id of the conflict, alert or rejection; for ``release``, the
    creation's change record id."""
    started_at: dt.datetime
    """When the wait started (UTC)."""
    ended_at: dt.datetime | None = None
    """When it ended (UTC); None while it is open."""

    @property
    def duration(self) -> dt.timedelta | None:
        """How long it took (rule 2: never negative); None while it is open."""
        if self.ended_at is None:
            return None
        return max(self.ended_at - self.started_at, dt.timedelta(0))


@dataclass(frozen=True)
class WeekRow:
    """The lead times of one kind that started in one ISO week."""

    kind: str
    """One of ``KINDS``."""
    week: str
    """The ISO week, ``2024-W18``."""
    week_start: dt.date
    """Its Monday."""
    count: int
    """Lead times that started in the week."""
    open: int
    """Of those, the ones not ended as of the report."""
    p50: dt.timedelta | None
    """Nearest-rank 50th percentile of the ended ones' durations."""
    p90: dt.timedelta | None
    """Nearest-rank 90th percentile."""
    p95: dt.timedelta | None
    """Nearest-rank 95th percentile."""
    max: dt.timedelta | None
    """The longest ended one."""


def nearest_rank(values: Sequence[dt.timedelta], percentile: float) -> dt.timedelta | None:
    """The nearest-rank ``percentile`` (0 < p <= 100) of ``values`` (rule 6); None for no values."""
    if not 0 < percentile <= 100:
        raise ValueError(f"a percentile is above 0 and at most 100, not {percentile}")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(Fraction(str(percentile)) * len(ordered) / 100)  # exact: 0.07 * 100 is 7.000000000000001
    return ordered[rank - 1]


def week_start(at: dt.datetime | dt.date) -> dt.date:
    """The Monday of the ISO week ``at`` falls in (a timestamp's in UTC; rule 1)."""
    if isinstance(at, dt.datetime):
        at = (at.astimezone(dt.UTC) if at.tzinfo else at).date()
    return at - dt.timedelta(days=at.weekday())


def window(until: dt.date, weeks: int) -> tuple[dt.datetime, dt.datetime]:
    """The instants a report covers (rules 3 and 4): from the Monday ``weeks - 1`` weeks before
    ``until``'s, 00:00 UTC, to the end of ``until`` (exclusive)."""
    if weeks < 1:
        raise ValueError(f"a report covers at least one week, not {weeks}")
    first = week_start(until) - dt.timedelta(weeks=weeks - 1)
    return (dt.datetime.combine(first, dt.time(), dt.UTC),
            dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), dt.UTC))


def weekly(lead_times: Iterable[LeadTime], *, until: dt.date, weeks: int = DEFAULT_WEEKS) -> list[WeekRow]:
    """The report rows of ``lead_times`` for the ``weeks`` ISO weeks up to ``until`` (rules 1-7)."""
    since, as_of = window(until, weeks)
    groups: dict[tuple[str, dt.date], list[LeadTime]] = {}
    for item in lead_times:
        if item.kind not in KINDS:
            raise ValueError(f"unknown lead-time kind {item.kind!r}; the kinds are {', '.join(KINDS)}")
        if since <= item.started_at < as_of:
            groups.setdefault((item.kind, week_start(item.started_at)), []).append(item)
    rows = []
    for (kind, monday), items in sorted(groups.items(), key=lambda group: (KINDS.index(group[0][0]), group[0][1])):
        durations = [d for item in items if item.ended_at is not None and item.ended_at < as_of
                     and (d := item.duration) is not None]
        p50, p90, p95 = (nearest_rank(durations, p) for p in PERCENTILES)
        year, number, _ = monday.isocalendar()
        rows.append(WeekRow(kind=kind, week=f"{year}-W{number:02d}", week_start=monday, count=len(items),
                            open=len(items) - len(durations), p50=p50, p90=p90, p95=p95,
                            max=max(durations) if durations else None))
    return rows


# --- for people and dashboards ------------------------------------------------------------

_HEADERS = ("kind", "week", "from", "count", "open", "p50 h", "p90 h", "p95 h", "max h")


def report_text(rows: Sequence[WeekRow], *, until: dt.date, weeks: int) -> str:
    """The rows as a table for a person: durations in hours with one decimal, ``-`` for none."""
    since, _ = window(until, weeks)
    title = (f"lead times in hours by ISO week of their start (UTC), {since.date().isoformat()} to "
             f"{until.isoformat()}; percentiles (nearest rank) of the ended ones")
    if not rows:
        return f"{title}\nno lead time started in these dates"
    cells = [list(_HEADERS)] + [[r.kind, r.week, r.week_start.isoformat(), str(r.count), str(r.open),
                                 *(_hours(d) for d in (r.p50, r.p90, r.p95, r.max))] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADERS))]

    def line(row: list[str]) -> str:  # names to the left, numbers to the right
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([title, *map(line, cells)])


def report_json(rows: Sequence[WeekRow], *, until: dt.date, weeks: int) -> str:
    """The rows as JSON for a dashboard: durations in seconds (null for none), the window's bounds."""
    since, _ = window(until, weeks)
    document: dict[str, Any] = {
        "since": since.date().isoformat(), "until": until.isoformat(), "weeks": weeks,
        "percentiles": "nearest-rank, of the ended lead times",
        "rows": [{"kind": r.kind, "week": r.week, "week_start": r.week_start.isoformat(), "count": r.count,
                  "open": r.open, "p50_s": _seconds(r.p50), "p90_s": _seconds(r.p90), "p95_s": _seconds(r.p95),
                  "max_s": _seconds(r.max)} for r in rows],
    }
    return json.dumps(document, indent=2)


def _hours(duration: dt.timedelta | None) -> str:
    return "-" if duration is None else f"{duration.total_seconds() / 3600:.1f}"


def _seconds(duration: dt.timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()
