"""The ERP client against a real mock-sap process: sales orders made, found, read, tracked, and
every failure mode mock-sap offers retried without an order lost or doubled."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest

from connectors.erp.client import (HUB_ID_TEXT_ID, ErpAccessDenied, ErpRefused, ErpUnavailable, NewSalesOrder,
                                   NewSalesOrderItem, RetryPolicy, SalesOrderChanged, SalesOrderClient,
                                   SalesOrderLocked, SalesOrderUpdate)
from connectors.erp.mapping import erp_changes, erp_deletion_changes, new_sales_order
from hub.errors import RetriableError
from hub.events import Customer, Instruction, LifecycleStatus, OrderSnapshot
from localdev import process
from localdev.sandboxes import sap
from tests.factories import make_line, make_snapshot

#: The delay of mock-sap's ``slow`` scenario in these tests.
SLOW_MS = 600
#: Retries fast enough for tests, patient enough for the faults injected here.
FAST = RetryPolicy(attempts=5, first_wait=0.02, max_wait=0.2, timeout=5.0, settle=10.0, settle_interval=0.1)


@dataclass(frozen=True)
class Sandbox:
    """A running mock-sap: its service root and its state folder."""

    url: str
    state_dir: Path


@pytest.fixture
def start_erp(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start mock-sap sandboxes on free ports under tmp_path; each is stopped by PID afterwards."""
    started: list[Path] = []

    def start(**options: Any) -> Sandbox:
        state_dir = tmp_path / f"erp-{len(started)}"
        started.append(state_dir)
        return Sandbox(sap.up(state_dir, process.free_port(), slow_ms=SLOW_MS, **options), state_dir)

    yield start
    for state_dir in started:
        sap.down(state_dir)
        assert not sap.status(state_dir).running


@pytest.fixture
def erp(start_erp: Callable[..., Sandbox]) -> Sandbox:
    """One mock-sap sandbox for the test."""
    return start_erp()


@pytest.fixture
def client(erp: Sandbox) -> Iterator[SalesOrderClient]:
    """A client of the sandbox with fast retries."""
    with SalesOrderClient(erp.url, sap.USER, sap.PASSWORD, policy=FAST) as erp_client:
        yield erp_client


def hub_order(**fields: Any) -> OrderSnapshot:
    """A new DRAFT hub order with two lines and a fresh order id."""
    values: dict[str, Any] = {
        "status": LifecycleStatus.DRAFT, "customer": Customer(id="1000001", name="ACME"),
        "customer_po_number": "PO-4711", "requested_delivery": dt.date(2027, 1, 15), "currency": "EUR",
        "net": None, "instructions": [Instruction(key="coating", text="zinc 12 um")],
        "lines": [make_line(10, "MAT-4711", "250", "C62"), make_line(20, "MAT-0815", "3.5", "KGM")],
    }
    return make_snapshot(str(uuid.uuid4()), **{**values, **fields})


def orders_of(erp: Sandbox, snapshot: OrderSnapshot) -> list[str]:
    """Every sales order in the ERP that carries the hub order's id."""
    return sap.sales_orders_with_text(erp.url, HUB_ID_TEXT_ID, snapshot.order_id)


def answered(erp: Sandbox, method: str, path: str) -> list[int]:
    """The statuses the sandbox answered ``method`` requests whose path matches the regex ``path`` with,
    oldest first."""
    return [r.status for r in reversed(sap.request_log(erp.url)) if r.method == method and re.search(path, r.path)]


# --- the ordinary path ------------------------------------------------------------------------


def test_create_makes_one_sales_order_with_its_items(erp: Sandbox, client: SalesOrderClient) -> None:
    """A hub order becomes one sales order with its items, units, customer reference and hub id."""
    snapshot = hub_order()
    created = client.create(new_sales_order(snapshot))
    assert created.hub_order_id == snapshot.order_id
    assert (created.sold_to_party, created.customer_reference, created.currency) == ("1000001", "PO-4711", "EUR")
    assert created.requested_delivery_date == dt.date(2027, 1, 15)
    assert [(i.item, i.material, i.quantity, i.unit) for i in created.items] == [
        ("000010", "MAT-4711", Decimal("250"), "PC"), ("000020", "MAT-0815", Decimal("3.5"), "KG")]
    assert client.get(created.sales_order) == created
    assert orders_of(erp, snapshot) == [created.sales_order]


def test_creating_twice_finds_the_first_order(erp: Sandbox, client: SalesOrderClient) -> None:
    """A redelivered creation, even from a new client, finds the sales order instead of making a second."""
    snapshot = hub_order()
    first = client.create(new_sales_order(snapshot))
    with SalesOrderClient(erp.url, sap.USER, sap.PASSWORD, policy=FAST) as restarted:
        again = restarted.create(new_sales_order(snapshot))
        assert restarted.find_by_hub_id(snapshot.order_id) == first
    assert again.sales_order == first.sales_order
    assert orders_of(erp, snapshot) == [first.sales_order]
    assert answered(erp, "POST", "/A_SalesOrder$") == [201]


def test_an_order_orderhub_did_not_create_is_not_found(client: SalesOrderClient) -> None:
    """Looking up a hub id the ERP never saw finds nothing."""
    assert client.find_by_hub_id(str(uuid.uuid4())) is None


def test_the_echo_of_the_creation_is_no_change(client: SalesOrderClient) -> None:
    """Reading back the order just created proposes no change to the hub."""
    snapshot = hub_order()
    assert erp_changes(client.create(new_sales_order(snapshot)), snapshot) == {}


@pytest.mark.parametrize("prefer_delta", [True, False], ids=["delta-token", "polling"])
def test_an_erp_users_pricing_and_confirmation_is_detected(erp: Sandbox, prefer_delta: bool) -> None:
    """Pricing and a confirmed date entered in the ERP come back as changes that confirm the hub order."""
    with SalesOrderClient(erp.url, sap.USER, sap.PASSWORD, policy=FAST, prefer_delta=prefer_delta) as client:
        snapshot = hub_order()
        created = client.create(new_sales_order(snapshot))
        start = client.changed_since(None)
        sap.price_and_confirm(erp.url, created.sales_order, delivery_date=dt.date(2027, 1, 12),
                              unit_prices={"000010": Decimal("47.50"), "000020": Decimal("2.00")})
        changes = client.changed_since(start.mark)
    assert changes.tracked_by_delta is prefer_delta
    (changed,) = [order for order in changes.orders if order.sales_order == created.sales_order]
    assert erp_changes(changed, snapshot) == {
        "amounts.net": "11882.00", "amounts.tax": "2257.58", "amounts.gross": "14139.58",
        "lines.10.unit_price": "47.5000", "lines.20.unit_price": "2.0000",
        "lines.10.confirmed_date": "2027-01-12", "lines.20.confirmed_date": "2027-01-12",
        "lines.10.confirmed_quantity": "250.000", "lines.20.confirmed_quantity": "3.500",
        "promised_delivery": "2027-01-12", "plant": "1710", "status": "CONFIRMED"}


def test_a_sales_order_deleted_in_the_erp_cancels_the_hub_order(erp: Sandbox, client: SalesOrderClient) -> None:
    """A deletion in the ERP arrives in the delta and cancels the order."""
    snapshot = hub_order(status=LifecycleStatus.CONFIRMED)
    created = client.create(new_sales_order(snapshot))
    start = client.changed_since(None)
    sap.delete_order(erp.url, created.sales_order)
    changes = client.changed_since(start.mark)
    assert created.sales_order in changes.deleted
    assert erp_deletion_changes(snapshot) == {"status": "CANCELLED"}


def test_shipping_in_the_erp_ships_a_completed_order(erp: Sandbox, client: SalesOrderClient) -> None:
    """A full delivery in the ERP moves a COMPLETED hub order to SHIPPED."""
    snapshot = hub_order(status=LifecycleStatus.COMPLETED)
    created = client.create(new_sales_order(snapshot))
    start = client.changed_since(None)
    sap.ship(erp.url, created.sales_order)
    (shipped,) = [o for o in client.changed_since(start.mark).orders if o.sales_order == created.sales_order]
    assert shipped.delivery_status == "C"
    assert erp_changes(shipped, snapshot) == {"status": "SHIPPED"}


def test_update_and_cancel_write_to_the_erp(client: SalesOrderClient) -> None:
    """An update changes the customer reference and a quantity; cancelling twice deletes once."""
    created = client.create(new_sales_order(hub_order()))
    updated = client.update(created.sales_order, SalesOrderUpdate(
        customer_reference="PO-4712", item_quantities={"000010": Decimal("300")}), etag=created.etag)
    assert (updated.customer_reference, updated.items[0].quantity) == ("PO-4712", Decimal("300"))
    assert client.cancel(created.sales_order) is True
    assert client.cancel(created.sales_order) is False


# --- failure modes --------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["error", "busy", "lock"])
def test_a_transient_failure_of_the_creation_is_retried_into_one_order(
        erp: Sandbox, client: SalesOrderClient, scenario: str) -> None:
    """Two 500s, two 503s or two locks on the POST are retried, and exactly one sales order results."""
    snapshot = hub_order()
    sap.inject_fault(erp.url, match="A_SalesOrder$", method="POST", scenario=scenario, count=2)
    created = client.create(new_sales_order(snapshot))
    failed = {"error": 500, "busy": 503, "lock": 423}[scenario]
    assert answered(erp, "POST", "/A_SalesOrder$") == [failed, failed, 201]
    assert orders_of(erp, snapshot) == [created.sales_order]


def test_failing_reads_are_retried(erp: Sandbox, client: SalesOrderClient) -> None:
    """500s on the lookup and on the read are retried until they answer."""
    created = client.create(new_sales_order(snapshot := hub_order()))
    sap.inject_fault(erp.url, match="A_SalesOrderText$", method="GET", scenario="error", count=2)
    sap.inject_fault(erp.url, match=r"A_SalesOrder\('", method="GET", scenario="error", count=2)
    assert client.find_by_hub_id(snapshot.order_id) == created
    assert answered(erp, "GET", "/A_SalesOrderText$")[-3:] == [500, 500, 200]
    assert answered(erp, "GET", r"/A_SalesOrder\('")[-3:] == [500, 500, 200]


def test_an_erp_that_keeps_failing_raises_a_retriable_error_and_creates_nothing(
        erp: Sandbox, client: SalesOrderClient) -> None:
    """A 500 on every attempt ends in a RetriableError; once the ERP recovers, one order is made."""
    snapshot = hub_order()
    sap.inject_fault(erp.url, match="A_SalesOrder$", method="POST", scenario="error", count=0)
    with pytest.raises(ErpUnavailable) as failed:
        client.create(new_sales_order(snapshot))
    assert isinstance(failed.value, RetriableError) and failed.value.status == 500
    assert answered(erp, "POST", "/A_SalesOrder$") == [500] * FAST.attempts
    assert orders_of(erp, snapshot) == []
    sap.clear_faults(erp.url)
    created = client.create(new_sales_order(snapshot))
    assert orders_of(erp, snapshot) == [created.sales_order]


def test_a_lock_that_is_released_lets_the_update_through(erp: Sandbox, client: SalesOrderClient) -> None:
    """Two 423s on the update are retried and the change is applied once."""
    created = client.create(new_sales_order(hub_order()))
    sap.inject_fault(erp.url, match=r"A_SalesOrder\(", method="PATCH", scenario="lock", count=2)
    updated = client.update(created.sales_order, SalesOrderUpdate(customer_reference="PO-4712"))
    assert updated.customer_reference == "PO-4712"
    assert answered(erp, "PATCH", r"/A_SalesOrder\(") == [423, 423, 204]


def test_an_update_resumes_after_a_lock_without_tripping_over_its_own_etag(
        erp: Sandbox, client: SalesOrderClient) -> None:
    """A lock on the item after the header was written is retried from the item on, with no 412."""
    created = client.create(new_sales_order(hub_order()))
    sap.inject_fault(erp.url, match=r"A_SalesOrderItem\(", method="PATCH", scenario="lock", count=1)
    updated = client.update(created.sales_order, SalesOrderUpdate(
        customer_reference="PO-4712", item_quantities={"000010": Decimal("300")}), etag=created.etag)
    assert (updated.customer_reference, updated.items[0].quantity) == ("PO-4712", Decimal("300"))
    assert answered(erp, "PATCH", r"/A_SalesOrder\(") == [204]
    assert answered(erp, "PATCH", r"/A_SalesOrderItem\(") == [423, 204]


def test_a_lock_that_stays_raises_sales_order_locked_and_changes_nothing(
        erp: Sandbox, client: SalesOrderClient) -> None:
    """A document locked through every attempt raises SalesOrderLocked (retriable) and keeps its values."""
    created = client.create(new_sales_order(hub_order()))
    sap.inject_fault(erp.url, match=r"A_SalesOrder\(", method="PATCH", scenario="lock", count=0)
    with pytest.raises(SalesOrderLocked):
        client.update(created.sales_order, SalesOrderUpdate(customer_reference="PO-4712"))
    sap.clear_faults(erp.url)
    assert client.get(created.sales_order).customer_reference == "PO-4711"


def test_a_refused_csrf_token_is_fetched_again_once(erp: Sandbox, client: SalesOrderClient) -> None:
    """A 403 'CSRF token required' makes the client fetch a new token and repeat the write once."""
    client.create(new_sales_order(hub_order()))  # the client now holds a token
    snapshot = hub_order()
    sap.inject_fault(erp.url, match="A_SalesOrder$", method="POST", scenario="csrf", count=1)
    created = client.create(new_sales_order(snapshot))
    assert answered(erp, "POST", "/A_SalesOrder$")[-2:] == [403, 201]
    assert orders_of(erp, snapshot) == [created.sales_order]


def test_a_token_the_restarted_erp_forgot_is_replaced(erp: Sandbox, client: SalesOrderClient) -> None:
    """After the ERP restarts (its tokens expire, its orders stay) the next write fetches a new token."""
    first = client.create(new_sales_order(hub_order()))
    sap.restart(erp.state_dir)
    snapshot = hub_order()
    second = client.create(new_sales_order(snapshot))
    assert answered(erp, "POST", "/A_SalesOrder$") == [201, 403, 201]
    assert orders_of(erp, snapshot) == [second.sales_order]
    assert client.get(first.sales_order).sales_order == first.sales_order


def test_latency_within_the_timeout_is_waited_out(erp: Sandbox, client: SalesOrderClient) -> None:
    """A slow ERP (slow scenario, within the timeout) answers and makes one order."""
    snapshot = hub_order()
    sap.inject_fault(erp.url, match="A_SalesOrder$", method="POST", scenario="slow", count=1)
    created = client.create(new_sales_order(snapshot))
    assert answered(erp, "POST", "/A_SalesOrder$") == [201]
    assert orders_of(erp, snapshot) == [created.sales_order]


def test_a_creation_answered_after_the_timeout_is_found_not_doubled(erp: Sandbox) -> None:
    """A POST that times out but is applied later is found by the hub id, and not posted again."""
    impatient = RetryPolicy(attempts=5, first_wait=0.02, max_wait=0.2, timeout=SLOW_MS / 3000, settle=10.0,
                            settle_interval=0.1)
    snapshot = hub_order()
    with SalesOrderClient(erp.url, sap.USER, sap.PASSWORD, policy=impatient) as client:
        client.find_by_hub_id(snapshot.order_id)  # metadata and the first lookup outside the slow window
        sap.inject_fault(erp.url, match="A_SalesOrder$", method="POST", scenario="slow", count=1)
        created = client.create(new_sales_order(snapshot))
    assert orders_of(erp, snapshot) == [created.sales_order]
    assert answered(erp, "POST", "/A_SalesOrder$") == [201]  # the one POST, answered after the client gave up


def test_random_500s_everywhere_lose_and_double_nothing(start_erp: Callable[..., Sandbox]) -> None:
    """With a third of all requests failing (--error-rate), every hub order still becomes exactly one sales order."""
    erp = start_erp(error_rate=0.3)
    patient = RetryPolicy(attempts=12, first_wait=0.01, max_wait=0.05, timeout=5.0, settle=10.0)
    snapshots = [hub_order() for _ in range(6)]
    with SalesOrderClient(erp.url, sap.USER, sap.PASSWORD, policy=patient) as client:
        numbers = [client.create(new_sales_order(snapshot)).sales_order for snapshot in snapshots]
        again = [client.create(new_sales_order(snapshot)).sales_order for snapshot in snapshots]
    assert again == numbers and len(set(numbers)) == len(snapshots)
    assert 500 in {r.status for r in sap.request_log(erp.url)}
    sap.down(erp.state_dir)  # count on the same data without the random failures
    calm = Sandbox(sap.up(erp.state_dir, urlsplit(erp.url).port or 0, slow_ms=SLOW_MS), erp.state_dir)
    for snapshot, number in zip(snapshots, numbers):
        assert orders_of(calm, snapshot) == [number]


def test_a_stale_etag_raises_sales_order_changed(erp: Sandbox, client: SalesOrderClient) -> None:
    """An update against a version the ERP user changed since is refused with SalesOrderChanged."""
    created = client.create(new_sales_order(hub_order()))
    sap.price_and_confirm(erp.url, created.sales_order, unit_prices={"000010": Decimal("1")},
                          delivery_date=dt.date(2027, 1, 12))
    with pytest.raises(SalesOrderChanged):
        client.update(created.sales_order, SalesOrderUpdate(customer_reference="PO-4712"), etag=created.etag)
    assert client.get(created.sales_order).customer_reference == "PO-4711"


def test_a_record_the_erp_refuses_is_a_dead_letter_without_retries(erp: Sandbox, client: SalesOrderClient) -> None:
    """A 400 (a customer reference longer than SAP's 35 characters) is raised at once as ErpRefused."""
    order = NewSalesOrder(hub_order_id=str(uuid.uuid4()), sold_to_party="1000001", customer_reference="P" * 36,
                          items=(NewSalesOrderItem("000010", "MAT-4711", Decimal("1"), "PC"),))
    with pytest.raises(ErpRefused, match="exceeds maximum length 35") as refused:
        client.create(order)
    assert refused.value.status == 400
    assert answered(erp, "POST", "/A_SalesOrder$") == [400]


@pytest.mark.parametrize("fault", ["forbidden", "wrong-password"])
def test_missing_authorisation_stops_at_once(erp: Sandbox, fault: str) -> None:
    """A 403 without a CSRF request, or wrong credentials, raise ErpAccessDenied after one request."""
    password = "wrong" if fault == "wrong-password" else sap.PASSWORD
    if fault == "forbidden":
        sap.inject_fault(erp.url, match="A_SalesOrderText$", method="GET", scenario="forbidden", count=0)
    with SalesOrderClient(erp.url, sap.USER, password, policy=FAST) as client:
        with pytest.raises(ErpAccessDenied):
            client.find_by_hub_id(str(uuid.uuid4()))
    assert len([r for r in sap.request_log(erp.url) if r.status in (401, 403)]) == 1
