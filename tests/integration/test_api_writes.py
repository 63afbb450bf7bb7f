"""The REST API as a person and a program use it: ``orderhub api`` and the engine as processes on real
Kafka; each write answered with the engine's decision; an offline upload retried is applied once;
schemathesis against the published OpenAPI description finds no 5xx and no response off its schema."""

from __future__ import annotations

import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from hub.client import HubClient
from hub.settings import Settings
from tests.api_stack import PASSWORD, running_api, until
from tests.domain_helpers import proposal

pytestmark = pytest.mark.integration

USERS = {"sam": ["sales"], "pia": ["planner"], "maria": ["sales_manager"], "otto": ["supervisor"]}


@pytest.fixture(scope="module")
def hub(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """The engine and the API on a namespace of their own: (settings, the API's base URL)."""
    with running_api(kafka_settings, tmp_path_factory.mktemp("api"), USERS) as running:
        yield running


def login(base: str, user: str) -> httpx.Client:
    token = httpx.post(f"{base}/api/v1/auth/token", json={"username": user, "password": PASSWORD}).json()
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=60)


def new_order(client: httpx.Client, **values: Any) -> dict:
    body = {"values": {"customer.id": "C-7", "customer.name": "Gamma KG", "requested_delivery": "2026-12-30",
                       "instructions": [{"key": "coating", "text": "none"}], "lines.10.material.id": "MAT-7",
                       "lines.10.quantity": 12, "lines.10.unit": "C62", **values}}
    created = client.post("/api/v1/orders", json=body)
    assert created.status_code == 200, created.text
    decision = created.json()
    assert decision["outcome"] == "CREATED" and decision["version"] == 1
    until(lambda: client.get(f"/api/v1/orders/{decision['order_id']}").status_code == 200, "the order readable")
    return decision


def test_a_person_creates_edits_races_and_resolves(hub: tuple[Settings, str]) -> None:
    _, base = hub
    sam, pia = login(base, "sam"), login(base, "pia")
    order = new_order(sam)["order_id"]
    # two people change the process requirements from version 1: one applies, the other waits for a person
    first = sam.patch(f"/api/v1/orders/{order}", json={
        "base_version": 1, "changes": {"instructions": [{"key": "coating", "text": "zinc"}]}})
    assert (first.status_code, first.json()["outcome"], first.json()["version"]) == (200, "APPLIED", 2)
    second = pia.patch(f"/api/v1/orders/{order}", json={"base_version": 1, "changes": {
        "instructions": [{"key": "coating", "text": "paint"}]}})
    assert (second.status_code, second.json()["outcome"]) == (202, "PARKED")
    parked = until(lambda: [c for c in pia.get("/api/v1/conflicts").json() if c["order_id"] == order],
                   "the parked conflict")
    resolved = pia.post(f"/api/v1/conflicts/{parked[0]['record_id']}/resolve",
                        json={"choice": "proposed", "comment": "paint is what the customer ordered"})
    assert (resolved.status_code, resolved.json()["outcome"], resolved.json()["version"]) == (200, "APPLIED", 3)
    assert parked[0]["record_id"] not in {c["record_id"] for c in pia.get("/api/v1/conflicts").json()}, \
        "a resolved conflict leaves the queue"
    again = sam.post(f"/api/v1/conflicts/{parked[0]['record_id']}/resolve",
                     json={"choice": "current", "comment": "I want zinc back"})
    assert again.status_code == 409 and "resolved already by pia" in again.json()["detail"]
    shown = until(lambda: (o := pia.get(f"/api/v1/orders/{order}").json())["version"] == 3 and o, "version 3")
    assert shown["instructions"] == [{"key": "coating", "text": "paint"}]
    history = pia.get(f"/api/v1/orders/{order}/history").json()
    assert [(h["version"], h["actor_id"], h["actor_role"]) for h in history] == [
        (1, "sam", "sales"), (2, "sam", "sales"), (3, "pia", "planner")]
    # a field the role may not write: the engine refuses it, field by field
    refused = pia.patch(f"/api/v1/orders/{order}", json={"base_version": 3, "changes": {"customer_po_number": "X"}})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "customer_po_number"
    # JSON can spell half of a surrogate pair alone, which no text encoding stores: refused, not a 500
    lone = sam.patch(f"/api/v1/orders/{order}", content=b'{"base_version": 3, "changes": {"contact": "Jo \\ud800"}}',
                     headers={"Content-Type": "application/json"})
    assert lone.status_code == 422, lone.text
    error = lone.json()["errors"][0]
    assert error["field"] == "contact" and error["message"].startswith("contact: not Unicode text: a lone surrogate")


async def test_an_approval_above_the_threshold_is_the_managers_and_makes_the_order_approved(
        hub: tuple[Settings, str]) -> None:
    settings, base = hub
    sam, maria = login(base, "sam"), login(base, "maria")
    order = new_order(sam)["order_id"]
    async with HubClient(settings) as client:  # the ERP prices and confirms it: 12,000 EUR
        answer = (await client.propose(proposal(f"erp-{uuid.uuid4().hex[:8]}", {
            "amounts.gross": Decimal("12000.00"), "currency": "EUR", "status": "CONFIRMED"}, base=1, system="ERP",
            order_id=order), timeout_s=60)).answer
    assert answer.outcome.value == "APPLIED"
    until(lambda: [o for o in maria.get("/api/v1/approvals").json() if o["order_id"] == order],
          "the order in the sales manager's approvals")
    assert sam.post(f"/api/v1/orders/{order}/approvals/sales",
                    json={"decision": "approved", "base_version": 2}).status_code == 403
    approved = maria.post(f"/api/v1/orders/{order}/approvals/sales",
                          json={"decision": "approved", "comment": "margin ok", "base_version": 2})
    assert (approved.status_code, approved.json()["outcome"], approved.json()["version"]) == (200, "APPLIED", 3)
    shown = until(lambda: (o := maria.get(f"/api/v1/orders/{order}").json())["version"] == 3 and o, "version 3")
    assert shown["status"] == "APPROVED" and shown["approvals"] == [
        {"level": "sales", "decision": "approved", "comment": "margin ok"}]


def test_a_creation_sent_again_with_its_event_id_makes_one_order(hub: tuple[Settings, str]) -> None:
    _, base = hub
    sam = login(base, "sam")
    body = {"event_id": f"form-{uuid.uuid4()}", "values": {
        "customer.id": "C-8", "customer.name": "Eta AG", "requested_delivery": "2026-12-30",
        "instructions": [{"key": "coating", "text": "none"}], "lines.10.material.id": "MAT-8",
        "lines.10.quantity": 3, "lines.10.unit": "C62"}}
    first, second = sam.post("/api/v1/orders", json=body).json(), sam.post("/api/v1/orders", json=body).json()
    assert first["order_id"] == second["order_id"] and first["outcome"] == "CREATED"
    assert second["outcome"] in ("CREATED", "DUPLICATE") and second["version"] == 1


def test_an_offline_upload_retried_is_applied_once(hub: tuple[Settings, str]) -> None:
    _, base = hub
    sam = login(base, "sam")
    order = new_order(sam)["order_id"]
    edits = {"edits": [
        {"event_id": f"tablet-{uuid.uuid4()}", "order": order, "base_version": 1,
         "changes": {"customer_po_number": "PO-OFFLINE-1"}, "occurred_at": "2026-12-03T08:00:00Z"},
        {"event_id": f"tablet-{uuid.uuid4()}", "order": order, "base_version": 1,
         "changes": {"contact": "Jo Field"}, "occurred_at": "2026-12-03T08:01:00Z"},
        {"event_id": f"tablet-{uuid.uuid4()}", "order": order, "base_version": 1,
         "changes": {"amounts.net": "1.00"}},  # not the sales role's: refused, the others stand
    ]}
    first = sam.post("/api/v1/offline", json=edits).json()["results"]
    again = sam.post("/api/v1/offline", json=edits).json()["results"]  # the tablet did not see the answer
    # both made from version 1: the second merges (another field), like any writer's stale change
    assert [(r["outcome"], r["version"]) for r in first] == [("APPLIED", 2), ("MERGED", 3), ("REJECTED", None)]
    assert first[2]["errors"][0]["field"] == "amounts.net"
    # the retry gets the same decision (this API process remembers it; another would say DUPLICATE),
    # with the version the first upload made: nothing is applied again
    for retried, original in zip(again[:2], first[:2]):
        assert retried["version"] == original["version"]
        assert retried["outcome"] in (original["outcome"], "DUPLICATE")
    history = until(lambda: (h := sam.get(f"/api/v1/orders/{order}/history").json()) and len(h) >= 3 and h,
                    "both edits in the history")
    assert [h["version"] for h in history] == [1, 2, 3]


def test_schemathesis_finds_no_server_error_and_no_response_off_the_published_schema(
        hub: tuple[Settings, str], tmp_path: Path) -> None:
    _, base = hub
    token = httpx.post(f"{base}/api/v1/auth/token", json={"username": "sam", "password": PASSWORD}).json()
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/api/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         "--max-examples", "25", "--seed", "1", "--exclude-path", "/api/v1/auth/token",
         "--exclude-path", "/api/v1/auth/session", "--exclude-path", "/api/v1/orders/{ref}/events",
         "-H", f"Authorization: Bearer {token['access_token']}",
         "--request-timeout", "60"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)  # its reports stay out of the checkout
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
