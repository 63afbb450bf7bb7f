"""The REST API without Kafka: who may call it (tokens, sessions, CSRF, roles, rate limit), what it
reads from a real read model (SQLite, filled with the engine's own decisions), what each role sees,
and that every error is a problem document. Writes go through the engine: tests/integration/test_api_writes.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.api.auth import Tokens, secret_of
from hub.api.users import User, Users
from hub.readmodel import ReadModel
from hub.settings import Settings
from tests.domain_helpers import OrderNumbers, creation, proposal, ref, run
from tests.unit.test_workflow import RULES_WF

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", database_url=f"sqlite:///{tmp_path / 'hub.db'}",
                    bootstrap_servers="127.0.0.1:1")  # no Kafka: nothing here may write


@pytest.fixture
def filled(settings: Settings) -> Settings:
    """Two orders decided by the engine's own rules and projected: 12,000 EUR CONFIRMED (waiting for the
    sales level) and a DRAFT one due 2026-12-20, with a CRM reference."""
    model = ReadModel(settings.read_model_url)
    model.create_schema()
    numbers = OrderNumbers()
    _, confirmed = run([creation("c1", order_id="O-1", refs=[ref("CRM", "Opportunity", "006A")]),
                        proposal("p1", {"amounts.gross": Decimal("12000.00"), "amounts.net": Decimal("10084.03"),
                                        "currency": "EUR", "status": "CONFIRMED"}, base=1, system="ERP",
                                 order_id="O-1")], rules=RULES_WF, numbers=numbers)
    _, draft = run([creation("c2", {"requested_delivery": dt.date(2026, 12, 20), "customer.name": "Beta AG"},
                             order_id="O-2")], rules=RULES_WF, numbers=numbers)
    decisions = confirmed + draft
    model.project_changes([d.change for d in decisions])
    model.project_snapshots([d.snapshot for d in decisions])
    model.close()
    users = Users(settings.read_model_url)
    users.add("sam", PASSWORD, ["sales"])
    users.add("maria", PASSWORD, ["sales_manager"])
    users.add("otto", PASSWORD, ["supervisor"])
    users.add("gone", PASSWORD, ["planner"])
    users.set_disabled("gone", True)
    users.close()
    return settings


@pytest.fixture
def api(filled: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(filled)) as client:
        yield client


def bearer(api: TestClient, user: str) -> dict[str, str]:
    answer = api.post("/api/v1/auth/token", json={"username": user, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_without_credentials_every_endpoint_is_401_and_says_nothing_of_orders(api: TestClient) -> None:
    routes = [r for r in api.app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/v1/")
              and not r.path.startswith("/api/v1/auth/")]
    assert len(routes) >= 14
    for route in routes:
        path = route.path.replace("{ref:path}", "O-1").replace("{ref}", "O-1").replace("{level}", "sales") \
            .replace("{record_id}", "x").replace("{event_id}", "e")
        for method in route.methods:
            answer = api.request(method, path, json={})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "O-1" not in answer.text and "ACME" not in answer.text


def test_a_forged_an_expired_and_a_disabled_users_token_are_refused(api: TestClient, filled: Settings) -> None:
    user = User("sam", ("sales",))
    forged, _ = Tokens(b"someone else's key, long enough for HS256", 900).issue(user, "bearer")
    key = secret_of(None, filled.state_dir)
    expired, _ = Tokens(key, 900, clock=lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).issue(
        user, "bearer")
    for token, why in ((forged, "not valid"), (expired, "expired"), ("x.y.z", "not valid")):
        answer = api.get("/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401 and why in answer.json()["detail"], answer.text
    assert api.post("/api/v1/auth/token", json={"username": "gone", "password": PASSWORD}).status_code == 401
    # a token of a user disabled after it was issued stops working at once
    headers = bearer(api, "sam")
    users = Users(filled.read_model_url)
    users.set_disabled("sam", True)
    users.close()
    assert api.get("/api/v1/me", headers=headers).status_code == 401


def test_login_attempts_are_rate_limited_right_or_wrong(api: TestClient) -> None:
    codes = [api.post("/api/v1/auth/token", json={"username": "maria", "password": "wrong password!"}).status_code
             for _ in range(5)]
    assert codes == [401] * 5
    limited = api.post("/api/v1/auth/token", json={"username": "maria", "password": PASSWORD})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"


def test_a_browser_session_needs_its_csrf_token_to_change_anything(api: TestClient) -> None:
    login = api.post("/api/v1/auth/session", json={"username": "sam", "password": PASSWORD})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"]
    assert "orderhub_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    csrf = login.json()["csrf_token"]
    assert api.cookies.get("orderhub_csrf") == csrf
    assert api.get("/api/v1/orders").status_code == 200, "reading needs no CSRF token"
    change = {"base_version": 1, "changes": {"customer_po_number": "PO-9"}}
    missing = api.patch("/api/v1/orders/O-2", json=change)
    assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
    wrong = api.patch("/api/v1/orders/O-2", json=change, headers={"X-CSRF-Token": "guessed"})
    assert wrong.status_code == 403
    assert api.delete("/api/v1/auth/session").status_code == 204
    assert api.get("/api/v1/orders").status_code == 401


def test_orders_are_listed_filtered_paged_and_found_by_any_name(api: TestClient) -> None:
    headers = bearer(api, "sam")
    page = api.get("/api/v1/orders", headers=headers).json()
    assert {o["order_id"] for o in page["items"]} == {"O-1", "O-2"} and page["more"] is False
    assert [o["order_id"] for o in api.get("/api/v1/orders?status=CONFIRMED", headers=headers).json()["items"]] == \
        ["O-1"]
    assert [o["order_id"] for o in api.get("/api/v1/orders?q=beta", headers=headers).json()["items"]] == ["O-2"]
    ranged = api.get("/api/v1/orders?due_from=2026-12-15&due_to=2026-12-20", headers=headers).json()["items"]
    assert [o["order_id"] for o in ranged] == ["O-2"]
    first = api.get("/api/v1/orders?page_size=1", headers=headers).json()
    assert len(first["items"]) == 1 and first["more"] is True
    second = api.get("/api/v1/orders?page_size=1&page=2", headers=headers).json()
    assert second["more"] is False and second["items"][0]["order_id"] != first["items"][0]["order_id"]
    by_number = api.get("/api/v1/orders/ORD-2026-000001", headers=headers).json()
    by_ref = api.get("/api/v1/orders/CRM/Opportunity/006A", headers=headers).json()
    assert by_number["order_id"] == by_ref["order_id"] == "O-1"
    history = api.get("/api/v1/orders/O-1/history", headers=headers).json()
    assert [(h["version"], h["source_system"]) for h in history] == [(1, "CRM"), (2, "ERP")]
    assert {"field": "status", "before": '"DRAFT"', "after": '"CONFIRMED"'} in history[1]["diffs"]


def test_the_shop_floor_does_not_see_prices(api: TestClient) -> None:
    seen = api.get("/api/v1/orders/O-1", headers=bearer(api, "otto")).json()
    assert seen["amounts"]["gross"] is None and seen["amounts"]["net"] is None
    assert {"amounts.gross", "amounts.net", "lines.*.unit_price"} <= set(seen["hidden_fields"])
    assert api.get("/api/v1/orders", headers=bearer(api, "otto")).json()["items"][0]["amount_net"] is None
    history = api.get("/api/v1/orders/O-1/history", headers=bearer(api, "otto")).json()
    assert not [d for h in history for d in h["diffs"] if d["field"].startswith("amounts.")]
    sales = api.get("/api/v1/orders/O-1", headers=bearer(api, "sam")).json()
    assert sales["amounts"]["gross"] == "12000.00" and sales["hidden_fields"] == []


def test_approvals_wait_for_the_role_that_gives_them(api: TestClient) -> None:
    waiting = api.get("/api/v1/approvals", headers=bearer(api, "maria")).json()
    assert [o["order_id"] for o in waiting] == ["O-1"]
    assert api.get("/api/v1/approvals", headers=bearer(api, "sam")).json() == []
    refused = api.post("/api/v1/orders/O-1/approvals/sales", headers=bearer(api, "sam"),
                       json={"decision": "approved", "base_version": 2})
    assert refused.status_code == 403 and "sales_manager" in refused.json()["detail"]


def test_a_creation_missing_a_field_is_refused_field_by_field_before_anything_is_sent(api: TestClient) -> None:
    answer = api.post("/api/v1/orders", headers=bearer(api, "sam"),
                      json={"values": {"customer.id": "C-1", "lines.10.material.id": "MAT-1"}})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    fields = {e.get("field") for e in problem["errors"]}
    assert {"requested_delivery", "lines.10.quantity", "lines.10.unit"} <= fields
    assert problem["title"] == "Refused by the hub's rules"


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/api/v1/orders/NOPE-1", None, 404),
    ("GET", "/api/v1/orders?page=0", None, 422),
    ("GET", "/api/v1/orders?status=DONE", None, 422),
    ("GET", "/api/v1/orders?due_from=yesterday", None, 422),
    ("PATCH", "/api/v1/orders/O-2", {"base_version": 1, "changes": {}}, 422),
    ("PATCH", "/api/v1/orders/O-2", {"base_version": 1, "changes": {"x": 1}, "extra": 1}, 422),
    ("POST", "/api/v1/orders/O-1/approvals/nolevel", {"decision": "approved", "base_version": 2}, 422),
    ("POST", "/api/v1/conflicts/none/resolve", {"choice": "current", "comment": "x"}, 404),
    ("PATCH", "/api/v1/orders/O-2", {"base_version": 1, "changes": {"customer_po_number": "P"}, "role": "planner"},
     403),
])
def test_bad_requests_get_a_precise_problem(api: TestClient, method: str, path: str, body: Any, status: int) -> None:
    answer = api.request(method, path, json=body, headers=bearer(api, "sam"))
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["status"] == status and answer.json()["title"]


def test_users_are_managed_and_their_passwords_hashed_with_argon2(settings: Settings) -> None:
    from hub.errors import InvalidInput

    users = Users(settings.read_model_url)
    try:
        users.add("pia", PASSWORD, ["planner", "sales", "planner"])
        assert users.get("pia") == User("pia", ("planner", "sales"))
        with users.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT password_hash FROM api_users").scalar()
        assert stored.startswith("$argon2id$") and PASSWORD not in stored
        assert users.authenticate("pia", PASSWORD) is not None and users.authenticate("pia", "nope") is None
        assert users.authenticate("nobody", PASSWORD) is None
        for bad, message in ((lambda: users.add("pia", PASSWORD, ["x"]), "exists"),
                             (lambda: users.add("Bad Name", PASSWORD, ["x"]), "user name"),
                             (lambda: users.add("ok", "short", ["x"]), "at least"),
                             (lambda: users.add("ok", PASSWORD, []), "at least one role"),
                             (lambda: users.set_roles("pia", ["Sales"]), "role")):
            with pytest.raises(InvalidInput, match=message):
                bad()
    finally:
        users.close()


def test_the_openapi_description_is_published(api: TestClient) -> None:
    spec = api.get("/api/openapi.json").json()
    assert spec["info"]["title"] == "orderhub"
    assert {"/api/v1/orders", "/api/v1/orders/{ref}", "/api/v1/offline"} <= set(spec["paths"])


def test_a_conflicts_values_are_hidden_like_the_order_s(filled: Settings) -> None:
    from hub.api.app import _conflict
    from tests.factories import make_conflict

    record = make_conflict(field="terms")
    (shown,) = _conflict(record, frozenset({"terms"})).fields
    assert (shown["current_value"], shown["proposed_value"], shown["hidden"]) == (None, None, True)
    (plain,) = _conflict(record, frozenset()).fields
    assert plain["proposed_value"] is not None


def test_a_hidden_field_inside_a_line_is_blanked(filled: Settings) -> None:
    from hub.api.app import _visible

    model = ReadModel(filled.read_model_url)
    try:
        order = model.order("O-1")
    finally:
        model.close()
    view = _visible(order, frozenset({"lines.*.material.revision", "lines.*.unit_price"}))
    assert view.lines[0].material.revision is None and view.lines[0].unit_price is None
    assert view.lines[0].material.id == "MAT-100"


def test_odd_input_is_a_precise_4xx_never_a_500(api: TestClient) -> None:
    login = api.post("/api/v1/auth/session", json={"username": "sam", "password": PASSWORD})
    assert login.status_code == 200
    odd = api.patch("/api/v1/orders/O-2", json={"base_version": 1, "changes": {"contact": "x"}},
                    headers={"X-CSRF-Token": "\u00e9t\u00e9".encode("latin-1")})  # not ASCII: compared as bytes
    assert odd.status_code == 403
    assert api.get("/o/" + "9" * 5000 + "/qr.svg").status_code == 404
