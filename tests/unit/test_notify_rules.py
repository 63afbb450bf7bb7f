"""Notifications: who is told what (hub.domain.notify), the rendered message, the webhook signature,
and the outbox that keeps each notification once (hub.notify)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.domain import notify
from hub.domain.decide import DecisionKind
from hub.domain.workflow import Workflow
from hub.errors import ConfigError
from hub.events import OrderAlert
from hub.notify.channels import Renderer, webhook_signature
from hub.notify.outbox import DELIVERED, PENDING, UNDELIVERABLE, Known, Outbox
from hub.settings import PROJECT_DIR
from hub.streams.notify import known_of
from tests.domain_helpers import RULES, creation, proposal, run

WORKFLOW_DOC = yaml.safe_load((PROJECT_DIR / "workflow.yaml").read_text())
SUBSCRIBERS = [
    {"name": "sales-desk", "role": "sales_manager", "email": "sales@plant.example",
     "events": ["status_changed", "approval_waiting"]},
    {"name": "plant-boss", "role": "plant_manager", "email": "plant@plant.example", "events": ["approval_waiting"]},
    {"name": "erp-hook", "webhook": "http://127.0.0.1:9/hook", "events": "all"},
    {"name": "hall-1", "mqtt": "orderhub/displays/hall-1", "events": ["status_changed"],
     "statuses": ["RELEASED", "IN_PRODUCTION"]},
]


def workflow(**notifications: Any) -> Workflow:
    return Workflow.parse({**WORKFLOW_DOC, "notifications": {"subscribers": SUBSCRIBERS, **notifications}})


WORKFLOW = workflow()
RULES_WF = RULES.with_workflow(WORKFLOW)
CONFIG = WORKFLOW.notifications
assert CONFIG is not None


def told(decisions: list[Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(kind, subscriber) of every notification the decisions' changes make, folding the order as the
    notifier does (values known before each change, diffs applied)."""
    known: dict[str, Any] = {}
    version = None
    found = []
    for decision in decisions:
        if decision.change is None:
            continue
        before, after = notify.around(known, version, decision.change)
        known, version = after, decision.change.version
        for notice in notify.of_change(decision.change, before, after, WORKFLOW.approvals):
            found += [(n.notice.kind, n.subscriber.name, notice.roles) for n in notify.recipients(CONFIG, notice)]
    return found


def test_every_status_change_and_each_approval_waiting_reach_the_subscribers_the_rules_name() -> None:
    _, decisions = run([
        creation(),
        proposal("erp", {"amounts.gross": Decimal("60000.00"), "currency": "EUR", "status": "CONFIRMED"}, base=1,
                 system="ERP"),
        proposal("sales", {"approvals.sales": {"decision": "approved"}}, base=2, system="HUB", role="sales_manager"),
        proposal("plant", {"approvals.plant": {"decision": "approved"}}, base=3, system="HUB", role="plant_manager"),
        proposal("release", {"status": "RELEASED"}, base=4, system="HUB", role="planner"),
    ], rules=RULES_WF)
    assert [d.kind for d in decisions] == [DecisionKind.CREATED] + [DecisionKind.APPLIED] * 4
    levels = ("sales_manager", "plant_manager")
    assert told(decisions) == [
        # created as DRAFT: a status change (sales and the webhook take every status; the display only two)
        ("status_changed", "sales-desk", ()), ("status_changed", "erp-hook", ()),
        # CONFIRMED above 50,000: two levels wait, each told to its own role (and to the role-less webhook)
        ("status_changed", "sales-desk", ()), ("status_changed", "erp-hook", ()),
        ("approval_waiting", "sales-desk", levels), ("approval_waiting", "plant-boss", levels),
        ("approval_waiting", "erp-hook", levels),
        # the sales approval changes no status and makes nothing newly missing: nobody is told
        # the plant approval is the step to APPROVED
        ("status_changed", "sales-desk", ()), ("status_changed", "erp-hook", ()),
        ("status_changed", "sales-desk", ()), ("status_changed", "erp-hook", ()), ("status_changed", "hall-1", ()),
    ]


def test_an_amount_raised_across_a_threshold_after_approval_tells_the_new_level_only() -> None:
    _, decisions = run([
        creation(),
        proposal("erp", {"amounts.gross": Decimal("12000.00"), "currency": "EUR", "status": "CONFIRMED"}, base=1,
                 system="ERP"),
        proposal("sales", {"approvals.sales": {"decision": "approved"}}, base=2, system="HUB", role="sales_manager"),
        proposal("more", {"amounts.gross": Decimal("75000.00")}, base=3, system="ERP"),
    ], rules=RULES_WF)
    waiting = [(kind, name, roles) for kind, name, roles in told(decisions) if kind == "approval_waiting"]
    assert waiting == [
        ("approval_waiting", "sales-desk", ("sales_manager",)), ("approval_waiting", "erp-hook", ("sales_manager",)),
        # back to CONFIRMED for the plant level: only plant is waiting
        ("approval_waiting", "plant-boss", ("plant_manager",)), ("approval_waiting", "erp-hook", ("plant_manager",)),
    ]


def test_the_same_record_makes_the_same_id_and_another_subscriber_or_record_another() -> None:
    _, (created,) = run([creation()], rules=RULES_WF)
    before, after = notify.around({}, None, created.change)
    (notice,) = notify.of_change(created.change, before, after, None)
    first = notify.recipients(CONFIG, notice)
    again = notify.recipients(CONFIG, notify.of_change(created.change, before, after, None)[0])
    assert [n.id for n in first] == [n.id for n in again]
    assert len({n.id for n in first}) == len(first) == 2
    _, (other,) = run([creation("create-2")], rules=RULES_WF)
    (notice2,) = notify.of_change(other.change, *notify.around({}, None, other.change), None)
    assert not {n.id for n in notify.recipients(CONFIG, notice2)} & {n.id for n in first}


def test_the_order_known_at_or_after_the_change_is_taken_back_to_before_it() -> None:
    _, decisions = run([creation(), proposal("erp", {"status": "CONFIRMED", "currency": "EUR"}, base=1, system="ERP")],
                       rules=RULES_WF)
    later = known_of(decisions[1].snapshot)  # the snapshot of version 2 read before the change of version 2
    before, after = notify.around(later.values, later.version, decisions[1].change)
    assert (before["status"], after["status"]) == ('"DRAFT"', '"CONFIRMED"')
    assert "currency" not in before and after["currency"] == '"EUR"'
    assert after["customer.name"] == '"ACME GmbH"'


def test_alerts_conflicts_and_rejections_are_told_to_who_they_concern() -> None:
    state, decisions = run([
        creation(),
        proposal("erp", {"amounts.gross": Decimal("12000.00"), "currency": "EUR", "status": "CONFIRMED"}, base=1,
                 system="ERP"),
        # two sales managers decide the same level differently from the same version: parked for a person
        proposal("maria", {"approvals.sales": {"decision": "approved"}}, base=2, system="HUB", role="sales_manager",
                 actor_id="maria"),
        proposal("bob", {"approvals.sales": {"decision": "refused", "comment": "no"}}, base=2, system="HUB",
                 role="sales_manager", actor_id="bob"),
        proposal("bad", {"lines.10.quantity": Decimal("-1")}, base=3, system="CRM"),
    ], rules=RULES_WF)
    assert [d.kind for d in decisions][2:] == [DecisionKind.APPLIED, DecisionKind.CONFLICT_PARKED,
                                               DecisionKind.REJECTED]
    order = known_of(state.to_snapshot()).values
    parked = notify.of_conflict(decisions[3].conflict, order)
    assert (parked.kind, parked.by["actor"], parked.details["fields"]) == ("conflict_parked", "bob",
                                                                         ["approvals.sales"])
    assert [n.subscriber.name for n in notify.recipients(CONFIG, parked)] == ["erp-hook"]

    rejected = notify.of_rejection(decisions[4].rejection, order, state.order_number)
    assert rejected.kind == "proposal_rejected" and rejected.order_number == state.order_number
    assert "rejected" in rejected.summary and rejected.details["errors"][0]["field"] == "lines.10.quantity"
    assert [n.subscriber.name for n in notify.recipients(CONFIG, rejected)] == ["erp-hook"]

    alert = OrderAlert(record_id="O-1:alert:x", order_id="O-1", order_number=state.order_number, version=4,
                       kind="RAISED", stage="due_soon", notify="production_lead", due_date=dt.date(2026, 12, 1),
                       occurrence=1, days_left=5, status="APPROVED", on_hold=False, reason="due in 5 days",
                       decided_at=dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc))
    raised = notify.of_alert(alert, order)
    assert (raised.kind, raised.roles, raised.status) == ("alert_raised", ("production_lead",), "APPROVED")
    # the sales desk has another role; the role-less webhook takes everything
    assert [n.subscriber.name for n in notify.recipients(CONFIG, raised)] == ["erp-hook"]


def test_a_webhook_signature_is_hmac_sha256_over_id_timestamp_and_body() -> None:
    body = b'{"id":"n1"}'
    expected = base64.b64encode(hmac.new(b"s3cret", b"n1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert webhook_signature("s3cret", "n1", 1700000000, body) == f"v1,{expected}"
    key = base64.b64encode(b"raw key bytes").decode()
    raw = base64.b64encode(hmac.new(b"raw key bytes", b"n1.1.x", hashlib.sha256).digest()).decode()
    assert webhook_signature(f"whsec_{key}", "n1", 1, b"x") == f"v1,{raw}"


@pytest.mark.parametrize("language, subject", [
    ("en", "[orderhub] ORD-2026-000001 is now DRAFT (ACME GmbH)"),
    ("de", "[orderhub] ORD-2026-000001 ist jetzt DRAFT (ACME GmbH)"),
])
def test_the_message_names_the_order_the_customer_the_due_date_who_and_the_link(language: str, subject: str) -> None:
    config = workflow(language=language, link="https://hub.plant.example/orders/{order_number}").notifications
    _, (created,) = run([creation()], rules=RULES_WF)
    (notice,) = notify.of_change(created.change, *notify.around({}, None, created.change), None)
    first = notify.recipients(config, notice)[0]
    message = Renderer(config).message(first)
    assert message["subject"] == subject
    assert message["order"] == {"id": "O-1", "number": "ORD-2026-000001", "customer": "ACME GmbH", "due_date": "2026-12-01",
                                "status": "DRAFT", "link": "https://hub.plant.example/orders/ORD-2026-000001"}
    assert message["by"] == {"system": "CRM", "actor": "crm-connector", "role": "connector"}
    assert message["id"] == first.id
    assert "https://hub.plant.example/orders/ORD-2026-000001" in message["text"]
    assert "CRM crm-connector" in message["text"] and "2026-12-01" in message["text"]
    assert {"field": "status", "before": None, "after": '"DRAFT"'} in message["changes"]


def test_a_plants_own_template_folder_is_used_and_a_missing_language_stops_the_start(tmp_path: Path) -> None:
    own = tmp_path / "templates" / "en"
    own.mkdir(parents=True)
    for kind in notify.KINDS:
        (own / f"{kind}.txt.j2").write_text(f"{kind} of {{{{ order.number }}}}\n\nhello {{{{ by.actor }}}}\n")
    config = workflow(templates=str(tmp_path / "templates")).notifications
    _, (created,) = run([creation()], rules=RULES_WF)
    (notice,) = notify.of_change(created.change, *notify.around({}, None, created.change), None)
    message = Renderer(config).message(notify.recipients(config, notice)[0])
    assert (message["subject"], message["text"]) == ("status_changed of ORD-2026-000001", "hello crm-connector\n")
    with pytest.raises(ConfigError, match="no templates for language 'fr'"):
        Renderer(workflow(templates=str(tmp_path / "templates"), language="fr").notifications)


@pytest.mark.parametrize("change, message", [
    ({"subscribers": []}, "subscribers: expected a list"),
    ({"subscribers": [{"name": "x", "email": "a@b.example", "webhook": "http://x"}]}, "exactly one of email"),
    ({"subscribers": [{"name": "x", "email": "not an address"}]}, "an e-mail address"),
    ({"subscribers": [{"name": "x", "mqtt": "displays/#"}]}, "without wildcards"),
    ({"subscribers": [{"name": "x", "webhook": "ftp://x"}]}, "an http"),
    ({"subscribers": [{"name": "x", "email": "a@b.example", "events": ["status_change"]}]}, "events:"),
    ({"subscribers": [{"name": "x", "email": "a@b.example", "statuses": ["DONE"]}]}, "lifecycle statuses"),
    ({"subscribers": [{"name": "x", "email": "a@b.example", "role": "Sales Manager"}]}, "HUB role"),
    ({"subscribers": [{"name": "x", "email": "a@b.example"}, {"name": "x", "email": "c@d.example"}]}, "repeated"),
    ({"subscribers": [{"name": "x", "email": "a@b.example"}], "link": "/orders/{id}"}, "link"),
    ({"subscribers": [{"name": "x", "email": "a@b.example"}], "language": "english"}, "language"),
    ({"subscribers": [{"name": "x", "email": "a@b.example"}], "retries": 3}, "unknown keys"),
])
def test_a_wrong_notifications_section_names_the_key(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Workflow.parse({**WORKFLOW_DOC, "notifications": change}, "workflow.yaml")
    assert str(caught.value).startswith("workflow.yaml: notifications")


def stored(n: str, subscriber: str = "erp-hook") -> dict[str, Any]:
    return {"id": n, "subscriber": subscriber, "channel": "webhook", "target": "http://x", "kind": "status_changed",
            "order_id": "O-1", "order_number": "ORD-2026-000001", "message": {"subject": n}}


def test_the_outbox_keeps_an_id_once_with_the_offsets_and_delivers_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        assert outbox.store([stored("a"), stored("b")], {"O-1": Known(2, "ORD-2026-000001", {"status": '"DRAFT"'})},
                            {("t", 0): 5}, now=100.0) == 2
        # the same records read again after a crash: nothing new
        assert outbox.store([stored("a"), stored("b")], {}, {("t", 0): 5}, now=101.0) == 0
        assert outbox.offsets() == {("t", 0): 5}
        assert outbox.known("O-1") == Known(2, "ORD-2026-000001", {"status": '"DRAFT"'})
        first = outbox.next_due("erp-hook")
        assert first.id == "a" and first.state == PENDING and first.next_at == 100.0
        outbox.failed("a", "HTTP 503", next_at=130.0, now=120.0)
        assert outbox.next_due("erp-hook").failing_since == 120.0
        assert outbox.next_due("erp-hook").id == "a", "the next one waits: a subscriber's order is kept"
        outbox.delivered("a", now=131.0)
        outbox.failed("b", "HTTP 410 gone", next_at=None, now=132.0)
        assert outbox.next_due("erp-hook") is None
        assert outbox.counts() == {PENDING: 0, DELIVERED: 1, UNDELIVERABLE: 1}
        (kept,) = outbox.listing(state=UNDELIVERABLE)
        assert (kept.id, kept.last_error, kept.attempts) == ("b", "HTTP 410 gone", 1)
        assert outbox.retry(["b"], now=200.0) == 1
        again = outbox.next_due("erp-hook")
        assert (again.id, again.attempts, again.created_at, again.failing_since) == ("b", 0, 100.0, None)
        # a subscriber taken out of the configuration: what waits for it is kept as undeliverable
        assert outbox.give_up_unknown(["sales-desk"]) == 1 and outbox.next_due("erp-hook") is None
        assert [n.id for n in outbox.listing(order_id="ORD-2026-000001")] == ["b", "a"]
    finally:
        outbox.close()


def test_in_sequence_the_next_level_is_told_when_the_one_before_approved() -> None:
    doc = {**WORKFLOW_DOC, "approvals": {**WORKFLOW_DOC["approvals"], "order": "sequence"},
           "notifications": {"subscribers": SUBSCRIBERS}}
    sequence = Workflow.parse(doc)
    _, decisions = run([
        creation(),
        proposal("erp", {"amounts.gross": Decimal("60000.00"), "currency": "EUR", "status": "CONFIRMED"}, base=1,
                 system="ERP"),
        proposal("sales", {"approvals.sales": {"decision": "approved"}}, base=2, system="HUB", role="sales_manager"),
    ], rules=RULES.with_workflow(sequence))
    known, version, told_roles = {}, None, []
    for decision in decisions:
        before, after = notify.around(known, version, decision.change)
        known, version = after, decision.change.version
        told_roles += [n.roles for n in notify.of_change(decision.change, before, after, sequence.approvals)
                       if n.kind == "approval_waiting"]
    assert told_roles == [("sales_manager",), ("plant_manager",)]


def test_a_level_that_came_due_while_the_order_was_held_is_told_when_the_hold_is_lifted() -> None:
    _, decisions = run([
        creation(),
        proposal("erp", {"amounts.gross": Decimal("12000.00"), "currency": "EUR", "status": "CONFIRMED"}, base=1,
                 system="ERP"),
        proposal("sales", {"approvals.sales": {"decision": "approved"}}, base=2, system="HUB", role="sales_manager"),
        proposal("hold", {"on_hold": True, "hold_reasons": ["credit check"]}, base=3, system="HUB", role="planner"),
        proposal("more", {"amounts.gross": Decimal("75000.00")}, base=4, system="ERP"),
        proposal("lift", {"on_hold": False, "hold_reasons": []}, base=5, system="HUB", role="planner"),
    ], rules=RULES_WF)
    assert [d.kind for d in decisions] == [DecisionKind.CREATED] + [DecisionKind.APPLIED] * 5
    assert decisions[4].state.status == "CONFIRMED" and decisions[4].state.to_snapshot().on_hold
    waiting = [(kind, roles) for kind, name, roles in told(decisions) if kind == "approval_waiting"
               and name == "erp-hook"]
    # told at CONFIRMED (sales), nothing while held, plant once the hold is lifted
    assert waiting == [("approval_waiting", ("sales_manager",)), ("approval_waiting", ("plant_manager",))]


def test_the_status_before_and_after_are_the_changes_own_whatever_version_is_known() -> None:
    _, decisions = run([creation(), proposal("erp", {"status": "CONFIRMED"}, base=1, system="ERP"),
                        proposal("po", {"customer_po_number": "PO-7"}, base=2, system="CRM")], rules=RULES_WF)
    ahead = known_of(decisions[2].snapshot)  # version 3 read before the change that made version 2
    before, after = notify.around(ahead.values, ahead.version, decisions[1].change)
    assert (before["status"], after["status"]) == ('"DRAFT"', '"CONFIRMED"')
    behind = known_of(decisions[0].snapshot)  # version 1 known, version 3's change read (2 was missed)
    before, after = notify.around(behind.values, behind.version, decisions[2].change)
    assert (before.get("customer_po_number"), after["customer_po_number"]) == (None, '"PO-7"')
    (status,) = notify.of_change(decisions[1].change, *notify.around(ahead.values, ahead.version,
                                                                     decisions[1].change), WORKFLOW.approvals)
    assert status.details == {"previous_status": "DRAFT"} and status.status == "CONFIRMED"
