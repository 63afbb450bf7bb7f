"""Salesforce for the CRM connector: read opportunities, their lines and accounts; write back
what sales should see. Over simple-salesforce with a session id (an OAuth access token) and the
org's instance URL.

Every call is retried with tenacity on what may pass (connection errors, timeouts, 5xx,
REQUEST_LIMIT_EXCEEDED, UNABLE_TO_LOCK_ROW) and then classified::

    CrmUnavailable     (hub.errors.RetriableError)  still failing after the retries: try later
    CrmRecordRefused   (hub.errors.DeadLetterError) can never succeed as it is: an unknown id,
                                                    an invalid field, a value the hub cannot use;
                                                    names the record and the field
    CrmSessionRefused  (hub.errors.ConfigError)     the session id is refused (401): every call
                                                    would fail, so stop and say so

Writes send ``Sforce-Call-Options: client=<client id>``; Salesforce puts that client id into the
change event's ``changeOrigin``, which is how the connector recognises (and drops) the echo of
its own write-back (``connectors.crm.webhook.is_own_write``).

The org's custom fields the connector reads and writes are named once, below
(``REQUESTED_DELIVERY_FIELD``, ``WRITE_BACK_FIELDS``, ...); an org whose fields are named
otherwise changes them there.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar

import requests
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from hub.sdk import ConfigError, DeadLetterError, RetriableError

try:
    from simple_salesforce import Salesforce, SalesforceError, format_soql
except ImportError as missing:  # the value types and errors work without it; the client says how to install it
    _MISSING_CLIENT: ImportError | None = missing
else:
    _MISSING_CLIENT = None

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CLIENT_ID = "orderhub"
DEFAULT_API_VERSION = "59.0"
#: The org's custom fields (API names) the connector reads.
REQUESTED_DELIVERY_FIELD = "Requested_Delivery_Date__c"
CUSTOMER_PO_FIELD = "Customer_PO_Number__c"
LINE_UNIT_FIELD = "Unit__c"
#: What the hub writes back to the Opportunity: ``write_back`` keyword -> field API name.
WRITE_BACK_FIELDS: dict[str, str] = {
    "order_id": "Orderhub_Order_Id__c", "order_number": "Orderhub_Order_Number__c",
    "status": "Orderhub_Status__c", "promised_date": "Orderhub_Promised_Date__c",
}
OPPORTUNITY_FIELDS = ("Id", "Name", "AccountId", "ContactId", "StageName", "IsWon", "IsClosed", "CloseDate",
                      "Amount", "CurrencyIsoCode", "Description", "OwnerId", REQUESTED_DELIVERY_FIELD,
                      CUSTOMER_PO_FIELD, *WRITE_BACK_FIELDS.values(), "SystemModstamp")
LINE_ITEM_FIELDS = ("Id", "OpportunityId", "Product2Id", "ProductCode", "Quantity", "UnitPrice", "Description",
                    "ServiceDate", LINE_UNIT_FIELD)
ACCOUNT_FIELDS = ("Id", "Name", "AccountNumber")
CONTACT_FIELDS = ("Id", "FirstName", "LastName", "Email", "AccountId")
_TRANSIENT_CODES = ("REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW")
_SALESFORCE_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")


# --- errors ----------------------------------------------------------------------------


class CrmUnavailable(RetriableError):
    """Salesforce did not answer usefully (connection, timeout, 5xx, limits) after the retries."""


class CrmRecordRefused(DeadLetterError):
    """A CRM record or request that can never succeed as it is; names the record and the field."""

    def __init__(self, reason: str, *, field: str | None = None, record_id: str | None = None) -> None:
        self.reason, self.field, self.record_id = reason, field, record_id
        where = f"{record_id}: " if record_id else ""
        super().__init__(f"{where}{field + ': ' if field else ''}{reason}")


class CrmSessionRefused(ConfigError):
    """Salesforce refused the session id (401 INVALID_SESSION_ID): configure a valid one."""


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A Salesforce Account: the customer."""

    id: str
    """Account Id."""
    name: str | None
    """Account Name."""
    number: str | None = None
    """AccountNumber: where sales keep the customer's number in the ERP (the sold-to party)."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Account":
        """From a REST record (``CrmRecordRefused`` names a field of the wrong type)."""
        read = _Reader("Account", record)
        return cls(id=read.id("Id"), name=read.text("Name"), number=read.text("AccountNumber"))


@dataclass(frozen=True)
class Contact:
    """A Salesforce Contact: the customer's contact person."""

    id: str
    """Contact Id."""
    first_name: str | None
    """FirstName."""
    last_name: str | None
    """LastName."""
    email: str | None
    """Email."""
    account_id: str | None
    """AccountId: the customer the contact works for."""

    @property
    def name(self) -> str:
        """First and last name, as a person writes it."""
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Contact":
        """From a REST record (``CrmRecordRefused`` names a field of the wrong type)."""
        read = _Reader("Contact", record)
        return cls(id=read.id("Id"), first_name=read.text("FirstName"), last_name=read.text("LastName"),
                   email=read.text("Email"), account_id=read.text("AccountId"))


@dataclass(frozen=True)
class Opportunity:
    """A Salesforce Opportunity, with the org's custom fields the hub reads and writes."""

    id: str
    """Opportunity Id: the order's CRM external id."""
    name: str | None
    """Name."""
    account_id: str | None
    """AccountId: the customer."""
    contact_id: str | None
    """ContactId: the contact person, when set."""
    stage_name: str | None
    """StageName: the org's own label, never used to decide anything."""
    is_won: bool
    """IsWon: what makes the opportunity an order."""
    is_closed: bool
    """IsClosed."""
    close_date: dt.date | None
    """CloseDate: when the deal closed (or is expected to)."""
    amount: Decimal | None
    """Amount: the expected amount as sold."""
    currency: str | None
    """CurrencyIsoCode."""
    description: str | None
    """Description: where sales records the customer's process requirements."""
    owner_id: str | None
    """OwnerId: the sales owner (a User id)."""
    requested_delivery: dt.date | None
    """The custom requested-delivery date (``REQUESTED_DELIVERY_FIELD``)."""
    customer_po_number: str | None
    """The custom customer PO number (``CUSTOMER_PO_FIELD``)."""
    order_id: str | None
    """Written back: the hub's order id."""
    order_number: str | None
    """Written back: the hub's order number."""
    order_status: str | None
    """Written back: the order's status as sales sees it."""
    promised_date: dt.date | None
    """Written back: the delivery date the ERP promised."""
    system_modstamp: dt.datetime
    """SystemModstamp: when anything (a person, a process) last changed the record."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Opportunity":
        """From a REST record (``CrmRecordRefused`` names a field of the wrong type)."""
        read = _Reader("Opportunity", record)
        written = {name: read.text(api) for name, api in WRITE_BACK_FIELDS.items() if name != "promised_date"}
        stamp = read.stamp("SystemModstamp")
        if stamp is None:
            raise CrmRecordRefused("missing", field="Opportunity.SystemModstamp", record_id=read.record_id)
        return cls(id=read.id("Id"), name=read.text("Name"), account_id=read.text("AccountId"),
                   contact_id=read.text("ContactId"), stage_name=read.text("StageName"),
                   is_won=read.flag("IsWon"), is_closed=read.flag("IsClosed"), close_date=read.date("CloseDate"),
                   amount=read.number("Amount"), currency=read.text("CurrencyIsoCode"),
                   description=read.text("Description"), owner_id=read.text("OwnerId"),
                   requested_delivery=read.date(REQUESTED_DELIVERY_FIELD),
                   customer_po_number=read.text(CUSTOMER_PO_FIELD), order_id=written["order_id"],
                   order_number=written["order_number"], order_status=written["status"],
                   promised_date=read.date(WRITE_BACK_FIELDS["promised_date"]), system_modstamp=stamp)


@dataclass(frozen=True)
class LineItem:
    """A Salesforce OpportunityLineItem: one product sold on the opportunity."""

    id: str
    """OpportunityLineItem Id."""
    opportunity_id: str
    """OpportunityId."""
    product_id: str | None
    """Product2Id."""
    product_code: str | None
    """ProductCode: the material number."""
    quantity: Decimal | None
    """Quantity."""
    unit_price: Decimal | None
    """UnitPrice (the ERP owns prices: read, not mapped)."""
    description: str | None
    """Description: a note for this line."""
    service_date: dt.date | None
    """ServiceDate: when this line is to be delivered."""
    unit: str | None
    """The unit as sales typed it (``LINE_UNIT_FIELD``), e.g. "pcs", "kg"."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "LineItem":
        """From a REST record (``CrmRecordRefused`` names a field of the wrong type)."""
        read = _Reader("OpportunityLineItem", record)
        return cls(id=read.id("Id"), opportunity_id=read.id("OpportunityId"), product_id=read.text("Product2Id"),
                   product_code=read.text("ProductCode"), quantity=read.number("Quantity"),
                   unit_price=read.number("UnitPrice"), description=read.text("Description"),
                   service_date=read.date("ServiceDate"), unit=read.text(LINE_UNIT_FIELD))


class _Reader:
    """Typed reads of one REST record; a value of the wrong type is refused, naming the field."""

    def __init__(self, sobject: str, record: Mapping[str, Any]) -> None:
        self.sobject, self.record = sobject, record
        self.record_id = record.get("Id") if isinstance(record.get("Id"), str) else None

    def _refuse(self, name: str, why: str) -> CrmRecordRefused:
        return CrmRecordRefused(f"{why}, got {self.record.get(name)!r}", field=f"{self.sobject}.{name}",
                                record_id=self.record_id)

    def text(self, name: str) -> str | None:
        value = self.record.get(name)
        if value is not None and not isinstance(value, str):
            raise self._refuse(name, "expected text")
        return value

    def id(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise self._refuse(name, "expected an id")
        return value

    def flag(self, name: str) -> bool:
        value = self.record.get(name)
        if not isinstance(value, bool):
            raise self._refuse(name, "expected true or false")
        return value

    def number(self, name: str) -> Decimal | None:
        value = self.record.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise self._refuse(name, "expected a number")
        return Decimal(str(value))

    def date(self, name: str) -> dt.date | None:
        value = self.text(name)
        try:
            return None if value is None else dt.date.fromisoformat(value)
        except ValueError:
            raise self._refuse(name, "expected a date like 2026-12-01") from None

    def stamp(self, name: str) -> dt.datetime | None:
        value = self.text(name)
        try:
            return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self._refuse(name, "expected a date-time like 2026-12-01T08:00:00.000+0000") from None


# --- the client ------------------------------------------------------------------------


class Unchanged(Enum):
    """``write_back``'s default: leave the field as it is (None clears it)."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED
_Keep = Literal[Unchanged.UNCHANGED]


class _SalesforceAdapter(HTTPAdapter):
    """Gives every call a timeout, and pins the CA file when one is given: requests lets
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment override ``Session.verify``
    (psf/requests#3829), so the CA is set on each request here instead."""

    def __init__(self, timeout_s: float, ca_file: Path | None) -> None:
        super().__init__()
        self._timeout_s, self._ca_file = timeout_s, ca_file

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send with the default timeout and the pinned CA."""
        kwargs["timeout"] = kwargs.get("timeout") or self._timeout_s
        if self._ca_file is not None:
            kwargs["verify"] = str(self._ca_file)
        return super().send(request, **kwargs)


class OpportunityClient:
    """Reads opportunities, line items, accounts and contacts; writes back the order's state.

    ``ca_file``: a CA to trust instead of the system's (the local sandbox's throwaway CA).
    ``attempts``/``backoff_s``: tenacity's retries of a transient failure (exponential back-off
    from ``backoff_s``, at most 30 s apart) before ``CrmUnavailable``.
    """

    def __init__(self, instance_url: str, session_id: str, *, client_id: str = DEFAULT_CLIENT_ID,
                 ca_file: Path | str | None = None, api_version: str = DEFAULT_API_VERSION,
                 timeout_s: float = 30.0, attempts: int = 4, backoff_s: float = 0.5) -> None:
        if _MISSING_CLIENT is not None:
            raise ConfigError("the CRM connector needs simple-salesforce: pip install simple-salesforce") \
                from _MISSING_CLIENT
        session = requests.Session()
        session.mount("https://", _SalesforceAdapter(timeout_s, Path(ca_file) if ca_file else None))
        self._sf = Salesforce(instance_url=instance_url, session_id=session_id, session=session,
                              version=api_version, parse_float=Decimal, object_pairs_hook=dict)
        self.client_id = client_id
        self._attempts = attempts
        self._retrying = Retrying(stop=stop_after_attempt(attempts),
                                  wait=wait_exponential(multiplier=backoff_s, max=30.0),
                                  retry=retry_if_exception(_is_transient), reraise=True,
                                  before_sleep=lambda state: log.warning(
                                      "Salesforce call failed (%s), retrying",
                                      state.outcome.exception() if state.outcome else "?"))

    def opportunity(self, opp_id: str) -> Opportunity:
        """The opportunity ``opp_id`` (``CrmRecordRefused`` when there is none)."""
        rows = self._query("Opportunity", OPPORTUNITY_FIELDS, "Id = {}", _checked_id(opp_id))
        if not rows:
            raise CrmRecordRefused("no such Opportunity", record_id=opp_id)
        return Opportunity.from_record(rows[0])

    def line_items(self, opp_id: str) -> list[LineItem]:
        """The opportunity's line items, oldest first (read by query: line change events are not relied on)."""
        rows = self._query("OpportunityLineItem", LINE_ITEM_FIELDS, "OpportunityId = {}", _checked_id(opp_id),
                           order_by="Id")
        return [LineItem.from_record(row) for row in rows]

    def account(self, account_id: str) -> Account:
        """The account ``account_id`` (``CrmRecordRefused`` when there is none)."""
        rows = self._query("Account", ACCOUNT_FIELDS, "Id = {}", _checked_id(account_id))
        if not rows:
            raise CrmRecordRefused("no such Account", record_id=account_id)
        return Account.from_record(rows[0])

    def contact(self, contact_id: str) -> Contact:
        """The contact ``contact_id`` (``CrmRecordRefused`` when there is none)."""
        rows = self._query("Contact", CONTACT_FIELDS, "Id = {}", _checked_id(contact_id))
        if not rows:
            raise CrmRecordRefused("no such Contact", record_id=contact_id)
        return Contact.from_record(rows[0])

    def changed_since(self, stamp: dt.datetime) -> list[Opportunity]:
        """Opportunities whose SystemModstamp is at or after ``stamp``, oldest change first: the
        poll, and the recovery after a webhook gap.

        Inclusive and to the second (SOQL date-time literals carry no milliseconds): records of
        the last second seen are read again, never missed; callers dedup by (Id, SystemModstamp).
        """
        if stamp.tzinfo is None:
            raise ValueError("changed_since needs an aware datetime")
        rows = self._query("Opportunity", OPPORTUNITY_FIELDS, "SystemModstamp >= {}", stamp,
                           order_by="SystemModstamp")
        return [Opportunity.from_record(row) for row in rows]

    def write_back(self, opp_id: str, *, order_id: str | None | _Keep = UNCHANGED,
                   order_number: str | None | _Keep = UNCHANGED, status: str | None | _Keep = UNCHANGED,
                   promised_date: dt.date | None | _Keep = UNCHANGED) -> None:
        """Set what sales should see on the opportunity (None clears a field, UNCHANGED leaves
        it); sent as this client, so the change event it causes is recognised as our own."""
        given = {"order_id": order_id, "order_number": order_number, "status": status,
                 "promised_date": promised_date}
        fields = {WRITE_BACK_FIELDS[name]: value.isoformat() if isinstance(value, dt.date) else value
                  for name, value in given.items() if value is not UNCHANGED}
        if not fields:
            return
        record_id, opportunities = _checked_id(opp_id), self._sf.Opportunity
        self._call(f"write back to Opportunity {opp_id}", lambda: opportunities.update(
            record_id, fields, headers={"Sforce-Call-Options": f"client={self.client_id}"}))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._sf.session.close()

    def _query(self, sobject: str, fields: tuple[str, ...], condition: str, *values: Any,
               order_by: str | None = None) -> list[dict[str, Any]]:
        soql = format_soql(f"SELECT {', '.join(fields)} FROM {sobject} WHERE {condition}", *values)
        if order_by:
            soql += f" ORDER BY {order_by}"
        return self._call(f"query {sobject}", lambda: self._sf.query_all(soql))["records"]

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return self._retrying(call)
        except Exception as exc:
            refined = _classified(what, exc, self._attempts)
            if refined is None:
                raise
            raise refined from exc


def _checked_id(record_id: str) -> str:
    if not isinstance(record_id, str) or not _SALESFORCE_ID.fullmatch(record_id):
        raise CrmRecordRefused("not a Salesforce id (15 or 18 letters and digits)", record_id=repr(record_id))
    return record_id


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    if isinstance(exc, SalesforceError):
        return exc.status >= 500 or _error(exc)[0] in _TRANSIENT_CODES
    return False


def _error(exc: Any) -> tuple[str | None, str, str | None]:
    """errorCode, message and first field of a simple-salesforce error's Salesforce body."""
    content = exc.content
    first = content[0] if isinstance(content, list) and content and isinstance(content[0], dict) else {}
    fields = first.get("fields") or [None]
    return first.get("errorCode"), first.get("message") or str(content), fields[0]


def _classified(what: str, exc: Exception, attempts: int) -> Exception | None:
    if _is_transient(exc):
        return CrmUnavailable(f"{what}: Salesforce failed {attempts} times, last: {exc}")
    if isinstance(exc, SalesforceError):
        code, message, field = _error(exc)
        if exc.status == 401:
            return CrmSessionRefused(f"{what}: Salesforce refused the session ({code}: {message})")
        return CrmRecordRefused(f"{what}: HTTP {exc.status} {code}: {message}", field=field)
    return None
