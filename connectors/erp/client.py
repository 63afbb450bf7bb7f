"""The ERP client: SAP S/4HANA sales orders over OData V2 (``API_SALES_ORDER_SRV``) with pyodata.

pyodata (SAP's own OData client) reads ``$metadata`` and does every entity read and write on a
``requests`` session. Two things pyodata does not do are done with plain ``requests`` on the
same session: fetching the CSRF token (``GET`` on the service root with ``X-CSRF-Token: Fetch``)
and delta reads (pyodata drops the ``__delta`` link a change-tracking read returns, so those
responses are read here and turned into pyodata's own ``EntityProxy`` objects).

Where orderhub keeps its order id in the ERP order
    ``PurchaseOrderByCustomer`` (the customer reference) carries the customer's PO number, which
    is what it is for. ``A_SalesOrder`` in mock-sap 0.22.0 has no other free reference field
    (S/4HANA's ``ExternalDocumentID``/``UnderlyingPurchaseOrderItem`` are not there), so the hub
    order id goes into a header text of its own, text ID ``ZHUB`` (``A_SalesOrderText``, which
    the real API has too; SAP reserves ``Z*`` text IDs for a customer's own texts). It is
    created in the same deep insert as the order, so no sales order exists without it, and
    ``find_by_hub_id`` finds it with ``$filter`` on ``LongTextID`` and ``LongText``. Caveat: a
    real Gateway may refuse ``$filter`` on a long text; there, a customer field on the header
    (an extension of ``A_SalesOrder``) is the place, and only ``_hub_id_filter`` changes.

Writes
    ``create`` is one deep insert (``POST A_SalesOrder`` with ``to_Item`` and ``to_Text``),
    atomic in SAP and in mock-sap; a ``$batch`` changeset (which pyodata builds, and mock-sap
    executes) adds nothing for a single document. Item numbers are the hub's line numbers,
    zero-padded to six digits (``lines.10`` is item ``000010``), so lines and items map one to
    one. ``create`` looks the hub id up before every attempt, so a redelivered creation, or a
    retry after a failure, finds the order instead of making a second one.

Retries (tenacity)
    Transient failures are retried with exponential backoff and jitter, honouring
    ``Retry-After`` up to ``max_wait``: 5xx, 429, 408, 423 (locked by another user: mock-sap's
    answer; what a given S/4HANA release answers for an enqueue conflict could not be checked
    here), timeouts and dropped connections. A 403 with ``x-csrf-token: Required`` (an expired
    or unknown token) fetches a new token and repeats the call once. A write that was sent and
    got no answer may still be applied by the ERP: ``create`` then looks for the order for up
    to ``settle`` seconds before posting again. A write the ERP applies even later than that
    (mock-sap's ``timeout`` scenario applies it after 120 s) can still make a second order;
    no idempotency key exists in OData V2 to prevent it.

What is raised, by what the runtime should do::

    RetriableError                 (hub.errors) try again later
     ├── ErpUnavailable            still failing after the retries: 5xx, 429, no connection
     │    ├── ErpNoAnswer          sent, but no answer in time: a write's outcome is unknown
     │    ├── SalesOrderLocked     423: another user holds the document
     │    └── CsrfTokenRejected    a freshly fetched CSRF token was refused as well
     └── SalesOrderChanged         412: changed in the ERP since it was read; read it again
    DeadLetterError                (hub.errors) this record can never succeed
     └── ErpRefused                another 4xx: the ERP refuses the record (names SAP's reason)
          └── SalesOrderNotFound   404
    ConfigError                    (hub.errors) stop and tell the operator
     └── ErpAccessDenied           401/403: wrong credentials or missing authorisation

Gaps of mock-sap 0.22.0, and what is read instead
    no schedule lines: an item's confirmed date is its ``RequestedDeliveryDate`` (the header's
    carries the customer's request); no confirmed quantity: ``ConfdDelivQtyInOrderQtyUnit`` is
    read where the service publishes it (S/4HANA does), else None; no tax fields: tax is the sum
    of an item's pricing elements of condition category ``D`` (taxes); no credit status:
    ``TotalCreditCheckStatus`` is read where published, else None; no rejection reasons:
    ``SalesDocumentRjcnReason`` likewise, and ``cancel`` deletes the order (the API allows that
    while no follow-on document exists). An item change does not move the header's
    ``LastChangeDate`` in mock-sap (it does in SAP), so change detection sees item-only changes
    only once the header is touched.

Change detection (``changed_since``)
    Delta tokens where the service hands them out (mock-sap does for ``A_SalesOrder``): reports
    deletions too. Otherwise polling ``LastChangeDate ge <last stamp seen>``, which cannot see
    deletions. Both are at-least-once: a boundary change can come twice, which
    ``mapping.erp_changes`` turns into no change. One client is not thread-safe.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import parse_qs, urlsplit

import pyodata
import requests
from pydantic import SecretStr
from pyodata.exceptions import HttpError, PyODataException
from pyodata.v2.model import Config
from pyodata.v2.service import EntityProxy, Service
from tenacity import (RetryCallState, Retrying, before_sleep_log, retry_if_exception_type, retry_if_result,
                      stop_after_attempt, stop_after_delay, wait_exponential, wait_fixed, wait_random)
from tenacity.wait import wait_base
from urllib3.exceptions import NewConnectionError

from hub.sdk import ConfigError, DeadLetterError, RetriableError

log = logging.getLogger(__name__)
#: pyodata logs every request and property read at INFO: at the hub's INFO that drowns the connector's own lines.
logging.getLogger("pyodata").setLevel(logging.WARNING)

T = TypeVar("T")

#: Header text ID under which the hub order id is stored (a customer text ID: SAP reserves Z*).
HUB_ID_TEXT_ID = "ZHUB"
#: Header text ID of the process requirements (SAP's standard "header note 1").
NOTE_TEXT_ID = "0002"
TEXT_LANGUAGE = "EN"
#: What every read expands: the items with their pricing elements, and the header texts.
_EXPAND = "to_Item/to_PricingElement,to_Text"
#: SAP condition category (KNTYP) of taxes.
_TAX_CATEGORY = "D"
_SALES_ORDER_KEY = re.compile(r"A_SalesOrder\('([^']*)'\)")


# --- errors --------------------------------------------------------------------------------


class ErpUnavailable(RetriableError):
    """The ERP kept failing or could not be reached after the retries; try again later."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        #: Seconds the ERP asked us to wait (``Retry-After``), when it said.
        self.retry_after = retry_after


class ErpNoAnswer(ErpUnavailable):
    """A request was sent and no answer came in time: whether a write was applied is unknown."""


class SalesOrderLocked(ErpUnavailable):
    """The document is locked by another user (HTTP 423)."""


class CsrfTokenRejected(ErpUnavailable):
    """A freshly fetched CSRF token was refused too."""


class SalesOrderChanged(RetriableError):
    """The sales order changed in the ERP after it was read (HTTP 412): read it again, decide again."""


class ErpRefused(DeadLetterError):
    """The ERP refuses the record (a 4xx that no retry can change), with SAP's own reason."""

    def __init__(self, message: str, *, status: int, sap_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.sap_code = sap_code


class SalesOrderNotFound(ErpRefused):
    """No such sales order (HTTP 404)."""


class ErpAccessDenied(ConfigError):
    """The ERP refuses our credentials or authorisations (HTTP 401/403)."""


class _CsrfTokenExpired(Exception):
    """The ERP asks for a (new) CSRF token; handled inside the client, never raised from it."""


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSalesOrderItem:
    """One item of a sales order to create."""

    #: SalesOrderItem: the hub line number, zero-padded to six digits ("000010").
    item: str
    #: Material number.
    material: str
    #: RequestedQuantity, in ``unit``.
    quantity: Decimal
    #: RequestedQuantityUnit: SAP's unit of measure (e.g. PC, KG), not the UN/ECE code.
    unit: str


@dataclass(frozen=True)
class NewSalesOrder:
    """A sales order to create for one hub order."""

    #: The hub order id, stored in the order's ``ZHUB`` header text (the idempotency key).
    hub_order_id: str
    #: SoldToParty: the ERP customer number.
    sold_to_party: str
    #: The items, in item-number order.
    items: tuple[NewSalesOrderItem, ...]
    #: SalesOrderType (OR: standard order).
    order_type: str = "OR"
    #: SalesOrganization.
    sales_organization: str = "1710"
    #: DistributionChannel.
    distribution_channel: str = "10"
    #: OrganizationDivision.
    division: str = "00"
    #: PurchaseOrderByCustomer: the customer's PO number.
    customer_reference: str | None = None
    #: RequestedDeliveryDate: the customer's due date.
    requested_delivery_date: dt.date | None = None
    #: TransactionCurrency; None lets the ERP take the customer's.
    currency: str | None = None
    #: Header note (text 0002): the process requirements, for the people in the ERP.
    note: str | None = None


@dataclass(frozen=True)
class SalesOrderItem:
    """One item of a sales order as the ERP has it."""

    #: SalesOrderItem ("000010").
    item: str
    #: Material number.
    material: str
    #: RequestedQuantity.
    quantity: Decimal
    #: RequestedQuantityUnit (SAP's unit).
    unit: str
    #: NetAmount of the item (quantity x net price), in the order's currency.
    net_amount: Decimal
    #: Sum of the item's tax pricing elements (category D); None when it has none.
    tax_amount: Decimal | None
    #: The delivery date the ERP confirmed: the item's RequestedDeliveryDate in mock-sap (no
    #: schedule lines there); None while unconfirmed.
    confirmed_date: dt.date | None
    #: ConfdDelivQtyInOrderQtyUnit where the service publishes it (mock-sap does not), else None.
    confirmed_quantity: Decimal | None
    #: Plant; None when not yet determined.
    plant: str | None
    #: SalesDocumentRjcnReason where the service publishes it (mock-sap does not), else None.
    rejection_reason: str | None


@dataclass(frozen=True)
class SalesOrder:
    """A sales order as the ERP has it, with its items."""

    #: SalesOrder: the ERP's document number ("0000004712").
    sales_order: str
    #: The hub order id from the ``ZHUB`` text; None for an order orderhub did not create.
    hub_order_id: str | None
    #: SoldToParty.
    sold_to_party: str
    #: PurchaseOrderByCustomer; None when empty.
    customer_reference: str | None
    #: RequestedDeliveryDate (the customer's request; SAP may move a past date to today).
    requested_delivery_date: dt.date | None
    #: TransactionCurrency.
    currency: str | None
    #: TotalNetAmount: the sum of the items' net amounts.
    net_amount: Decimal
    #: OverallSDProcessStatus: A open, B in process, C completed.
    process_status: str
    #: OverallDeliveryStatus: A nothing delivered, B partly, C fully.
    delivery_status: str
    #: TotalCreditCheckStatus where published (mock-sap: None): A OK, B blocked, C partly
    #: released, D released by a credit representative, "" not checked.
    credit_status: str | None
    #: LastChangeDate: the change stamp (UTC).
    last_change: dt.datetime | None
    #: The ETag to send as If-Match with an update.
    etag: str | None
    #: The items, in item-number order.
    items: tuple[SalesOrderItem, ...]

    @property
    def tax_amount(self) -> Decimal | None:
        """The order's tax: the sum of its items' taxes; None when no item carries any."""
        taxes = [item.tax_amount for item in self.items if item.tax_amount is not None]
        return sum(taxes, Decimal(0)) if taxes else None


@dataclass(frozen=True)
class SalesOrderUpdate:
    """What orderhub may change on an existing sales order; None leaves a field alone."""

    #: New PurchaseOrderByCustomer.
    customer_reference: str | None = None
    #: New RequestedDeliveryDate.
    requested_delivery_date: dt.date | None = None
    #: New RequestedQuantity per item number ("000010").
    item_quantities: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class SalesOrderChanges:
    """What changed in the ERP since a mark, and the mark to continue from."""

    #: Orders created or changed (at least once: one may come again).
    orders: tuple[SalesOrder, ...]
    #: Numbers of orders deleted in the ERP (delta tracking only; polling cannot see them).
    deleted: tuple[str, ...]
    #: Opaque; pass it to the next ``changed_since``. Persist it to survive a restart.
    mark: str
    #: True when the mark is a delta token, False when it is a polled change stamp.
    tracked_by_delta: bool


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before it gives up on a call."""

    #: Attempts per call, the first included.
    attempts: int = 5
    #: First backoff in seconds; it doubles per attempt, plus up to as much jitter.
    first_wait: float = 0.2
    #: Longest backoff, also the cap on a ``Retry-After`` the ERP asks for.
    max_wait: float = 5.0
    #: Seconds an HTTP request may take (connect and read).
    timeout: float = 15.0
    #: Seconds to look for an order whose creation got no answer before posting it again.
    settle: float = 20.0
    #: Seconds between those looks.
    settle_interval: float = 0.25


# --- the client ----------------------------------------------------------------------------


class SalesOrderClient:
    """Sales orders in one ERP's ``API_SALES_ORDER_SRV``: find, create, read, track, change, cancel.

    ``service_url`` is the service root (``.../sap/opu/odata/sap/API_SALES_ORDER_SRV``), ``user``
    and ``password`` the basic-authentication credentials, ``policy`` the retries and timeouts,
    ``prefer_delta`` whether ``changed_since`` uses delta tokens where the ERP offers them.
    Nothing is sent before the first call; ``$metadata`` is read then, once.
    """

    def __init__(self, service_url: str, user: str, password: SecretStr | str, *,
                 policy: RetryPolicy | None = None, prefer_delta: bool = True) -> None:
        self._url = service_url.rstrip("/")
        self._policy = policy or RetryPolicy()
        self._prefer_delta = prefer_delta
        secret = password if isinstance(password, SecretStr) else SecretStr(password)
        self._session = _TimedSession(self._policy.timeout)
        self._session.auth = (user, secret.get_secret_value())
        self._service: Service | None = None

    def __enter__(self) -> "SalesOrderClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    # --- the API ---------------------------------------------------------------------------

    def find_by_hub_id(self, order_id: str) -> SalesOrder | None:
        """The sales order orderhub created for hub order ``order_id``, or None."""
        number = self._run(f"look up hub order {order_id}", lambda: self._lookup(order_id))
        return None if number is None else self.get(number)

    def create(self, order: NewSalesOrder) -> SalesOrder:
        """Create the sales order with its items, unless one exists for the hub order already."""

        def attempt() -> str:
            # Looked up before every attempt: a redelivered creation, or a retry after a
            # failure that SAP had in fact applied, finds the order instead of doubling it.
            existing = self._lookup(order.hub_order_id)
            if existing is not None:
                return existing
            self._ensure_token()
            try:
                return self._post_sales_order(order)
            except ErpNoAnswer:
                return self._settled(order.hub_order_id)

        number = self._run(f"create the sales order of hub order {order.hub_order_id}", attempt)
        return self.get(number)

    def get(self, sales_order: str) -> SalesOrder:
        """The sales order with its items, pricing elements and texts."""
        number = document_number(sales_order)
        return self._run(f"read sales order {number}", lambda: self._read(number))

    def changed_since(self, mark: str | None = None) -> SalesOrderChanges:
        """Orders changed since ``mark`` (from the previous call); None starts tracking now."""
        if mark is None:
            return self._run("start tracking ERP changes", self._start_tracking)
        kind, _, value = mark.partition(":")
        if kind == "delta":
            return self._run("read ERP changes", lambda: self._delta(value))
        if kind == "since":
            return self._run("poll ERP changes", lambda: self._poll(dt.datetime.fromisoformat(value)))
        raise ValueError(f"not a change mark of this client: {mark!r}")

    def update(self, sales_order: str, change: SalesOrderUpdate, *, etag: str | None = None) -> SalesOrder:
        """Apply ``change``; with ``etag``, only if the order is still as read (else SalesOrderChanged).

        A retry resumes after the writes that already succeeded, so the order's own new ETag
        never fails it. One case remains: a header write the ERP applied but whose answer was
        lost is repeated and then fails the ETag check (SalesOrderChanged); reading the order
        again shows the change in place.
        """
        number = document_number(sales_order)
        header: dict[str, Any] = {}
        if change.customer_reference is not None:
            header["PurchaseOrderByCustomer"] = change.customer_reference
        if change.requested_delivery_date is not None:
            header["RequestedDeliveryDate"] = _sap_datetime(change.requested_delivery_date)
        pending = [("header", header)] if header else []
        pending += [(item, {"RequestedQuantity": str(quantity)})
                    for item, quantity in sorted(change.item_quantities.items())]

        def attempt() -> None:
            self._ensure_token()
            while pending:
                target, values = pending[0]
                if target == "header":
                    request = self._odata().entity_sets.A_SalesOrder.update_entity(SalesOrder=number).set(**values)
                    request.add_headers({"If-Match": etag or "*"})
                else:
                    request = self._odata().entity_sets.A_SalesOrderItem.update_entity(
                        SalesOrder=number, SalesOrderItem=target).set(**values)
                    request.add_headers({"If-Match": "*"})  # items carry no ETag of their own
                self._call(request.execute)
                pending.pop(0)

        self._run(f"update sales order {number}", attempt)
        return self.get(number)

    def cancel(self, sales_order: str) -> bool:
        """Delete the sales order (mock-sap has no rejection reasons); False if it was gone already."""
        number = document_number(sales_order)

        def attempt() -> bool:
            self._ensure_token()
            request = self._odata().entity_sets.A_SalesOrder.delete_entity(SalesOrder=number)
            request.add_headers({"If-Match": "*"})
            try:
                self._call(request.execute)
            except SalesOrderNotFound:
                return False  # deleted before, or by our own attempt whose answer was lost
            return True

        return self._run(f"cancel sales order {number}", attempt)

    # --- one attempt of each operation (no retries here) -------------------------------------

    def _lookup(self, order_id: str) -> str | None:
        request = self._odata().entity_sets.A_SalesOrderText.get_entities().filter(_hub_id_filter(order_id))
        numbers = sorted({text.SalesOrder for text in self._call(request.execute)})
        if len(numbers) > 1:  # should never be: say so, and keep answering with the first one
            log.warning("hub order %s has %d sales orders in the ERP: %s", order_id, len(numbers), numbers)
        return numbers[0] if numbers else None

    def _settled(self, order_id: str) -> str:
        """After a creation that got no answer: the order, once the ERP shows it, else ErpNoAnswer."""
        looking = Retrying(stop=stop_after_delay(self._policy.settle), wait=wait_fixed(self._policy.settle_interval),
                           retry=retry_if_result(lambda found: found is None) | retry_if_exception_type(ErpUnavailable),
                           retry_error_callback=lambda _state: None)
        found = looking(self._lookup, order_id)
        if found is None:
            raise ErpNoAnswer(f"creating the sales order of hub order {order_id} got no answer and no order "
                              f"appeared within {self._policy.settle:.0f} s")
        return found

    def _post_sales_order(self, order: NewSalesOrder) -> str:
        request = self._odata().entity_sets.A_SalesOrder.create_entity().set(**_deep_insert(order))
        created = self._call(request.execute)
        log.info("created sales order %s for hub order %s", created.SalesOrder, order.hub_order_id)
        return str(created.SalesOrder)

    def _read(self, number: str) -> SalesOrder:
        request = self._odata().entity_sets.A_SalesOrder.get_entity(number).expand(_EXPAND)
        return _sales_order(self._call(request.execute))

    def _start_tracking(self) -> SalesOrderChanges:
        if self._prefer_delta:
            response = self._call(lambda: self._get_json(
                f"{self._url}/A_SalesOrder", params={"$top": "0", "$expand": _EXPAND},
                headers={"Prefer": "odata.track-changes"}))
            if token := _delta_token(response.get("d")):
                return SalesOrderChanges((), (), f"delta:{token}", True)
            log.info("the ERP hands out no delta token for A_SalesOrder: polling LastChangeDate instead")
        request = self._odata().entity_sets.A_SalesOrder.get_entities().order_by("LastChangeDate desc").top(1)
        newest = [_utc(order.LastChangeDate) for order in self._call(request.execute)]
        since = newest[0] if newest and newest[0] else dt.datetime.now(dt.timezone.utc)
        return SalesOrderChanges((), (), f"since:{since.isoformat()}", False)

    def _delta(self, token: str) -> SalesOrderChanges:
        # The token, not the whole __delta link, is what the mark keeps: the link names a host,
        # and the ERP's address may be configured differently by the time the mark is used.
        orders: list[SalesOrder] = []
        deleted: list[str] = []
        page = self._call(lambda: self._get_json(f"{self._url}/A_SalesOrder",
                                                 params={"!deltatoken": token, "$expand": _EXPAND}))["d"]
        while True:
            for entry in page.get("results", []):
                meta = entry.get("__metadata", {})
                if meta.get("deleted"):
                    if match := _SALES_ORDER_KEY.search(meta.get("uri") or meta.get("id") or ""):
                        deleted.append(match.group(1))
                    continue
                entity_set = self._odata().schema.entity_set("A_SalesOrder")
                orders.append(_sales_order(EntityProxy(self._odata(), entity_set, entity_set.entity_type, entry)))
            if not page.get("__next"):
                break
            # SAP pages a large delta; the next token comes with the last page
            page = self._call(lambda url=page["__next"]: self._get_json(self._same_origin(url)))["d"]
        if not (next_token := _delta_token(page)):
            raise ErpRefused("a delta read came back without a __delta link", status=200)
        return SalesOrderChanges(tuple(orders), tuple(deleted), f"delta:{next_token}", True)

    def _poll(self, since: dt.datetime) -> SalesOrderChanges:
        stamp = since.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        entity_set = self._odata().entity_sets.A_SalesOrder
        request = (entity_set.get_entities().filter(f"LastChangeDate ge datetime'{stamp}'")
                   .order_by("LastChangeDate").expand(_EXPAND))
        page = self._call(request.execute)
        proxies = list(page)
        while page.next_url:  # server-side paging of a large result
            page = self._call(entity_set.get_entities().next_url(page.next_url).execute)
            proxies += list(page)
        orders = tuple(_sales_order(proxy) for proxy in proxies)
        # Inclusive (ge) and resumed from the newest stamp seen: a change in the same
        # millisecond as the mark comes again rather than never.
        newest = max((order.last_change for order in orders if order.last_change), default=since)
        return SalesOrderChanges(orders, (), f"since:{newest.isoformat()}", False)

    # --- plumbing ---------------------------------------------------------------------------

    def _odata(self) -> Service:
        """The pyodata service, built from ``$metadata`` on first use (inside the retries)."""
        if self._service is None:
            self._service = self._call(lambda: pyodata.Client(
                self._url, self._session, config=Config(retain_null=True), response_hook=_log_sap_messages))
        return self._service

    def _ensure_token(self) -> None:
        if "X-CSRF-Token" not in self._session.headers:
            self._fetch_token()

    def _fetch_token(self) -> None:
        """Fetch a CSRF token; the session keeps it (and the session cookie it belongs to)."""
        self._session.headers.pop("X-CSRF-Token", None)
        response = self._call(lambda: _checked(self._session.get(f"{self._url}/", headers={"X-CSRF-Token": "Fetch"})))
        token = response.headers.get("x-csrf-token")
        if not token or token.lower() == "required":
            raise ErpRefused("the ERP handed out no CSRF token", status=response.status_code)
        self._session.headers["X-CSRF-Token"] = token

    def _get_json(self, url: str, *, params: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = self._session.get(url, params=params, headers={"Accept": "application/json", **(headers or {})})
        return _checked(response).json()

    def _same_origin(self, url: str) -> str:
        # A link the server handed us is followed only to the server we were configured with.
        if urlsplit(url)[:2] != urlsplit(self._url)[:2]:
            raise ErpRefused(f"the ERP linked to another origin: {url}", status=200)
        return url

    def _call(self, send: Callable[[], T]) -> T:
        """One HTTP exchange, its failure translated into this module's errors."""
        try:
            return send()
        except HttpError as exc:
            raise _failure(exc.response) from exc
        except requests.ConnectTimeout as exc:
            raise ErpUnavailable(f"the ERP at {self._url} did not accept a connection: {exc}") from exc
        except requests.Timeout as exc:
            raise ErpNoAnswer(f"the ERP at {self._url} did not answer within {self._policy.timeout:g} s") from exc
        except requests.ConnectionError as exc:
            if _refused(exc):  # nothing was sent
                raise ErpUnavailable(f"the ERP at {self._url} refused the connection") from exc
            raise ErpNoAnswer(f"the connection to the ERP at {self._url} broke: {exc}") from exc

    def _run(self, what: str, operation: Callable[[], T]) -> T:
        """``operation`` under the retry policy; an expired CSRF token is renewed once per attempt."""
        policy = self._policy
        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=_WaitRetryAfter(wait_exponential(multiplier=policy.first_wait, max=policy.max_wait)
                                 + wait_random(0, policy.first_wait), cap=policy.max_wait),
            retry=retry_if_exception_type(ErpUnavailable),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        try:
            return retrying(self._with_fresh_token, operation)
        except (ErpUnavailable, SalesOrderChanged, ErpRefused) as exc:
            exc.add_note(f"while trying to {what}")
            raise

    def _with_fresh_token(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except _CsrfTokenExpired:
            log.info("the ERP asked for a new CSRF token; fetching one and repeating the call")
            self._fetch_token()
            try:
                return operation()
            except _CsrfTokenExpired:
                raise CsrfTokenRejected("the ERP refused a freshly fetched CSRF token", status=403) from None


class _TimedSession(requests.Session):
    """A session whose every request has a timeout (requests has no session-wide one)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Send the request, with the session's timeout unless the call names one."""
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


class _WaitRetryAfter(wait_base):
    """The backoff, or the ERP's ``Retry-After`` when it asked for longer, never above ``cap``."""

    def __init__(self, backoff: wait_base, cap: float) -> None:
        self._backoff = backoff
        self._cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = self._backoff(retry_state)
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(failure, "retry_after", None)
        return min(self._cap, max(backoff, asked)) if asked else min(self._cap, backoff)


# --- translation ---------------------------------------------------------------------------


def document_number(sales_order: str) -> str:
    """SAP's internal form of a document number: a numeric one zero-padded to ten digits."""
    text = sales_order.strip()
    return text.zfill(10) if text.isdigit() else text


def _delta_token(page: Any) -> str | None:
    """The ``!deltatoken`` of a page's ``__delta`` link (quotes included, as it is sent back)."""
    link = page.get("__delta") if isinstance(page, dict) else None
    if not link:
        return None
    tokens = parse_qs(urlsplit(link).query).get("!deltatoken")
    return tokens[0] if tokens else None


def _hub_id_filter(order_id: str) -> str:
    return f"LongTextID eq '{HUB_ID_TEXT_ID}' and LongText eq {_literal(order_id)}"


def _literal(text: str) -> str:
    """An OData V2 string literal (a quote inside is doubled)."""
    return "'" + text.replace("'", "''") + "'"


def _deep_insert(order: NewSalesOrder) -> dict[str, Any]:
    header: dict[str, Any] = {
        "SalesOrderType": order.order_type, "SalesOrganization": order.sales_organization,
        "DistributionChannel": order.distribution_channel, "OrganizationDivision": order.division,
        "SoldToParty": order.sold_to_party,
    }
    if order.customer_reference:
        header["PurchaseOrderByCustomer"] = order.customer_reference
    if order.currency:
        header["TransactionCurrency"] = order.currency
    if order.requested_delivery_date:
        header["RequestedDeliveryDate"] = _sap_datetime(order.requested_delivery_date)
    header["to_Item"] = [{"SalesOrderItem": item.item, "Material": item.material,
                          "RequestedQuantity": str(item.quantity), "RequestedQuantityUnit": item.unit}
                         for item in order.items]
    texts = [{"Language": TEXT_LANGUAGE, "LongTextID": HUB_ID_TEXT_ID, "LongText": order.hub_order_id}]
    if order.note:
        texts.append({"Language": TEXT_LANGUAGE, "LongTextID": NOTE_TEXT_ID, "LongText": order.note})
    header["to_Text"] = texts
    return header


def _sales_order(proxy: EntityProxy) -> SalesOrder:
    texts = {text.LongTextID: text.LongText for text in proxy.to_Text}
    items = sorted((_item(item) for item in proxy.to_Item), key=lambda item: item.item)
    return SalesOrder(
        sales_order=proxy.SalesOrder, hub_order_id=_text(texts.get(HUB_ID_TEXT_ID)),
        sold_to_party=proxy.SoldToParty, customer_reference=_text(proxy.PurchaseOrderByCustomer),
        requested_delivery_date=_date(proxy.RequestedDeliveryDate), currency=_text(proxy.TransactionCurrency),
        net_amount=Decimal(proxy.TotalNetAmount or 0), process_status=proxy.OverallSDProcessStatus or "",
        delivery_status=proxy.OverallDeliveryStatus or "",
        credit_status=_optional(proxy, "TotalCreditCheckStatus"),
        last_change=_utc(proxy.LastChangeDate), etag=proxy.etag, items=tuple(items))


def _item(proxy: EntityProxy) -> SalesOrderItem:
    taxes = [Decimal(element.ConditionAmount or 0) for element in proxy.to_PricingElement
             if element.ConditionCategory == _TAX_CATEGORY]
    confirmed = _optional(proxy, "ConfdDelivQtyInOrderQtyUnit")
    return SalesOrderItem(
        item=proxy.SalesOrderItem, material=proxy.Material, quantity=Decimal(proxy.RequestedQuantity or 0),
        unit=proxy.RequestedQuantityUnit, net_amount=Decimal(proxy.NetAmount or 0),
        tax_amount=sum(taxes, Decimal(0)) if taxes else None, confirmed_date=_date(proxy.RequestedDeliveryDate),
        confirmed_quantity=None if confirmed is None else Decimal(confirmed), plant=_text(proxy.Plant),
        rejection_reason=_text(_optional(proxy, "SalesDocumentRjcnReason")))


def _optional(proxy: EntityProxy, name: str) -> Any:
    """A property the real API has and mock-sap 0.22.0 does not: None where the service lacks it."""
    try:
        value = getattr(proxy, name)
    except (AttributeError, PyODataException):
        return None
    return value if value != "" else None


def _text(value: str | None) -> str | None:
    """SAP's initial value (an empty string) as None."""
    return (value.strip() or None) if isinstance(value, str) else None


def _date(value: dt.datetime | None) -> dt.date | None:
    return value.date() if isinstance(value, dt.datetime) else None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _sap_datetime(day: dt.date) -> dt.datetime:
    """A date as the Edm.DateTime pyodata writes (UTC midnight)."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def _checked(response: requests.Response) -> requests.Response:
    if response.status_code >= 400:
        raise HttpError(f"HTTP {response.status_code} from {response.url}", response)
    return response


def _failure(response: requests.Response) -> Exception:
    """The error an ERP answer means, by what the runtime should do about it."""
    status = response.status_code
    code, message = _sap_error(response)
    detail = f"{status} {code + ': ' if code else ''}{message}"
    if status == 403 and response.headers.get("x-csrf-token", "").lower() == "required":
        return _CsrfTokenExpired(detail)
    if status == 423:
        return SalesOrderLocked(f"the sales order is locked: {detail}", status=status)
    if status == 412:
        return SalesOrderChanged(f"the sales order changed since it was read: {detail}")
    if status in (401, 403):
        return ErpAccessDenied(f"the ERP refused our credentials or authorisation: {detail}")
    if status == 404:
        return SalesOrderNotFound(f"not found in the ERP: {detail}", status=status, sap_code=code)
    if status in (408, 429) or status >= 500:
        return ErpUnavailable(f"the ERP failed: {detail}", status=status, retry_after=_retry_after(response))
    return ErpRefused(f"the ERP refused the request: {detail}", status=status, sap_code=code)


def _sap_error(response: requests.Response) -> tuple[str | None, str]:
    """SAP Gateway's error envelope: ``{"error": {"code": ..., "message": {"value": ...}}}``."""
    try:
        error = response.json().get("error", {})
        message = error.get("message", {})
        text = message.get("value") if isinstance(message, dict) else message
        return error.get("code") or None, str(text or response.reason)
    except (ValueError, AttributeError):
        return None, (response.text or response.reason or "")[:300]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None  # the HTTP-date form is not worth honouring here


def _refused(exc: requests.ConnectionError) -> bool:
    """Whether no connection came about at all (refused, unreachable): then nothing was sent."""
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", cause), NewConnectionError)


def _log_sap_messages(response: Any) -> None:
    """Log what SAP says beside a success (``sap-message``: e.g. a delivery date moved)."""
    message = response.headers.get("sap-message") if hasattr(response, "headers") else None
    if message:
        log.warning("the ERP says: %s", message)

