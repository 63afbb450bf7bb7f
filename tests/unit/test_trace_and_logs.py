"""``orderhub trace``'s ordering and correlation marks, and the log lines' two forms (hub.logs rules
1-4): what a person reading them sees."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from hub.logs import bound, configure
from hub.settings import Settings
from hub.trace import Step, flow

AT = dt.datetime(2026, 12, 3, 9, 40, tzinfo=dt.timezone.utc)


def test_a_flow_is_in_time_order_and_a_change_comes_before_what_it_caused_at_the_same_instant() -> None:
    steps = [Step(AT, "notification", "HUB", "notify desk", "status_changed by email"),
             Step(AT, "change", "ERP", "erp (connector)", "version 2 APPLIED", "crm:1"),
             Step(AT - dt.timedelta(seconds=1), "change", "CRM", "anna (sales)", "version 1 CREATED", "crm:1"),
             Step(AT + dt.timedelta(seconds=1), "change", "MES", "mes (connector)", "version 3 APPLIED", "other:7")]
    lines = flow(steps, "crm:1")
    assert [line.split()[2] for line in lines] == ["CRM", "ERP", "HUB", "MES"]
    assert lines[0].startswith("2026-12-03 09:39:59.000  CRM  anna (sales)")
    assert lines[3].endswith("[correlation other:7]") and "correlation" not in " ".join(lines[:3])


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_readable_line_keeps_the_stamp_the_bench_reads_and_adds_the_bound_fields(
        capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    configure(Settings(log_level="INFO"))
    with bound(order_id="O-1", correlation_id="crm:1", event_id=None, password="hunter2"):
        logging.getLogger("hub.test").info("decided %s", "APPLIED")
    line = capsys.readouterr().err.strip()
    stamp = line[1:line.index("]")]
    dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")  # as bench/broker.py parses it
    assert "[INFO] hub.test: decided APPLIED" in line
    assert "order_id=O-1" in line and "correlation_id=crm:1" in line and "event_id" not in line
    assert "hunter2" not in line and "password=***" in line


def test_a_json_line_is_one_object_with_the_bound_fields(capsys: pytest.CaptureFixture[str],
                                                         restore_logging: None) -> None:
    configure(Settings(log_level="INFO", log_json=True))
    with bound(order_number="ORD-2026-01-000001", session_id="abc"):
        logging.getLogger("hub.test").warning("alert %s raised", "due_soon")
    (line,) = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert record["event"] == "alert due_soon raised" and record["level"] == "warning"
    assert record["logger"] == "hub.test" and record["order_number"] == "ORD-2026-01-000001"
    assert record["session_id"] == "***" and record["timestamp"].endswith("Z")
